"""Context-conditional priors over residual-VQ code stacks.

A code stack is an integer array ``codes`` of shape ``[L, H, W]``: ``L`` residual layers, each
code of layer ``l`` in ``0 .. K_l - 1``, on an ``H x W`` latent grid. Every layer has a
:class:`LayerPrior`, a table of integer frequencies ``freqs[C, K_l]`` indexed by a *context id*
that the decoder can compute before it decodes the symbol:

``"none"``
    one context (a static categorical distribution).
``"parent"``
    the code of layer ``l - 1`` at the same position; ``C = K_{l-1}`` (only for ``l >= 1``).
``"above"``
    the code of the same layer one row up (row ``i - 1``, same column); row 0 uses the extra
    context id ``K_l`` ("no neighbour"), so ``C = K_l + 1``.

Every frequency is ``>= 1`` and every row sums to exactly :data:`TOTAL` (``2**16``). The floats
handed to the entropy coder are derived by one function, :meth:`LayerPrior.probabilities`
(``freqs / TOTAL`` in float64, exact because ``TOTAL`` is a power of two), so encoder and
decoder see bit-identical probabilities on every platform.

The on-disk format (:meth:`CodePrior.save`) is an ``.npz`` of plain numeric arrays (no pickles):

* ``format``: int64 ``[1]``, :data:`FORMAT_VERSION`;
* ``kinds``: uint8 ``[L]``, ``0 = none, 1 = parent, 2 = above`` (:data:`KIND_IDS`);
* ``freqs_<l>``: uint32 ``[C_l, K_l]`` for ``l = 0 .. L-1``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from strata.errors import ModelIntegrityError

TOTAL: int = 1 << 16
"""Every row of a frequency table sums to exactly this (16-bit precision)."""

KINDS: tuple[str, ...] = ("none", "parent", "above")
"""Context kinds; the position in this tuple is the id stored in files."""

KIND_IDS: dict[str, int] = {kind: i for i, kind in enumerate(KINDS)}

FORMAT_VERSION: int = 1

MAX_CODEBOOK: int = 1 << 12
"""Largest supported codebook size (each of the ``K`` symbols needs a frequency ``>= 1``)."""

SMOOTHING_GRID: tuple[float, ...] = tuple(float(2.0 ** (k / 2)) for k in range(-2, 17))
"""Back-off strengths ``a`` tried by :meth:`CodePrior.fit` (0.5 ... 256, log-spaced)."""

DEFAULT_SMOOTHING: float = 8.0
"""Back-off strength used when :meth:`CodePrior.fit` gets no held-out data."""

STATIC_PSEUDOCOUNT: float = 0.5
"""Add-``0.5`` smoothing of each layer's static (context-free) distribution."""


def num_contexts(kind: str, layer: int, codebook_sizes: Sequence[int]) -> int:
    """Number of context ids ``C`` of layer ``layer`` for context kind ``kind``.

    Raises ``ValueError`` for an unknown kind or ``"parent"`` on layer 0.
    """
    if kind == "none":
        return 1
    if kind == "parent":
        if layer < 1:
            raise ValueError("context kind 'parent' needs a layer below (layer >= 1)")
        return int(codebook_sizes[layer - 1])
    if kind == "above":
        return int(codebook_sizes[layer]) + 1
    raise ValueError(f"unknown context kind {kind!r}; expected one of {KINDS}")


def layer_contexts(kind: str, layer: int, codes: np.ndarray, codebook_size: int) -> np.ndarray:
    """Context ids of layer ``layer``: int64 ``[H, W]``.

    ``codes`` is ``[>= layer + 1, H, W]`` for ``"above"`` (it reads ``codes[layer]``), and
    ``[>= layer, H, W]`` otherwise (``"parent"`` reads ``codes[layer - 1]``). ``codebook_size``
    is ``K_layer`` (the "no neighbour" id of ``"above"``). Values are not range-checked here.
    """
    shape = codes.shape[1:]
    if kind == "none":
        return np.zeros(shape, dtype=np.int64)
    if kind == "parent":
        return codes[layer - 1].astype(np.int64, copy=True)
    if kind == "above":
        ctx = np.empty(shape, dtype=np.int64)
        ctx[:1] = codebook_size
        ctx[1:] = codes[layer, :-1]
        return ctx
    raise ValueError(f"unknown context kind {kind!r}; expected one of {KINDS}")


