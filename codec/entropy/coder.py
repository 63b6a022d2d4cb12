"""Entropy coding of code-stack layers with ``constriction``'s ANS coder.

Each layer ``l`` of a code stack ``codes[L, H, W]`` becomes one byte chunk: the ANS coder's
compressed uint32 words, stored little-endian. The decoder of layer ``l`` knows the layers below
(``lower[l, H, W]``), so it can recompute every context the encoder used; the models are the
cached ``Categorical(LayerPrior.probabilities()[c], perfect=False)`` of the prior, identical on
both sides.

Symbol order inside a chunk (the decoder pops symbols in this order; the encoder pushes them
in reverse, because ANS is a stack):

``"none"``
    raster order, one call with the single shared model.
``"parent"``
    grouped by context: contexts in increasing id, and within one context the positions in
    raster order; one call per context present, each with that context's shared model.
``"above"``
    raster order, one symbol at a time with the cached model of its context (the decoder only
    knows row ``i - 1`` after decoding it). With cached models this beats per-row 2-D
    probability tables (``Categorical`` family + ``[W, K]`` array) by about 2.5x.
a layer with a learned context network (:mod:`strata.entropy.context`)
    raster order; the network gives every position of a row its own distribution, so the decoder
    decodes a row per call (``Categorical`` family + ``[W, K]`` array) and then knows it.

A decoded chunk must leave the ANS coder exactly in its initial (empty) state; anything else
(words left over, a different final state, a last word of zero) means the chunk is corrupt.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import constriction
import numpy as np
from strata.entropy.context import MAX_OFFSET, ContextModel, LayerNet, Networks, SourcePlanes, probabilities
from strata.entropy.prior import CodePrior
from strata.errors import ChunkCorruptedError

# constriction's submodules are attributes of the extension module, not importable packages.
AnsCoder = constriction.stream.stack.AnsCoder

# ---------------------------------------------------------------------------- helpers


def _check_layer(prior: CodePrior, layer: int) -> None:
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < prior.num_layers:
        raise ValueError(f"layer {layer!r} outside 0..{prior.num_layers - 1}")


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in shape)
    except (TypeError, ValueError):
        raise ValueError(f"shape must be (H, W), got {shape!r}") from None
    if h < 0 or w < 0:
        raise ValueError(f"shape must be non-negative, got {shape!r}")
    return h, w


def _group(ctx: np.ndarray, n_ctx: int) -> tuple[np.ndarray, list[int], list[int]]:
    """Grouping of flat context ids ``ctx[N]``: ``(order[N], contexts, counts)``.

    ``order`` lists positions sorted by context (stable, so raster order within a context);
    ``contexts`` the ids present, increasing; ``counts`` how many positions each has.
    """
    order = np.argsort(ctx, kind="stable")
    counts = np.bincount(ctx, minlength=n_ctx)
    present = np.flatnonzero(counts)
    return order, present.tolist(), counts[present].tolist()


def _check_lower(prior: CodePrior, codes: np.ndarray, layer: int) -> None:
    """``ValueError`` unless layers ``0 .. layer - 1`` of ``codes`` lie in their codebooks (a network's sources)."""
    for m in range(layer):
        k = prior.layers[m].codebook_size
        if codes[m].size and (codes[m].min() < 0 or codes[m].max() >= k):
            raise ValueError(f"layer {m} has codes outside 0..{k - 1}")


def _words_to_bytes(words: np.ndarray) -> bytes:
    return np.asarray(words, dtype=np.uint32).astype("<u4").tobytes()


ENCODE_BLOCK = 512
"""Positions per network call when the encoder runs a layer's context network (bounds its memory)."""


def _family() -> object:
    """``constriction``'s categorical family, probabilities given per symbol at each call."""
    return constriction.stream.model.Categorical(perfect=False)


def _encode_net(coder: object, net: LayerNet, layer: int, arr: np.ndarray) -> None:
    """Push layer ``layer`` of ``arr`` in reverse raster order, row blocks from the last."""
    h, w = arr.shape[1:]
    planes = SourcePlanes(net.sources, net.none_id, layer, arr, (h, w))
    family = _family()
    rows = max(1, ENCODE_BLOCK // max(w, 1))
    for i0 in reversed(range(0, h, rows)):
        i1 = min(h, i0 + rows)
        sym = np.ascontiguousarray(arr[layer, i0:i1], dtype=np.int32).reshape(-1)
        coder.encode_reverse(sym, family, net.probabilities(planes.ids(i0, i1)))  # type: ignore[attr-defined]


def _decode_net(coder: object, net: LayerNet, layer: int, low: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    planes = SourcePlanes(net.sources, net.none_id, layer, low, shape)
    family = _family()
    out = np.empty((h, w), dtype=np.int64)
    for i in range(h):
        out[i] = coder.decode(family, net.probabilities(planes.ids(i, i + 1)))  # type: ignore[attr-defined]
        planes.set_row(i, out[i])
    return out


# ---------------------------------------------------------------------------- encode / decode


def encode_layer(prior: CodePrior, layer: int, codes: np.ndarray, context: ContextModel | None = None) -> bytes:
    """Entropy-code layer ``layer`` of ``codes`` into a chunk of little-endian uint32 words.

    ``codes``: int ``[>= layer + 1, H, W]``; ``codes[layer]`` is coded, the layers below are its
    context. ``context``: a learned context model; a layer it has a network for is coded with it.
    Codes must lie in ``0 .. K_l - 1`` (``ValueError`` otherwise). Deterministic:
    the same input always gives the same bytes. Returns ``bytes`` (length a multiple of 4,
    possibly empty).
    """
    _check_layer(prior, layer)
    arr = np.asarray(codes)
    if arr.ndim != 3 or arr.shape[0] < layer + 1:
        raise ValueError(f"codes must be [>= {layer + 1}, H, W], got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"codes must be integers, got {arr.dtype}")
    lp = prior.layers[layer]
    plane = arr[layer]
    if plane.size and (plane.min() < 0 or plane.max() >= lp.codebook_size):
        raise ValueError(f"layer {layer} has codes outside 0..{lp.codebook_size - 1}")
    net = context.net(layer) if context is not None else None
    coder = AnsCoder()
    if net is not None:
        _check_lower(prior, arr, layer)
        if plane.size:
            _encode_net(coder, net, layer, arr)
        return _words_to_bytes(coder.get_compressed())
    ctx = prior.contexts(layer, arr).ravel()
    sym = np.ascontiguousarray(plane, dtype=np.int32).ravel()
    models = lp.models()
    if sym.size == 0:
        pass
    elif lp.kind == "none":
        coder.encode_reverse(sym, models[0])
    elif lp.kind == "parent":
        order, present, counts = _group(ctx, lp.num_contexts)
        ordered = np.ascontiguousarray(sym[order])
        ends = np.cumsum(counts).tolist()
        for c, n, end in zip(reversed(present), reversed(counts), reversed(ends), strict=True):
            coder.encode_reverse(ordered[end - n : end], models[c])
    else:  # "above": one symbol at a time, last position first
        enc = coder.encode_reverse
        for s, c in zip(reversed(sym.tolist()), reversed(ctx.tolist()), strict=True):
            enc(s, models[c])
    return _words_to_bytes(coder.get_compressed())


def _decode_wavefront(nets: Networks, chunks: Sequence[bytes], shape: tuple[int, int]) -> np.ndarray:
    """Decode the chunks of layers ``0 .. k-1``, every one coded with a network, together: at step ``t`` layer ``l``
    decodes row ``t - lag * l`` (:class:`~strata.entropy.context.Networks`), so one network call serves a row of
    every layer in flight. Gives exactly :func:`decode_layer`'s codes; the same checks on each chunk."""
    h, w = shape
    k, p = len(chunks), MAX_OFFSET
    coders = []
    for layer, chunk in enumerate(chunks):
        raw = bytes(chunk)
        if len(raw) % 4:
            raise ChunkCorruptedError(f"layer {layer}: chunk length {len(raw)} is not a multiple of 4")
        coders.append(AnsCoder(np.frombuffer(raw, dtype="<u4").astype(np.uint32)))
    planes = np.full((k + 1, h + 2 * p, w + 2 * p), nets.none_id, dtype=np.int64)  # plane k: "no layer"
    src = nets.sources
    cols = (p + src[:, 2])[:, None] + np.arange(w)[None, :]  # [S, W]
    family = _family()
    lag = nets.lag
    for t in range(h + lag * (k - 1)) if h * w else ():
        layers = np.arange(max(0, -(-(t - h + 1) // lag)), min(k - 1, t // lag) + 1)
        if not layers.size:  # a grid shorter than the lag leaves gaps in the wavefront
            continue
        rows = t - lag * layers
        src_layer = layers[:, None] - src[None, :, 0]
        src_layer = np.where(src_layer < 0, k, src_layer)
        ids = planes[src_layer[:, :, None], (p + rows[:, None] + src[None, :, 1])[:, :, None], cols[None]]
        logits = nets.logits(int(layers[0]), ids.transpose(0, 2, 1))
        probs = probabilities(logits)
        for a, layer in enumerate(layers.tolist()):
            try:
                planes[layer, p + rows[a], p:p + w] = coders[layer].decode(family, probs[a])
            except MemoryError:
                raise
            except Exception as exc:
                raise ChunkCorruptedError(f"layer {layer}: chunk does not decode: {exc}") from exc
    for layer, coder in enumerate(coders):
        if not coder.is_empty():
            raise ChunkCorruptedError(f"layer {layer}: chunk does not decode cleanly (coder not back in its initial "
                                      "state: corrupted or trailing data)")
    return planes[:k, p:p + h, p:p + w].copy()


def decode_layer(prior: CodePrior, layer: int, data: bytes, shape: tuple[int, int], lower: np.ndarray,
                 context: ContextModel | None = None) -> np.ndarray:
    """Decode the chunk of layer ``layer``: int64 ``[H, W]`` with values in ``0 .. K_l - 1``.

    ``data``: the chunk from :func:`encode_layer`. ``shape``: ``(H, W)``. ``lower``: the already
    decoded layers below, int ``[>= layer, H, W]`` (``[0, H, W]`` is fine for layer 0).
    ``context``: the learned context model the chunk was coded with, if any.

    Never trusts ``data``: a length that is not a multiple of 4, words the ANS coder rejects, or
    a coder that does not end exactly in its initial state raise
    :class:`~strata.errors.ChunkCorruptedError`. Run time is bounded by ``H * W`` symbols whatever
    the bytes. (Corruption is caught with high probability but not with certainty; the container
    CRC is the real integrity check.) Bad *arguments* (shape, ``lower``) raise ``ValueError``.
    """
    _check_layer(prior, layer)
    h, w = _check_shape(shape)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes, got {type(data).__name__}")
    low = np.asarray(lower)
    if low.ndim != 3 or low.shape[0] < layer or low.shape[1:] != (h, w):
        raise ValueError(f"lower must be [>= {layer}, {h}, {w}], got shape {low.shape}")
    lp = prior.layers[layer]
    net = context.net(layer) if context is not None else None
    # Contexts that do not depend on this layer (validated against the lower codebooks).
    ctx = prior.contexts(layer, low).ravel() if lp.kind != "above" and net is None else None
    if net is not None:
        _check_lower(prior, low, layer)

    raw = bytes(data)
    if len(raw) % 4:
        raise ChunkCorruptedError(f"layer {layer}: chunk length {len(raw)} is not a multiple of 4")
    words = np.frombuffer(raw, dtype="<u4").astype(np.uint32)
    models = lp.models()
    try:
        coder = AnsCoder(words)
        n = h * w
        if n == 0:
            out = np.zeros((h, w), dtype=np.int64)
        elif net is not None:
            out = _decode_net(coder, net, layer, low, (h, w))
        elif lp.kind == "none":
            out = np.asarray(coder.decode(models[0], n), dtype=np.int64).reshape(h, w)
        elif lp.kind == "parent":
            assert ctx is not None
            order, present, counts = _group(ctx, lp.num_contexts)
            parts = [coder.decode(models[c], k) for c, k in zip(present, counts, strict=True)]
            flat = np.empty(n, dtype=np.int64)
            flat[order] = np.concatenate(parts)
            out = flat.reshape(h, w)
        else:  # "above"
            dec = coder.decode
            out = np.empty((h, w), dtype=np.int64)
            prev = [lp.codebook_size] * w
            for i in range(h):
                prev = [dec(models[c]) for c in prev]
                out[i] = prev
        clean = coder.is_empty()
    except MemoryError:
        raise
    except Exception as exc:  # constriction raises ValueError/KeyError/... for bad words
        raise ChunkCorruptedError(f"layer {layer}: chunk does not decode: {exc}") from exc
    if not clean:
        raise ChunkCorruptedError(
            f"layer {layer}: chunk does not decode cleanly (coder not back in its initial state: "
            "corrupted or trailing data)"
        )
    return out


def encode_stack(prior: CodePrior, codes: np.ndarray, context: ContextModel | None = None) -> list[bytes]:
    """Encode layers ``0 .. k-1`` of ``codes`` (int ``[k, H, W]``, ``k <= L``): ``k`` chunks."""
    arr = np.asarray(codes)
    if arr.ndim != 3 or not 1 <= arr.shape[0] <= prior.num_layers:
        raise ValueError(f"codes must be [k, H, W] with 1 <= k <= {prior.num_layers}, got {arr.shape}")
    return [encode_layer(prior, layer, arr, context) for layer in range(arr.shape[0])]


def decode_stack(prior: CodePrior, chunks: Sequence[bytes], shape: tuple[int, int],
                 context: ContextModel | None = None) -> np.ndarray:
    """Decode chunks of layers ``0 .. k-1`` in order, each using the ones before: int64 ``[k, H, W]``."""
    h, w = _check_shape(shape)
    if len(chunks) > prior.num_layers:
        raise ValueError(f"{len(chunks)} chunks for a prior of {prior.num_layers} layers")
    stacked = context.stacked(len(chunks)) if context is not None and chunks else None
    if stacked is not None:
        return _decode_wavefront(stacked, chunks, (h, w))
    out = np.zeros((len(chunks), h, w), dtype=np.int64)
    for layer, chunk in enumerate(chunks):
        out[layer] = decode_layer(prior, layer, chunk, (h, w), out[:layer], context)
    return out


# ---------------------------------------------------------------------------- measurements


@dataclass(frozen=True)
class LayerReport:
    """Coding cost of one layer: ideal (cross-entropy) vs actual chunk size, plus timings."""

    layer: int
    kind: str
    symbols: int
    cross_entropy_bits: float
    coded_bits: int
    encode_s: float
    decode_s: float

    @property
    def overhead(self) -> float:
        """``coded_bits / cross_entropy_bits - 1`` (0.01 = 1 % over the ideal)."""
        return self.coded_bits / self.cross_entropy_bits - 1.0 if self.cross_entropy_bits else float("inf")

    @property
    def bits_per_symbol(self) -> float:
        return self.coded_bits / self.symbols if self.symbols else 0.0


def measure(prior: CodePrior, codes: np.ndarray, verify: bool = True) -> list[LayerReport]:
    """Encode (and decode) ``codes`` (int ``[k, H, W]``) layer by layer and report per layer.

    ``cross_entropy_bits`` comes from :meth:`CodePrior.cross_entropy_bits` (the prior's own
    probabilities), ``coded_bits`` is ``8 * len(chunk)``. With ``verify`` the decoded layers
    must equal the input (``AssertionError`` otherwise).
    """
    arr = np.asarray(codes)
    ce = prior.cross_entropy_bits(arr)
    h, w = arr.shape[1:]
    decoded = np.zeros((arr.shape[0], h, w), dtype=np.int64)
    reports = []
    for layer in range(arr.shape[0]):
        t0 = time.perf_counter()
        chunk = encode_layer(prior, layer, arr)
        t1 = time.perf_counter()
        decoded[layer] = decode_layer(prior, layer, chunk, (h, w), decoded[:layer])
        t2 = time.perf_counter()
        if verify and not np.array_equal(decoded[layer], arr[layer]):
            raise AssertionError(f"layer {layer} did not round-trip")
        reports.append(
            LayerReport(layer, prior.layers[layer].kind, h * w, float(ce[layer]), 8 * len(chunk), t1 - t0, t2 - t1)
        )
    return reports


def format_report(reports: Sequence[LayerReport]) -> str:
    """A small text table of :func:`measure` results."""
    head = ("layer", "kind", "CE bits", "coded", "over %", "bps", "enc ms", "dec ms")
    widths = (5, 6, 10, 10, 7, 6, 7, 7)
    lines = [" ".join(f"{h:>{w}}" for h, w in zip(head, widths, strict=True))]
    for r in reports:
        lines.append(
            f"{r.layer:>5} {r.kind:>6} {r.cross_entropy_bits:>10.0f} {r.coded_bits:>10d} {100 * r.overhead:>7.3f} "
            f"{r.bits_per_symbol:>6.3f} {1e3 * r.encode_s:>7.2f} {1e3 * r.decode_s:>7.2f}"
        )
    ce = sum(r.cross_entropy_bits for r in reports)
    coded = sum(r.coded_bits for r in reports)
    enc = sum(r.encode_s for r in reports)
    dec = sum(r.decode_s for r in reports)
    over = 100 * (coded / ce - 1) if ce else float("inf")
    lines.append(
        f"{'all':>5} {'':>6} {ce:>10.0f} {coded:>10d} {over:>7.3f} {'':>6} {1e3 * enc:>7.2f} {1e3 * dec:>7.2f}"
    )
    return "\n".join(lines)


__all__ = [
    "LayerReport",
    "decode_layer",
    "decode_stack",
    "encode_layer",
    "encode_stack",
    "format_report",
    "measure",
]
