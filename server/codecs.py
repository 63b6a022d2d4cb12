"""The loaded models of a running service: every image and audio model of the manifest, loaded once
(sha256-verified) in the app's lifespan and shared read-only by all requests.

A manifest without audio models still serves images; the audio routes then answer
404 ``unknown_model`` saying that no audio model is loaded.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from strata.audio import AudioCodec
from strata.bitstream import StreamLimits
from strata.errors import StreamModelError, UnknownModelError
from strata.image import ImageCodec
from strata.registry import ModelEntry, Registry
from strata.runtime import choose_providers
from strata.server.batching import MicroBatcher
from strata.server.config import Settings

log = logging.getLogger("strata.server")


def _names(models: Mapping[str, object]) -> str:
    return ", ".join(sorted(models)) or "none"


@dataclass(frozen=True)
class Codecs:
    """Loaded codecs by name, and the default model of each modality."""

    image: Mapping[str, ImageCodec]
    default_image: str
    audio: Mapping[str, AudioCodec] = field(default_factory=dict)
    default_audio: str | None = None

    def image_codec(self, name: str | None) -> ImageCodec:
        """The image codec ``name`` (default model when ``None``); :class:`UnknownModelError` (404) if absent."""
        name = name or self.default_image
        try:
            return self.image[name]
        except KeyError:
            other = " (an audio model: use the /v1/audio routes)" if name in self.audio else ""
            raise UnknownModelError(f"unknown model {name!r}{other}; image models: {_names(self.image)}") from None

    def audio_codec(self, name: str | None) -> AudioCodec:
        """The audio codec ``name`` (default audio model when ``None``); :class:`UnknownModelError` (404) if absent."""
        if not self.audio:
            raise UnknownModelError("this server has no audio model loaded (its manifest lists none)")
        name = name or self.default_audio
        try:
            return self.audio[name]  # type: ignore[index]
        except KeyError:
            other = " (an image model: use the /v1/images routes)" if name in self.image else ""
            raise UnknownModelError(f"unknown model {name!r}{other}; audio models: {_names(self.audio)}") from None

    def model(self, name: str) -> ModelEntry:
        """The manifest entry of a loaded model of either modality (404 when not loaded)."""
        codec = self.image.get(name) or self.audio.get(name)
        if codec is None:
            raise UnknownModelError(f"unknown model {name!r}; available: {_names({**self.image, **self.audio})}")
        return codec.entry

    def is_default(self, entry: ModelEntry) -> bool:
        return entry.name == (self.default_image if entry.modality == "image" else self.default_audio)

    def image_for_stream(self, name: str) -> ImageCodec:
        """The image codec a stream names; :class:`StreamModelError` (422) if that model is not loaded."""
        return self._for_stream(self.image, name)

    def audio_for_stream(self, name: str) -> AudioCodec:
        """The audio codec a stream names; :class:`StreamModelError` (422) if that model is not loaded."""
        return self._for_stream(self.audio, name)

    @staticmethod
    def _for_stream(models: Mapping, name: str):  # noqa: ANN205 - ImageCodec or AudioCodec, as ``models`` holds
        try:
            return models[name]
        except KeyError:
            raise StreamModelError(
                f"stream was made by model {name!r}, which this server does not serve (loaded: {_names(models)})"
            ) from None

    @property
    def names(self) -> list[str]:
        """Every loaded model, sorted."""
        return sorted({*self.image, *self.audio})

    @property
    def entries(self) -> list[ModelEntry]:
        """Manifest entries of the loaded models: image models, then audio models, each sorted by name."""
        return [self.image[n].entry for n in sorted(self.image)] + [self.audio[n].entry for n in sorted(self.audio)]

    @property
    def provider(self) -> str:
        """``cuda`` when any model runs on the GPU, else ``cpu``."""
        codecs = [*self.image.values(), *self.audio.values()]
        return "cuda" if any(c.provider == "cuda" for c in codecs) else "cpu"


def batched(codec: ImageCodec, settings: Settings) -> ImageCodec:
    """``codec`` with its networks wrapped in :class:`MicroBatcher` (same parts otherwise)."""

    def wrap(net: object) -> MicroBatcher:
        return MicroBatcher(net, settings.batch_max_size, settings.batch_max_wait_ms)  # type: ignore[arg-type]

    out = copy.copy(codec)  # its tiles and contexts too, without measuring the networks again
    out.analysis, out.synthesis = wrap(codec.analysis), wrap(codec.synthesis)
    return out


def load_codecs(settings: Settings) -> Codecs:
    """Load every image and audio model of the registry at ``settings.models_dir``.

    Audio codecs are never micro-batched: their networks run on overlapping windows of sounds of any
    length, so concurrent calls rarely share a shape.
    """
    registry = Registry(settings.models_dir)
    names = registry.names("image")
    if not names:
        raise UnknownModelError(f"no image model in {registry.root}")
    providers = choose_providers(settings.provider)
    limits = StreamLimits(max_pixels=settings.max_pixels, max_samples=settings.max_audio_samples)
    threads = settings.session_threads
    image: dict[str, ImageCodec] = {}
    for name in names:
        entry = registry.entry(name)
        precision = settings.image_precision if settings.image_precision in ImageCodec.precisions(entry) else "float"
        encoder = settings.image_encoder if settings.image_encoder in ImageCodec.encoders(entry) else "full"
        codec = ImageCodec.load(registry, name, providers=providers, threads=threads, limits=limits,
                                precision=precision, encoder=encoder)
        if settings.use_batching(codec.provider):
            codec = batched(codec, settings)
        log.info(
            "loaded model %s (%d layers, provider %s, batching %s, %s analysis, %s synthesis)",
            name,
            codec.layers,
            codec.provider,
            isinstance(codec.analysis, MicroBatcher),
            encoder,
            precision,
        )
        image[name] = codec
    default = registry.defaults.get("image")
    if default not in image:
        default = names[0]
    audio: dict[str, AudioCodec] = {}
    audio_names = registry.names("audio")
    default_audio = registry.defaults.get("audio")
    if audio_names:
        if default_audio not in audio_names:
            log.warning("manifest names no default audio model; serving %s", audio_names[0])
            default_audio = audio_names[0]
        for name in audio_names:
            entry = registry.entry(name)
            precision = "int8" if settings.audio_precision == "int8" and "int8" in AudioCodec.precisions(entry) \
                else "float"
            codec = AudioCodec.load(registry, name, providers=providers, threads=threads, limits=limits,
                                    precision=precision)
            log.info("loaded audio model %s (%d layers, provider %s, %s synthesis)", name, codec.layers,
                     codec.provider, precision)
            audio[name] = codec
    else:
        default_audio = None
        log.info("no audio model in %s: the audio routes answer 404", registry.root)
    return Codecs(image, default, audio, default_audio)
