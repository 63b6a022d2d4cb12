"""The vocoder's post-processing as streams: DC removal and mel-consistency refinement, piece by piece.

:func:`strata.vocoder.dc.remove_dc` and :func:`strata.vocoder.refine.refine` work on a whole signal, but
each output sample depends only on a bounded neighbourhood: the DC estimate at a frame on the frame means
four frames either side, a refined block on its margins. :class:`DcStream` and :class:`RefineStream` take
the signal in pieces of any size (``push``) and give back every sample that no later input can change, so
a decoder can send a long sound while it is still computing it, with memory bounded by a window, not by
the sound. They compute exactly what the whole-signal functions compute: the same frame means, the same
smoothing and interpolation per sample, the same refinement blocks from the same samples, so the
concatenated output equals theirs bit for bit (``tests/test_vocoder_stream.py``).

Both need the signal's total length up front (a stream header gives it).
"""

from __future__ import annotations

import numpy as np
from strata.chunking import PendingArray
from strata.errors import InputError
from strata.frontend.audio import DEFAULT_MEL, MelConfig
from strata.vocoder.dc import frame_means, smooth
from strata.vocoder.refine import (
    BLOCK_FRAMES,
    DEFAULT_MOMENTUM,
    MAX_BOOST,
    MAX_CUT,
    check_momentum,
    frames_for,
    margin_frames,
    refine_block,
)


class DcStream:
    """:func:`strata.vocoder.dc.remove_dc` of a ``total``-sample signal given in pieces (float32 in, float32 out)."""

    def __init__(self, total: int, hop: int = 256, frames: int = 5) -> None:
        if total < 1 or hop < 1 or frames < 1:
            raise InputError(f"total, hop and frames must be ≥ 1, got {total}, {hop}, {frames}")
        self.total, self.hop, self.frames = total, hop, frames
        self.full = total // hop
        self.count = self.full + (total > self.full * hop)  # frames, the last one possibly partial
        self.lookahead = 2 * (frames - 1 - frames // 2) + 1  # means past a frame that its samples need
        self.means = np.empty(self.count, dtype=np.float64)
        self.known = 0  # frame means computed
        self.pending = np.empty(0, dtype=np.float32)  # received samples not given back yet
        self.start = 0  # sample index of pending[0]
        self.received = 0

    def push(self, piece: np.ndarray) -> np.ndarray:
        """Take the next samples; return those now final (possibly none)."""
        piece = np.asarray(piece, dtype=np.float32)
        if self.received + piece.size > self.total:
            raise InputError(f"more than the announced {self.total} samples")
        self.pending = np.concatenate([self.pending, piece])
        self.received += piece.size
        complete = self.received // self.hop if self.received < self.total else self.count
        if complete > self.known:  # means of the frames completed by this piece
            lo = self.known * self.hop - self.start
            hi = min(complete * self.hop, self.total) - self.start
            self.means[self.known : complete] = frame_means(self.pending[lo:hi], self.hop)
            self.known = complete
        ready = self.count if self.known == self.count else max(0, self.known - self.lookahead)
        return self._emit(min(ready * self.hop, self.total))

    def finish(self) -> np.ndarray:
        """The rest of the signal, once all ``total`` samples were pushed."""
        if self.received != self.total:
            raise InputError(f"got {self.received} of the announced {self.total} samples")
        return self._emit(self.total)

    def _emit(self, stop: int) -> np.ndarray:
        if stop <= self.start:
            return np.empty(0, dtype=np.float32)
        out = self.pending[: stop - self.start]
        self.pending = self.pending[stop - self.start :].copy()
        f0, f1 = self.start // self.hop, -(-stop // self.hop)  # frames touched, and their neighbours below
        lo, hi = max(0, f0 - 1), min(self.count, f1 + 1)
        est = smooth(self.means, np.arange(lo, hi), self.frames)
        centres = (np.arange(lo, hi) + 0.5) * self.hop
        if hi == self.count and self.count > self.full:
            centres[-1] = (self.full * self.hop + self.total) / 2
        out -= np.interp(np.arange(self.start, stop) + 0.5, centres, est).astype(np.float32)
        self.start = stop
        return out


class RefineStream:
    """:func:`strata.vocoder.refine.refine` of a ``total``-sample signal towards ``log_mel``, given in pieces."""

    def __init__(self, log_mel: np.ndarray | PendingArray, total: int, iterations: int, cfg: MelConfig = DEFAULT_MEL, *,
                 max_boost: float = MAX_BOOST, max_cut: float = MAX_CUT, block_frames: int = BLOCK_FRAMES,
                 momentum: float = DEFAULT_MOMENTUM) -> None:
        if total <= cfg.pad or iterations < 1:
            raise InputError(f"refinement needs more than {cfg.pad} samples and ≥ 1 iteration")
        self.frames = frames_for(total, cfg)
        if isinstance(log_mel, PendingArray):  # still being computed: its producer checks each piece
            m = log_mel
            if m.shape != (cfg.n_mels, self.frames):
                raise InputError(f"log-mel must be [{cfg.n_mels}, {self.frames}] for {total} samples, got {m.shape}")
        else:
            m = np.asarray(log_mel, dtype=np.float32)
            if m.shape != (cfg.n_mels, self.frames) or not np.isfinite(m).all():
                raise InputError(f"log-mel must be finite [{cfg.n_mels}, {self.frames}] for {total} samples")
        self.mel, self.total, self.iterations, self.cfg = m, total, iterations, cfg
        self.momentum = check_momentum(momentum)
        self.limits = float(np.log(max_boost)), float(np.log(max_cut))
        self.margin = margin_frames(iterations, cfg)
        self.block = max(block_frames, 4 * self.margin)  # as refine() chooses it
        self.buffer = np.empty(0, dtype=np.float32)  # unrefined samples from sample self.offset on
        self.offset = 0
        self.next_block = 0  # first frame of the next block to refine

    def push(self, piece: np.ndarray) -> np.ndarray:
        """Take the next samples; return the refined samples now final (possibly none)."""
        self.buffer = np.concatenate([self.buffer, np.asarray(piece, dtype=np.float32)])
        if self.offset + self.buffer.size > self.total:
            raise InputError(f"more than the announced {self.total} samples")
        out = []
        while self.next_block < self.frames:
            a = self.next_block
            b = min(self.frames, a + self.block)
            lo, hi = max(0, a - self.margin), min(self.frames, b + self.margin)
            hop = self.cfg.hop
            start, stop = lo * hop, (self.total if hi == self.frames else hi * hop)
            if self.offset + self.buffer.size < stop:
                break
            seg = self.buffer[start - self.offset : stop - self.offset].copy()
            seg = refine_block(seg, self.mel[:, lo:hi], self.iterations, self.cfg, self.limits, self.momentum)
            keep_stop = self.total if b == self.frames else b * hop
            out.append(seg[a * hop - start : keep_stop - start])
            self.next_block = b
            drop = max(0, b - self.margin) * hop - self.offset  # the next block's left margin stays
            if drop > 0:
                self.buffer = self.buffer[drop:].copy()
                self.offset += drop
        return np.concatenate(out) if out else np.empty(0, dtype=np.float32)

    def finish(self) -> np.ndarray:
        """Nothing is left once all samples were pushed; raises if some are missing."""
        if self.next_block < self.frames:
            raise InputError(f"got {self.offset + self.buffer.size} of the announced {self.total} samples")
        return np.empty(0, dtype=np.float32)


__all__ = ["DcStream", "RefineStream"]