def quantize_probabilities(probs: np.ndarray, total: int = TOTAL) -> np.ndarray:
    """Integer frequencies for float probabilities, deterministically.

    ``probs``: float ``[C, K]``, non-negative, rows with a positive finite sum (rows are
    renormalised). Returns uint32 ``[C, K]``, every entry ``>= 1``, every row summing to exactly
    ``total``: each symbol gets ``1 + floor(p * (total - K))``, and the remaining units go to the
    largest fractional parts (ties to the lower symbol index), i.e. largest-remainder rounding.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"probabilities must be [C, K], got shape {p.shape}")
    n_ctx, k = p.shape
    if k > total:
        raise ValueError(f"cannot give {k} symbols a frequency >= 1 out of {total}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("probabilities must be finite and non-negative")
    sums = p.sum(axis=1, keepdims=True)
    if np.any(sums <= 0):
        raise ValueError("every row of probabilities needs a positive sum")
    budget = total - k
    scaled = (p / sums) * budget
    base = np.floor(scaled)
    frac = scaled - base
    base_i = base.astype(np.int64)
    deficit = budget - base_i.sum(axis=1)  # in [0, K] when rows sum to 1 within rounding
    order = np.argsort(-frac, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(k, dtype=order.dtype)[None, :].repeat(n_ctx, 0), axis=1)
    freqs = 1 + base_i + (rank < deficit[:, None])
    # Guard against pathological rounding: fix any leftover on the largest entry of the row.
    err = total - freqs.sum(axis=1)
    if np.any(err != 0):
        top = np.argmax(freqs, axis=1)
        freqs[np.arange(n_ctx), top] += err
    if np.any(freqs < 1) or np.any(freqs.sum(axis=1) != total):  # pragma: no cover - invariant
        raise AssertionError("frequency quantisation broke its invariant")
    return freqs.astype(np.uint32)


@dataclass(frozen=True, eq=False)
class LayerPrior:
    """The entropy model of one layer: integer frequencies per context.

    ``kind``: one of :data:`KINDS`. ``freqs``: uint32 ``[C, K]``, every entry ``>= 1``, every row
    summing to exactly :data:`TOTAL`. The array is copied and made read-only on construction.
    A malformed table raises :class:`~strata.errors.ModelIntegrityError`. (Whether ``C`` matches
    ``kind`` is checked by :class:`CodePrior`, which knows the neighbouring layers.)
    """

    kind: str
    freqs: np.ndarray
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in KIND_IDS:
            raise ModelIntegrityError(f"unknown context kind {self.kind!r}; expected one of {KINDS}")
        f = self.freqs
        if not isinstance(f, np.ndarray):
            raise ModelIntegrityError(f"frequency table must be a numpy array, got {type(f).__name__}")
        if f.dtype != np.uint32:
            raise ModelIntegrityError(f"frequency table must be uint32, got {f.dtype}")
        if f.ndim != 2:
            raise ModelIntegrityError(f"frequency table must be [C, K], got shape {f.shape}")
        n_ctx, k = f.shape
        if n_ctx < 1:
            raise ModelIntegrityError("frequency table has no contexts")
        if not 2 <= k <= MAX_CODEBOOK:
            raise ModelIntegrityError(f"codebook size {k} outside 2..{MAX_CODEBOOK}")
        if f.min() < 1:
            raise ModelIntegrityError("frequency table has a zero entry (every symbol needs >= 1)")
        sums = f.sum(axis=1, dtype=np.int64)
        if np.any(sums != TOTAL):
            bad = int(np.flatnonzero(sums != TOTAL)[0])
            raise ModelIntegrityError(f"row {bad} of the frequency table sums to {int(sums[bad])}, not {TOTAL}")
        frozen = np.array(f, dtype=np.uint32, order="C", copy=True)
        frozen.setflags(write=False)
        object.__setattr__(self, "freqs", frozen)

    @property
    def num_contexts(self) -> int:
        """``C``, the number of context ids."""
        return int(self.freqs.shape[0])

    @property
    def codebook_size(self) -> int:
        """``K``, the alphabet size of the layer."""
        return int(self.freqs.shape[1])

    def probabilities(self) -> np.ndarray:
        """The probabilities both encoder and decoder use: float64 ``[C, K]`` (read-only).

        Exactly ``freqs / TOTAL`` (``TOTAL`` is a power of two, so the division is exact and the
        result is bit-identical everywhere); rows sum to 1.
        """
        probs = self._cache.get("probs")
        if probs is None:
            probs = self.freqs.astype(np.float64) / float(TOTAL)
            probs.setflags(write=False)
            self._cache["probs"] = probs
        return probs

    def code_bits(self) -> np.ndarray:
        """``−log₂`` of :meth:`probabilities`: float32 ``[C, K]``, each code's price in bits per context
        (read-only, computed once; the RD-optimised search reads it for every image)."""
        bits = self._cache.get("bits")
        if bits is None:
            bits = (-np.log2(self.probabilities())).astype(np.float32)
            bits.setflags(write=False)
            self._cache["bits"] = bits
        return bits

    def models(self) -> list[Any]:
        """One ``constriction`` ``Categorical(probabilities()[c], perfect=False)`` per context.

        Built lazily on first use and cached (``C`` models, about 2.5 µs each).
        """
        models = self._cache.get("models")
        if models is None:
            import constriction  # (``constriction.stream.model`` is not importable by name)

            categorical = constriction.stream.model.Categorical
            models = [categorical(row, perfect=False) for row in self.probabilities()]
            self._cache["models"] = models
        return models

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LayerPrior):
            return NotImplemented
        return self.kind == other.kind and np.array_equal(self.freqs, other.freqs)

    __hash__ = None  # type: ignore[assignment]


def _check_stack(codes: np.ndarray, codebook_sizes: Sequence[int], what: str) -> np.ndarray:
    """Validate a code stack ``[>= L, H, W]`` against ``codebook_sizes`` (len ``L``)."""
    arr = np.asarray(codes)
    if arr.ndim != 3:
        raise ValueError(f"{what}: code stack must be [L, H, W], got shape {arr.shape}")
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{what}: codes must be integers, got {arr.dtype}")
    if arr.shape[0] < len(codebook_sizes):
        raise ValueError(f"{what}: stack has {arr.shape[0]} layers, need {len(codebook_sizes)}")
    for layer, k in enumerate(codebook_sizes):
        plane = arr[layer]
        if plane.size and (plane.min() < 0 or plane.max() >= k):
            raise ValueError(f"{what}: layer {layer} has codes outside 0..{k - 1}")
    return arr


def _count(kind: str, layer: int, stacks: Sequence[np.ndarray], sizes: Sequence[int]) -> np.ndarray:
    """Context/symbol counts ``n(c, s)`` of layer ``layer`` over ``stacks``: int64 ``[C, K]``."""
    k = int(sizes[layer])
    n_ctx = num_contexts(kind, layer, sizes)
    counts = np.zeros(n_ctx * k, dtype=np.int64)
    for stack in stacks:
        ctx = layer_contexts(kind, layer, stack, k)
        counts += np.bincount((ctx * k + stack[layer]).ravel(), minlength=n_ctx * k)
    return counts.reshape(n_ctx, k)


def _backoff_table(counts: np.ndarray, static: np.ndarray, a: float) -> np.ndarray:
    """Quantised ``p(s|c) = (n(c, s) + a p_static(s)) / (n(c) + a)``: uint32 ``[C, K]``.

    ``counts``: int ``[C, K]``; ``static``: float64 ``[K]`` summing to 1; ``a > 0``.
    """
    n_c = counts.sum(axis=1, keepdims=True).astype(np.float64)
    return quantize_probabilities((counts + a * static[None, :]) / (n_c + a))


def _heldout_bits(freqs: np.ndarray, counts: np.ndarray) -> float:
    """Cross-entropy in bits of held-out ``counts`` ``[C, K]`` under integer ``freqs`` ``[C, K]``."""
    return float(-(counts * np.log2(freqs.astype(np.float64) / TOTAL)).sum())


@dataclass(frozen=True, eq=False)
class CodePrior:
    """Per-layer entropy models of a code stack: ``layers[l]`` models layer ``l``.

    Validated on construction (``ModelIntegrityError``): at least one layer, ``"parent"`` not on
    layer 0, and each table's context count ``C`` consistent with its kind and the codebook
    sizes (``none``: 1; ``parent``: ``K_{l-1}``; ``above``: ``K_l + 1``).
    """

    layers: tuple[LayerPrior, ...]

    def __post_init__(self) -> None:
        layers = self.layers
        if not isinstance(layers, tuple):
            if isinstance(layers, list):
                layers = tuple(layers)
                object.__setattr__(self, "layers", layers)
            else:
                raise ModelIntegrityError("CodePrior.layers must be a tuple of LayerPrior")
        if not layers:
            raise ModelIntegrityError("a prior needs at least one layer")
        if not all(isinstance(lp, LayerPrior) for lp in layers):
            raise ModelIntegrityError("CodePrior.layers must be a tuple of LayerPrior")
        sizes = [lp.codebook_size for lp in layers]
        for layer, lp in enumerate(layers):
            try:
                expected = num_contexts(lp.kind, layer, sizes)
            except ValueError as exc:
                raise ModelIntegrityError(f"layer {layer}: {exc}") from None
            if lp.num_contexts != expected:
                raise ModelIntegrityError(
                    f"layer {layer}: kind {lp.kind!r} needs {expected} contexts, table has {lp.num_contexts}"
                )

    # ------------------------------------------------------------------ properties

    @property
    def num_layers(self) -> int:
        """``L``, the number of layers the prior models."""
        return len(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def codebook_sizes(self) -> tuple[int, ...]:
        """``(K_0, ..., K_{L-1})``."""
        return tuple(lp.codebook_size for lp in self.layers)

    @property
    def kinds(self) -> tuple[str, ...]:
        """Context kind of each layer."""
        return tuple(lp.kind for lp in self.layers)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CodePrior):
            return NotImplemented
        if len(self.layers) != len(other.layers):
            return False
        return all(a == b for a, b in zip(self.layers, other.layers, strict=True))

    __hash__ = None  # type: ignore[assignment]

    # ------------------------------------------------------------------ fitting

    @classmethod
    def fit(
        cls,
        codes: list[np.ndarray],
        codebook_sizes: list[int],
        kinds: list[str],
        heldout: list[np.ndarray] | None = None,
    ) -> CodePrior:
        """Fit a prior from training code stacks.

        ``codes``: stacks, each int ``[>= L, H, W]`` (grids may differ between stacks; only the
        first ``L = len(codebook_sizes)`` layers are used). ``kinds``: ``L`` context kinds.

        Per layer, ``p_static(s) = (n(s) + 0.5) / (N + 0.5 K)`` and, for a conditional kind,
        ``p(s|c) = (n(c, s) + a p_static(s)) / (n(c) + a)``, where ``a`` is picked from
        :data:`SMOOTHING_GRID` to minimise the cross-entropy of ``heldout`` (stacks shaped like
        ``codes``) under the *quantised* table, or :data:`DEFAULT_SMOOTHING` without held-out
        data. Tables are quantised with :func:`quantize_probabilities`. Deterministic.
        """
        sizes = [int(k) for k in codebook_sizes]
        kinds = list(kinds)
        if not sizes:
            raise ValueError("need at least one layer")
        if len(kinds) != len(sizes):
            raise ValueError(f"{len(kinds)} kinds for {len(sizes)} layers")
        for k in sizes:
            if not 2 <= k <= MAX_CODEBOOK:
                raise ValueError(f"codebook size {k} outside 2..{MAX_CODEBOOK}")
        for layer, kind in enumerate(kinds):
            num_contexts(kind, layer, sizes)  # validates kind / parent-on-layer-0
        train = [_check_stack(c, sizes, f"codes[{i}]") for i, c in enumerate(codes)]
        held = [_check_stack(c, sizes, f"heldout[{i}]") for i, c in enumerate(heldout or [])]

        layers = []
        for layer, (kind, k) in enumerate(zip(kinds, sizes, strict=True)):
            counts = _count(kind, layer, train, sizes)
            marginal = counts.sum(axis=0).astype(np.float64)
            static = (marginal + STATIC_PSEUDOCOUNT) / (marginal.sum() + STATIC_PSEUDOCOUNT * k)
            if kind == "none":
                freqs = quantize_probabilities(static[None, :])
            else:
                if held:
                    held_counts = _count(kind, layer, held, sizes)
                    best = None
                    for a in SMOOTHING_GRID:
                        cand = _backoff_table(counts, static, a)
                        bits = _heldout_bits(cand, held_counts)
                        if best is None or bits < best[0]:
                            best = (bits, cand)
                    assert best is not None
                    freqs = best[1]
                else:
                    freqs = _backoff_table(counts, static, DEFAULT_SMOOTHING)
            layers.append(LayerPrior(kind, freqs))
        return cls(tuple(layers))

    @classmethod
    def fit_static(
        cls, codes: list[np.ndarray], codebook_sizes: list[int], heldout: list[np.ndarray] | None = None
    ) -> CodePrior:
        """The context-free baseline: :meth:`fit` with every kind ``"none"``."""
        return cls.fit(codes, codebook_sizes, ["none"] * len(codebook_sizes), heldout)

    # ------------------------------------------------------------------ evaluation

    def contexts(self, layer: int, codes: np.ndarray) -> np.ndarray:
        """Context ids of layer ``layer``: int64 ``[H, W]``, each in ``0 .. C_layer - 1``.

        ``codes``: int ``[>= layer + 1, H, W]`` (``"parent"`` reads ``codes[layer - 1]``,
        ``"above"`` reads ``codes[layer]`` itself; ``"parent"`` also accepts ``[layer, H, W]``).
        Raises ``ValueError`` for a bad shape or context codes out of range.
        """
        lp = self._layer(layer)
        arr = np.asarray(codes)
        need = layer if lp.kind in ("none", "parent") else layer + 1
        if arr.ndim != 3 or arr.shape[0] < need:
            raise ValueError(f"layer {layer} ({lp.kind}) needs codes [>= {need}, H, W], got shape {arr.shape}")
        if arr.dtype.kind not in "iu":
            raise ValueError(f"codes must be integers, got {arr.dtype}")
        ctx = layer_contexts(lp.kind, layer, arr, lp.codebook_size)
        if ctx.size and (ctx.min() < 0 or ctx.max() >= lp.num_contexts):
            raise ValueError(f"layer {layer}: context codes outside 0..{lp.num_contexts - 1}")
        return ctx

    def cross_entropy_bits(self, codes: np.ndarray, top_layers: int = 0) -> np.ndarray:
        """Ideal code length of each layer: float64 ``[k]``, ``-sum log2 p(s | ctx)``.

        ``codes``: int ``[k, H, W]`` with ``1 <= k <= L`` (a prefix of the layers). Uses exactly
        :meth:`LayerPrior.probabilities`, the numbers the coder is given. ``top_layers``: the first
        layers of a two-scale stack, one code per 2×2 block repeated over it; they are measured on
        their own grid (``codes[:, ::2, ::2]``), as the codec codes them.
        """
        arr = np.asarray(codes)
        if arr.ndim != 3 or not 1 <= arr.shape[0] <= self.num_layers:
            raise ValueError(f"codes must be [k, H, W] with 1 <= k <= {self.num_layers}, got {arr.shape}")
        _check_stack(arr, self.codebook_sizes[: arr.shape[0]], "codes")
        t = min(max(int(top_layers), 0), arr.shape[0])
        top = arr[:t, ::2, ::2]
        out = np.zeros(arr.shape[0], dtype=np.float64)
        for layer in range(arr.shape[0]):
            view = top if layer < t else arr
            ctx = self.contexts(layer, view)
            p = self.layers[layer].probabilities()[ctx, view[layer]]
            out[layer] = -np.log2(p).sum()
        return out

    def _layer(self, layer: int) -> LayerPrior:
        if not isinstance(layer, (int, np.integer)) or not 0 <= layer < self.num_layers:
            raise ValueError(f"layer {layer!r} outside 0..{self.num_layers - 1}")
        return self.layers[int(layer)]

    # ------------------------------------------------------------------ serialisation

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays: dict[str, np.ndarray] = {
            "format": np.array([FORMAT_VERSION], dtype=np.int64),
            "kinds": np.array([KIND_IDS[lp.kind] for lp in self.layers], dtype=np.uint8),
        }
        for layer, lp in enumerate(self.layers):
            arrays[f"freqs_{layer}"] = np.ascontiguousarray(lp.freqs, dtype="<u4")
        return arrays

    def to_bytes(self) -> bytes:
        """The prior as ``.npz`` bytes (see the module docstring for the layout)."""
        buf = io.BytesIO()
        np.savez_compressed(buf, **self._arrays())
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CodePrior:
        """Inverse of :meth:`to_bytes`; raises ``ModelIntegrityError`` for anything malformed."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ModelIntegrityError(f"prior data must be bytes, got {type(data).__name__}")
        return cls._from_npz(io.BytesIO(bytes(data)), "<bytes>")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the prior to ``path`` as an ``.npz`` of numeric arrays only."""
        with open(path, "wb") as fh:
            fh.write(self.to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CodePrior:
        """Read a prior written by :meth:`save` (``allow_pickle=False``), validating everything.

        A missing, unreadable or malformed file raises ``ModelIntegrityError``.
        """
        try:
            with open(path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            raise ModelIntegrityError(f"cannot read prior file {os.fspath(path)!r}: {exc}") from exc
        return cls._from_npz(io.BytesIO(data), os.fspath(path))

    @classmethod
    def _from_npz(cls, fh: io.BytesIO, name: str) -> CodePrior:
        try:
            obj = np.load(fh, allow_pickle=False)
        except Exception as exc:  # numpy raises a variety of types for junk input
            raise ModelIntegrityError(f"{name}: unreadable prior file: {exc}") from exc
        if not isinstance(obj, np.lib.npyio.NpzFile):
            raise ModelIntegrityError(f"{name}: not an .npz archive")
        try:
            with obj as npz:
                arrays = {key: npz[key] for key in npz.files}
        except Exception as exc:
            raise ModelIntegrityError(f"{name}: unreadable prior file: {exc}") from exc
        for key, value in arrays.items():
            if not isinstance(value, np.ndarray):  # a zip member that is not an .npy comes back as bytes
                raise ModelIntegrityError(f"{name}: entry {key!r} is not an array")
        return cls._from_arrays(arrays, name)

    @classmethod
    def _from_arrays(cls, arrays: dict[str, np.ndarray], name: str) -> CodePrior:
        def fail(msg: str) -> ModelIntegrityError:
            return ModelIntegrityError(f"{name}: {msg}")

        fmt = arrays.get("format")
        if fmt is None or fmt.dtype.kind not in "iu" or fmt.shape != (1,) or int(fmt[0]) != FORMAT_VERSION:
            raise fail(f"missing or unsupported 'format' entry (expected [{FORMAT_VERSION}])")
        kinds = arrays.get("kinds")
        if kinds is None or kinds.dtype.kind not in "iu" or kinds.ndim != 1 or kinds.size < 1:
            raise fail("missing or malformed 'kinds' entry")
        if kinds.min() < 0 or kinds.max() >= len(KINDS):
            raise fail(f"'kinds' holds ids outside 0..{len(KINDS) - 1}")
        n_layers = int(kinds.size)
        expected = {"format", "kinds"} | {f"freqs_{i}" for i in range(n_layers)}
        if set(arrays) != expected:
            extra = sorted(set(arrays) - expected)
            missing = sorted(expected - set(arrays))
            raise fail(f"unexpected entries {extra} / missing entries {missing}")
        layers = []
        for layer in range(n_layers):
            freqs = arrays[f"freqs_{layer}"]
            if freqs.dtype.kind != "u" or freqs.dtype.itemsize != 4:
                raise fail(f"freqs_{layer} must be uint32, got {freqs.dtype}")
            freqs = freqs.astype(np.uint32)  # native byte order
            try:
                layers.append(LayerPrior(KINDS[int(kinds[layer])], freqs))
            except ModelIntegrityError as exc:
                raise fail(f"layer {layer}: {exc}") from None
        try:
            return cls(tuple(layers))
        except ModelIntegrityError as exc:
            raise fail(str(exc)) from None


__all__ = [
    "DEFAULT_SMOOTHING",
    "FORMAT_VERSION",
    "KINDS",
    "KIND_IDS",
    "MAX_CODEBOOK",
    "SMOOTHING_GRID",
    "TOTAL",
    "CodePrior",
    "LayerPrior",
    "layer_contexts",
    "num_contexts",
    "quantize_probabilities",
]
