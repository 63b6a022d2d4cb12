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
from strata.base import Geometry, StreamCodec
from strata.bitstream import Modality, StreamHeader, StreamLimits
from strata.errors import HeaderError, InputError, LimitExceededError
from strata.frontend.image import pad, unpad
from strata.quantize.search import ResidualCodebooks
from strata.registry import Registry
from strata.runtime import OnnxNet

MAX_GRID = 2**16 - 1  # the v1 header stores each side of the code grid in 16 bits


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


class ImageCodec(StreamCodec):
    """A loaded image model: ONNX transforms, RVQ codebooks and the entropy prior (:class:`StreamCodec`)."""

    modality = Modality.IMAGE
    stream_noun = "an image"

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
        return cls(*cls._load_parts(registry, name, providers, threads), limits)

    @property
    def factor(self) -> int:
        return self.entry.factor

    def grid(self, size: tuple[int, int]) -> tuple[int, int]:
        """Code-map size of an ``(H, W)`` image."""
        return (-(-size[0] // self.factor), -(-size[1] // self.factor))

    def _geometry(self, size: tuple[int, int]) -> Geometry:
        return self.grid(size), (-size[0] % self.factor, -size[1] % self.factor)

    def _check_geometry(self, header: StreamHeader) -> None:
        if (header.grid, header.padding) != self._geometry(header.size):
            raise HeaderError(f"grid {header.grid} / padding {header.padding} do not match a {header.size} image")

    def _check_size(self, size: tuple[int, int]) -> None:
        """Refuse (:class:`LimitExceededError`) an ``(H, W)`` image over the pixel limit, or one with a side longer
        than a v1 stream can hold (``MAX_GRID`` code rows or columns, like the audio codec's ``MAX_COLUMNS``): its
        grid would not fit the header, and such a thin image makes the networks run on up to ``factor`` times the
        pixels the limit counts (1 row is padded to ``factor``), in the tokens API too."""
        h, w = size
        if h * w > self.limits.max_pixels:
            raise LimitExceededError(f"image of {h}×{w} = {h * w} pixels is over the limit of {self.limits.max_pixels}")
        if max(self.grid(size)) > MAX_GRID:
            raise LimitExceededError(
                f"image of {h}×{w} pixels has a side longer than a v1 stream can hold "
                f"({MAX_GRID * self.factor} pixels: {MAX_GRID} code rows or columns of {self.factor} pixels)")

    # -- codes ---------------------------------------------------------------------------------
    def encode(self, image: np.ndarray, layers: int | None = None) -> ImageCodes:
        """Codes of an RGB ``uint8 [H, W, 3]`` image, first ``layers`` layers (default all)."""
        k = self._layers(layers)
        if image.ndim == 3:
            self._check_size(image.shape[:2])
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
        self._check_size(codes.size)
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
        self._check_size(codes.size)
        return self._pack(c, codes.size)

    def decompress_codes(self, data: bytes, layers: int | None = None, partial: bool = False) -> ImageCodes:
        """Entropy-decode the first ``layers`` layers of a stream (default: all present)."""
        codes, header = self._unpack(data, layers, partial)
        return ImageCodes(codes, header.size, self.name)

    def decompress(self, data: bytes, layers: int | None = None, partial: bool = False) -> np.ndarray:
        """RGB ``uint8 [H, W, 3]`` decoded from the first ``layers`` layers of a stream."""
        return self.decode(self.decompress_codes(data, layers, partial))
