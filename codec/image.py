"""The image codec, wired from its parts.

::

    image ─►─ pad ─►─┤ g_a ├─►─ y ─►─┤ VQ  ├─►─ codes [L, h, w] ─►─┤ ANS + prior ├─►─ chunks ─►─ stream
                      (ONNX)          (numpy)                         (constriction)     (codec.bitstream)
    stream ─►─ chunks[:k] ─►─ codes[:k] ─►─ Σ code vectors ─►─┤ g_s ├─►─ crop ─►─ image

``encode``/``decode`` deal in codes (the "tokens" API), ``compress``/``decompress``
in bytes. The number of layers is a per-call argument; the codec holds no
per-request state and is safe to share between threads.

An image of up to :data:`ONE_PASS_PIXELS` runs through each network in one call. A larger one
runs on overlapping tiles (:func:`strata.chunking.apply_tiled`) of ``tile`` pixels a side plus
a context that covers the network's receptive field, so the memory of a call is bounded by the
tile, not by the image (pixels stay ``uint8`` outside the tile being computed, and the RVQ
search runs in blocks): a 4096² image compresses and decompresses in about 0.5 GB. Tiles give
the same codes and pixels as one call up to floating-point summation order
(tests/test_tiling.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from strata.base import Geometry, StreamCodec
from strata.bitstream import Modality, StreamHeader, StreamLimits
from strata.chunking import apply_tiled, receptive_field
from strata.entropy.context import ContextModel
from strata.entropy.prior import CodePrior
from strata.errors import HeaderError, InputError, LimitExceededError, ModelIntegrityError
from strata.frontend.image import pad_uint8, to_uint8
from strata.quantize import Quantizer
from strata.registry import ModelEntry, Registry
from strata.runtime import OnnxNet

ENCODERS = ("full", "light")  # analysis networks (ImageCodec.load): the trained one, or a distilled lighter one
MAX_GRID = 2**16 - 1  # the v1 header stores each side of the code grid in 16 bits
TILE = 512  # pixels per side of a network tile (without its context) in an image over ONE_PASS_PIXELS
ONE_PASS_PIXELS = 1 << 20  # images up to this many (padded) pixels run through each network in one call


@dataclass(frozen=True)
class ImageCodes:
    """The code stack of one image: ``codes`` int64 ``[k, h, w]`` with ``h = ceil(H / factor)``."""

    codes: np.ndarray
    size: tuple[int, int]  # original image (H, W)
    model: str

    @property
    def layers(self) -> int:
        return int(self.codes.shape[0])


def analyse(analysis: Callable[[np.ndarray], np.ndarray], quantizer: Quantizer, image: np.ndarray,
            factor: int, layers: int | None = None, *, context: int, tile: int | None = None,
            search: Callable[[np.ndarray, int | None], np.ndarray] | None = None) -> ImageCodes:
    """Pad, run ``g_a`` and search the quantizer: the codes of one image (no entropy coding). ``g_a`` runs on tiles
    of ``tile`` pixels (default: the whole image up to :data:`ONE_PASS_PIXELS`, else :data:`TILE`) with
    ``context`` pixels around each (see :func:`contexts`). ``search(latent, layers)`` replaces the quantizer's
    nearest-code search (the rate–distortion optimised one: :func:`strata.quantize.rdo.rd_encode`)."""
    padded = pad_uint8(image, factor)
    if tile is None:
        tile = tile_for(padded.shape[-2:])

    def g_a(x: np.ndarray) -> np.ndarray:
        return analysis(x.astype(np.float32) / 255.0)

    latent = apply_tiled(g_a, padded, tile=tile, context=context, scale=Fraction(1, factor), align=factor)
    return ImageCodes((search or quantizer.encode)(latent, layers)[:, 0], image.shape[:2], "")


def tile_for(padded: tuple[int, int], one_pass_pixels: int = ONE_PASS_PIXELS, tile: int = TILE) -> int:
    """Tile side in pixels for a padded ``(H, W)`` image: all of it when it has at most ``one_pass_pixels``."""
    h, w = padded
    return max(h, w) if h * w <= one_pass_pixels else tile


def receptive_fields(analysis: Callable[[np.ndarray], np.ndarray], synthesis: Callable[[np.ndarray], np.ndarray],
                     dim: int, factor: int) -> dict[str, int]:
    """One-sided receptive fields, measured on random inputs: ``g_a``'s in pixels, ``g_s``'s in latent positions
    (what an export records in the manifest entry's ``receptive_field``)."""
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 32 * factor, 32 * factor), dtype=np.float32)
    z = rng.standard_normal((1, dim, 32, 32)).astype(np.float32)
    return {"analysis": math.ceil(receptive_field(analysis, x, Fraction(1, factor))),
            "synthesis": math.ceil(receptive_field(synthesis, z, factor))}


