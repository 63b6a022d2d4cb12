"""DC offset removal for vocoder output (numpy only, in place, bounded memory).

A generator trained with magnitude losses is free to add a DC offset: the 80-band mel gives the
0 Hz bin no weight, and the STFT loss sees it in a single bin. The shipped HiFi-GAN's offset follows
the loudness (0.13 of the RMS on 8 speech test clips); it costs headroom, and a player that
starts or stops such a sound clicks. :func:`remove_dc` subtracts a slowly varying estimate of it::

    x ─► mean of each hop-sample frame ─► moving average over ``frames`` frames, twice (a triangle)
      ─► linear interpolation back to every sample ─► x − estimate

The frame mean nulls every multiple of rate / hop (≈ 86 Hz at 22 050 / 256) and the triangle of
``2·frames − 1`` frames (about 0.1 s with the default 5) passes little above 10 Hz, so speech is
left nearly as it was. The largest change to a unit tone is 0.7% at 100 Hz, 1.5% at 250 Hz
and 5% near 80 Hz, where frame means alias to an inaudible sub-10 Hz wobble
(``python bench/dc_offset.py``; bounds in ``tests/test_vocoder_dc.py``). The estimate is a
function of the whole signal, computed once per call, so chunked synthesis and a single call give
the same result.
"""

from __future__ import annotations

import numpy as np
from strata.errors import InputError

BLOCK = 1 << 16  # samples corrected per step: the interpolated estimate never exists for the whole signal


def frame_means(samples: np.ndarray, hop: int) -> np.ndarray:
    """Float64 mean of each ``hop``-sample frame of ``samples`` (a last, shorter frame included)."""
    full = samples.size // hop
    means = samples[: full * hop].reshape(full, hop).mean(axis=1, dtype=np.float64)
    if samples.size > full * hop:
        means = np.append(means, samples[full * hop :].mean(dtype=np.float64))
    return means


def smooth(means: np.ndarray, idx: np.ndarray, frames: int) -> np.ndarray:
    """The DC estimate at frames ``idx``: two moving averages of ``frames`` frame means (edges repeated).

    Computed per index, so an estimate needs only the means within ``2 · (frames // 2)`` frames of it:
    :class:`strata.vocoder.stream.DcStream` evaluates it on pieces and gets the same numbers.
    """
    half, right, last = frames // 2, frames - 1 - frames // 2, len(means) - 1
    weight = 1.0 / frames

    def box(values, at: np.ndarray) -> np.ndarray:
        total = None
        for k in range(-half, right + 1):
            term = values(np.clip(at + k, 0, last)) * weight
            total = term if total is None else total + term
        return total

    return box(lambda j: box(lambda i: means[i], j), np.asarray(idx))


def remove_dc(audio: np.ndarray, hop: int = 256, frames: int = 5, block: int = BLOCK) -> np.ndarray:
    """Subtract the running DC of the float 1-D ``audio`` in place and return it (see the module doc)."""
    if audio.ndim != 1 or audio.dtype.kind != "f":
        raise InputError(f"audio must be a 1-D float array, got {audio.dtype} {audio.shape}")
    for name, value in (("hop", hop), ("frames", frames), ("block", block)):
        if value < 1:
            raise InputError(f"{name} must be >= 1, got {value}")
    n = len(audio)
    if n == 0:
        return audio
    means = frame_means(audio, hop)
    full = n // hop
    centres = (np.arange(len(means)) + 0.5) * hop
    if n > full * hop:  # the last, partial frame
        centres[-1] = (full * hop + n) / 2
    est = smooth(means, np.arange(len(means)), frames)
    for start in range(0, n, block):
        stop = min(n, start + block)
        audio[start:stop] -= np.interp(np.arange(start, stop) + 0.5, centres, est).astype(audio.dtype)
    return audio


__all__ = ["frame_means", "remove_dc", "smooth"]
