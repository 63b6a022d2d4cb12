"""Griffin-Lim vocoder on HiFi-GAN log-mels (numpy and scipy.fft: no torch, no librosa).

::

    log-mel [80, F] ─exp─► mel ─pinv─► |STFT| [513, F] ─┤ Griffin-Lim ├─► x [F · hop]

The mel is a *magnitude* (not power) mel, so the linear magnitude is the inverse
of the filterbank with ``power=1``: the pseudo-inverse, clipped at 0. That is
what ``librosa.feature.inverse.mel_to_stft`` returns for these mels (its L-BFGS-B
refinement starts from the clipped pseudo-inverse and stops there at its default
tolerance), at a tenth of its cost; an exact per-frame NNLS fits the mel perfectly
but gives spiky spectra that Griffin-Lim turns into worse audio.

Griffin-Lim is the fast variant (Perraudin et al., 2013) as ``librosa.griffinlim``
runs it, reimplemented here so that serving does not pull librosa (numba,
scikit-learn): ``center=False`` frames, the periodic Hann window of
``strata.frontend.audio.hann_window``, inverse STFT by overlap-add divided by the
summed squared window (librosa's ``istft``), momentum 0.99, and librosa's initial
phases for a given ``seed``. Each iteration is linear in the number of frames.

Frames follow ``strata.frontend.audio.log_mel``: frame ``t`` covers samples
``t·hop − pad … t·hop − pad + n_fft`` of the audio, ``pad = (n_fft − hop) / 2``,
with no further centring. The inverse STFT of ``F`` frames spans
``n_fft + (F − 1)·hop = F·hop + 2·pad`` samples, exactly the padded signal;
dropping ``pad`` samples at each end leaves ``F · hop`` samples aligned with the input.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft
from strata.errors import InputError
from strata.frontend.audio import DEFAULT_MEL, MelConfig, hann_window, mel_filterbank

MOMENTUM = 0.99  # fast Griffin-Lim's momentum (librosa's default)
_BLOCK_FRAMES = 256  # STFT frames per block (keeps temporaries in cache on long inputs)


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

    Fast Griffin-Lim (momentum 0.99) for ``n_iter`` iterations from random phases
    drawn with ``seed``: the same input gives the same output.
    """
    m = np.asarray(log_mel)
    if m.ndim != 2 or m.shape[0] != cfg.n_mels or m.shape[1] < 1:
        raise InputError(f"log-mel must be [{cfg.n_mels}, frames ≥ 1], got {m.shape}")
    if not np.isfinite(m).all():
        raise InputError("log-mel contains NaN or infinite values")
    if n_iter < 1:
        raise InputError(f"n_iter must be ≥ 1, got {n_iter}")
    frames = m.shape[1]
    stft = _Stft(cfg, frames)
    # Spectra are [F, bins] here (frames outermost, so each frame's FFT reads contiguous memory).
    target = np.ascontiguousarray(mel_to_magnitude(m, cfg).T)
    angles = _random_phasors(target.shape, seed)
    angles *= target
    rebuilt, prev = np.empty_like(angles), np.zeros_like(angles)  # prev = 0: no momentum in the first iteration
    keep = MOMENTUM / (1 + MOMENTUM)
    eps = np.finfo(np.float32).tiny
    for _ in range(n_iter):
        stft.forward(stft.inverse(angles), out=rebuilt)
        for s in range(0, frames, _BLOCK_FRAMES):  # angles = (rebuilt − keep·prev) / |…| · target, in place
            a = angles[s : s + _BLOCK_FRAMES]
            np.multiply(prev[s : s + _BLOCK_FRAMES], -keep, out=a)
            a += rebuilt[s : s + _BLOCK_FRAMES]
            a /= np.abs(a) + eps
            a *= target[s : s + _BLOCK_FRAMES]
        rebuilt, prev = prev, rebuilt
    y = stft.inverse(angles)
    return np.ascontiguousarray(y[cfg.pad : cfg.pad + frames * cfg.hop], dtype=np.float32)


