"""Vocos-style vocoder: ConvNeXt blocks at the mel frame rate, an STFT head, inverse STFT
(Siuzdak, "Vocos: closing the gap between time-domain and Fourier-based neural vocoders", arXiv:2306.00814).

::

    mel [B,80,F] ─┤conv 7├─► LN ─► ConvNeXt × N ─► LN ─┤linear├─► log|S|, φ  [B, n_fft/2+1, F] each
        S = min(exp(log|S|), 100) · (cos φ + i sin φ)
        x = OLA(irfft(S_t) · w) / OLA(w²), trimmed by (n_fft − hop)/2 on the left ─► [B, 1, F·hop]

    ConvNeXt block:  x + γ · Linear(GELU(Linear(LN(depthwise conv 7 (x)))))

Every layer runs at the mel frame rate (86 frames/s at 22 050 Hz), so the network costs a small
fraction of HiFi-GAN's, which upsamples to the sample rate inside the network. The frames of the
inverse STFT sit where :func:`strata.frontend.audio.log_mel` puts its analysis frames (reflect
padding of ``(n_fft − hop)/2``, ``center=False``): frame ``t`` covers samples
``[t·hop − pad, t·hop − pad + n_fft)``, so a sound of ``F·hop`` samples has ``F`` frames both ways.

The inverse STFT is written with ``irfft`` and ``fold`` (not ``torch.istft``) for two reasons: it
is the exact computation of the numpy inverse that serves the model
(:mod:`strata.vocoder.istft`), and ``torch.istft`` does not export to ONNX (``aten::complex``).
:func:`export_vocos` therefore exports the network up to the STFT coefficients (``real``,
``imag``) and the serving side does the inverse STFT in numpy.

:class:`MultiResolutionDiscriminator` is the compact spectrogram discriminator used in the
adversarial phase beside the multi-period one (three STFT resolutions, 32 channels: 0.28 M
parameters against the 29.6 M of HiFi-GAN's multi-scale discriminator).
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from strata.errors import InputError
from strata.train.nets.hifigan_model import OPSET, DiscriminatorOutput, check_audio, conv_stack
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

ARCH = "vocos"
MAX_MAGNITUDE = 100.0  # exp(log|S|) is clipped here (a bound on the spectrum, as the paper's head)


@dataclass(frozen=True)
class VocosConfig:
    """Generator hyper-parameters (saved beside the weights)."""

    n_mels: int = 80
    dim: int = 256  # channels of the ConvNeXt stack
    intermediate: int = 768  # hidden width of each block's pointwise MLP
    blocks: int = 8
    kernel: int = 7  # depthwise kernel (frames); odd
    n_fft: int = 1024  # inverse STFT size; the window is a periodic Hann of n_fft samples
    hop: int = 256  # output samples per mel frame

    def __post_init__(self) -> None:
        for name in ("n_mels", "dim", "intermediate", "blocks", "kernel", "n_fft", "hop"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise InputError(f"{name} must be a positive integer, got {v!r}")
        if self.kernel % 2 == 0:
            raise InputError(f"kernel must be odd, got {self.kernel}")
        if self.hop > self.n_fft or (self.n_fft - self.hop) % 2 or self.n_fft % 2:
            raise InputError(f"need an even n_fft ≥ hop with n_fft − hop even, got n_fft {self.n_fft}, hop {self.hop}")

    @property
    def pad(self) -> int:
        """Samples of the first frame before sample 0: ``(n_fft − hop) / 2``, as the mel frontend's padding."""
        return (self.n_fft - self.hop) // 2

    @property
    def bins(self) -> int:
        return self.n_fft // 2 + 1

    def to_dict(self) -> dict:
        return {"arch": ARCH, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> VocosConfig:
        d = {k: v for k, v in d.items() if k != "arch"}
        return cls(**d)


def receptive_field(cfg: VocosConfig) -> int:
    """Mel frames on either side that one output STFT frame depends on (the embedding conv and every block's)."""
    return (cfg.kernel // 2) * (cfg.blocks + 1)


class ConvNeXtBlock(nn.Module):
    """Depthwise conv → LayerNorm → pointwise MLP (GELU) → layer scale, with a residual connection."""

    def __init__(self, dim: int, intermediate: int, kernel: int, layer_scale: float) -> None:
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel, padding=kernel // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pw1 = nn.Linear(dim, intermediate)
        self.pw2 = nn.Linear(intermediate, dim)
        self.gamma = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).transpose(1, 2)  # [B, F, C]
        y = self.pw2(F.gelu(self.pw1(self.norm(y))))
        return x + (self.gamma * y).transpose(1, 2)


class VocosGenerator(nn.Module):
    """Log-mel ``[B, n_mels, F]`` → waveform ``[B, 1, F·hop]`` (see the module docstring)."""

    def __init__(self, cfg: VocosConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Conv1d(cfg.n_mels, cfg.dim, cfg.kernel, padding=cfg.kernel // 2)
        self.norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.blocks = nn.ModuleList(ConvNeXtBlock(cfg.dim, cfg.intermediate, cfg.kernel, 1.0 / cfg.blocks)
                                    for _ in range(cfg.blocks))
        self.final_norm = nn.LayerNorm(cfg.dim, eps=1e-6)
        self.head = nn.Linear(cfg.dim, 2 * cfg.bins)
        self.register_buffer("window", torch.hann_window(cfg.n_fft, periodic=True), persistent=False)
        for m in self.modules():
            if isinstance(m, nn.Conv1d | nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def spectrum(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """STFT coefficients ``(real, imag)``, each ``[B, n_fft/2 + 1, F]``."""
        x = self.embed(mel)
        x = self.norm(x.transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        x = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2)  # [B, 2·bins, F]
        log_mag, phase = x.float().chunk(2, dim=1)
        mag = torch.exp(log_mag).clamp(max=MAX_MAGNITUDE)
        return mag * torch.cos(phase), mag * torch.sin(phase)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        real, imag = self.spectrum(mel)
        return inverse_stft(real, imag, self.cfg, self.window)[:, None]


def inverse_stft(real: torch.Tensor, imag: torch.Tensor, cfg: VocosConfig,
                 window: torch.Tensor | None = None) -> torch.Tensor:
    """``[B, bins, F]`` coefficients → ``[B, F·hop]`` samples: windowed overlap-add over the squared-window sum."""
    b, _, frames = real.shape
    if window is None:
        window = torch.hann_window(cfg.n_fft, periodic=True, device=real.device)
    spec = torch.complex(real.float(), imag.float()).transpose(1, 2)  # [B, F, bins]
    seg = torch.fft.irfft(spec, n=cfg.n_fft, dim=-1) * window  # [B, F, n_fft]
    length = (frames - 1) * cfg.hop + cfg.n_fft
    out = F.fold(seg.transpose(1, 2), (1, length), (1, cfg.n_fft), stride=(1, cfg.hop))[:, 0, 0]
    env = F.fold((window**2).expand(1, frames, -1).transpose(1, 2), (1, length), (1, cfg.n_fft),
                 stride=(1, cfg.hop))[0, 0, 0]
    start = cfg.pad
    stop = start + frames * cfg.hop
    return out[:, start:stop] / env[start:stop].clamp(min=1e-11)


class SpectrumNet(nn.Module):
    """The exported part of :class:`VocosGenerator`: mel → ``(real, imag)``."""

    def __init__(self, gen: VocosGenerator) -> None:
        super().__init__()
        self.gen = gen

    def forward(self, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gen.spectrum(mel)


def export_vocos(gen: VocosGenerator, path: Path | str, example_frames: int = 8) -> Path:
    """Export ``gen`` up to its STFT coefficients: ``mel`` [B, n_mels, F] → ``real``, ``imag`` [B, bins, F].

    The model's metadata records ``arch`` (``vocos``), ``n_mels``, ``hop``, ``n_fft`` and
    ``receptive_field`` (frames) for :class:`strata.vocoder.vocos.VocosVocoder`, which does the
    inverse STFT in numpy.
    """
    import onnx

    path = Path(path)
    net = SpectrumNet(gen).eval()
    example = torch.randn(1, gen.cfg.n_mels, example_frames)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net, (example,), str(path), input_names=["mel"], output_names=["real", "imag"],
            dynamic_axes={"mel": {0: "batch", 2: "frames"}, "real": {0: "batch", 2: "frames"},
                          "imag": {0: "batch", 2: "frames"}},
            opset_version=OPSET, dynamo=False,
        )
    model = onnx.load(str(path))
    cfg = gen.cfg
    meta = {"arch": ARCH, "n_mels": cfg.n_mels, "hop": cfg.hop, "n_fft": cfg.n_fft,
            "receptive_field": receptive_field(cfg)}
    onnx.helper.set_model_props(model, {k: str(v) for k, v in meta.items()})
    onnx.save(model, str(path))
    return path


# ------------------------------------------------------------------------------------------ discriminator


class ResolutionDiscriminator(nn.Module):
    """Magnitude spectrogram ``[B, 1, frames, bins]`` of one STFT resolution → 2-D convs (stride 2 along bins)."""

    def __init__(self, resolution: tuple[int, int, int], channels: int) -> None:
        super().__init__()
        self.n_fft, self.hop, self.win = resolution
        c = channels
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(1, c, (3, 9), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
        ])
        self.post = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        spec = torch.stft(x[:, 0].float(), self.n_fft, self.hop, self.win, self.window, center=True,
                          return_complex=True)
        return conv_stack(self.convs, self.post, spec.abs().transpose(1, 2)[:, None])  # [B, 1, frames, bins]


class MultiResolutionDiscriminator(nn.Module):
    """One :class:`ResolutionDiscriminator` per STFT resolution ``(n_fft, hop, win)``."""

    RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024), (2048, 512, 2048))

    def __init__(self, resolutions: tuple[tuple[int, int, int], ...] = RESOLUTIONS, channels: int = 32) -> None:
        super().__init__()
        if not resolutions or channels < 1:
            raise InputError(f"need at least one resolution and channels ≥ 1, got {resolutions}, {channels}")
        self.discriminators = nn.ModuleList(ResolutionDiscriminator(tuple(r), channels) for r in resolutions)

    def forward(self, x: torch.Tensor) -> DiscriminatorOutput:
        """Audio ``[B, 1, T]`` → scores and feature maps per resolution."""
        check_audio(x)
        out = DiscriminatorOutput()
        for d in self.discriminators:
            score, feats = d(x)
            out.scores.append(score)
            out.features.append(feats)
        return out


__all__ = [
    "ARCH",
    "ConvNeXtBlock",
    "MultiResolutionDiscriminator",
    "VocosConfig",
    "VocosGenerator",
    "export_vocos",
    "inverse_stft",
    "receptive_field",
]
