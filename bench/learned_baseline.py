"""The analysis and synthesis transforms of bmshj2018-factorized, rebuilt for timing in onnxruntime.

Ballé, Minnen, Singh, Hwang, Johnston, "Variational image compression with a scale hyperprior"
(ICLR 2018), factorized-prior model as CompressAI configures it for its high-quality settings
(N = 128, M = 192)::

    g_a: conv5×5/2 (3→N) ─ GDN ─ conv5×5/2 (N→N) ─ GDN ─ conv5×5/2 (N→N) ─ GDN ─ conv5×5/2 (N→M)
    g_s: deconv5×5/2 (M→N) ─ IGDN ─ deconv5×5/2 ─ IGDN ─ deconv5×5/2 ─ IGDN ─ deconv5×5/2 (N→3)
    GDN(x)_i = x_i / sqrt(β_i + Σ_j γ_ij x_j²)   (IGDN multiplies instead)

Written here from the paper's description (no code taken from CompressAI). Weights are random: the
time of a convolution stack does not depend on its weights, and no entropy coding is timed, so the
figures are a floor for that codec's encoder and decoder. Needs torch (``train`` extra) for the export.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

N, M = 128, 192


def build(n: int = N, m: int = M):
    """``(g_a, g_s)`` as torch modules (eval mode, random weights, seed 0)."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class GDN(nn.Module):
        def __init__(self, channels: int, inverse: bool = False) -> None:
            super().__init__()
            self.inverse = inverse
            self.beta = nn.Parameter(torch.ones(channels))
            self.gamma = nn.Parameter(0.1 * torch.eye(channels).view(channels, channels, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            norm = torch.sqrt(nn.functional.conv2d(x * x, self.gamma, self.beta))
            return x * norm if self.inverse else x / norm

    def conv(cin: int, cout: int) -> nn.Module:
        return nn.Conv2d(cin, cout, 5, stride=2, padding=2)

    def deconv(cin: int, cout: int) -> nn.Module:
        return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)

    g_a = nn.Sequential(conv(3, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m)).eval()
    g_s = nn.Sequential(deconv(m, n), GDN(n, True), deconv(n, n), GDN(n, True), deconv(n, n), GDN(n, True),
                        deconv(n, 3)).eval()
    return g_a, g_s


def export(folder: Path | None = None) -> tuple[Path, Path]:
    """ONNX files of ``g_a`` (``image`` [B, 3, H, W] → ``latent``) and ``g_s`` (``latent`` → ``image``)."""
    import torch

    folder = Path(folder or tempfile.mkdtemp(prefix="bmshj2018-"))
    g_a, g_s = build()
    paths = folder / "analysis.onnx", folder / "synthesis.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(g_a, (torch.rand(1, 3, 64, 64),), str(paths[0]), input_names=["image"],
                          output_names=["latent"], dynamic_axes={"image": axes, "latent": axes}, opset_version=17,
                          dynamo=False)
        torch.onnx.export(g_s, (torch.rand(1, M, 4, 4),), str(paths[1]), input_names=["latent"],
                          output_names=["image"], dynamic_axes={"latent": axes, "image": axes}, opset_version=17,
                          dynamo=False)
    return paths
