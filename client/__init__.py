"""Python SDK of the Strata HTTP service (images and audio). Needs only httpx; numpy and Pillow
are used, lazily, when you pass or ask for arrays.

::

    from strata.client import Client

    with Client("http://127.0.0.1:8000") as strata:
        stream = strata.compress("photo.png", layers=4)
        print(stream.layers, stream.bpp, len(stream.data))
        png = strata.decompress(stream, layers=2).data

        sound = strata.compress_audio("speech.wav", layers=4)          # bytes or a path: WAV, FLAC, OGG
        print(sound.kbps, sound.seconds)
        wav = strata.decompress_audio(sound, layers=2)                # 16-bit WAV bytes at 22 050 Hz

``AsyncClient`` has the same methods, awaited. Errors: see :mod:`strata.client._exceptions`.
"""

from strata.client._async_client import AsyncClient
from strata.client._base import DEFAULT_BASE_URL, DEFAULT_TIMEOUT
from strata.client._client import Client
from strata.client._exceptions import (
    BadRequestError,
    InvalidStreamError,
    NotFoundError,
    OverloadedError,
    PayloadTooLargeError,
    ServerError,
    ServiceUnavailableError,
    StrataAPIError,
    StrataClientError,
    StrataConnectionError,
    StrataTimeoutError,
    UnauthorizedError,
    UnexpectedResponseError,
    UnsupportedMediaError,
)
from strata.client._types import AudioCodes, Codes, Compressed, CompressedAudio, DecodedImage, Health, ModelInfo

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "AsyncClient",
    "AudioCodes",
    "BadRequestError",
    "Client",
    "Codes",
    "Compressed",
    "CompressedAudio",
    "DecodedImage",
    "Health",
    "InvalidStreamError",
    "ModelInfo",
    "NotFoundError",
    "OverloadedError",
    "PayloadTooLargeError",
    "ServerError",
    "ServiceUnavailableError",
    "StrataAPIError",
    "StrataClientError",
    "StrataConnectionError",
    "StrataTimeoutError",
    "UnauthorizedError",
    "UnexpectedResponseError",
    "UnsupportedMediaError",
]
