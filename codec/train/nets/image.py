"""Image analysis and synthesis transforms (``g_a`` / ``g_s``).

::

    x [B,3,H,W] ─►─┤ g_a ├─►─ y [B,D,H/8,W/8] ─►─┤ RVQ ├─►─ ŷ ─►─┤ g_s ├─►─ x̂ [B,3,H,W]

Both are plain convolutional stacks chosen for training efficiency on a CPU:
resolution changes are pixel-(un)shuffles (HQ-TVAE), so almost all compute sits
at 1/4 and 1/64 of the pixels, and the synthesis side, which limits quality at
high rates, gets more residual blocks than the analysis side.

With ``linear_skip`` both transforms also have a linear path around the nonlinear
stack: ``g_a(x) = A·unshuffle8(x) + f_a(x)`` and ``g_s(y) = shuffle8(B·y) + f_s(y)``,
where ``A``/``B`` are 1×1 convolutions over the 192 values of an 8×8 RGB block. The
trainer sets them to the top ``latent_dim`` principal components of training blocks
(:meth:`Analysis.init_linear`) and zeroes the last layer of each nonlinear stack, so a
new model starts as a block PCA: 32 of 192 components already give 33.0 dB on Kodak
unquantized, where the first model's autoencoder had reached 28.8 dB after 12 000 steps.
Training then spends its steps on what the PCA misses instead of relearning a transform.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ImageNetConfig:
    """Hyper-parameters of the image transforms (saved beside the weights)."""

    latent_dim: int = 32  # D: channels of the latent that the quantizer sees (= RVQ code dimension)
    channels: tuple[int, int, int] = (64, 128, 192)  # widths at 1/2, 1/4, 1/8 resolution
    enc_blocks: tuple[int, int, int] = (1, 1, 1)  # residual blocks per scale in g_a
    dec_blocks: tuple[int, int, int] = (1, 2, 3)  # residual blocks per scale in g_s
    enc_channels: tuple[int, int, int] | None = None  # widths of g_a when they differ from g_s's (``channels``)
    linear_skip: bool = True  # a linear (block-PCA-initialised) path around each transform

    @property
    def factor(self) -> int:
        """Downsampling factor between pixels and latent positions."""
        return 8

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImageNetConfig:
        d = {"linear_skip": False, **d}  # configs saved before the linear path existed had none
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class ResBlock(nn.Module):
    """``x + conv(act(conv(act(x))))`` with 3×3 convolutions."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.LeakyReLU(0.2),
            nn.Conv2d(ch, ch, 3, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ch, ch, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _blocks(ch: int, n: int) -> list[nn.Module]:
    return [ResBlock(ch) for _ in range(n)]


BLOCK = 8 * 8 * 3  # values of an 8×8 RGB block, in PixelUnshuffle(8)'s channel order


def block_pca(x: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[192]`` and top-``dim`` principal components ``[192, dim]`` of the 8×8 blocks of ``x`` [B,3,H,W]."""
    blocks = nn.functional.pixel_unshuffle(x.float() - 0.5, 8).permute(0, 2, 3, 1).reshape(-1, BLOCK).double()
    mean = blocks.mean(0)
    cov = torch.cov((blocks - mean).T)
    _, vectors = torch.linalg.eigh(cov)  # ascending eigenvalues
    return mean.float(), vectors[:, -dim:].flip(1).float()


class Analysis(nn.Module):
    """``g_a``: RGB in [0, 1], ``[B,3,H,W]`` → latent ``[B,D,H/8,W/8]`` (H, W multiples of 8)."""

    def __init__(self, cfg: ImageNetConfig) -> None:
        super().__init__()
        skip = nn.Sequential(nn.PixelUnshuffle(8), nn.Conv2d(BLOCK, cfg.latent_dim, 1))
        self.skip = skip if cfg.linear_skip else None
        c1, c2, c3 = cfg.enc_channels or cfg.channels
        b1, b2, b3 = cfg.enc_blocks
        self.net = nn.Sequential(
            nn.PixelUnshuffle(2),
            nn.Conv2d(12, c1, 3, padding=1),
            *_blocks(c1, b1),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            *_blocks(c2, b2),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1),
            *_blocks(c3, b3),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c3, cfg.latent_dim, 1),
        )

    @torch.no_grad()
    def init_linear(self, mean: torch.Tensor, components: torch.Tensor) -> None:
        """Linear path = projection on ``components`` [192, D] of centred blocks; nonlinear path starts at 0."""
        conv = self.skip[1]
        conv.weight.copy_(components.T[:, :, None, None])
        conv.bias.copy_(-(components.T @ mean))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.net(x - 0.5)
        return y if self.skip is None else y + self.skip(x - 0.5)


class Synthesis(nn.Module):
    """``g_s``: latent ``[B,D,h,w]`` → RGB ``[B,3,8h,8w]`` (not clamped)."""

    def __init__(self, cfg: ImageNetConfig) -> None:
        super().__init__()
        self.skip = nn.Sequential(nn.Conv2d(cfg.latent_dim, BLOCK, 1), nn.PixelShuffle(8)) if cfg.linear_skip else None
        c1, c2, c3 = cfg.channels
        b1, b2, b3 = cfg.dec_blocks
        self.net = nn.Sequential(
            nn.Conv2d(cfg.latent_dim, c3, 3, padding=1),
            *_blocks(c3, b3),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c3, 4 * c2, 3, padding=1),
            nn.PixelShuffle(2),
            *_blocks(c2, b2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c2, 4 * c1, 3, padding=1),
            nn.PixelShuffle(2),
            *_blocks(c1, b1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c1, 12, 3, padding=1),
            nn.PixelShuffle(2),
        )

    @torch.no_grad()
    def init_linear(self, mean: torch.Tensor, components: torch.Tensor) -> None:
        """Linear path = reconstruction from ``components`` [192, D] plus the block mean; nonlinear path at 0."""
        conv = self.skip[0]
        conv.weight.copy_(components[:, :, None, None])
        conv.bias.copy_(mean)
        nn.init.zeros_(self.net[-2].weight)
        nn.init.zeros_(self.net[-2].bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x = self.net(y) + 0.5
        return x if self.skip is None else x + self.skip(y)
