"""The loaded models of a running service: every image model of the manifest, loaded once
(sha256-verified) in the app's lifespan and shared read-only by all requests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from codec.bitstream import StreamLimits
from codec.errors import StreamModelError, UnknownModelError
from codec.pipeline import ImageCodec
from codec.registry import ModelEntry, Registry
from codec.runtime import choose_providers
from server.batching import MicroBatcher
from server.config import Settings

log = logging.getLogger("strata.server")


@dataclass(frozen=True)
class Codecs:
    """Loaded image codecs by name, and the default model's name."""

    image: Mapping[str, ImageCodec]
    default_image: str

    def get(self, name: str | None) -> ImageCodec:
        """The codec ``name`` (default model when ``None``); :class:`UnknownModelError` (404) if absent."""
        name = name or self.default_image
        try:
            return self.image[name]
        except KeyError:
            raise UnknownModelError(
                f"unknown model {name!r}; available: {', '.join(sorted(self.image)) or 'none'}"
            ) from None

    def for_stream(self, name: str) -> ImageCodec:
        """The codec a stream names; :class:`StreamModelError` (422) if that model is not loaded."""
        try:
            return self.image[name]
        except KeyError:
            raise StreamModelError(
                f"stream was made by model {name!r}, which this server does not serve "
                f"(loaded: {', '.join(sorted(self.image)) or 'none'})"
            ) from None

    @property
    def entries(self) -> list[ModelEntry]:
        return [self.image[name].entry for name in sorted(self.image)]

    @property
    def provider(self) -> str:
        """``cuda`` when any model runs on the GPU, else ``cpu``."""
        return "cuda" if any(c.provider == "cuda" for c in self.image.values()) else "cpu"


def batched(codec: ImageCodec, settings: Settings) -> ImageCodec:
    """``codec`` with its networks wrapped in :class:`MicroBatcher` (same parts otherwise)."""
    def wrap(net: object) -> MicroBatcher:
        return MicroBatcher(net, settings.batch_max_size, settings.batch_max_wait_ms)  # type: ignore[arg-type]

    return ImageCodec(codec.entry, wrap(codec.analysis), wrap(codec.synthesis), codec.quantizer, codec.prior,
                      codec.limits)


def load_codecs(settings: Settings) -> Codecs:
    """Load every image model of the registry at ``settings.models_dir``."""
    registry = Registry(settings.models_dir)
    names = registry.names("image")
    if not names:
        raise UnknownModelError(f"no image model in {registry.root}")
    providers = choose_providers(settings.provider)
    limits = StreamLimits(max_pixels=settings.max_pixels)
    image: dict[str, ImageCodec] = {}
    for name in names:
        codec = ImageCodec.load(registry, name, providers=providers, threads=settings.session_threads, limits=limits)
        if settings.use_batching(codec.provider):
            codec = batched(codec, settings)
        log.info("loaded model %s (%d layers, provider %s, batching %s)", name, codec.layers, codec.provider,
                 isinstance(codec.analysis, MicroBatcher))
        image[name] = codec
    default = registry.defaults.get("image")
    if default not in image:
        default = names[0]
    return Codecs(image, default)
