"""Audio quality metrics for ``strata eval audio`` (numpy; PESQ and STOI through optional packages).

::

    pesq_wb(ref, deg, rate)              PESQ wideband (ITU-T P.862.2) at 16 kHz, MOS-LQO 1.04..4.64
    stoi(ref, deg, rate)                 STOI (Taal et al. 2011) at 16 kHz, ~0..1
    log_mel_rmse(ref_mel, deg_mel)       RMSE of the normalised log-mel (HQ-VAE's Table 2)
    mel_distance(ref_mel, deg_mel)       mean |Δ log-mel| (HiFi-GAN's "mel error")
    log_spectral_distance(ref, deg, rate) LSD in dB over STFT frames (n_fft 1024, hop 256)

Waveforms are mono float ``[T]`` at ``rate`` Hz; log-mels are ``[n_mels, frames]`` as
:func:`strata.frontend.audio.log_mel` returns them (natural log of the mel magnitude clamped at
1e-5). Every function trims its two inputs to their common length (samples or frames), so a
decoder that returns a few samples more or less than the input can be scored directly, and
is deterministic. Invalid inputs raise :class:`strata.errors.InputError`.

PESQ and STOI follow docs/design.md §7 (evaluation protocol): both signals are resampled to 16 kHz with soxr
(:func:`strata.frontend.audio.resample`) and scored by the ``pesq`` (``"wb"`` mode) and
``pystoi`` (classic, non-extended STOI) packages, installed with the ``audio-eval`` extra
(``pip install 'strata-codec[audio-eval]'``; ``pesq`` compiles a C extension).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from strata.errors import InputError
from strata.frontend.audio import MAX_RATE, MIN_RATE, hann_window, resample

#: PESQ-WB and STOI are computed at this rate (docs/design.md §7 (evaluation protocol)).
EVAL_RATE = 16000
#: pystoi needs 30 frames of 256 samples at 10 kHz (hop 128) of non-silent speech: 0.3968 s.
STOI_MIN_SECONDS = 0.4
#: STFT of the log-spectral distance.
LSD_N_FFT = 1024
LSD_HOP = 256
#: Power floor of the log-spectral distance (-100 dB re full scale²), so silent bins stay finite.
LSD_POWER_FLOOR = 1e-10
_LSD_BLOCK = 1024  # STFT frames per block

_EXTRA_HINT = "install the audio-eval extra: pip install 'strata-codec[audio-eval]'"


# ------------------------------------------------------------------------------------------ validation


def _rate(rate: int) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or not MIN_RATE <= rate <= MAX_RATE:
        raise InputError(f"sample rate must be an integer in {MIN_RATE}..{MAX_RATE} Hz, got {rate!r}")
    return int(rate)


def _signal(name: str, x: np.ndarray) -> np.ndarray:
    """Check one waveform: a non-empty, finite, float numpy array ``[T]``."""
    if not isinstance(x, np.ndarray):
        raise InputError(f"{name} must be a numpy array [T], got {type(x).__name__}")
    if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
        raise InputError(f"{name} must be float samples [T], got {x.dtype} {x.shape}")
    if x.size == 0:
        raise InputError(f"{name} has no samples")
    if not np.isfinite(x).all():
        raise InputError(f"{name} contains NaN or infinite samples")
    return x


def _signals(ref: np.ndarray, deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two waveforms ``[T]`` and trim both to the shorter length."""
    _signal("ref", ref)
    _signal("deg", deg)
    n = min(ref.shape[0], deg.shape[0])
    return ref[:n], deg[:n]


