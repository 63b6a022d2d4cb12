"""Exceptions raised by the Strata SDK, in one hierarchy::

    StrataClientError                      every error the SDK raises on purpose
    ├── StrataAPIError                     the server answered with an error status
    │   │                                  (.message, .code, .status, .request, .response)
    │   ├── BadRequestError          400, 422 and other 4xx: invalid_request, invalid_layers,
    │   │   │                                 invalid_input, invalid_codes, empty_body, …
    │   │   └── InvalidStreamError   422      bad_magic, unsupported_version, bad_header,
    │   │                                     stream_unknown_model, weights_mismatch,
    │   │                                     truncated_stream, corrupted_chunk, trailing_data,
    │   │                                     wrong_modality (an image stream on an audio route, …)
    │   ├── UnauthorizedError        401/403  unauthorized: missing or wrong API key
    │   ├── NotFoundError            404      unknown_model (also: no audio model on the server), not_found
    │   ├── PayloadTooLargeError     413      body_too_large, limit_exceeded, stream_limit_exceeded
    │   ├── UnsupportedMediaError    415      unsupported_media_type, unsupported_media (not an image /
    │   │                                     sound, implausible sample rate or channel count)
    │   ├── ServerError              5xx      internal_error, model_error, …
    │   │   └── ServiceUnavailableError 503   not_ready
    │   │       └── OverloadedError   503     overloaded: the server's queue is full, retry later
    │   └── UnexpectedResponseError           a success response the SDK cannot read
    └── StrataConnectionError                 no response: connection refused, reset, … (httpx.TransportError)
        └── StrataTimeoutError                the request timed out (httpx.TimeoutException)

``code`` is the server's stable error code from the ``{"code", "message"}`` body; the class is
chosen by ``code`` first, then by HTTP status, so a new server code still lands in the right
branch.
"""

from __future__ import annotations

import httpx


class StrataClientError(Exception):
    """Base class of every error the SDK raises on purpose."""

    def __init__(self, message: str, *, request: httpx.Request | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.request = request


class StrataAPIError(StrataClientError):
    """The server answered with an error status (or a response the SDK cannot read)."""

    def __init__(self, message: str, *, code: str, status: int, request: httpx.Request | None = None,
                 response: httpx.Response | None = None) -> None:
        super().__init__(message, request=request)
        self.code = code
        self.status = status
        self.response = response

    def __str__(self) -> str:
        return f"{self.message} ({self.status} {self.code})"


class BadRequestError(StrataAPIError):
    """400/422 (and other 4xx): the request or its body is invalid."""


class InvalidStreamError(BadRequestError):
    """422: the stream cannot be decoded (bad magic, truncated, corrupted, unknown model, …)."""


class UnauthorizedError(StrataAPIError):
    """401/403: missing or wrong API key."""


class NotFoundError(StrataAPIError):
    """404: unknown model or path."""


class PayloadTooLargeError(StrataAPIError):
    """413: body, image, sound or stream over the server's limits."""


class UnsupportedMediaError(StrataAPIError):
    """415: Content-Type not accepted, or the body is not a PNG/JPEG/WebP image / WAV/FLAC/OGG sound."""


class ServerError(StrataAPIError):
    """5xx: the server failed."""


class ServiceUnavailableError(ServerError):
    """503: the server cannot take the request now (models not loaded yet)."""


class OverloadedError(ServiceUnavailableError):
    """503 ``overloaded``: the server's inference queue is full; retry later."""


class UnexpectedResponseError(StrataAPIError):
    """A success status, but a body or headers the SDK cannot read (wrong server or version?)."""


class StrataConnectionError(StrataClientError):
    """No response: the connection failed (refused, reset, DNS, protocol error)."""


class StrataTimeoutError(StrataConnectionError):
    """The request timed out (connect, read, write or pool timeout)."""


STREAM_CODES = frozenset({
    "invalid_stream", "bad_magic", "unsupported_version", "bad_header", "stream_limit_exceeded",
    "stream_unknown_model", "weights_mismatch", "truncated_stream", "corrupted_chunk", "trailing_data",
    "wrong_modality",
})

BY_CODE: dict[str, type[StrataAPIError]] = {
    "unauthorized": UnauthorizedError,
    "unknown_model": NotFoundError,
    "body_too_large": PayloadTooLargeError,
    "limit_exceeded": PayloadTooLargeError,
    "stream_limit_exceeded": PayloadTooLargeError,
    "unsupported_media_type": UnsupportedMediaError,
    "unsupported_media": UnsupportedMediaError,
    "overloaded": OverloadedError,
    "not_ready": ServiceUnavailableError,
    **{code: InvalidStreamError for code in STREAM_CODES - {"stream_limit_exceeded"}},
}

BY_STATUS: dict[int, type[StrataAPIError]] = {
    400: BadRequestError,
    401: UnauthorizedError,
    403: UnauthorizedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    415: UnsupportedMediaError,
    422: BadRequestError,
    503: ServiceUnavailableError,
}


def error_class(status: int, code: str) -> type[StrataAPIError]:
    """The exception class for an error response (``code`` first, then ``status``)."""
    if code in BY_CODE:
        return BY_CODE[code]
    if status in BY_STATUS:
        return BY_STATUS[status]
    return ServerError if status >= 500 else BadRequestError


__all__ = [
    "BadRequestError",
    "InvalidStreamError",
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
