"""Strata: learned image and audio compression with residual vector quantizers.

The public API lives here::

    from strata import ImageCodec, AudioCodec, Registry

    codec = ImageCodec.load(Registry())          # the shipped default image model
    stream = codec.compress(image, layers=4)     # bytes; any prefix of layers decodes
    picture = codec.decompress(stream)

The names are imported on first use (PEP 562), so ``import strata.client`` (the HTTP SDK,
httpx only) does not pull in numpy or onnxruntime. The serving path needs numpy,
onnxruntime and constriction (the ``codec`` extra); ``strata.train``, ``strata.export``
and ``strata.eval`` need the ``train`` and ``eval`` extras.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    "ImageCodec": "strata.image",
    "ImageCodes": "strata.image",
    "AudioCodec": "strata.audio",
    "AudioCodes": "strata.audio",
    "Vocoder": "strata.audio",
    "Registry": "strata.registry",
    "ModelEntry": "strata.registry",
    "Modality": "strata.bitstream",
    "Stream": "strata.bitstream",
    "StreamHeader": "strata.bitstream",
    "StreamLimits": "strata.bitstream",
    "parse": "strata.bitstream",
    "truncate": "strata.bitstream",
    "read_image": "strata.frontend.image",
    "write_image": "strata.frontend.image",
    "read_audio": "strata.frontend.audio",
    "write_wav": "strata.frontend.audio",
    "StrataError": "strata.errors",
    "InputError": "strata.errors",
    "UnsupportedMediaError": "strata.errors",
    "LimitExceededError": "strata.errors",
    "LayersError": "strata.errors",
    "ModelError": "strata.errors",
    "UnknownModelError": "strata.errors",
    "ModelIntegrityError": "strata.errors",
    "BitstreamError": "strata.errors",
}

__all__ = [  # noqa: F822 - resolved lazily by __getattr__
    "AudioCodec",
    "AudioCodes",
    "BitstreamError",
    "ImageCodec",
    "ImageCodes",
    "InputError",
    "LayersError",
    "LimitExceededError",
    "Modality",
    "ModelEntry",
    "ModelError",
    "ModelIntegrityError",
    "Registry",
    "StrataError",
    "Stream",
    "StreamHeader",
    "StreamLimits",
    "UnknownModelError",
    "UnsupportedMediaError",
    "Vocoder",
    "parse",
    "read_audio",
    "read_image",
    "truncate",
    "write_image",
    "write_wav",
    "__version__",
]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from strata.audio import AudioCodec, AudioCodes, Vocoder
    from strata.bitstream import Modality, Stream, StreamHeader, StreamLimits, parse, truncate
    from strata.errors import (
        BitstreamError,
        InputError,
        LayersError,
        LimitExceededError,
        ModelError,
        ModelIntegrityError,
        StrataError,
        UnknownModelError,
        UnsupportedMediaError,
    )
    from strata.frontend.audio import read_audio, write_wav
    from strata.frontend.image import read_image, write_image
    from strata.image import ImageCodec, ImageCodes
    from strata.registry import ModelEntry, Registry


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'strata' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
