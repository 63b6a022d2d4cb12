"""Where should the RVQ code search run: inside the ONNX encoder graph, or in numpy after it?

Exports ``g_a`` alone and ``g_a`` + the L-layer nearest-code search as one graph, from the
same checkpoint, and times both on a Kodak-sized 768×512 input with onnxruntime (CPU),
one thread and all threads. Prints a table and the share of codes on which both paths agree (they
can differ at near-ties: the two paths sum the distances in a different float order, and a
different code at one layer changes the residual the next layers see).

    python bench/search_placement.py --checkpoint checkpoints/<name>/checkpoint.pt
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from strata.export.common import export_onnx, round_to_fp16
from strata.export.image import load_checkpoint
from strata.quantize.search import ResidualCodebooks
from strata.runtime import CPU, OnnxNet
from timing import median_time
from torch import nn


class AnalysisWithSearch(nn.Module):
    """``g_a`` followed by the residual nearest-code search; outputs codes ``[L, B, h, w]`` (int64)."""

    def __init__(self, g_a: nn.Module, codebooks: torch.Tensor) -> None:
        super().__init__()
        self.g_a = g_a
        self.register_buffer("books", codebooks)
        self.register_buffer("norms", (codebooks * codebooks).sum(-1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.g_a(x)
        B, D, h, w = z.shape
        r = z.permute(0, 2, 3, 1).reshape(-1, D)
        codes = []
        for layer in range(self.books.shape[0]):
            idx = (self.norms[layer][None, :] - 2.0 * r @ self.books[layer].t()).argmin(1)
            codes.append(idx)
            r = r - self.books[layer][idx]
        return torch.stack(codes).reshape(-1, B, h, w)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    model, cfg, _ = load_checkpoint(Path(args.checkpoint))
    round_to_fp16(model.g_a)
    books = model.quantizer.codebooks()
    x = np.random.default_rng(0).random((1, 3, 512, 768), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model.g_a, torch.rand(1, 3, 32, 48), Path(tmp) / "ga.onnx", "image", "latent")
        export_onnx(AnalysisWithSearch(model.g_a, books), torch.rand(1, 3, 32, 48), Path(tmp) / "gaq.onnx",
                    "image", "codes")
        search = ResidualCodebooks(books.numpy())
        print("| threads | g_a (ONNX) | numpy search | g_a + numpy search | g_a + search in graph | codes equal |")
        print("|---:|---:|---:|---:|---:|---:|")
        for threads in (1, 0):
            ga = OnnxNet.load(Path(tmp) / "ga.onnx", [CPU], threads)
            gaq = OnnxNet.load(Path(tmp) / "gaq.onnx", [CPU], threads)
            latent = ga(x)
            agree = float((search.encode(latent) == gaq(x)).mean())
            t_ga = median_time(lambda: ga(x), args.repeat)  # noqa: B023
            t_np = median_time(lambda: search.encode(latent), args.repeat)  # noqa: B023
            t_graph = median_time(lambda: gaq(x), args.repeat)  # noqa: B023
            label = "1" if threads == 1 else "all"
            print(f"| {label} | {t_ga * 1e3:.1f} ms | {t_np * 1e3:.1f} ms | {(t_ga + t_np) * 1e3:.1f} ms | "
                  f"{t_graph * 1e3:.1f} ms | {100 * agree:.2f}% |")


if __name__ == "__main__":
    main()
