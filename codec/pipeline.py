"""The image codec, wired from its parts.

::

    image ─►─ pad ─►─┤ g_a ├─►─ y ─►─┤ RVQ ├─►─ codes [L, h, w] ─►─┤ ANS + prior ├─►─ chunks ─►─ stream
                      (ONNX)          (numpy)                         (constriction)     (codec.bitstream)
    stream ─►─ chunks[:k] ─►─ codes[:k] ─►─ Σ code vectors ─►─┤ g_s ├─►─ crop ─►─ image

``encode``/``decode`` deal in codes (the "tokens" API), ``compress``/``decompress``
in bytes. The number of layers is a per-call argument; the codec holds no
per-request state and is safe to share between threads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codec import bitstream
from codec.bitstream import Modality, Stream, StreamHeader, StreamLimits
from codec.entropy.coder import decode_layer, encode_layer
from codec.entropy.prior import CodePrior
from codec.errors import (
    HeaderError,
    InputError,
    LayersError,
    LimitExceededError,
    ModelIntegrityError,
    StreamModelError,
    WeightsMismatchError,
)
from codec.frontend.image import pad, unpad
from codec.quantize.search import ResidualCodebooks
from codec.registry import ModelEntry, Registry
from codec.runtime import OnnxNet


@dataclass(frozen=True)
class ImageCodes:
    """The code stack of one image: ``codes`` int64 ``[k, h, w]`` with ``h = ceil(H / factor)``."""

    codes: np.ndarray
    size: tuple[int, int]  # original image (H, W)
    model: str

    @property
    def layers(self) -> int:
        return int(self.codes.shape[0])


def analyse(analysis: OnnxNet, quantizer: ResidualCodebooks, image: np.ndarray, factor: int,
            layers: int | None = None) -> ImageCodes:
    """Pad, run ``g_a`` and search the RVQ: the codes of one image (no entropy coding)."""
    padded = pad(image, factor)
    codes = quantizer.encode(analysis(padded.tensor), layers)[:, 0]
    return ImageCodes(codes, padded.size, "")


class ImageCodec:
    """A loaded image model: ONNX transforms, RVQ codebooks and the entropy prior."""

    def __init__(
        self,
        entry: ModelEntry,
        analysis: OnnxNet,
        synthesis: OnnxNet,
        quantizer: ResidualCodebooks,
        prior: CodePrior,
        limits: StreamLimits | None = None,
    ) -> None:
        if quantizer.layers != entry.layers or prior.num_layers != entry.layers:
            raise ModelIntegrityError(f"model {entry.name!r}: quantizer, prior and manifest disagree on its layers")
        self.entry, self.analysis, self.synthesis = entry, analysis, synthesis
        self.quantizer, self.prior = quantizer, prior
        self.limits = limits or StreamLimits()

    @classmethod
    def load(
        cls,
        registry: Registry,
        name: str | None = None,
        providers: list[str] | None = None,
        threads: int = 0,
        limits: StreamLimits | None = None,
    ) -> ImageCodec:
        """Load (and sha256-verify) the model ``name`` (default: the registry's default image model)."""
        entry = registry.entry(name) if name else registry.default("image")
        if entry.modality != "image":
            raise InputError(f"model {entry.name!r} is an {entry.modality} model, not an image model")
        with np.load(registry.path(entry, "codebooks"), allow_pickle=False) as z:
            quantizer = ResidualCodebooks(np.asarray(z["codebooks"], dtype=np.float32))
        return cls(
            entry,
            OnnxNet.load(registry.path(entry, "analysis"), providers, threads),
            OnnxNet.load(registry.path(entry, "synthesis"), providers, threads),
            quantizer,
            CodePrior.load(registry.path(entry, "prior")),
            limits,
        )

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def layers(self) -> int:
        return self.entry.layers

    @property
    def factor(self) -> int:
        return self.entry.factor

    @property
    def provider(self) -> str:
        return self.analysis.provider

    def _layers(self, layers: int | None, available: int | None = None) -> int:
        available = self.layers if available is None else available
        if layers is None:
            return available
        if isinstance(layers, bool) or not isinstance(layers, (int, np.integer)) or not 1 <= layers <= available:
            raise LayersError(f"layers must be an integer in 1..{available}, got {layers!r}")
        return int(layers)

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """Code-map size of an ``(H, W)`` image."""
        return (-(-size[0] // self.factor), -(-size[1] // self.factor))

    # -- codes ---------------------------------------------------------------------------------
    def encode(self, image: np.ndarray, layers: int | None = None) -> ImageCodes:
        """Codes of an RGB ``uint8 [H, W, 3]`` image, first ``layers`` layers (default all)."""
        k = self._layers(layers)
        if image.ndim == 3 and image.shape[0] * image.shape[1] > self.limits.max_pixels:
            raise LimitExceededError(f"image of {image.shape[0]}×{image.shape[1]} pixels is over the limit")
        codes = analyse(self.analysis, self.quantizer, image, self.factor, k)
        return ImageCodes(codes.codes, codes.size, self.name)

    def decode(self, codes: ImageCodes, layers: int | None = None) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]`` from (the first ``layers`` layers of) ``codes``."""
        k = self._layers(layers, codes.layers)
        c = np.asarray(codes.codes)
        if c.ndim != 3 or c.shape[1:] != self.grid(codes.size):
            raise InputError(f"codes of shape {c.shape} do not fit a {codes.size} image (grid {self.grid(codes.size)})")
        if not np.issubdtype(c.dtype, np.integer):
            raise InputError(f"codes must be integers, got {c.dtype}")
        if codes.size[0] * codes.size[1] > self.limits.max_pixels:
            raise LimitExceededError(f"a {codes.size[0]}×{codes.size[1]} image is over the pixel limit")
        latent = self.quantizer.decode(c[:k, None].astype(np.int64))
        return unpad(self.synthesis(latent), codes.size)

    # -- bytes ---------------------------------------------------------------------------------
    def compress(self, image: np.ndarray, layers: int | None = None) -> bytes:
        """The v1 stream of an image with its first ``layers`` layers (default all)."""
        return self.compress_codes(self.encode(image, layers))

    def compress_codes(self, codes: ImageCodes) -> bytes:
        """Entropy-code a code stack into a stream."""
        c = np.asarray(codes.codes, dtype=np.int64)
        self._layers(codes.layers)
        size = codes.size
        header = StreamHeader(
            modality=Modality.IMAGE,
            model=self.name,
            weights=self.entry.weights_prefix,
            size=size,
            grid=self.grid(size),
            padding=(-size[0] % self.factor, -size[1] % self.factor),
            chunks=(),
        )
        chunks = [encode_layer(self.prior, layer, c[: layer + 1]) for layer in range(c.shape[0])]
        return bitstream.pack(header, chunks)

    def parse(self, data: bytes, partial: bool = False) -> Stream:
        """Parse a stream and check that this model can decode it."""
        stream = bitstream.parse(data, self.limits, partial=partial)
        h = stream.header
        if h.modality is not Modality.IMAGE:
            raise StreamModelError(f"stream holds {h.modality.name.lower()}, not an image")
        if h.model != self.name:
            raise StreamModelError(f"stream was made by model {h.model!r}, this is {self.name!r}")
        if h.weights != self.entry.weights_prefix:
            raise WeightsMismatchError(
                f"stream was made with weights {h.weights.hex()} of {h.model!r}; loaded weights are "
                f"{self.entry.weights_prefix.hex()}"
            )
        if h.layers > self.layers:
            raise HeaderError(f"stream announces {h.layers} layers, model {self.name!r} has {self.layers}")
        if h.grid != self.grid(h.size) or h.padding != (-h.size[0] % self.factor, -h.size[1] % self.factor):
            raise HeaderError(f"grid {h.grid} / padding {h.padding} do not match a {h.size} image")
        return stream

    def decompress_codes(self, data: bytes, layers: int | None = None, partial: bool = False) -> ImageCodes:
        """Entropy-decode the first ``layers`` layers of a stream (default: all present)."""
        stream = self.parse(data, partial=partial)
        k = self._layers(layers, stream.layers)
        rows, cols = stream.header.grid
        codes = np.zeros((k, rows, cols), dtype=np.int64)
        for layer in range(k):
            codes[layer] = decode_layer(self.prior, layer, stream.chunk(layer), (rows, cols), codes[:layer])
        return ImageCodes(codes, stream.header.size, self.name)

    def decompress(self, data: bytes, layers: int | None = None, partial: bool = False) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]`` decoded from the first ``layers`` layers of a stream."""
        return self.decode(self.decompress_codes(data, layers, partial))
