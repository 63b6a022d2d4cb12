"""Overlap-chunked application of a convolutional function along the last axis (or the last two).

::

    x [..., N]   │◄─ctx─►│◄──── chunk ────►│◄─ctx─►│
                 └─────────── window i ──────────┘ ─┤ fn ├─► y_i [..., n_i · scale]
                          keep the centre ─────────────────────► out[..., s_i·scale : e_i·scale]

A fully convolutional network (HiFi-GAN, the image transforms along one axis) maps ``n``
input positions to ``n · scale`` outputs, and its memory grows with ``n``. :func:`apply_chunked`
runs it on overlapping windows of at most ``chunk + 2 · context`` positions and stitches the
centres together, so that the activations held at any time are bounded by the window, not by
the input, while the result equals the single call on the whole input.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from fractions import Fraction
from numbers import Integral, Rational, Real

import numpy as np
from strata.errors import InputError


def _whole(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise InputError(f"{name} must be an integer ≥ {minimum}, got {value!r}")
    return int(value)


def _fraction(scale: Fraction | int | float) -> Fraction:
    """``scale`` as an exact fraction (a float is read as the nearest fraction with a denominator ≤ 2^20)."""
    if isinstance(scale, bool) or not isinstance(scale, Real) or not math.isfinite(scale) or scale <= 0:
        raise InputError(f"scale must be a positive int, float or Fraction, got {scale!r}")
    if isinstance(scale, Rational):
        return Fraction(int(scale.numerator), int(scale.denominator))
    return Fraction(float(scale)).limit_denominator(1 << 20)


class PendingArray:
    """An array ``[..., N]`` whose positions along the last axis arrive in pieces, computed when first read.

    ``source`` yields consecutive pieces ``[..., n_i]`` (the leading shape of ``shape``) adding up to ``N``;
    reading ``a[..., lo:hi]`` (or ``a[:, lo:hi]`` for 2-D) pulls pieces until position ``hi`` is there. A
    producer (a decoder's ``g_s`` on its windows) and consumers that read forward (a vocoder's windows, its
    refinement) are thus chained: the consumers start after the first pieces, not after the whole array.
    The values are stored as they arrive (the array is allocated once), so reads in any order give the
    same values as a complete array would. ``check`` is called on every piece as it arrives (e.g. to refuse
    non-finite values).
    """

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | type, source: Iterator[np.ndarray],
                 check: Callable[[np.ndarray], None] | None = None) -> None:
        if not shape or min(shape) < 0:
            raise InputError(f"shape must have at least one axis and no negative length, got {shape}")
        self.shape, self.ndim, self.dtype = tuple(shape), len(shape), np.dtype(dtype)
        self._data = np.empty(self.shape, dtype=self.dtype)
        self._source, self._check = source, check
        self.available = 0  # positions of the last axis received so far

    def _fill(self, stop: int) -> None:
        n = self.shape[-1]
        while self.available < min(stop, n):
            piece = next(self._source, None)
            if piece is None:
                raise RuntimeError(f"the source ended after {self.available} of {n} positions")
            piece = np.asarray(piece)
            if piece.shape[:-1] != self.shape[:-1] or self.available + piece.shape[-1] > n:
                raise RuntimeError(f"a piece of shape {piece.shape} does not continue {self.shape} at "
                                   f"{self.available}")
            if self._check is not None:
                self._check(piece)
            self._data[..., self.available : self.available + piece.shape[-1]] = piece
            self.available += piece.shape[-1]

    def __getitem__(self, key: object) -> np.ndarray:
        last = key[-1] if isinstance(key, tuple) else key
        if not isinstance(last, slice) or last.step not in (None, 1):
            raise TypeError("a PendingArray is read by slices of its last axis, e.g. a[..., lo:hi]")
        if isinstance(key, tuple) and len(key) != self.ndim and Ellipsis not in key:
            raise TypeError(f"index {key!r} does not end on the last axis of a {self.ndim}-d array")
        self._fill(self.shape[-1] if last.stop is None else last.stop)
        return self._data[key]

    def __array__(self, dtype: np.dtype | None = None, copy: bool | None = None) -> np.ndarray:
        """All of it (pulls the rest of the source)."""
        self._fill(self.shape[-1])
        return self._data if dtype is None else self._data.astype(dtype, copy=False)


def apply_chunked(
    fn: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    *,
    chunk: int,
    context: int,
    scale: Fraction | int | float = 1,
    align: int = 1,
) -> np.ndarray:
    """``fn(x)`` computed on overlapping windows of ``x``'s last axis; ``x`` ``[..., N]`` → ``[..., N · scale]``.

    ``fn`` maps an array whose last axis has ``n`` positions to one whose last axis has ``n · scale``
    (``scale`` < 1 for a downsampling encoder, e.g. 1/4; > 1 for a vocoder, e.g. 256); its leading axes
    may differ from ``x``'s but must not depend on ``n``. The input is cut into runs of ``chunk``
    positions; each run is passed to ``fn`` with up to ``context`` extra positions on either side (fewer
    at the ends of ``x``) and the outputs of those extra positions are dropped. Run boundaries and the
    context are multiples of ``align`` (``context`` is rounded up to one), so a network that downsamples
    by ``align`` sees every window at the same phase as the whole input. When
    ``N ≤ chunk + 2 · context`` ``fn`` is called once, on all of ``x``.

    Why the result is the unchunked one: a stack of convolutions (stride-1, strided or transposed,
    padded with zeros) computes every output from a bounded neighbourhood of inputs, its receptive
    field. Zero padding is the only place where a window's edge enters the computation, and it only
    changes the outputs whose receptive field crosses that edge, i.e. the outputs of the first and last
    ``receptive field`` input positions of the window. With ``context`` ≥ the network's one-sided
    receptive field (in input positions), every kept output sees exactly the inputs, and therefore the
    intermediate activations, that it sees in the single call; at the ends of ``x`` the window edge *is*
    the input's edge, padded the same way in both. The kept parts are thus equal up to floating-point
    summation order (a runtime may pick other kernels for other lengths). With too little context the
    kept outputs next to each cut differ.

    Memory: ``fn`` never sees more than ``chunk + 2 · context`` positions, windows are views of ``x``,
    and the output is allocated once (after the first call, which gives its leading shape and dtype).

    Raises :class:`InputError` for a bad ``x``, ``chunk``, ``context``, ``scale`` or ``align``
    (including lengths whose output would not be a whole number of positions) and :class:`RuntimeError`
    when ``fn`` returns a shape other than promised.
    """
    out = None
    for start, piece in iter_chunked(fn, x, chunk=chunk, context=context, scale=scale, align=align):
        if out is None:
            n_out = int(x.shape[-1] * _fraction(scale))
            if piece.shape[-1] == n_out:  # one call on all of x
                return piece
            out = np.empty((*piece.shape[:-1], n_out), dtype=piece.dtype)
        elif piece.shape[:-1] != out.shape[:-1]:
            raise RuntimeError(f"fn's leading output axes changed from {out.shape[:-1]} to {piece.shape[:-1]}")
        out[..., start : start + piece.shape[-1]] = piece
    return out


def iter_chunked(
    fn: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray | PendingArray,
    *,
    chunk: int,
    context: int,
    scale: Fraction | int | float = 1,
    align: int = 1,
) -> Iterator[tuple[int, np.ndarray]]:
    """:func:`apply_chunked`'s output as it is computed: ``(first output position, piece)`` for each run, in order.

    The pieces are exactly the parts :func:`apply_chunked` assembles (it is built on this), so a consumer that
    streams them (a vocoder's waveform, say) gets the same values as the single result, with the memory of
    one window. The argument checks and errors are :func:`apply_chunked`'s, raised before the first piece.
    ``x`` may be a :class:`PendingArray`: each window is then read when its run starts.
    """
    chunk = _whole("chunk", chunk, 1)
    context = _whole("context", context, 0)
    align = _whole("align", align, 1)
    s = _fraction(scale)
    if not isinstance(x, np.ndarray | PendingArray) or x.ndim < 1:
        raise InputError(f"x must be a numpy array [..., N] with at least one axis, got {type(x).__name__}")
    n = x.shape[-1]
    if n < 1:
        raise InputError(f"x must have at least one position on its last axis, got shape {x.shape}")
    if chunk % align:
        raise InputError(f"chunk {chunk} must be a multiple of align {align}")
    if (align * s).denominator != 1:
        raise InputError(f"align × scale must be whole so that every window maps to whole outputs, got {align} × {s}")
    if (n * s).denominator != 1:
        raise InputError(f"N × scale must be whole, got N = {n} × {s} (pad x to a multiple of {s.denominator})")
    context = -(-context // align) * align
    return _pieces(fn, x, n, chunk, context, s)


def _pieces(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, n: int, chunk: int, context: int,
            s: Fraction) -> Iterator[tuple[int, np.ndarray]]:
    def run(lo: int, hi: int) -> np.ndarray:
        y = np.asarray(fn(x[..., lo:hi]))
        want = (hi - lo) * s
        if y.ndim < 1 or y.shape[-1] != want:
            raise RuntimeError(f"fn returned shape {y.shape} for {hi - lo} positions; expected [..., {want}]")
        return y

    if n <= chunk + 2 * context:
        yield 0, run(0, n)
        return
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        lo, hi = max(0, start - context), min(n, stop + context)
        y = run(lo, hi)
        keep = int((start - lo) * s), int((stop - lo) * s)
        yield int(start * s), y[..., keep[0] : keep[1]]


def apply_tiled(
    fn: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    *,
    tile: int,
    context: int,
    scale: Fraction | int | float = 1,
    align: int = 1,
) -> np.ndarray:
    """``fn(x)`` computed on overlapping 2-D tiles of ``x``'s last two axes ``[..., H, W]``.

    :func:`apply_chunked` along the columns, and inside each column window along the rows, so ``fn``
    never sees more than ``(tile + 2 · context)²`` positions: the memory of an image network is bounded by
    the tile, not the image. ``scale``, ``align`` and ``context`` apply to both axes as in
    :func:`apply_chunked`, and so does why the result equals ``fn(x)`` (up to floating-point summation
    order) when ``context`` covers the network's receptive field. An input that fits one tile with its
    context is passed to ``fn`` whole.
    """

    def swapped(z: np.ndarray) -> np.ndarray:  # fn on a [..., W, H] view
        return np.swapaxes(fn(np.swapaxes(z, -1, -2)), -1, -2)

    def column(xw: np.ndarray) -> np.ndarray:  # fn on a column window [..., H, w], chunked along H
        if xw.ndim < 2:
            raise InputError(f"x must have at least two axes [..., H, W], got shape {xw.shape}")
        y = apply_chunked(swapped, np.swapaxes(xw, -1, -2), chunk=tile, context=context, scale=scale, align=align)
        return np.swapaxes(y, -1, -2)

    return apply_chunked(column, x, chunk=tile, context=context, scale=scale, align=align)


def receptive_field(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                    scale: Fraction | int | float = 1) -> Fraction:
    """One-sided receptive field of ``fn`` along ``x``'s last axis, in input positions (exact: a fraction when an
    output position covers less than an input one), by perturbing the middle input position of ``x`` and seeing
    which outputs move (``scale``: outputs per input position).

    Only the last axis is perturbed and measured; pass a square input to measure an image network, whose
    receptive field is the same along both axes. A context of at least this many positions makes
    :func:`apply_chunked` and :func:`apply_tiled` exact (up to summation order).
    """
    s = _fraction(scale)
    mid = x.shape[-1] // 2
    y0 = np.asarray(fn(x))
    bumped = x.copy()
    bumped[..., mid] += 1.0
    moved = np.abs(np.asarray(fn(bumped)) - y0).reshape(-1, y0.shape[-1]).max(axis=0) > 0
    changed = np.nonzero(moved)[0]
    if not len(changed):
        return Fraction(0)
    lo, hi = int(changed.min()) / s, int(changed.max() + 1) / s  # the input span of the outputs that moved
    return max(mid - lo, hi - (mid + 1), Fraction(0))


__all__ = ["PendingArray", "apply_chunked", "apply_tiled", "iter_chunked", "receptive_field"]
