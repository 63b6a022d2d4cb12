"""Learned context model: a small quantized network that sharpens a layer's table prior position by position.

The table prior (:mod:`strata.entropy.prior`) gives each layer one context: the parent code or the code
above. A :class:`LayerNet` reads more of what the decoder already knows at a position ``(i, j)`` of layer
``l`` — the codes of the layers below in a neighbourhood, and the codes of layer ``l`` itself in the rows
above — and adds a correction to the table's log-probabilities::

    logit[k] = base[ctx, k] + net(codes at the sources)[k]      (in 1/32 of a bit)

Rows decode top to bottom, every position of a row at once: a row's sources lie in rows above it
(same layer) or anywhere in the layers below, so one network call decodes a whole row; across layers
the decoder runs a wavefront (:class:`Networks`, :mod:`strata.entropy.coder`).

**The same probabilities on every machine.** Encoder and decoder must hand the entropy coder identical
floats. The network is quantized (int8 embeddings and weights, activations that are integers 0..255),
so every matrix product is a sum of integers below 2**24, which float32 holds exactly: the result does
not depend on the order a BLAS adds in. Everything else is elementwise float32 arithmetic (products,
sums, floors, one division per symbol), which IEEE 754 rounds the same way everywhere, and table
lookups; the softmax's ``2**(-d/32)`` is the integer table :data:`WEIGHTS`, and its sum over a row is
again a sum of integers below 2**24. No ``exp`` or ``log`` of a platform's maths library is involved.

On disk (``context.npz``, numeric arrays only): ``format`` ``[1]``; ``layers`` uint8 ``[L]`` (1 where
layer ``l`` has a network); per layer with a network ``sources_<l>`` int64 ``[S, 3]`` (layers back, row
offset, column offset), ``emb_<l>`` int8 ``[S, V, d]`` (``V - 1`` is the id of "no code there"),
``w<m>_<l>`` int8 and ``b<m>_<l>`` int64 for the ``m = 0, 1, 2`` dense layers, ``requant_<l>`` int64
``[3, 2]`` (each layer's scale as multiplier and shift: ``mult * 2**-shift``), ``base_source_<l>`` int64
``[1]`` (the source whose code indexes ``base``, or -1) and ``base_<l>`` int32 ``[C, K]``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from strata.errors import ModelIntegrityError

FORMAT_VERSION: int = 1

LOGIT_UNIT: int = 32
"""Logits are in units of ``1 / LOGIT_UNIT`` bit (the table prior's part is an integer, the network's is not)."""

EXP2_FRAC = np.array([
    1073741824, 1050733751, 1028218693, 1006186087, 984625594, 963527098, 942880699, 922676710,
    902905651, 883558244, 864625413, 846098274, 827968132, 810226483, 792865000, 775875538,
    759250125, 742980960, 727060411, 711481005, 696235434, 681316545, 666717336, 652430958,
    638450708, 624770026, 611382493, 598281827, 585461881, 572916640, 560640218, 548626854,
], dtype=np.int64)
"""``round(2**30 * 2**(-j / 32))`` for ``j = 0 .. 31``: the fractional steps of :data:`WEIGHTS`."""

MAX_DROP: int = 16 * LOGIT_UNIT
"""Logits more than 16 bits below the row's largest count as 16 bits below (weight 1 of :data:`WEIGHTS`)."""

MAX_CODES: int = 256
"""Largest codebook a network predicts (a row of :data:`WEIGHTS` then sums to at most 2**24, exact in float32)."""

MAX_OFFSET: int = 2
"""Largest row or column offset of a source."""

_EXACT32 = 1 << 24


def _weight_table() -> np.ndarray:
    d = np.arange(MAX_DROP + 1)
    return (EXP2_FRAC[d & (LOGIT_UNIT - 1)] >> ((d >> 5) + 14)).astype(np.float32)


WEIGHTS = _weight_table()
"""``floor(2**16 * 2**(-d/32))`` for every drop ``d`` in ``0 .. MAX_DROP``: 65536 down to 1 (float32, exact)."""
WEIGHTS.setflags(write=False)


def probabilities(logits: np.ndarray) -> np.ndarray:
    """The probabilities handed to the entropy coder for logits ``[N, K]`` (1/32 bit, float32): float64 ``[N, K]``,
    every entry > 0. A symbol's weight is ``WEIGHTS[d]`` for its drop ``d`` below the row's largest logit
    (truncated to an integer, capped at :data:`MAX_DROP`); its probability is its weight over the row's sum of
    weights, an exact integer sum, in one correctly rounded float32 division."""
    v = np.asarray(logits, dtype=np.float32)
    drop = v.max(axis=-1, keepdims=True) - v
    np.minimum(drop, MAX_DROP, out=drop)
    w = WEIGHTS[drop.astype(np.intp)]
    w /= w.sum(axis=-1, keepdims=True)
    return w.astype(np.float64)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ModelIntegrityError(msg)


