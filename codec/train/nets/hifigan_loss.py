"""HiFi-GAN training losses (LSGAN, feature matching, mel L1) and a multi-resolution STFT loss.

Generator objective of the paper: ``L_adv(G) + 2·L_FM + 45·L_mel``; discriminator
objective: ``L_adv(D)``, summed over every sub-discriminator of the MPD and MSD.
The multi-resolution STFT loss (Parallel WaveGAN, Yamamoto et al. 2020) is an
optional reconstruction term for a warm-up without discriminators.

Audio tensors are ``[B, 1, T]`` (or ``[B, T]``); scores and feature maps are the
lists in :class:`strata.train.nets.hifigan_model.DiscriminatorOutput`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from strata.errors import InputError
from strata.frontend.audio import DEFAULT_MEL, MelConfig
from strata.train.nets.mel import log_mel_torch

MEL_WEIGHT = 45.0
FM_WEIGHT = 2.0
STFT_RESOLUTIONS = ((512, 50, 240), (1024, 120, 600), (2048, 240, 1200))  # (n_fft, hop, win)


def discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN discriminator loss ``Σ_k mean((1 − D_k(x))²) + mean(D_k(G(s))²)`` (pass ``fake`` detached)."""
    _same_length(real, fake)
    return sum(torch.mean((1 - r) ** 2) + torch.mean(f**2) for r, f in zip(real, fake, strict=True))