def contexts(rf: dict[str, int], factor: int) -> tuple[int, int]:
    """Tile contexts that cover receptive fields ``rf``, with one latent to spare: (pixels for ``g_a``, latent
    positions for ``g_s``). The measured field can read a little short where activations are zero."""
    return (-(-int(rf["analysis"]) // factor) + 1) * factor, int(rf["synthesis"]) + 1


class ImageCodec(StreamCodec):
    """A loaded image model: ONNX transforms, the quantizer and the entropy prior (:class:`StreamCodec`)."""

    modality = Modality.IMAGE
    stream_noun = "an image"

    def __init__(
        self,
        entry: ModelEntry,
        analysis: OnnxNet,
        synthesis: OnnxNet,
        quantizer: Quantizer,
        prior: CodePrior,
        limits: StreamLimits | None = None,
        tile: int = TILE,
        rdo_lambda: float | None = None,
        context: ContextModel | None = None,
    ) -> None:
        super().__init__(entry, analysis, synthesis, quantizer, prior, limits, context)
        if tile < 1 or tile % self.factor:
            raise InputError(f"tile must be a positive multiple of {self.factor} pixels, got {tile}")
        self.tile = tile
        self.rdo_lambda = self._rdo_lambda(rdo_lambda)
        self.one_pass_pixels = ONE_PASS_PIXELS
        rf = entry.extra.get("receptive_field")
        try:  # contexts that cover the networks' receptive fields: pixels for g_a, latents for g_s
            if rf is None:  # a model exported before the field existed: measured once here
                rf = receptive_fields(analysis, synthesis, quantizer.dim, self.factor)
            self.context_a, self.context_s = contexts(rf, self.factor)
        except (KeyError, TypeError, ValueError) as e:
            raise ModelIntegrityError(f"model {entry.name!r}: malformed receptive_field in the manifest: {e}") from None

    @classmethod
    def load(
        cls,
        registry: Registry,
        name: str | None = None,
        providers: list[str] | None = None,
        threads: int = 0,
        limits: StreamLimits | None = None,
        tile: int = TILE,
        rdo_lambda: float | None = None,
        precision: str = "float",
        encoder: str = "full",
    ) -> ImageCodec:
        """Load (and sha256-verify) the model ``name`` (default: the registry's default image model).

        ``tile``: the side in pixels of the network tiles of images over :data:`ONE_PASS_PIXELS`.
        ``rdo_lambda``: the encoder's rate–distortion trade-off (:mod:`strata.quantize.rdo`); default the
        model's ``extra.rdo_lambda`` (chosen on validation images), 0 for nearest-code search.
        ``precision``: ``"float"``, or ``"int8"`` for the model's int8 synthesis network
        (:mod:`strata.export.int8`; :class:`InputError` if it has none). The codes, and so every stream,
        are the same either way; only the decoded pixels differ, slightly.
        ``encoder``: ``"full"``, or ``"light"`` for the model's distilled analysis network
        (:mod:`strata.export.encoder`; :class:`InputError` if it has none). Every stream decodes with the
        same model either way; the light network is faster and picks slightly different codes."""
        role = cls._synthesis_role(registry, name, precision)
        if encoder not in ENCODERS:
            raise InputError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        analysis_role = "analysis_light" if encoder == "light" else "analysis"
        entry = registry.entry(name) if name else registry.default("image")
        if analysis_role not in entry.files:
            raise InputError(f"model {entry.name!r} has no light analysis network (strata export encoder makes one)")
        return cls(*cls._load_parts(registry, name, providers, threads, role, analysis_role), limits, tile,
                   rdo_lambda, cls._load_context(registry, entry))

    @staticmethod
    def encoders(entry: ModelEntry) -> tuple[str, ...]:
        """The analysis networks a model can encode with (``"full"``, and ``"light"`` when it has that network)."""
        return ("full", "light") if "analysis_light" in entry.files else ("full",)

    @property
    def factor(self) -> int:
        return self.entry.factor

    def _tile(self, size: tuple[int, int]) -> int:
        """Tile side in pixels for an ``(H, W)`` image (see :func:`tile_for`)."""
        padded = (-(-size[0] // self.factor) * self.factor, -(-size[1] // self.factor) * self.factor)
        return tile_for(padded, self.one_pass_pixels, self.tile)

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
        tile = self._tile(image.shape[:2])
        codes = analyse(self.analysis, self.quantizer, image, self.factor, k, context=self.context_a, tile=tile,
                        search=self._search)
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

        def g_s(z: np.ndarray) -> np.ndarray:  # pixels leave each tile as uint8
            return to_uint8(self.synthesis(z))

        tile = self._tile(codes.size) // self.factor
        pixels = apply_tiled(g_s, latent, tile=tile, context=self.context_s, scale=self.factor)
        h, w = codes.size
        return np.ascontiguousarray(pixels[0, :, :h, :w].transpose(1, 2, 0))

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
