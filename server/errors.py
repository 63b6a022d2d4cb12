"""Errors of the HTTP service and the one place that turns exceptions into responses.

Every error response has the body ``{"code": "<stable snake_case code>", "message": "<text>"}``
(:class:`ErrorBody`). The codec's own exceptions (:mod:`strata.errors`) keep their ``code``;
the service adds a few of its own::

    StrataError (codec.errors)
    └── ServiceError                    errors raised by the service itself (status on the class)
        ├── UnauthorizedError       401  unauthorized            missing or wrong X-API-Key
        ├── BodyTooLargeError       413  body_too_large          body over STRATA_MAX_BODY_BYTES
        ├── UnsupportedMediaTypeError 415 unsupported_media_type a Content-Type the route does not take
        ├── EmptyBodyError          422  empty_body              a POST route got no bytes
        ├── InvalidRequestError     422  invalid_request         missing or contradictory parameters
        ├── InvalidCodesError       422  invalid_codes           a codes body that is not an integer [L, h, w] array
        ├── WrongModalityError      422  wrong_modality          an audio stream sent to an image route or vice versa
        ├── ClientDisconnectedError 400  client_disconnected     the client went away mid-upload
        ├── RequestTimeoutError     408  request_timeout         headers or body not sent within STRATA_READ_TIMEOUT
        ├── NotReadyError           503  not_ready               models are not loaded (yet)
        └── OverloadedError         503  overloaded              the queue or the work budget is full (Retry-After)

Status of the codec's errors (most specific class wins, see :data:`STATUS`)::

    UnsupportedMediaError 415 · LimitExceededError 413 · LayersError 422 · InputError 422
    UnknownModelError 404 · StreamLimitError 413 · BitstreamError 422 (its own code)
    ModelError 500 · anything else 500 ``internal_error`` (message hidden, logged with traceback)

Request validation errors (bad query parameters) answer 422 ``invalid_request``; Starlette's
HTTP errors (404 for an unknown path, 405 …) answer with ``not_found``, ``method_not_allowed`` …
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from strata.errors import (
    BitstreamError,
    InputError,
    LayersError,
    LimitExceededError,
    ModelError,
    StrataError,
    StreamLimitError,
    UnknownModelError,
    UnsupportedMediaError,
)

log = logging.getLogger("strata.server")


class ErrorBody(BaseModel):
    """The body of every error response."""

    code: str = Field(description="stable snake_case error code, e.g. 'invalid_layers' or 'bad_magic'")
    message: str = Field(description="human-readable explanation naming the bad value")


class ServiceError(StrataError):
    """An error raised by the HTTP layer; ``status`` is its HTTP status."""

    code = "service_error"
    status = 500


class UnauthorizedError(ServiceError):
    code, status = "unauthorized", 401


class BodyTooLargeError(ServiceError):
    code, status = "body_too_large", 413


class UnsupportedMediaTypeError(ServiceError):
    code, status = "unsupported_media_type", 415


class EmptyBodyError(ServiceError):
    code, status = "empty_body", 422


class InvalidRequestError(ServiceError):
    code, status = "invalid_request", 422


class InvalidCodesError(ServiceError, InputError):
    code, status = "invalid_codes", 422


class WrongModalityError(ServiceError, BitstreamError):
    code, status = "wrong_modality", 422


class ClientDisconnectedError(ServiceError):
    code, status = "client_disconnected", 400


class RequestTimeoutError(ServiceError):
    """The client did not send its request in time; the connection is closed after the answer."""

    code, status = "request_timeout", 408


class NotReadyError(ServiceError):
    code, status = "not_ready", 503


class OverloadedError(ServiceError):
    """The server is at capacity; ``retry_after`` (seconds) goes into the ``Retry-After`` header."""

    code, status = "overloaded", 503
    retry_after: int = 1


# Most specific first: the first class in an exception's MRO found here gives the status.
STATUS: dict[type[StrataError], int] = {
    UnsupportedMediaError: 415,
    LimitExceededError: 413,
    LayersError: 422,
    InputError: 422,
    UnknownModelError: 404,
    StreamLimitError: 413,
    BitstreamError: 422,
    ModelError: 500,
    StrataError: 500,
}


def status_of(exc: StrataError) -> int:
    """HTTP status of a codec or service error."""
    if isinstance(exc, ServiceError):
        return exc.status
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorBody(code=code, message=message).model_dump(), status_code=status, headers=headers)


async def strata_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """The one mapping from :class:`StrataError` subclasses to status + ``{code, message}``."""
    if not isinstance(exc, StrataError):  # pragma: no cover - registered for StrataError only
        return await internal_error_handler(request, exc)
    status = status_of(exc)
    if status >= 500 and not isinstance(exc, ServiceError):
        log.error("%s %s: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    headers = {"WWW-Authenticate": "ApiKey"} if isinstance(exc, UnauthorizedError) else None
    if isinstance(exc, OverloadedError):
        headers = {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, RequestTimeoutError):
        headers = {"Connection": "close"}
    return error_response(status, exc.code, str(exc) or type(exc).__name__, headers)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Bad query parameters (FastAPI's validation) → 422 ``invalid_request``."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    parts = []
    for err in errors:
        where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("query", "path", "header", "body"))
        parts.append(f"{where or 'request'}: {err.get('msg', 'invalid')}")
    return error_response(422, "invalid_request", "; ".join(parts) or "invalid request")


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Starlette's HTTP errors (unknown path, wrong method) with the same body shape."""
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    detail = exc.detail if isinstance(exc, StarletteHTTPException) and isinstance(exc.detail, str) else phrase
    headers = getattr(exc, "headers", None)
    return error_response(status, code, detail, dict(headers) if headers else None)


async def internal_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Anything unexpected → 500 ``internal_error``; the details go to the log, not the client."""
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


def install(app: FastAPI) -> None:
    """Register the exception handlers on ``app``."""
    app.add_exception_handler(StrataError, strata_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(Exception, internal_error_handler)


def responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI ``responses=`` entries documenting the error body for ``statuses``."""
    return {s: {"model": ErrorBody, "description": ERROR_DESCRIPTIONS[s]} for s in statuses}


ERROR_DESCRIPTIONS = {
    401: "Missing or wrong `X-API-Key` (`unauthorized`); only when the server has API keys configured.",
    404: "Unknown model (`unknown_model`), also on the audio routes of a server without an audio model.",
    413: "Body over the size limit (`body_too_large`), image over the pixel limit or with a side longer than a v1 "
    "stream holds, or sound over the length limit (`limit_exceeded`), or a stream claiming too large an image or too "
    "long a sound (`stream_limit_exceeded`).",
    415: "Content-Type not accepted (`unsupported_media_type`) or body not a PNG/JPEG/WebP image / not a "
    "WAV/FLAC/OGG sound, or a sound with an implausible sample rate or too many channels (`unsupported_media`).",
    422: "Invalid parameters or body: `invalid_request`, `invalid_layers`, `invalid_input` (e.g. a sound with no "
    "samples or NaN samples), `invalid_codes`, `empty_body`, or a stream error (`bad_magic`, `unsupported_version`, "
    "`bad_header`, `stream_unknown_model`, `weights_mismatch`, `truncated_stream`, `corrupted_chunk`, "
    "`trailing_data`, `wrong_modality`: an image stream on an audio route or vice versa).",
    500: "Unexpected server error (`internal_error`).",
    503: "Inference queue full (`overloaded`, retry later) or models not loaded (`not_ready`).",
}
