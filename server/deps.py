"""Request dependencies, as ``Annotated`` aliases the routes declare in their signatures.

``SettingsDep`` / ``CodecsDep`` / ``PoolDep`` / ``MetricsDep`` give the app's state (set in the
lifespan, see :mod:`strata.server.main`); ``ImageCodecDep`` / ``AudioCodecDep`` are the image / audio codec
named by the ``model`` query parameter (404 before the body is read when unknown, or when the
server has no audio model); ``ImageBody``, ``AudioBody``, ``StreamBody`` and ``CodesBody``
check the Content-Type and read the body under the size limit.

:func:`require_api_key` is a router-level dependency of every ``/v1`` router
(``dependencies=[Depends(require_api_key)]``): router dependencies run before the route's own,
so an unauthenticated request is refused before its body is read.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import Depends, Query, Request, Security
from fastapi.security import APIKeyHeader
from starlette.requests import ClientDisconnect
from strata.audio import AudioCodec
from strata.image import ImageCodec
from strata.server.codecs import Codecs
from strata.server.config import Settings
from strata.server.errors import (
    BodyTooLargeError,
    ClientDisconnectedError,
    EmptyBodyError,
    NotReadyError,
    RequestTimeoutError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from strata.server.metrics import Metrics
from strata.server.pool import InferencePool

OCTET = "application/octet-stream"
NPY = "application/x-npy"
JSON = "application/json"
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp", OCTET)
AUDIO_TYPES = ("audio/wav", "audio/x-wav", "audio/wave", "audio/vnd.wave", "audio/flac", "audio/x-flac",
               "audio/ogg", "audio/opus", "application/ogg", OCTET)  # the content decides; these only admit it
STREAM_TYPES = (OCTET,)
CODES_TYPES = (NPY, JSON, OCTET)  # octet-stream is read as .npy


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_pool(request: Request) -> InferencePool:
    return request.app.state.pool


def get_codecs(request: Request) -> Codecs:
    codecs = getattr(request.app.state, "codecs", None)
    if codecs is None:
        raise NotReadyError("models are not loaded yet")
    return codecs


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PoolDep = Annotated[InferencePool, Depends(get_pool)]
CodecsDep = Annotated[Codecs, Depends(get_codecs)]
ImageModelQuery = Annotated[str | None, Query(max_length=64,
                                               description="model name (default: the default image model)")]


def get_image_codec(codecs: CodecsDep, model: ImageModelQuery = None) -> ImageCodec:
    return codecs.image_codec(model)


ImageCodecDep = Annotated[ImageCodec, Depends(get_image_codec)]
AudioModelQuery = Annotated[str | None, Query(max_length=64, description="model name (default: the default audio "
                                                                         "model)")]


def get_audio_codec(codecs: CodecsDep, model: AudioModelQuery = None) -> AudioCodec:
    return codecs.audio_codec(model)


def require_audio_model(codecs: CodecsDep) -> None:
    """Router dependency of the audio routes: 404 ``unknown_model`` when no audio model is loaded."""
    codecs.audio_codec(None)


AudioCodecDep = Annotated[AudioCodec, Depends(get_audio_codec)]

api_key_header = APIKeyHeader(
    name="X-API-Key",
    auto_error=False,
    description="One of the server's API keys (STRATA_API_KEYS); declared only when the server has keys.",
)


def require_api_key(settings: SettingsDep, key: Annotated[str | None, Security(api_key_header)] = None) -> None:
    """Accept the request when no keys are configured or ``X-API-Key`` matches one (constant time)."""
    if not settings.api_keys:
        return
    given = (key or "").encode("utf-8", "surrogateescape")
    valid = False
    for accepted in settings.api_keys:  # compare with every key: the time does not tell which one matched
        valid |= hmac.compare_digest(given, accepted.get_secret_value().encode())
    if not valid:
        raise UnauthorizedError("missing or invalid API key (send it in the X-API-Key header)")



@dataclass(frozen=True)
class RawBody:
    """A request body read under the size limit, with its (parameter-less) media type."""

    data: bytes
    media_type: str


def media_type(request: Request) -> str:
    """The request's Content-Type without parameters, lower case; none means octet-stream."""
    value = request.headers.get("content-type", "")
    return value.split(";", 1)[0].strip().lower() or OCTET


async def read_body(request: Request, limit: int, timeout: float = float("inf")) -> bytes:
    """The body, read chunk by chunk; stops and raises 413 as soon as it passes ``limit`` bytes, and 408 when it
    is not complete within ``timeout`` seconds (a client trickling its body would hold a connection forever).

    ``Content-Length`` is used only to refuse early; the count of bytes really received decides.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"request body of {int(declared)} bytes is over the limit of {limit} bytes")
    chunks, size = [], 0
    try:
        with anyio.fail_after(timeout):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise BodyTooLargeError(f"request body is over the limit of {limit} bytes")
                chunks.append(chunk)
    except ClientDisconnect:
        raise ClientDisconnectedError("client disconnected while sending the body") from None
    except TimeoutError:
        raise RequestTimeoutError(f"the request body did not arrive within {timeout:g} s ({size} bytes came)") from None
    return b"".join(chunks)


def body_reader(accepted: tuple[str, ...], what: str) -> Callable[[Request, Settings], Awaitable[RawBody]]:
    """A dependency reading a body of one of the ``accepted`` media types."""

    async def dependency(request: Request, settings: SettingsDep) -> RawBody:
        kind = media_type(request)
        if kind not in accepted:
            raise UnsupportedMediaTypeError(f"Content-Type {kind!r} is not accepted here; send {what} as one of "
                                            f"{', '.join(accepted)}")
        data = await read_body(request, settings.max_body_bytes, settings.read_timeout)
        if not data:
            raise EmptyBodyError(f"the request body is empty; send {what}")
        return RawBody(data, kind)

    return dependency


ImageBody = Annotated[RawBody, Depends(body_reader(IMAGE_TYPES, "the image bytes (PNG, JPEG or WebP)"))]
AudioBody = Annotated[RawBody, Depends(body_reader(AUDIO_TYPES, "the sound (WAV, FLAC or OGG bytes)"))]
StreamBody = Annotated[RawBody, Depends(body_reader(STREAM_TYPES, "a Strata stream"))]
CodesBody = Annotated[RawBody, Depends(body_reader(CODES_TYPES, "codes as .npy or JSON"))]