def generator_adversarial_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN generator loss ``Σ_k mean((1 − D_k(G(s)))²)``."""
    if not fake:
        raise InputError("no discriminator scores")
    return sum(torch.mean((1 - f) ** 2) for f in fake)


def feature_matching_loss(real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]) -> torch.Tensor:
    """``2 · Σ_k Σ_i mean|D_k^i(x) − D_k^i(G(s))|`` over every feature map (real maps are detached)."""
    _same_length(real, fake)
    total = 0.0
    for rs, fs in zip(real, fake, strict=True):
        _same_length(rs, fs)
        total = total + sum(torch.mean(torch.abs(r.detach() - f)) for r, f in zip(rs, fs, strict=True))
    return FM_WEIGHT * total


def mel_l1_loss(y_hat: torch.Tensor, y: torch.Tensor, cfg: MelConfig = DEFAULT_MEL) -> torch.Tensor:
    """``45 · L1(log-mel(ŷ), log-mel(y))``.

    The reference recipe computes this mel up to Nyquist (``fmax_for_loss=None``):
    pass ``MelConfig(fmax=11025)`` for that; the default uses the model's 8 kHz mel.
    """
    y_hat, y = _flat(y_hat), _flat(y)
    if y_hat.shape != y.shape:
        raise InputError(f"ŷ and y must have the same shape, got {tuple(y_hat.shape)} and {tuple(y.shape)}")
    return MEL_WEIGHT * F.l1_loss(log_mel_torch(y_hat, cfg), log_mel_torch(y, cfg))


def _stft_magnitude(x: torch.Tensor, n_fft: int, hop: int, win: int) -> torch.Tensor:
    """``[B, T]`` → ``[B, n_fft/2 + 1, frames]`` magnitude, ``sqrt(max(re² + im², 1e-7))``."""
    window = torch.hann_window(win, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft, hop_length=hop, win_length=win, window=window, return_complex=True)
    return torch.sqrt(torch.clamp(spec.real**2 + spec.imag**2, min=1e-7))


def multi_resolution_stft_loss(
    y_hat: torch.Tensor,
    y: torch.Tensor,
    resolutions: tuple[tuple[int, int, int], ...] = STFT_RESOLUTIONS,
) -> torch.Tensor:
    """Mean over ``(n_fft, hop, win)`` resolutions of spectral convergence + log-magnitude L1.

    Spectral convergence is ``‖|Y| − |Ŷ|‖_F / ‖|Y|‖_F`` over the batch; the log term
    is ``mean|log|Y| − log|Ŷ||``. Needs ``T > n_fft / 2`` for the largest FFT (reflect-centred frames).
    """
    y_hat, y = _flat(y_hat), _flat(y)
    if y_hat.shape != y.shape:
        raise InputError(f"ŷ and y must have the same shape, got {tuple(y_hat.shape)} and {tuple(y.shape)}")
    if not resolutions:
        raise InputError("need at least one STFT resolution")
    total = y.new_zeros(())
    for n_fft, hop, win in resolutions:
        if y.shape[-1] <= n_fft // 2:
            raise InputError(f"need more than {n_fft // 2} samples for an STFT of size {n_fft}, got {y.shape[-1]}")
        m_hat, m = _stft_magnitude(y_hat, n_fft, hop, win), _stft_magnitude(y, n_fft, hop, win)
        sc = torch.linalg.norm(m - m_hat) / torch.linalg.norm(m)
        total = total + sc + F.l1_loss(torch.log(m_hat), torch.log(m))
    return total / len(resolutions)


PHASE_RESOLUTIONS = ((512, 128, 512), (1024, 256, 1024))  # (n_fft, hop, win)


@dataclass(frozen=True)
class PhaseDistances:
    """Anti-wrapping distances ``Σ w·(1 − cos Δ) / Σ w`` between two signals' STFT phases, at one resolution.

    Each is 0 for the reference itself and about 1 for an unrelated phase (at most 2).
    """

    instantaneous_phase: torch.Tensor  # Δ: the phase itself, per bin
    group_delay: torch.Tensor  # Δ: the phase's difference between neighbouring bins (where energy lies in time)
    instantaneous_frequency: torch.Tensor  # Δ: the phase's difference between neighbouring frames (per hop)


def phase_distances(y_hat: torch.Tensor, y: torch.Tensor, n_fft: int, hop: int, win: int,
                    power: float = 1.0) -> PhaseDistances:
    """:class:`PhaseDistances` of ``ŷ`` against ``y`` (``[B, T]`` or ``[B, 1, T]``), Hann window.

    Each bin weighs ``|Y|^power`` (a pair of bins: the geometric mean of its two weights), so
    silence and the noise floor, whose phase is arbitrary, count little.
    """
    y_hat, y = _flat(y_hat), _flat(y)
    if y_hat.shape != y.shape:
        raise InputError(f"ŷ and y must have the same shape, got {tuple(y_hat.shape)} and {tuple(y.shape)}")
    if y.shape[-1] <= n_fft // 2:
        raise InputError(f"need more than {n_fft // 2} samples for an STFT of size {n_fft}, got {y.shape[-1]}")
    window = torch.hann_window(win, dtype=y.dtype, device=y.device)
    s_hat = torch.stft(y_hat, n_fft, hop_length=hop, win_length=win, window=window, return_complex=True)
    s = torch.stft(y, n_fft, hop_length=hop, win_length=win, window=window, return_complex=True)
    w = (s.real**2 + s.imag**2) ** (power / 2)
    return PhaseDistances(
        instantaneous_phase=_cos_distance(s_hat, s, w),
        group_delay=_cos_distance(s_hat[:, 1:] * s_hat[:, :-1].conj(), s[:, 1:] * s[:, :-1].conj(),
                                  torch.sqrt(w[:, 1:] * w[:, :-1])),
        instantaneous_frequency=_cos_distance(s_hat[..., 1:] * s_hat[..., :-1].conj(),
                                              s[..., 1:] * s[..., :-1].conj(), torch.sqrt(w[..., 1:] * w[..., :-1])),
    )


def phase_loss(
    y_hat: torch.Tensor,
    y: torch.Tensor,
    resolutions: tuple[tuple[int, int, int], ...] = PHASE_RESOLUTIONS,
    power: float = 1.0,
) -> torch.Tensor:
    """Mean over resolutions of the group-delay and instantaneous-frequency :func:`phase_distances`.

    These are APNet's anti-wrapping phase losses (Ai & Ling 2023) in a smooth ``1 − cos`` form. APNet's
    third term, the instantaneous phase itself, is left out: a 3-sample delay of the reference already
    scores 0.5–0.9 on it at 1024 / 256 (``bench/vocoder_phase.py``), so a generator cannot be asked for
    it. The result is in ``[0, 2]``: 0 for the reference itself, about 1 for an unrelated phase; a
    magnitude-only loss is blind to it.
    """
    if not resolutions:
        raise InputError("need at least one STFT resolution")
    total = 0.0
    for n_fft, hop, win in resolutions:
        d = phase_distances(y_hat, y, n_fft, hop, win, power)
        total = total + (d.group_delay + d.instantaneous_frequency) / 2
    return total / len(resolutions)


def _cos_distance(a_hat: torch.Tensor, a: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``Σ w·(1 − cos(arg â − arg a)) / Σ w`` for complex ``â``, ``a`` (the reference side is detached)."""
    a = a.detach()
    p_hat, p = a_hat.real**2 + a_hat.imag**2, a.real**2 + a.imag**2
    floor_hat, floor = 1e-20 * p_hat.detach().mean() + 1e-38, 1e-20 * p.mean() + 1e-38  # scale-free
    u = a / torch.sqrt(p + floor)
    cos = (a_hat.real * u.real + a_hat.imag * u.imag) / torch.sqrt(p_hat + floor_hat)
    return (w * (1 - cos)).sum() / w.sum()


