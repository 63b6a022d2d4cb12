"""Image analysis and synthesis transforms (``g_a`` / ``g_s``).

::

    x [B,3,H,W] ─►─┤ g_a ├─►─ y [B,D,H/8,W/8] ─►─┤ RVQ ├─►─ ŷ ─►─┤ g_s ├─►─ x̂ [B,3,H,W]

Both are plain convolutional stacks chosen for training efficiency on a CPU:
resolution changes are pixel-(un)shuffles (HQ-TVAE), so almost all compute sits
at 1/4 and 1/64 of the pixels, and the synthesis side, which limits quality at
high rates, gets more residual blocks than the analysis side.
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

    @property
    def factor(self) -> int:
        """Downsampling factor between pixels and latent positions."""
        return 8

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImageNetConfig:
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


class Analysis(nn.Module):
    """``g_a``: RGB in [0, 1], ``[B,3,H,W]`` → latent ``[B,D,H/8,W/8]`` (H, W multiples of 8)."""

    def __init__(self, cfg: ImageNetConfig) -> None:
        super().__init__()
        c1, c2, c3 = cfg.channels
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x - 0.5)


class Synthesis(nn.Module):
    """``g_s``: latent ``[B,D,h,w]`` → RGB ``[B,3,8h,8w]`` (not clamped)."""

    def __init__(self, cfg: ImageNetConfig) -> None:
        super().__init__()
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

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y) + 0.5