@dataclass(frozen=True, eq=False)
class LayerNet:
    """The quantized network of one layer (see the module docstring); validated on construction.

    ``sources``: int64 ``[S, 3]`` rows ``(back, di, dj)``: the code of layer ``l - back`` at ``(i + di, j + dj)``;
    ``back = 0`` (this layer) needs ``di < 0``. ``emb``: int8 ``[S, V, d]``. ``weights``: three int8
    ``[n_in, n_out]`` matrices (``n_in`` of the first is ``S * d``, the last has ``K`` outputs). ``biases``:
    int64 ``[n_out]``. ``requant``: int64 ``[3, 2]``: each layer's ``(multiplier, shift)``; the first two give
    uint8 activations (ReLU and clip at 255), the last gives logits in 1/32 bit. ``base_source``: the index of
    the source whose code selects the row of ``base`` (int32 ``[V, K]``), or -1 for a single row ``[1, K]``.
    """

    sources: np.ndarray
    emb: np.ndarray
    weights: tuple[np.ndarray, np.ndarray, np.ndarray]
    biases: tuple[np.ndarray, np.ndarray, np.ndarray]
    requant: np.ndarray
    base_source: int
    base: np.ndarray

    def __post_init__(self) -> None:
        src = np.asarray(self.sources)
        _check(src.ndim == 2 and src.shape[1] == 3 and src.shape[0] >= 1 and src.dtype.kind in "iu",
               f"sources must be an integer [S, 3] array, got {src.dtype} {src.shape}")
        _check(bool(np.all(src[:, 0] >= 0)), "a source's layer offset must be >= 0")
        _check(bool(np.all(np.abs(src[:, 1:]) <= MAX_OFFSET)),
               f"source offsets must lie in -{MAX_OFFSET}..{MAX_OFFSET}")
        _check(bool(np.all((src[:, 0] > 0) | (src[:, 1] < 0))),
               "a source in the layer itself must lie in a row above (decoding is row by row)")
        emb = self.emb
        _check(isinstance(emb, np.ndarray) and emb.dtype == np.int8 and emb.ndim == 3 and emb.shape[0] == len(src)
               and emb.shape[1] >= 2 and emb.shape[2] >= 1,
               f"emb must be int8 [S, V, d], got {getattr(emb, 'shape', '?')}")
        _check(len(self.weights) == 3 and len(self.biases) == 3, "a layer network has three dense layers")
        n_in = emb.shape[0] * emb.shape[2]
        for m, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            _check(isinstance(w, np.ndarray) and w.dtype == np.int8 and w.ndim == 2 and w.shape[0] == n_in,
                   f"w{m} must be int8 [{n_in}, n], got {getattr(w, 'dtype', '?')} {getattr(w, 'shape', '?')}")
            _check(isinstance(b, np.ndarray) and b.dtype == np.int64 and b.shape == (w.shape[1],),
                   f"b{m} must be int64 [{w.shape[1]}]")
            n_in = w.shape[1]
        k = n_in
        rq = self.requant
        _check(isinstance(rq, np.ndarray) and rq.dtype == np.int64 and rq.shape == (3, 2),
               "requant must be int64 [3, 2]")
        _check(bool(np.all((rq[:, 0] >= 1) & (rq[:, 0] < 1 << 31) & (rq[:, 1] >= 1) & (rq[:, 1] <= 62))),
               "requant multipliers must lie in 1..2**31-1 and shifts in 1..62")
        base = self.base
        rows = emb.shape[1] if self.base_source >= 0 else 1
        _check(-1 <= self.base_source < len(src), f"base_source {self.base_source} names no source")
        _check(2 <= k <= MAX_CODES, f"a network predicts 2..{MAX_CODES} codes, not {k}")
        _check(isinstance(base, np.ndarray) and base.dtype == np.int32 and base.shape == (rows, k),
               f"base must be int32 [{rows}, {k}], got {getattr(base, 'dtype', '?')} {getattr(base, 'shape', '?')}")
        _check(bool(np.all(base <= 0)) and int(base.min()) >= -64 * LOGIT_UNIT, "base logits must lie in -64..0 bits")
        # Every product must be a sum of integers below 2**24 (exact in float32 in any order).
        x_max = int(np.abs(emb.astype(np.int64)).max())
        for m, w in enumerate(self.weights):
            bound = w.shape[0] * x_max * int(np.abs(w.astype(np.int64)).max(initial=0))
            _check(bound < _EXACT32, f"layer {m}'s sums can reach {bound}, over 2**24: not exact in float32")
            x_max = 255
        object.__setattr__(self, "sources", src.astype(np.int64))

    @property
    def none_id(self) -> int:
        """The id of "no code there" (outside the grid, or a layer below 0)."""
        return int(self.emb.shape[1]) - 1

    @property
    def codebook_size(self) -> int:
        return int(self.base.shape[1])

    @property
    def hidden(self) -> tuple[int, int]:
        return int(self.weights[0].shape[1]), int(self.weights[1].shape[1])

    def scale(self, m: int) -> float:
        """Layer ``m``'s rescaling factor ``mult * 2**-shift`` (exact in float64)."""
        return float(self.requant[m, 0]) * 2.0 ** -int(self.requant[m, 1])

    def logits(self, ids: np.ndarray) -> np.ndarray:
        """Logits (1/32 bit, float32) ``[N, K]`` for source codes ``ids`` int ``[N, S]`` (``none_id`` where there is
        none), as :meth:`Networks.logits` computes them."""
        engine = self.__dict__.get("_engine")
        if engine is None:
            engine = Networks([self])
            object.__setattr__(self, "_engine", engine)
        return engine.logits(0, ids[None])[0]

    def probabilities(self, ids: np.ndarray) -> np.ndarray:
        """The coder's probabilities float64 ``[N, K]`` (:func:`probabilities` of :meth:`logits`)."""
        return probabilities(self.logits(ids))


