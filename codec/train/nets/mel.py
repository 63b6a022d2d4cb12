"""Torch twin of :func:`strata.frontend.audio.log_mel`, for training losses (differentiable).

Same settings and the same librosa filterbank as the numpy version: reflect padding
of ``(n_fft − hop) / 2``, ``torch.stft(center=False)`` with a periodic Hann window,
magnitude ``sqrt(re² + im² + 1e-9)``, Slaney mel, ``log(clamp(mel, 1e-5))``.
Computed in the input's dtype (float32 in training); agrees with numpy to 1e-4.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from strata.errors import InputError
from strata.frontend.audio import DEFAULT_MEL, MelConfig, mel_filterbank


@lru_cache(maxsize=8)
def _filterbank(cfg: MelConfig) -> torch.Tensor:
    """``[n_mels, n_fft/2 + 1]`` float32 on the CPU, built once per config."""
    return torch.from_numpy(mel_filterbank(cfg).copy())


def log_mel_torch(x: torch.Tensor, cfg: MelConfig = DEFAULT_MEL) -> torch.Tensor:
    """Audio ``[B, T]`` (or ``[B, 1, T]``) → log-mel ``[B, n_mels, frames]``, ``frames = cfg.frames(T)``."""
    if x.dim() == 3 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 2 or not x.is_floating_point():
        raise InputError(f"audio must be float [B, T] or [B, 1, T], got {x.dtype} {tuple(x.shape)}")
    if x.shape[-1] <= cfg.pad:
        raise InputError(f"need more than {cfg.pad} samples for a log-mel, got {x.shape[-1]}")
    x = F.pad(x[:, None], (cfg.pad, cfg.pad), mode="reflect")[:, 0]
    window = torch.hann_window(cfg.win, periodic=True, dtype=x.dtype, device=x.device)
    spec = torch.stft(
        x,
        cfg.n_fft,
        hop_length=cfg.hop,
        win_length=cfg.win,
        window=window,
        center=False,
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    mag = torch.sqrt(spec.real**2 + spec.imag**2 + 1e-9)  # [B, bins, frames]
    mel = torch.matmul(_filterbank(cfg).to(device=x.device, dtype=x.dtype), mag)
    return torch.log(torch.clamp(mel, min=cfg.log_floor))


__all__ = ["log_mel_torch"]