def _random_phasors(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Unit phasors ``[F, bins]`` complex64 with librosa's random phases for ``seed`` (drawn over ``[bins, F]``)."""
    phases = np.random.RandomState(seed).random_sample(shape[::-1]).T  # legacy generator: librosa's draw
    phases *= 2 * np.pi
    z = np.empty(shape, np.complex64)
    np.cos(phases, out=z.real)
    np.sin(phases, out=z.imag)
    return z


class _Stft:
    """``center=False`` STFT pair over ``n_frames`` frames: spectra ``[F, bins]``, signals ``[n_fft + (F − 1)·hop]``.

    ``inverse`` is librosa's ``istft``: windowed frames overlap-added, then divided by
    the summed squared window wherever that sum is above float32's smallest normal.
    Both run over blocks of ``_BLOCK_FRAMES`` frames, so the temporaries stay small
    and the memory is the signal plus the spectra, linear in ``n_frames``.
    """

    def __init__(self, cfg: MelConfig, n_frames: int) -> None:
        self.n_fft, self.hop, self.n_frames = cfg.n_fft, cfg.hop, n_frames
        self.length = cfg.n_fft + (n_frames - 1) * cfg.hop
        self.window = hann_window(cfg.win, cfg.n_fft).astype(np.float32)
        rows = self._rows()
        for s in range(0, n_frames, _BLOCK_FRAMES):
            self._overlap_add(rows, s, np.broadcast_to(self.window**2, (min(_BLOCK_FRAMES, n_frames - s), cfg.n_fft)))
        wss = rows.reshape(-1)[: self.length]
        tiny = np.finfo(np.float32).tiny
        self.inv_wss = np.where(wss > tiny, 1 / np.maximum(wss, tiny), 1).astype(np.float32)

    def forward(self, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Signal ``[length]`` → complex64 spectrum ``[F, n_fft/2 + 1]``, written into ``out``."""
        frames = np.lib.stride_tricks.sliding_window_view(y, self.n_fft)[:: self.hop]  # [F, n_fft], a view
        for s in range(0, self.n_frames, _BLOCK_FRAMES):
            out[s : s + _BLOCK_FRAMES] = scipy.fft.rfft(frames[s : s + _BLOCK_FRAMES] * self.window, axis=-1)
        return out

    def inverse(self, spec: np.ndarray) -> np.ndarray:
        """Complex spectrum ``[F, n_fft/2 + 1]`` → float32 signal ``[length]``."""
        rows = self._rows()
        for s in range(0, self.n_frames, _BLOCK_FRAMES):
            block = scipy.fft.irfft(spec[s : s + _BLOCK_FRAMES], n=self.n_fft, axis=-1).astype(np.float32, copy=False)
            block *= self.window
            self._overlap_add(rows, s, block)
        y = rows.reshape(-1)[: self.length]
        y *= self.inv_wss
        return y

    def _rows(self) -> np.ndarray:
        """Zeroed output viewed as rows of ``hop`` samples: ``[F + ceil(n_fft / hop) − 1, hop]`` float32."""
        return np.zeros((self.n_frames - 1 + -(-self.n_fft // self.hop), self.hop), np.float32)

    def _overlap_add(self, rows: np.ndarray, first: int, frames: np.ndarray) -> None:
        """Add frames ``[B, n_fft]`` (frame ``first`` onwards) at ``hop`` spacing into ``rows``.

        The ``k``-th hop-long piece of frame ``t`` lands on row ``t + k``: one vectorised
        add per piece (``ceil(n_fft / hop)`` adds) places the whole block.
        """
        for k, start in enumerate(range(0, self.n_fft, self.hop)):
            piece = frames[:, start : start + self.hop]
            rows[first + k : first + k + len(frames), : piece.shape[1]] += piece


__all__ = ["griffin_lim", "mel_to_magnitude"]
