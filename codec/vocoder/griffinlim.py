"""Griffin-Lim vocoder on HiFi-GAN log-mels (numpy + librosa, no torch).

::

    log-mel [80, F] ─exp─► mel ─NNLS─► |STFT| [513, F] ─┤ Griffin-Lim ├─► x [F · hop]

The mel is a *magnitude* (not power) mel, so the linear magnitude is the inverse
of librosa's filterbank with ``power=1``: the pseudo-inverse, clipped at 0. That is
what ``librosa.feature.inverse.mel_to_stft`` returns for these mels (its L-BFGS-B
refinement starts from the clipped pseudo-inverse and stops there at its default
tolerance), at a tenth of its cost; an exact per-frame NNLS fits the mel perfectly
but gives spiky spectra that Griffin-Lim turns into worse audio.
Frames follow ``codec.frontend.audio.log_mel``: frame ``t`` covers samples
``t·hop − pad … t·hop − pad + n_fft`` of the audio, ``pad = (n_fft − hop) / 2``,
with no further centring. librosa is run with ``center=False``, so its inverse STFT
spans ``n_fft + (F − 1)·hop = F·hop + 2·pad`` samples, exactly the padded signal;
dropping ``pad`` samples at each end leaves ``F · hop`` samples aligned with the input.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from codec.errors import InputError
from codec.frontend.audio import DEFAULT_MEL, MelConfig, mel_filterbank


@lru_cache(maxsize=8)
def _pinv_filterbank(cfg: MelConfig) -> np.ndarray:
    """``[n_fft/2 + 1, n_mels]`` float32 pseudo-inverse of the mel filterbank (read-only, cached)."""
    p = np.linalg.pinv(mel_filterbank(cfg))
    p.setflags(write=False)
    return p


def mel_to_magnitude(log_mel: np.ndarray, cfg: MelConfig = DEFAULT_MEL) -> np.ndarray:
    """Log-mel ``[n_mels, F]`` → non-negative linear STFT magnitude ``[n_fft/2 + 1, F]`` (float32)."""
    mel = np.exp(np.asarray(log_mel, dtype=np.float32))
    return np.maximum(_pinv_filterbank(cfg) @ mel, 0.0)


def griffin_lim(log_mel: np.ndarray, cfg: MelConfig = DEFAULT_MEL, n_iter: int = 32, seed: int = 0) -> np.ndarray:
    """Log-mel ``[n_mels, F]`` → float32 waveform ``[F · hop]`` at ``cfg.sample_rate``.

    Fast Griffin-Lim (librosa, momentum 0.99) for ``n_iter`` iterations from random
    phases drawn with ``seed``: the same input gives the same output.
    """
    import librosa

    m = np.asarray(log_mel)
    if m.ndim != 2 or m.shape[0] != cfg.n_mels or m.shape[1] < 1:
        raise InputError(f"log-mel must be [{cfg.n_mels}, frames ≥ 1], got {m.shape}")
    if not np.isfinite(m).all():
        raise InputError("log-mel contains NaN or infinite values")
    if n_iter < 1:
        raise InputError(f"n_iter must be ≥ 1, got {n_iter}")
    mag = mel_to_magnitude(m, cfg)
    frames = m.shape[1]
    y = librosa.griffinlim(
        mag,
        n_iter=n_iter,
        hop_length=cfg.hop,
        win_length=cfg.win,
        n_fft=cfg.n_fft,
        window="hann",
        center=False,
        init="random",
        random_state=seed,
    )
    return np.ascontiguousarray(y[cfg.pad : cfg.pad + frames * cfg.hop], dtype=np.float32)


__all__ = ["griffin_lim", "mel_to_magnitude"]
