"""What the image and the audio codec share: a loaded model and the stream side of it.

::

    codes [k, rows, cols] ─►─┤ ANS + prior, layer by layer ├─►─ chunks ─┐
                 header (modality, model, weights, size, grid, padding) ─┴─►─ bitstream.pack ─►─ stream
    stream ─►─ bitstream.parse ─►─ checks (modality, model, weights, layers, geometry) ─►─ codes [k, rows, cols]

:class:`StreamCodec` holds the parts every model has (manifest entry, ONNX ``g_a``/``g_s``, the
quantizer of its family, entropy prior, stream limits) and does what does not depend on the modality: the
layer-count argument, loading, the header checks common to all streams, and the per-layer
entropy coding. A subclass (:class:`strata.image.ImageCodec`,
:class:`strata.audio.AudioCodec`) names its :class:`~strata.bitstream.Modality` and
supplies its geometry: the code grid and padding of a size (:meth:`StreamCodec._geometry`) and
the checks of a stream header's size (:meth:`StreamCodec._check_geometry`).

Codes are ``[k, rows, cols]`` on the latent grid for every quantizer family. The two-scale family's
top layers (:attr:`strata.quantize.Quantizer.top_layers`) hold one code per 2×2 block, repeated over
the block in that array; their chunks code each block's code once, on the top grid
``(⌈rows/2⌉, ⌈cols/2⌉)``, and the bottom layers' "parent" context is the top code of their block.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
from strata import bitstream
from strata.bitstream import Modality, Stream, StreamHeader, StreamLimits
from strata.entropy.coder import decode_layer, decode_stack, encode_layer
from strata.entropy.context import ContextModel
from strata.entropy.prior import CodePrior
from strata.errors import (
    HeaderError,
    InputError,
    LayersError,
    ModelIntegrityError,
    StreamModelError,
    WeightsMismatchError,
)
from strata.quantize import Quantizer, load_quantizer
from strata.quantize.rdo import check_scales, rd_encode
from strata.quantize.search import ResidualCodebooks
from strata.quantize.topbottom import expand
from strata.registry import ModelEntry, Registry
from strata.runtime import OnnxNet

Geometry = tuple[tuple[int, int], tuple[int, int]]  # (grid, padding) of a stream header


PRECISIONS = ("float", "int8")  # of the synthesis network (ImageCodec.load, AudioCodec.load)


class StreamCodec(ABC):
    """A loaded model of one modality: ONNX transforms, the quantizer, the entropy prior and stream limits."""

    modality: ClassVar[Modality]
    stream_noun: ClassVar[str]  # what a stream of this modality holds, as in "not an image" / "not audio"

    def __init__(
        self,
        entry: ModelEntry,
        analysis: OnnxNet,
        synthesis: OnnxNet,
        quantizer: Quantizer,
        prior: CodePrior,
        limits: StreamLimits | None = None,
        context: ContextModel | None = None,
    ) -> None:
        if quantizer.layers != entry.layers or prior.num_layers != entry.layers:
            raise ModelIntegrityError(f"model {entry.name!r}: quantizer, prior and manifest disagree on its layers")
        if ("context" in entry.files) != (context is not None):
            raise ModelIntegrityError(f"model {entry.name!r}: its manifest {'names' if context is None else 'lacks'} "
                                      "a context model (the 'context' file) and the codec was given "
                                      f"{'none' if context is None else 'one'}")
        if context is not None:
            if quantizer.top_layers:
                raise ModelIntegrityError(f"model {entry.name!r}: context networks serve one-scale models")
            try:
                context.check_against(prior.codebook_sizes)
            except ModelIntegrityError as e:
                raise ModelIntegrityError(f"model {entry.name!r}: {e}") from None
        self.entry, self.analysis, self.synthesis = entry, analysis, synthesis
        self.quantizer, self.prior, self.context = quantizer, prior, context
        self.limits = limits or StreamLimits()
        try:  # per-layer factors of the encoder's λ (strata.quantize.rdo), or None
            self.rdo_scales = check_scales(entry.extra.get("rdo_lambda_scales"), entry.layers)
        except InputError as e:
            raise ModelIntegrityError(f"model {entry.name!r}: {e}") from None

    def _rdo_lambda(self, value: float | None) -> float:
        """The encoder's λ: ``value``, else the manifest's ``extra.rdo_lambda``, else 0 (checked)."""
        lam = self.entry.extra.get("rdo_lambda", 0.0) if value is None else value
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not math.isfinite(lam) or lam < 0:
            raise InputError(f"rdo_lambda must be a finite number ≥ 0, got {lam!r}")
        if lam > 0 and not isinstance(self.quantizer, ResidualCodebooks):
            raise InputError(f"rate–distortion optimised search serves the rvq and rsq families, not "
                             f"{self.entry.quantizer} (model {self.entry.name!r})")
        return float(lam)

    def _search(self, latent: np.ndarray, layers: int | None) -> np.ndarray:
        """The code search the encoder uses: RD-optimised when ``rdo_lambda > 0`` (:mod:`strata.quantize.rdo`),
        nearest-code otherwise. ``latent`` ``[1, D, H, W]`` → codes ``[k, 1, H, W]``."""
        if self.rdo_lambda > 0:
            return rd_encode(self.quantizer, self.prior, latent, layers, self.rdo_lambda,  # type: ignore[arg-type]
                             self.rdo_scales)
        return self.quantizer.encode(latent, layers)

    @classmethod
    def _load_parts(
        cls, registry: Registry, name: str | None, providers: list[str] | None, threads: int,
        synthesis_role: str = "synthesis", analysis_role: str = "analysis",
    ) -> tuple[ModelEntry, OnnxNet, OnnxNet, Quantizer, CodePrior]:
        """Entry, ``g_a`` and ``g_s`` (the files of ``analysis_role`` and ``synthesis_role``), codebooks and prior of
        ``name`` (default: the registry's default of this modality), sha256-verified by the registry."""
        kind = cls.modality.name.lower()
        entry = registry.entry(name) if name else registry.default(kind)
        if entry.modality != kind:
            raise InputError(f"model {entry.name!r} is an {entry.modality} model, not an {kind} model")
        quantizer = load_quantizer(registry.path(entry, "codebooks"), entry.quantizer)
        return (
            entry,
            OnnxNet.load(registry.path(entry, analysis_role), providers, threads),
            OnnxNet.load(registry.path(entry, synthesis_role), providers, threads),
            quantizer,
            CodePrior.load(registry.path(entry, "prior")),
        )

    @staticmethod
    def precisions(entry: ModelEntry) -> tuple[str, ...]:
        """The precisions a model can decode with (``"float"``, and ``"int8"`` when it has that network)."""
        return ("float", "int8") if "synthesis_int8" in entry.files else ("float",)

    @classmethod
    def _synthesis_role(cls, registry: Registry, name: str | None, precision: str) -> str:
        """The file role of ``g_s`` at ``precision``; :class:`InputError` for an unknown precision, or for int8
        when the model has no int8 network."""
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        entry = registry.entry(name) if name else registry.default(cls.modality.name.lower())
        if precision not in cls.precisions(entry):
            raise InputError(f"model {entry.name!r} has no int8 synthesis network (strata export int8 makes one)")
        return "synthesis_int8" if precision == "int8" else "synthesis"

    @staticmethod
    def _load_context(registry: Registry, entry: ModelEntry) -> ContextModel | None:
        """The model's learned context model (:mod:`strata.entropy.context`), when its manifest names one."""
        return ContextModel.load(registry.path(entry, "context")) if "context" in entry.files else None

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def layers(self) -> int:
        return self.entry.layers

    @property
    def provider(self) -> str:
        return self.analysis.provider

    def _layers(self, layers: int | None, available: int | None = None) -> int:
        """``layers`` checked against ``1..available`` (default: the model's layers); ``None`` → ``available``."""
        available = self.layers if available is None else available
        if layers is None:
            return available
        if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or not 1 <= layers <= available:
            raise LayersError(f"layers must be an integer in 1..{available}, got {layers!r}")
        return int(layers)

    # -- modality-specific geometry ------------------------------------------------------------
    @abstractmethod
    def _geometry(self, size: tuple[int, int]) -> Geometry:
        """The header's ``(grid, padding)`` for the header ``size`` of this modality."""

    @abstractmethod
    def _check_geometry(self, header: StreamHeader) -> None:
        """Raise :class:`HeaderError` unless ``header``'s size, grid and padding make sense for this model."""

    # -- streams -------------------------------------------------------------------------------
    def _pack(self, codes: np.ndarray, size: tuple[int, int]) -> bytes:
        """Entropy-code int64 ``codes [k, rows, cols]`` layer by layer into a stream of header ``size``."""
        grid, padding = self._geometry(size)
        header = StreamHeader(
            modality=self.modality,
            model=self.name,
            weights=self.entry.weights_prefix,
            size=size,
            grid=grid,
            padding=padding,
            chunks=(),
        )
        t = self.quantizer.top_layers
        top = codes[:t, ::2, ::2]  # the top layers' own (coarser) grid: each code once, not once per latent
        if t and not np.array_equal(expand(top, codes.shape[1:]), codes[:t]):
            raise InputError(f"the first {t} layers of model {self.name!r} ({self.entry.quantizer}) are top layers: "
                             "their codes must be equal on each 2×2 block of the grid")
        chunks = [encode_layer(self.prior, layer, top[: layer + 1] if layer < t else codes[: layer + 1], self.context)
                  for layer in range(codes.shape[0])]
        return bitstream.pack(header, chunks)

    def parse(self, data: bytes, partial: bool = False) -> Stream:
        """Parse a stream and check that this model can decode it."""
        stream = bitstream.parse(data, self.limits, partial=partial)
        h = stream.header
        if h.modality is not self.modality:
            raise StreamModelError(f"stream holds {h.modality.name.lower()}, not {self.stream_noun}")
        if h.model != self.name:
            raise StreamModelError(f"stream was made by model {h.model!r}, this is {self.name!r}")
        if h.weights != self.entry.weights_prefix:
            raise WeightsMismatchError(
                f"stream was made with weights {h.weights.hex()} of {h.model!r}; loaded weights are "
                f"{self.entry.weights_prefix.hex()}"
            )
        if h.layers > self.layers:
            raise HeaderError(f"stream announces {h.layers} layers, model {self.name!r} has {self.layers}")
        self._check_geometry(h)
        return stream

    def _unpack(self, data: bytes, layers: int | None, partial: bool) -> tuple[np.ndarray, StreamHeader]:
        """Int64 codes ``[k, rows, cols]`` of the first ``layers`` layers of a stream (default: all present)
        and its header."""
        stream = self.parse(data, partial=partial)
        k = self._layers(layers, stream.layers)
        rows, cols = stream.header.grid
        if not self.quantizer.top_layers:  # one grid: decode_stack (a model's context networks run in one wavefront)
            chunks = [stream.chunk(layer) for layer in range(k)]
            return decode_stack(self.prior, chunks, (rows, cols), self.context), stream.header
        codes = np.zeros((k, rows, cols), dtype=np.int64)
        t = min(self.quantizer.top_layers, k)
        top = np.zeros((t, (rows + 1) // 2, (cols + 1) // 2), dtype=np.int64)
        for layer in range(t):  # a top layer is coded on its own grid and repeated over its 2×2 blocks
            top[layer] = decode_layer(self.prior, layer, stream.chunk(layer), top.shape[1:], top[:layer])
            codes[layer] = expand(top[layer], (rows, cols))
        for layer in range(t, k):
            codes[layer] = decode_layer(self.prior, layer, stream.chunk(layer), (rows, cols), codes[:layer])
        return codes, stream.header


__all__ = ["StreamCodec"]
