"""Mel analysis and synthesis transforms of the audio codec.

::

    log-mel [B,80,F] ─►─┤ normalise ├─►─┤ g_a ├─►─ y [B,D,10,F/4] ─►─┤ RVQ ├─►─ ŷ ─►─┤ g_s ├─►─ log-mel [B,80,F]

The log-mel is treated as a one-channel picture (frequency × time) and coded with
2-D convolutions, like the image codec: a code vector stands for a patch of 8 mel
bands × 4 frames (46 ms), so a second of audio is 10 × 21.5 code positions, and
one layer of K = 256 codes costs at most 1.72 kbps before entropy coding. Eight
layers reach about 12 kbps, the range of issue #4.

Resolution changes are (un)shuffles along each axis, as in the image transforms.
Both networks carry the per-band mean and standard deviation of the training
mels as buffers: ``g_a`` takes a raw log-mel and ``g_s`` returns one, so serving
never needs the statistics, and the training loss (MSE of the normalised mel) is
the metric the evaluation reports (RMSE of the normalised log-mel).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from strata.train.nets.image import ResBlock
from torch import nn


@dataclass(frozen=True)
class MelNetConfig:
    """Hyper-parameters of the mel transforms (saved beside the weights)."""

    n_mels: int = 80
    latent_dim: int = 32  # D: channels of the latent (= RVQ code dimension)
    channels: tuple[int, int, int] = (48, 96, 160)  # widths at (1/2, 1/2), (1/4, 1/4), (1/8, 1/4) of (bands, frames)
    enc_blocks: tuple[int, int, int] = (1, 1, 1)
    dec_blocks: tuple[int, int, int] = (1, 2, 2)  # the synthesis side limits quality: more blocks there

    def __post_init__(self) -> None:
        if self.n_mels % self.freq_factor:
            raise ValueError(f"n_mels must be a multiple of {self.freq_factor}, got {self.n_mels}")

    @property
    def time_factor(self) -> int:
        """Mel frames per code column."""
        return 4

    @property
    def freq_factor(self) -> int:
        """Mel bands per code row."""
        return 8

    @property
    def rows(self) -> int:
        """Code rows (frequency positions) of the latent."""
        return self.n_mels // self.freq_factor

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MelNetConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class Unshuffle(nn.Module):
    """``[B, C, H·a, W·b]`` → ``[B, C·a·b, H, W]`` (PixelUnshuffle with separate factors per axis)."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        a, b = self.a, self.b
        x = x.reshape(B, C, H // a, a, W // b, b).permute(0, 1, 3, 5, 2, 4)
        return x.reshape(B, C * a * b, H // a, W // b)


class Shuffle(nn.Module):
    """``[B, C·a·b, H, W]`` → ``[B, C, H·a, W·b]``, the inverse of :class:`Unshuffle`."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        a, b = self.a, self.b
        x = x.reshape(B, C // (a * b), a, b, H, W).permute(0, 1, 4, 2, 5, 3)
        return x.reshape(B, C // (a * b), H * a, W * b)


def _blocks(ch: int, n: int) -> list[nn.Module]:
    return [ResBlock(ch) for _ in range(n)]


class _Normalised(nn.Module):
    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    def set_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean.copy_(mean)
        self.std.copy_(std.clamp(min=1e-3))


class MelAnalysis(_Normalised):
    """``g_a``: raw log-mel ``[B, n_mels, F]`` (F a multiple of 4) → latent ``[B, D, n_mels/8, F/4]``."""

    def __init__(self, cfg: MelNetConfig) -> None:
        super().__init__(cfg.n_mels)
        c1, c2, c3 = cfg.channels
        b1, b2, b3 = cfg.enc_blocks
        self.net = nn.Sequential(
            Unshuffle(2, 2),
            nn.Conv2d(4, c1, 3, padding=1),
            *_blocks(c1, b1),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            *_blocks(c2, b2),
            nn.Conv2d(c2, c3, 3, stride=(2, 1), padding=1),
            *_blocks(c3, b3),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c3, cfg.latent_dim, 1),
        )

    def normalise(self, mel: torch.Tensor) -> torch.Tensor:
        return (mel - self.mean[:, None]) / self.std[:, None]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalise(mel)[:, None])


class MelSynthesis(_Normalised):
    """``g_s``: latent ``[B, D, n_mels/8, f]`` → raw log-mel ``[B, n_mels, 4f]``.

    ``forward_normalised`` gives the normalised mel (the training loss is computed there).
    """

    def __init__(self, cfg: MelNetConfig) -> None:
        super().__init__(cfg.n_mels)
        c1, c2, c3 = cfg.channels
        b1, b2, b3 = cfg.dec_blocks
        self.net = nn.Sequential(
            nn.Conv2d(cfg.latent_dim, c3, 3, padding=1),
            *_blocks(c3, b3),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c3, 2 * c2, 3, padding=1),
            Shuffle(2, 1),
            *_blocks(c2, b2),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c2, 4 * c1, 3, padding=1),
            Shuffle(2, 2),
            *_blocks(c1, b1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(c1, 4, 3, padding=1),
            Shuffle(2, 2),
        )

    def forward_normalised(self, y: torch.Tensor) -> torch.Tensor:
        return self.net(y)[:, 0]

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.forward_normalised(y) * self.std[:, None] + self.mean[:, None]


__all__ = ["MelAnalysis", "MelNetConfig", "MelSynthesis", "Shuffle", "Unshuffle"]
