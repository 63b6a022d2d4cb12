"""Inverse STFT by windowed overlap-add, in pieces (numpy).

::

    frames S_t [bins] ─► irfft ─► × w ─► overlap-add at t·hop ─┐
                                  w² ─► overlap-add at t·hop ─┴─► ratio ─► drop the first (n_fft − hop)/2 ─► x

Frame ``t`` covers samples ``[t·hop − pad, t·hop − pad + n_fft)`` with ``pad = (n_fft − hop) / 2``: the
framing of :func:`strata.frontend.audio.log_mel` (reflect padding of ``pad``, ``center=False``), so ``F``
frames give ``F·hop`` samples. Dividing by the overlap-added squared window makes the inverse exact for
coefficients that are an STFT with the same periodic Hann window, edges included. The computation is
:func:`strata.train.nets.vocos_model.inverse_stft`'s (the training side): the inverse FFT in float32
(the network's precision), the overlap-add and its normalisation in float64.

:class:`IstftStream` takes the frames in order, any number at a time, and gives every sample as soon as no
later frame can change it (a sample is final once the frame that starts after it has been added), so a long
sound is inverted with memory for one piece plus ``n_fft`` samples, and the pieces put together equal the
inverse of all frames at once.
"""

from __future__ import annotations

import numpy as np
from strata.errors import InputError


class IstftStream:
    """Overlap-add of ``frames`` STFT frames into exactly ``frames · hop`` samples, pushed in order."""

    def __init__(self, frames: int, n_fft: int = 1024, hop: int = 256) -> None:
        if not (isinstance(n_fft, int) and isinstance(hop, int) and 0 < hop <= n_fft and n_fft % 2 == 0
                and (n_fft - hop) % 2 == 0):
            raise InputError(f"need an even n_fft ≥ hop > 0 with n_fft − hop even, got n_fft {n_fft}, hop {hop}")
        if not isinstance(frames, int) or frames < 1:
            raise InputError(f"frames must be an integer ≥ 1, got {frames!r}")
        self.frames, self.n_fft, self.hop = frames, n_fft, hop
        self.pad = (n_fft - hop) // 2
        self.window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
        self.window32 = self.window.astype(np.float32)
        self.bins = n_fft // 2 + 1
        self.total = frames * hop
        self._pushed = 0  # frames added so far
        self._base = 0  # padded position of _acc[0]; samples before base − pad have been given out
        self._acc = np.zeros(n_fft)  # overlap-added samples from position _base on
        self._env = np.zeros(n_fft)  # overlap-added squared window, same positions

    def push(self, real: np.ndarray, imag: np.ndarray) -> np.ndarray:
        """Add the next frames (``[bins, k]`` each) and return the float32 samples that became final."""
        real, imag = np.asarray(real), np.asarray(imag)
        if real.shape != imag.shape or real.ndim != 2 or real.shape[0] != self.bins:
            raise InputError(f"real and imag must both be [{self.bins}, frames], got {real.shape} and {imag.shape}")
        k = real.shape[1]
        if self._pushed + k > self.frames:
            raise InputError(f"{self._pushed + k} frames pushed, {self.frames} were announced")
        if k:
            spec = np.empty((k, self.bins), dtype=np.complex64)
            spec.real, spec.imag = real.T, imag.T
            seg = np.fft.irfft(spec, n=self.n_fft, axis=-1)  # float32: 5× faster than in float64
            seg *= self.window32
            start = self._pushed * self.hop - self._base  # offset of the first new frame in the buffers
            need = start + (k - 1) * self.hop + self.n_fft
            if need > self._acc.size:
                self._acc = np.concatenate([self._acc, np.zeros(need - self._acc.size)])
                self._env = np.concatenate([self._env, np.zeros(need - self._env.size)])
            self._overlap_add(seg, start)
            self._pushed += k
        final = self.total + self.pad if self._pushed == self.frames else self._pushed * self.hop
        return self._take(final)

    def _overlap_add(self, seg: np.ndarray, start: int) -> None:
        """Add frames ``seg`` ``[k, n_fft]`` (and their squared windows) from buffer offset ``start`` on.

        Every sample receives its frames' contributions in increasing frame order, however the frames
        were split between pushes, so the sums (and the samples) do not depend on the pushes' sizes.
        """
        k, hop, w2 = len(seg), self.hop, self.window**2
        if self.n_fft % hop:
            for i in range(k):
                lo = start + i * hop
                self._acc[lo : lo + self.n_fft] += seg[i]
                self._env[lo : lo + self.n_fft] += w2
            return
        parts = self.n_fft // hop  # each frame spans `parts` hops; the r-th goes r hops after its start
        for r in reversed(range(parts)):  # for a sample, the frame starting earliest comes first
            lo = start + r * hop
            self._acc[lo : lo + k * hop] += seg[:, r * hop : (r + 1) * hop].reshape(-1)
            self._env[lo : lo + k * hop] += np.tile(w2[r * hop : (r + 1) * hop], k)

    def finish(self) -> np.ndarray:
        """The samples still held once every frame was pushed (raises if some are missing)."""
        if self._pushed != self.frames:
            raise InputError(f"{self._pushed} of {self.frames} frames pushed")
        return self._take(self.total + self.pad)

    def _take(self, final: int) -> np.ndarray:
        """Give out the samples at padded positions below ``final`` (and at or above ``pad``)."""
        lo = max(self._base, self.pad)
        if final <= lo:
            return np.empty(0, dtype=np.float32)
        a, b = lo - self._base, final - self._base
        out = (self._acc[a:b] / np.maximum(self._env[a:b], 1e-11)).astype(np.float32)
        self._acc, self._env = self._acc[b:].copy(), self._env[b:].copy()
        self._base = final
        return out


def istft(real: np.ndarray, imag: np.ndarray, n_fft: int = 1024, hop: int = 256) -> np.ndarray:
    """All frames at once: ``[bins, F]`` coefficients → float32 ``[F · hop]`` samples."""
    stream = IstftStream(int(np.shape(real)[-1]), n_fft, hop)
    return np.concatenate([stream.push(real, imag), stream.finish()])


__all__ = ["IstftStream", "istft"]