def frame_pattern(x: torch.Tensor, hop: int) -> torch.Tensor:
    """``[B, T]`` (``T`` a multiple of ``hop``) → ``[B, hop]``: the mean of the signal's ``hop``-sample frames.

    A signal with no frame-locked structure averages towards zero (speech: about ``1/√frames`` of its
    RMS); a periodic pattern repeated every mel frame survives the average.
    """
    if x.shape[-1] % hop or x.shape[-1] == 0:
        raise InputError(f"need a positive multiple of the hop {hop} samples, got {x.shape[-1]}")
    return x.reshape(x.shape[0], -1, hop).mean(dim=1)


def frame_pattern_loss(y_hat: torch.Tensor, y: torch.Tensor, hop: int) -> torch.Tensor:
    """Mean over the batch of ``mean|P(ŷ) − P(y)| / mean|y|``, ``P`` = :func:`frame_pattern`.

    Penalises a waveform repeated every ``hop`` samples (a comb at multiples of rate / hop: the
    transposed-convolution upsampler's frame-rate buzz) relative to each segment's level.
    """
    y_hat, y = _flat(y_hat), _flat(y)
    if y_hat.shape != y.shape:
        raise InputError(f"ŷ and y must have the same shape, got {tuple(y_hat.shape)} and {tuple(y.shape)}")
    diff = (frame_pattern(y_hat, hop) - frame_pattern(y, hop)).abs().mean(dim=1)
    return (diff / (y.abs().mean(dim=1) + 1e-5)).mean()


def _flat(x: torch.Tensor) -> torch.Tensor:
    """``[B, 1, T]`` or ``[B, T]`` → ``[B, T]``."""
    if x.dim() == 3 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() != 2:
        raise InputError(f"audio must be [B, 1, T] or [B, T], got {tuple(x.shape)}")
    return x


def _same_length(a: list, b: list) -> None:
    if len(a) != len(b) or not a:
        raise InputError(f"real and fake lists must be non-empty and of equal length, got {len(a)} and {len(b)}")


__all__ = [
    "PhaseDistances",
    "discriminator_loss",
    "feature_matching_loss",
    "frame_pattern",
    "frame_pattern_loss",
    "generator_adversarial_loss",
    "mel_l1_loss",
    "multi_resolution_stft_loss",
    "phase_distances",
    "phase_loss",
]