class SourcePlanes:
    """The codes the ``sources`` (``[S, 3]``, as in :class:`LayerNet`) of layer ``layer`` read, padded with the
    "no code" id ``none_id`` so that any offset slices in bounds.

    ``codes``: int ``[>= layer, H, W]`` (the layers below ``layer``; rows of ``layer`` itself are added with
    :meth:`set_row` as they decode, or all at once from ``codes[layer]`` when present).
    """

    def __init__(self, sources: np.ndarray, none_id: int, layer: int, codes: np.ndarray,
                 shape: tuple[int, int]) -> None:
        self.sources = np.asarray(sources, dtype=np.int64)
        h, w = shape
        p = MAX_OFFSET
        self.planes: dict[int, np.ndarray] = {}
        for back in sorted({int(b) for b in self.sources[:, 0]}):
            plane = np.full((h + 2 * p, w + 2 * p), none_id, dtype=np.int64)
            src = layer - back
            if back == 0 and codes.shape[0] > layer:
                plane[p:p + h, p:p + w] = codes[layer]
            elif back > 0 and src >= 0:
                plane[p:p + h, p:p + w] = codes[src]
            self.planes[back] = plane
        self.h, self.w = h, w

    def set_row(self, i: int, row: np.ndarray) -> None:
        if 0 in self.planes:
            self.planes[0][MAX_OFFSET + i, MAX_OFFSET:MAX_OFFSET + self.w] = row

    def ids(self, i0: int, i1: int) -> np.ndarray:
        """Source codes of rows ``i0 .. i1 - 1``, raster order: int64 ``[(i1 - i0) * W, S]``."""
        p, w = MAX_OFFSET, self.w
        cols = [self.planes[int(b)][p + i0 + int(di):p + i1 + int(di), p + int(dj):p + int(dj) + w]
                for b, di, dj in self.sources]
        return np.stack(cols, axis=-1).reshape(-1, len(cols))