def _at_eval_rate(ref: np.ndarray, deg: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate, trim to a common length, resample both to 16 kHz; float32 ``[T']`` each."""
    rate = _rate(rate)
    r, d = _signals(ref, deg)
    r, d = resample(r, rate, EVAL_RATE), resample(d, rate, EVAL_RATE)
    n = min(r.shape[0], d.shape[0])  # equal already (same input length); kept as a guard
    return r[:n], d[:n]


def _mels(ref_mel: np.ndarray, deg_mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate two log-mels ``[n_mels, frames]`` and trim both to the common number of frames (float64)."""
    for name, m in (("ref_mel", ref_mel), ("deg_mel", deg_mel)):
        if not isinstance(m, np.ndarray):
            raise InputError(f"{name} must be a numpy array [n_mels, frames], got {type(m).__name__}")
        if m.ndim != 2 or not np.issubdtype(m.dtype, np.floating):
            raise InputError(f"{name} must be a float log-mel [n_mels, frames], got {m.dtype} {m.shape}")
        if m.shape[0] == 0 or m.shape[1] == 0:
            raise InputError(f"{name} is empty: shape {m.shape}")
        if not np.isfinite(m).all():
            raise InputError(f"{name} contains NaN or infinite values")
    if ref_mel.shape[0] != deg_mel.shape[0]:
        raise InputError(f"log-mels differ in bands: {ref_mel.shape[0]} vs {deg_mel.shape[0]}")
    n = min(ref_mel.shape[1], deg_mel.shape[1])
    return ref_mel[:, :n].astype(np.float64), deg_mel[:, :n].astype(np.float64)


# ------------------------------------------------------------------------------------------ waveform metrics


def pesq_wb(ref: np.ndarray, deg: np.ndarray, rate: int) -> float:
    """Wideband PESQ (ITU-T P.862.2) of ``deg`` against ``ref``, both resampled to 16 kHz.

    Args:
        ref: reference waveform, float ``[T]`` at ``rate`` Hz.
        deg: degraded (decoded) waveform, float ``[T']`` at ``rate`` Hz; both are trimmed to
            ``min(T, T')`` samples before resampling.
        rate: sample rate of both signals, Hz.

    Returns:
        MOS-LQO, from about 1.04 (bad) to 4.64 (identical signals).

    Raises:
        InputError: not float ``[T]`` arrays, NaN/inf samples, a bad ``rate``, a silent
            reference or degraded signal, under 0.25 s of audio, or no speech found by PESQ.
        ModuleNotFoundError: ``pesq`` is not installed (the ``audio-eval`` extra).
    """
    try:
        from pesq import PesqError, pesq
    except ImportError as e:
        raise ModuleNotFoundError(f"PESQ needs the 'pesq' package; {_EXTRA_HINT}", name="pesq") from e
    r, d = _at_eval_rate(ref, deg, rate)
    # pesq divides both signals by their joint peak: all-zero input gives NaNs, and a silent
    # degraded signal makes the C code fail with "cannot convert float NaN to integer".
    for name, x in (("reference", r), ("degraded", d)):
        if not np.any(x):
            raise InputError(f"PESQ: the {name} signal is silent")
    try:
        return float(pesq(EVAL_RATE, r, d, "wb"))
    except (PesqError, ValueError) as e:  # NoUtterancesError, BufferTooShortError, NaN inside
        msg = e.args[0].decode() if e.args and isinstance(e.args[0], bytes) else str(e)
        raise InputError(f"PESQ cannot score this pair ({r.shape[0] / EVAL_RATE:.2f} s at 16 kHz): {msg}") from None


def stoi(ref: np.ndarray, deg: np.ndarray, rate: int) -> float:
    """Short-time objective intelligibility (classic STOI, not extended) at 16 kHz.

    pystoi resamples its input to 10 kHz and drops frames more than 40 dB below the loudest
    frame of ``ref`` before scoring; it needs at least ~0.4 s of non-silent speech.

    Args:
        ref: reference waveform, float ``[T]`` at ``rate`` Hz.
        deg: degraded waveform, float ``[T']`` at ``rate`` Hz (both trimmed to the shorter).
        rate: sample rate of both signals, Hz.

    Returns:
        STOI, 1.0 for identical signals, near 0 (can be slightly negative) for unrelated ones.

    Raises:
        InputError: not float ``[T]`` arrays, NaN/inf samples, a bad ``rate``, a silent
            reference, or under 0.4 s of non-silent reference audio.
        ModuleNotFoundError: ``pystoi`` is not installed (the ``audio-eval`` extra).
    """
    try:
        from pystoi import stoi as _stoi
    except ImportError as e:
        raise ModuleNotFoundError(f"STOI needs the 'pystoi' package; {_EXTRA_HINT}", name="pystoi") from e
    r, d = _at_eval_rate(ref, deg, rate)
    if r.shape[0] < STOI_MIN_SECONDS * EVAL_RATE:
        raise InputError(f"STOI needs at least {STOI_MIN_SECONDS} s of audio, got {r.shape[0] / EVAL_RATE:.3f} s")
    if not np.any(r):
        raise InputError("STOI: the reference signal is silent")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        score = float(_stoi(r.astype(np.float64), d.astype(np.float64), EVAL_RATE, extended=False))
    if any("Not enough STFT frames" in str(w.message) for w in caught):
        raise InputError(f"STOI needs at least {STOI_MIN_SECONDS} s of non-silent reference speech")
    return score


def log_spectral_distance(ref: np.ndarray, deg: np.ndarray, rate: int) -> float:
    """Log-spectral distance in dB between two waveforms, averaged over STFT frames.

    ``LSD = mean_t sqrt( mean_f (10·log10 P_ref(t, f) − 10·log10 P_deg(t, f))² )`` with
    ``P = |STFT|² + 1e-10`` (periodic Hann window of ``LSD_N_FFT`` = 1024 samples, hop
    ``LSD_HOP`` = 256, all 513 bins from DC to Nyquist, frames fully inside the signal:
    ``center=False``). The STFT is taken at the signals' own ``rate``, so LSD values are
    comparable between systems at one rate only.

    Args:
        ref: reference waveform, float ``[T]`` at ``rate`` Hz.
        deg: degraded waveform, float ``[T']`` at ``rate`` Hz (both trimmed to the shorter).
        rate: sample rate of both signals, Hz (validated; the frame size is in samples).

    Returns:
        LSD in dB, 0.0 for identical signals.

    Raises:
        InputError: not float ``[T]`` arrays, NaN/inf samples, a bad ``rate``, or fewer than
            ``LSD_N_FFT`` common samples.
    """
    _rate(rate)
    r, d = _signals(ref, deg)
    if r.shape[0] < LSD_N_FFT:
        raise InputError(f"log-spectral distance needs at least {LSD_N_FFT} samples, got {r.shape[0]}")
    window = hann_window(LSD_N_FFT, LSD_N_FFT)
    fr = np.lib.stride_tricks.sliding_window_view(r.astype(np.float64), LSD_N_FFT)[::LSD_HOP]
    fd = np.lib.stride_tricks.sliding_window_view(d.astype(np.float64), LSD_N_FFT)[::LSD_HOP]
    per_frame = []
    for s in range(0, fr.shape[0], _LSD_BLOCK):  # blocks of frames bound the memory on long signals
        pr = np.abs(np.fft.rfft(fr[s : s + _LSD_BLOCK] * window, axis=-1)) ** 2 + LSD_POWER_FLOOR
        pd = np.abs(np.fft.rfft(fd[s : s + _LSD_BLOCK] * window, axis=-1)) ** 2 + LSD_POWER_FLOOR
        diff = 10.0 * (np.log10(pr) - np.log10(pd))  # [frames, bins], dB
        per_frame.append(np.sqrt(np.mean(diff**2, axis=-1)))
    return float(np.mean(np.concatenate(per_frame)))


# ------------------------------------------------------------------------------------------ log-mel metrics


def log_mel_rmse(ref_mel: np.ndarray, deg_mel: np.ndarray, std: np.ndarray | float | None = None) -> float:
    """Root-mean-square error of the normalised log-mel, as HQ-VAE reports it (Takida et al., TMLR 2024, Table 2).

    Reading of the paper: Table 2 ("Evaluation on UrbanSound8K. RMSE is evaluated on the test
    set") scores RQ-VAE / RSQ-VAE "reconstructing the normalized log-Mel spectrogram"
    (Sect. 5.2), and Appendix F defines the preprocessing, "described in the paper (Liu et
    al., 2021)", as: "1. We extract an 80-dimensional Mel spectrogram by using a short-time
    Fourier transform (STFT) with a frame size of 1024, a hop size of 256, and a Hann window.
    2. We apply dynamic range compression to the Mel spectrogram by first clipping it to a
    minimum value of 1×10−5 and then applying a logarithmic transformation." No dataset mean
    or standard deviation is mentioned anywhere; the "normalisation" is that dynamic range
    compression, which Liu et al.'s code (taken from HiFi-GAN) calls ``spectral_normalize``
    and trains on directly with an MSE loss. It is exactly what
    :func:`strata.frontend.audio.log_mel` computes (same STFT, 80 bands, ``log(clamp(·, 1e-5))``),
    so by default this is ``sqrt(mean((ref_mel − deg_mel)²))`` over all bands and frames.

    The paper does not say how per-clip errors are pooled over the test set; average the
    per-clip values (as docs/design.md §7 (evaluation protocol) averages per-image PSNR) and say so when reporting.

    Args:
        ref_mel: reference log-mel ``[n_mels, frames]`` (natural log, as ``log_mel`` returns it).
        deg_mel: reconstructed log-mel ``[n_mels, frames']``; both trimmed to the common frames.
        std: optional per-band scale, a positive scalar or ``[n_mels]``, for scoring in a
            standardised space ``(x − mean) / std`` (a per-band mean cancels in the difference,
            so only ``std`` matters). ``None`` (default) is the paper's metric.

    Returns:
        The RMSE (0.0 for identical log-mels), in nats of the log-mel (or in units of ``std``).

    Raises:
        InputError: not float ``[n_mels, frames]`` arrays, different band counts, empty or
            NaN/inf values, or a ``std`` that is not positive, finite and scalar or ``[n_mels]``.
    """
    r, d = _mels(ref_mel, deg_mel)
    diff = r - d
    if std is not None:
        try:
            s = np.asarray(std, dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise InputError(f"std must be a number or [n_mels] numbers ({e})") from None
        if s.shape not in ((), (r.shape[0],)):
            raise InputError(f"std must be a scalar or [{r.shape[0]}] (one per band), got shape {s.shape}")
        if not (np.isfinite(s).all() and (s > 0).all()):
            raise InputError("std must be positive and finite")
        diff = diff / (s[:, None] if s.ndim else s)
    return math.sqrt(float(np.mean(diff**2)))


def mel_distance(ref_mel: np.ndarray, deg_mel: np.ndarray) -> float:
    """Mean absolute difference of two log-mels (HiFi-GAN's validation "mel error").

    Args:
        ref_mel: reference log-mel ``[n_mels, frames]`` (natural log, as ``log_mel`` returns it).
        deg_mel: log-mel of the decoded audio ``[n_mels, frames']``; both trimmed to the common frames.

    Returns:
        ``mean(|ref_mel − deg_mel|)`` over all bands and frames, 0.0 for identical log-mels.

    Raises:
        InputError: not float ``[n_mels, frames]`` arrays, different band counts, empty or NaN/inf values.
    """
    r, d = _mels(ref_mel, deg_mel)
    return float(np.mean(np.abs(r - d)))


__all__ = [
    "EVAL_RATE",
    "LSD_HOP",
    "LSD_N_FFT",
    "STOI_MIN_SECONDS",
    "log_mel_rmse",
    "log_spectral_distance",
    "mel_distance",
    "pesq_wb",
    "stoi",
]
