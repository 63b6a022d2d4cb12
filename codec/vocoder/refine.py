"""Mel-consistency refinement: pull a vocoder's output towards the log-mel it was asked for (numpy and scipy.fft).

A vocoder trained with reconstruction losses matches the requested log-mel only on average: the
shipped HiFi-GAN network's output is 0.33 away from it in mean |log-mel| over the test clips, 0.11
after 8 iterations (``strata eval audio``). The mel
is all the decoder knows about the sound, so every iteration here makes the output agree with it
in the mel's own terms, keeping the vocoder's phase and fine structure::

    x ─► STFT (the frontend's framing) ─► |X| ─► log-mel of x ─► band gains g = exp(target − log-mel x)
      ─► gains per FFT bin (the filterbank's weights) ─► X · g ─► inverse STFT (weighted overlap-add) ─► x'

A band's gain is at most ``max_boost`` (+40 dB) over all iterations together, the momentum's
extrapolations counted: refinement corrects an envelope, it does not make sound out of the float
noise of a silent output (which would also make the result depend on that noise). Its attenuation is
at most ``max_cut`` (−20 dB) per iteration, so a buzz in a pause the mel says is silent can go. A bin
between bands takes
the average of its bands' log gains weighted by the filterbank; a bin no band covers (0 Hz, and
above ``fmax``) takes the gain of the nearest band, so silence the mel asks for is silence across
the whole spectrum. It is Griffin-Lim's projection with the mel in place of a full magnitude, started
from the network's output instead of random phase: the network supplies what the mel cannot (the
harmonics and phase), the iterations correct the envelope it got wrong. Each iteration after the
first starts from its predecessor's output pushed on along the last step (momentum α = 0.9, the
acceleration of fast Griffin-Lim): on held-out speech through the codec, Vocos + 10 iterations with it
scores PESQ-WB 2.49 at 3 layers and 2.68 at 4, against 2.43 and 2.55 without (HiFi-GAN + 8: 2.51 and
2.63, against 2.33 and 2.47), at the same speed (``bench/vocoder_codec.py``; ``docs/notes/audio-decoder.md``).

On 12 speech test clips (true mel), PESQ-WB of the shipped HiFi-GAN generator went 1.76 → 2.28 / 2.53 /
2.69 / 2.83 / 3.00 after 1 / 2 / 4 / 8 / 16 plain iterations (before momentum), at about 0.7 ms per second
of audio each
(``python bench/vocoder_bands.py --limit 12 --refine 1 2 4 16``, ``bench/speed_audio.py``).

Memory is bounded: the signal is refined in blocks of ``block_frames`` frames, each with a margin of
frames on both sides wide enough that no sample it keeps depends on the block's edges (an iteration
reaches ``n_fft`` samples on each side), so blocks and one call over the whole sound agree.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from numbers import Integral, Real

import numpy as np
import scipy.fft
from strata.errors import InputError
from strata.frontend.audio import DEFAULT_MEL, MelConfig, hann_window, mel_filterbank
from threadpoolctl import ThreadpoolController

DEFAULT_ITERATIONS = 8  # what the served HiFi-GAN runs (see the module doc for the measurements)
DEFAULT_MOMENTUM = 0.9  # fast Griffin-Lim's acceleration of the iterations (chosen on held-out clips)
MAX_ITERATIONS = 32
MAX_BOOST = 100.0  # a band's gain over all iterations together: at most +40 dB
MAX_CUT = 10.0  # a band's attenuation per iteration: at most −20 dB
BLOCK_FRAMES = 512  # frames refined per block (≈ 6 s at 22 050 Hz): fits the caches; margins cost 14% at 8 iterations
MAX_GAIN_LIMIT = 1e6  # max_boost and max_cut at most ±120 dB: gains stay far inside float32


def frames_for(samples: int, cfg: MelConfig = DEFAULT_MEL) -> int:
    """Log-mel frames of ``samples`` samples (:func:`strata.frontend.audio.log_mel`'s count)."""
    return (samples + 2 * cfg.pad - cfg.n_fft) // cfg.hop + 1


def margin_frames(iterations: int, cfg: MelConfig = DEFAULT_MEL) -> int:
    """Frames of context each side of a block so that its kept samples match one call over the whole sound."""
    return -(-(iterations * cfg.n_fft + cfg.pad) // cfg.hop) + 1


def refine(audio: np.ndarray, log_mel: np.ndarray, iterations: int, cfg: MelConfig = DEFAULT_MEL, *,
           max_boost: float = MAX_BOOST, max_cut: float = MAX_CUT, block_frames: int = BLOCK_FRAMES,
           in_place: bool = False, momentum: float = DEFAULT_MOMENTUM) -> np.ndarray:
    """``iterations`` rounds of mel-consistency refinement of ``audio`` (float ``[T]``) → float32 ``[T]``.

    ``log_mel`` is the target, ``[n_mels, frames_for(T)]`` (the frontend's log-mel of a ``T``-sample
    sound; a vocoder's ``F · hop`` samples for ``F`` frames). A band's gain is at most ``max_boost`` over
    all iterations (so float noise where the vocoder is silent is not blown up into sound) and at least
    ``1 / max_cut`` per iteration. ``in_place`` writes into ``audio`` (a float32 array) instead of a copy;
    ``iterations=0`` returns it (or a float32 copy) untouched, without looking at ``log_mel``. ``momentum``
    (0 ≤ α < 1) extrapolates each iteration's input from the last two outputs (:func:`refine_block`; 0: plain
    projections). Raises :class:`InputError` for NaN or infinite samples, a momentum outside [0, 1), and a
    ``cfg`` whose frames are not whole hops.
    """
    x = np.asarray(audio)
    m = np.asarray(log_mel)
    if x.ndim != 1 or x.dtype.kind != "f":
        raise InputError(f"audio must be a 1-D float array, got {x.dtype} {x.shape}")
    if in_place and (x is not audio or x.dtype != np.float32 or not x.flags.writeable):
        raise InputError("in_place needs a writeable float32 numpy array")
    if isinstance(iterations, bool) or not isinstance(iterations, Integral) or not 0 <= iterations <= MAX_ITERATIONS:
        raise InputError(f"iterations must be an integer in 0..{MAX_ITERATIONS}, got {iterations!r}")
    for name, value in (("max_boost", max_boost), ("max_cut", max_cut)):
        if isinstance(value, bool) or not isinstance(value, Real) or not 1.0 <= value <= MAX_GAIN_LIMIT:
            raise InputError(f"{name} must be a number in 1..{MAX_GAIN_LIMIT:g}, got {value!r}")
    if isinstance(block_frames, bool) or not isinstance(block_frames, Integral) or block_frames < 1:
        raise InputError(f"block_frames must be an integer >= 1, got {block_frames!r}")
    check_momentum(momentum)
    if cfg.n_fft % cfg.hop or (cfg.n_fft - cfg.hop) % 2:
        raise InputError(f"refinement needs n_fft a multiple of hop and n_fft − hop even (whole-hop frames), "
                         f"got n_fft {cfg.n_fft}, hop {cfg.hop}")
    if not in_place:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf and is refused below
            x = x.astype(np.float32)  # a copy
    if x.size == 0:
        return x
    if not np.isfinite(x).all():
        raise InputError("audio contains NaN or infinite values (or values beyond float32)")
    if iterations == 0:
        return x
    if x.size <= cfg.pad:
        raise InputError(f"need more than {cfg.pad} samples to refine, got {x.size}")
    frames = frames_for(x.size, cfg)
    if m.ndim != 2 or m.shape != (cfg.n_mels, frames) or m.dtype.kind not in "iuf":
        raise InputError(f"log-mel must be real [{cfg.n_mels}, {frames}] for {x.size} samples, "
                         f"got {m.dtype} {m.shape}")
    with np.errstate(over="ignore"):
        m = m.astype(np.float32, copy=False)
    if not np.isfinite(m).all():
        raise InputError("log-mel contains NaN or infinite values (or values beyond float32)")
    limits = float(np.log(max_boost)), float(np.log(max_cut))
    margin = margin_frames(iterations, cfg)
    # At least the margin, so the next block's left margin is still unwritten when it is saved; at least
    # 4 margins, so the margins never cost more than half the work (32 iterations: 131 frames a side).
    block = max(block_frames, 4 * margin)
    hop = cfg.hop
    left = None  # the original samples of the next block's left margin (this block overwrites them)
    for a in range(0, frames, block):
        b = min(frames, a + block)
        lo, hi = max(0, a - margin), min(frames, b + margin)
        start, stop = lo * hop, (x.size if hi == frames else hi * hop)  # the last block keeps the tail
        seg = x[start:stop].copy()
        if left is not None:
            seg[: left.size] = left
        keep_stop = x.size if b == frames else b * hop
        left = x[max(0, b - margin) * hop : b * hop].copy() if b < frames else None
        seg = refine_block(seg, m[:, lo:hi], iterations, cfg, limits, momentum)
        x[a * hop : keep_stop] = seg[a * hop - start : keep_stop - start]
    return x


def check_momentum(momentum: float) -> float:
    """``momentum`` as a float in [0, 1), or :class:`InputError`."""
    if isinstance(momentum, bool) or not isinstance(momentum, Real) or not 0.0 <= momentum < 1.0:
        raise InputError(f"momentum must be a number in [0, 1), got {momentum!r}")
    return float(momentum)


def refine_block(seg: np.ndarray, target: np.ndarray, iterations: int, cfg: MelConfig,
                 limits: tuple[float, float], momentum: float = DEFAULT_MOMENTUM) -> np.ndarray:
    """``iterations`` rounds on one block with its margins (float32 ``seg``, ``target`` its frames of the log-mel).

    The step of :func:`refine` and :class:`strata.vocoder.stream.RefineStream`, which cut the blocks; no checks.
    ``limits``: ``(log max_boost, log max_cut)``. With ``momentum`` α, each round after the first starts from
    ``y_n + α (y_n − y_{n−1})``, the last two rounds' outputs (the acceleration of fast Griffin-Lim, Perraudin
    et al. 2013); the block's result is the last round's output itself. A sample still depends only on the
    samples within ``n_fft`` of it per round, so the margins of :func:`margin_frames` hold.
    """
    cumulative = np.zeros((target.shape[1], cfg.n_mels), dtype=np.float32)  # each band's log gain so far
    origin = None  # each band's log level in the block as it came (the first round's measurement)
    norm = _norm(seg.size, cfg)
    previous = seg
    with _one_blas_thread():
        for i in range(iterations):
            out, step, origin = _iterate(seg, target, cfg, cumulative, origin, limits, norm)
            if momentum and i + 1 < iterations:
                seg = out + np.float32(momentum) * (out - previous)
                cumulative += np.float32(momentum) * step  # the extrapolation carries the last gains on
            else:
                seg = out
            previous = out
    return seg


@contextmanager
def _one_blas_thread() -> Iterator[None]:
    """numpy's BLAS on one thread meanwhile (see :class:`_Operators`), when called from the main thread.

    The setting is process-wide, and a limit entered and left by two threads at once could leave the
    process on the wrong count, so only the main thread changes it: a single-threaded program (the CLI, a
    script, the benches) gets the faster setting, and decodes on other threads (the service's workers,
    a caller's thread pool) run with the process's own, which the service sets once at start
    (``STRATA_BLAS_THREADS``; one thread when it runs a worker per core).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


@lru_cache(maxsize=1)
def _blas_controller() -> ThreadpoolController:
    """The thread pools of the BLAS libraries loaded (numpy's is, by the time a block is refined); building one
    scans the process's libraries, so it is built once."""
    return ThreadpoolController()


def _iterate(x: np.ndarray, target: np.ndarray, cfg: MelConfig, cumulative: np.ndarray, origin: np.ndarray | None,
             limits: tuple[float, float], norm: _Norm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One refinement of the float32 segment ``x`` towards ``target`` ``[n_mels, frames_for(len(x))]``.

    A band's gain is bounded twice: the log gains applied so far (``cumulative`` ``[frames, n_mels]``,
    updated in place) add up to at most ``log max_boost``, and the band may not end more than that above
    its level before the first round (``origin``; ``None`` in the first round, whose input's level it
    is). The second bound is what holds with momentum, whose extrapolations between rounds add energy
    that no gain accounts for when successive outputs are unrelated (noise). ``limits``: ``(log
    max_boost, log max_cut)``; ``norm``: :func:`_norm` of the segment's length. Returns the refined
    segment, this round's log gains ``[frames, n_mels]`` and ``origin``.
    """
    n, hop, pad = cfg.n_fft, cfg.hop, cfg.pad
    ops = _operators(cfg)
    window = ops.window
    xp = np.pad(x, (pad, pad), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(xp, n)[::hop]  # [F, n_fft]
    spec = scipy.fft.rfft(frames * window, axis=-1, overwrite_x=True)  # [F, bins] complex64
    mel = np.log(np.maximum(ops.mel(np.abs(spec)), np.float32(cfg.log_floor)))  # [F, n_mels]
    step = np.clip(target.T - mel, -limits[1], None)
    if origin is None:
        origin = mel
    np.minimum(step, limits[0] - cumulative, out=step)  # the boost left to this band
    np.minimum(step, limits[0] - (mel - origin), out=step)  # and to its level
    cumulative += step
    gain = ops.spread(step)
    spec *= np.exp(gain, out=gain)
    y = scipy.fft.irfft(spec, n=n, axis=-1, overwrite_x=True)
    y *= window
    count = frames.shape[0]
    acc = np.empty(xp.size, dtype=np.float32)
    acc[count * hop :] = 0  # the tail past the first columns' reach (the loop adds the later columns into it)
    acc[: count * hop].reshape(count, hop)[:] = y[:, :hop]  # the first hop-wide column of every frame ...
    for r in range(1, -(-n // hop)):  # ... then each later one, added one hop further on
        width = min(hop, n - r * hop)
        acc[r * hop : r * hop + count * hop].reshape(count, hop)[:, :width] += y[:, r * hop : r * hop + width]
    out = acc[pad : pad + x.size]
    out *= norm.inverse
    if norm.uncovered.size:  # a tail shorter than a hop that no frame reaches keeps its samples
        out[norm.uncovered] = x[norm.uncovered]
    return out, step, origin


@dataclass(frozen=True)
class _Norm:
    """The weighted overlap-add's normalisation of a segment: 1 / Σ window² per sample (0 where no frame
    reaches), and the samples no frame reaches. The same for every iteration of a block."""

    inverse: np.ndarray  # [T] float32
    uncovered: np.ndarray  # indices


def _norm(size: int, cfg: MelConfig) -> _Norm:
    n, hop, pad = cfg.n_fft, cfg.hop, cfg.pad
    window = _operators(cfg).window
    padded = size + 2 * pad
    count = (padded - n) // hop + 1
    wsum = np.zeros(padded, dtype=np.float32)
    for r in range(-(-n // hop)):
        width = min(hop, n - r * hop)
        wsum[r * hop : r * hop + count * hop].reshape(count, hop)[:, :width] += window[r * hop : r * hop + width] ** 2
    wsum = wsum[pad : pad + size]
    covered = wsum > 1e-3
    return _Norm(np.where(covered, 1 / np.where(covered, wsum, 1), 0).astype(np.float32), np.flatnonzero(~covered))


@dataclass(frozen=True)
class _Operators:
    """The window and the filterbank's two maps as dense float32 matrices.

    Both products are small (``[F, ≤513] @ [≤513, 80]`` and back) and run through BLAS: 0.8 ms for the
    two on a 582-frame block (512 and the margins of 8 iterations) on one thread, against 1.9 ms for the
    same maps as gathers and segmented sums. Between the vocoder's onnxruntime calls, a second BLAS thread
    made a whole decode slower, not faster (Vocos + 8 iterations: 19.2 against 17.2 ms per second of audio
    on two cores), so they run on one where that can be set safely (:func:`_one_blas_thread`).
    """

    window: np.ndarray  # [n_fft] float32
    analysis: np.ndarray  # [bins_used, n_mels] float32: the filterbank, transposed, up to its last nonzero bin
    synthesis: np.ndarray  # [n_mels, bins] float32: each bin's weights over the (up to) two bands its gain comes from

    def mel(self, mag: np.ndarray) -> np.ndarray:
        """``mag @ filterbank.T``: ``[F, bins]`` → ``[F, n_mels]``."""
        return mag[:, : self.analysis.shape[0]] @ self.analysis

    def spread(self, band_gain: np.ndarray) -> np.ndarray:
        """Band log gains ``[F, n_mels]`` → bin log gains ``[F, bins]``."""
        return band_gain @ self.synthesis


@lru_cache(maxsize=4)
def _operators(cfg: MelConfig) -> _Operators:
    """:class:`_Operators` of a mel configuration.

    A bin's gain is the average of its bands' log gains weighted by the filterbank, or (a bin no
    band covers) the gain of the band whose centre of mass is nearest.
    """
    fb = mel_filterbank(cfg).astype(np.float64)  # [n_mels, bins]
    if any(not np.any(row > 0) for row in fb):
        raise InputError(f"a mel band covers no FFT bin at n_fft {cfg.n_fft}: too many mels for refinement")
    bin_hz = np.fft.rfftfreq(cfg.n_fft, 1.0 / cfg.sample_rate)
    centres = (fb * bin_hz).sum(axis=1) / fb.sum(axis=1)
    bins = fb.shape[1]
    synthesis = np.zeros((fb.shape[0], bins))
    for i in range(bins):
        bands = np.flatnonzero(fb[:, i] > 0)
        if bands.size == 0:
            synthesis[np.argmin(np.abs(centres - bin_hz[i])), i] = 1.0
        elif bands.size > 2:
            raise InputError(f"FFT bin {i} lies in {bands.size} mel bands: not a triangular filterbank")
        else:
            synthesis[bands, i] = fb[bands, i] / fb[bands, i].sum()
    used = int(np.flatnonzero(fb.any(axis=0))[-1]) + 1
    ops = _Operators(
        window=hann_window(cfg.win, cfg.n_fft).astype(np.float32),
        analysis=np.ascontiguousarray(fb[:, :used].T, dtype=np.float32),
        synthesis=synthesis.astype(np.float32),
    )
    for arr in (ops.window, ops.analysis, ops.synthesis):
        arr.setflags(write=False)
    return ops


__all__ = ["DEFAULT_ITERATIONS", "DEFAULT_MOMENTUM", "MAX_BOOST", "MAX_CUT", "MAX_ITERATIONS", "check_momentum",
           "frames_for", "margin_frames", "refine", "refine_block"]