class Networks:
    """The networks of one or more layers, ready to run; several layers run together in the decoder's wavefront.

    A layer's row depends on rows above it in its own layer and on rows near it in the layers below, so layer
    ``l`` can decode row ``t - lag * l`` at step ``t``: ``H + lag * (k - 1)`` steps decode ``k`` layers, each step
    one network call for up to ``k`` rows (instead of ``k * H`` calls). The layers' networks must share their
    hidden widths and embedding shape. Their sources are merged: a layer's weights for a source it lacks are
    zero, which leaves its outputs unchanged. Each layer keeps its own scales and table.

    One layer's computation, for the codes ``ids`` at its sources (float32 throughout; see the module docstring
    for why every machine gets the same numbers)::

        x = emb[ids]                                       (integers, |x| <= 127)
        h = clip(floor(x @ w0 * s0 + (b0 * s0 + 1/2)), 0, 255)
        h = clip(floor(h @ w1 * s1 + (b1 * s1 + 1/2)), 0, 255)
        logits = h @ w2 * s2 + (base[ctx] + b2 * s2)       (s_m = mult_m * 2**-shift_m; constants rounded once)
    """

    def __init__(self, nets: Sequence[LayerNet]) -> None:
        if not nets:
            raise ValueError("no networks")
        if len({net.hidden for net in nets}) != 1 or len({net.emb.shape[1:] for net in nets}) != 1 or len(
                {net.codebook_size for net in nets}) != 1:
            raise ValueError("the layers' networks differ in shape")
        merged: list[tuple[int, int, int]] = []
        for net in nets:
            for row in map(tuple, net.sources.tolist()):
                if row not in merged:
                    merged.append(row)
        self.sources = np.array(merged, dtype=np.int64)
        s, (v, d), k = len(merged), nets[0].emb.shape[1:], len(nets)
        self.none_id = v - 1
        emb = np.zeros((k, s, v, d), dtype=np.float32)
        w0 = np.zeros((k, s * d, nets[0].hidden[0]), dtype=np.float32)
        for layer, net in enumerate(nets):
            for i, row in enumerate(map(tuple, net.sources.tolist())):
                j = merged.index(row)
                emb[layer, j] = net.emb[i]
                w0[layer, j * d:(j + 1) * d] = net.weights[0][i * d:(i + 1) * d]
        self._emb = emb.reshape(k * s * v, d)
        self._w = [w0, *(np.stack([net.weights[m] for net in nets]).astype(np.float32) for m in (1, 2))]
        self._scale = [np.array([net.scale(m) for net in nets], dtype=np.float32)[:, None, None] for m in range(3)]
        self._shift = [np.stack([net.biases[m] * net.scale(m) + 0.5 for net in nets]).astype(np.float32)[:, None, :]
                       for m in range(2)]
        rows = max(net.base.shape[0] for net in nets)
        offset = np.zeros((k, rows, nets[0].codebook_size), dtype=np.float32)
        for layer, net in enumerate(nets):
            offset[layer, : net.base.shape[0]] = net.base + net.biases[2] * net.scale(2)
        self._offset = offset
        self._base_col = np.array([merged.index(tuple(net.sources[net.base_source].tolist()))
                                   if net.base_source >= 0 else -1 for net in nets])
        self._s, self._v = s, v
        self.lag = max([1, *(-(-(di + 1) // back) for back, di, _ in merged if back > 0)])

    def logits(self, first: int, ids: np.ndarray) -> np.ndarray:
        """Logits float32 ``[A, N, K]`` of ``N`` positions in each of the layers ``first .. first + A - 1`` (counted
        among this object's layers), from the codes at their merged sources ``ids`` int ``[A, N, S]``."""
        a, n, s = ids.shape
        sl = slice(first, first + a)
        layer = np.arange(first, first + a)
        x = self._emb[((layer[:, None, None] * s + np.arange(s)) * self._v + ids).reshape(-1)].reshape(a, n, -1)
        for m in range(2):
            y = x @ self._w[m][sl]
            y *= self._scale[m][sl]
            y += self._shift[m][sl]
            x = np.clip(np.floor(y, out=y), 0.0, 255.0, out=y)
        y = x @ self._w[2][sl]
        y *= self._scale[2][sl]
        cols = self._base_col[sl]
        ctx = np.where(cols[:, None] >= 0, ids[np.arange(a), :, np.maximum(cols, 0)], 0)
        y += self._offset[layer[:, None], ctx]
        return y


@dataclass(frozen=True, eq=False)
class ContextModel:
    """Per-layer integer networks (``None`` for a layer coded with its table prior alone)."""

    nets: tuple[LayerNet | None, ...]
    _stacked: dict[int, Networks | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        _check(len(self.nets) >= 1, "a context model needs at least one layer")

    def stacked(self, k: int) -> Networks | None:
        """Layers ``0 .. k-1`` as one :class:`Networks` (cached), or ``None`` unless each has a network of one
        shape."""
        if k not in self._stacked:
            nets = self.nets[:k]
            try:
                self._stacked[k] = Networks(nets) if all(n is not None for n in nets) else None  # type: ignore[arg-type]
            except ValueError:
                self._stacked[k] = None
        return self._stacked[k]

    @property
    def num_layers(self) -> int:
        return len(self.nets)

    def net(self, layer: int) -> LayerNet | None:
        return self.nets[layer] if 0 <= layer < len(self.nets) else None

    def check_against(self, codebook_sizes: Sequence[int]) -> None:
        """Raise :class:`ModelIntegrityError` unless every network fits a model with these codebook sizes."""
        _check(len(codebook_sizes) == self.num_layers,
               f"context model has {self.num_layers} layers, the model {len(codebook_sizes)}")
        for layer, net in enumerate(self.nets):
            if net is None:
                continue
            _check(net.codebook_size == codebook_sizes[layer], f"layer {layer}: network predicts {net.codebook_size} "
                   f"codes, the codebook has {codebook_sizes[layer]}")
            for back, _, _ in net.sources:
                src = layer - int(back)
                _check(src < 0 or codebook_sizes[src] <= net.none_id,
                       f"layer {layer}: layer {src}'s codes do not fit the embedding ({net.none_id} ids)")

    def cross_entropy_bits(self, codes: np.ndarray) -> np.ndarray:
        """Ideal code length of each layer of ``codes`` int ``[k, H, W]`` under this model's networks: float64 ``[k]``
        (NaN for a layer without a network)."""
        arr = np.asarray(codes, dtype=np.int64)
        out = np.full(arr.shape[0], np.nan)
        for layer in range(arr.shape[0]):
            net = self.net(layer)
            if net is None:
                continue
            planes = SourcePlanes(net.sources, net.none_id, layer, arr, arr.shape[1:])
            p = net.probabilities(planes.ids(0, arr.shape[1]))
            sym = arr[layer].reshape(-1)
            out[layer] = -np.log2(p[np.arange(sym.size), sym]).sum()
        return out

    # ------------------------------------------------------------------ serialisation

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {
            "format": np.array([FORMAT_VERSION], dtype=np.int64),
            "layers": np.array([net is not None for net in self.nets], dtype=np.uint8),
        }
        for layer, net in enumerate(self.nets):
            if net is None:
                continue
            arrays[f"sources_{layer}"] = net.sources.astype(np.int64)
            arrays[f"emb_{layer}"] = net.emb
            for m in range(3):
                arrays[f"w{m}_{layer}"] = net.weights[m]
                arrays[f"b{m}_{layer}"] = net.biases[m]
            arrays[f"requant_{layer}"] = net.requant
            arrays[f"base_source_{layer}"] = np.array([net.base_source], dtype=np.int64)
            arrays[f"base_{layer}"] = net.base
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "wb") as fh:
            fh.write(self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ContextModel:
        """Read a model written by :meth:`save`; anything missing or malformed raises :class:`ModelIntegrityError`."""
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ModelIntegrityError(f"cannot read context model {os.fspath(path)!r}: {exc}") from exc
        return cls.from_bytes(data, os.fspath(path))

    @classmethod
    def from_bytes(cls, data: bytes, name: str = "<bytes>") -> ContextModel:
        try:
            with np.load(io.BytesIO(bytes(data)), allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except Exception as exc:  # numpy raises many types for junk
            raise ModelIntegrityError(f"{name}: unreadable context model: {exc}") from exc
        try:
            fmt = arrays["format"]
            _check(fmt.shape == (1,) and int(fmt[0]) == FORMAT_VERSION,
                   f"unsupported format (expected {FORMAT_VERSION})")
            flags = arrays["layers"]
            _check(flags.ndim == 1 and flags.size >= 1 and flags.dtype == np.uint8, "malformed 'layers' entry")
            nets: list[LayerNet | None] = []
            for layer, flag in enumerate(flags.tolist()):
                if not flag:
                    nets.append(None)
                    continue
                bs = arrays[f"base_source_{layer}"]
                _check(bs.shape == (1,) and bs.dtype.kind == "i", f"malformed base_source_{layer}")
                nets.append(LayerNet(
                    sources=arrays[f"sources_{layer}"], emb=arrays[f"emb_{layer}"],
                    weights=tuple(arrays[f"w{m}_{layer}"] for m in range(3)),  # type: ignore[arg-type]
                    biases=tuple(arrays[f"b{m}_{layer}"] for m in range(3)),  # type: ignore[arg-type]
                    requant=arrays[f"requant_{layer}"], base_source=int(bs[0]), base=arrays[f"base_{layer}"]))
            return cls(tuple(nets))
        except KeyError as exc:
            raise ModelIntegrityError(f"{name}: context model lacks entry {exc}") from None
        except ModelIntegrityError as exc:
            raise ModelIntegrityError(f"{name}: {exc}") from None


__all__ = ["EXP2_FRAC", "LOGIT_UNIT", "MAX_DROP", "WEIGHTS", "ContextModel", "LayerNet", "Networks", "SourcePlanes",
           "probabilities"]
