"""The HTTP connection protocol: uvicorn's, with a deadline for the request headers.

uvicorn closes idle keep-alive connections but arms no timer on a new connection, so a client
that connects and sends its headers a byte at a time (slowloris) holds a connection for as long
as it likes. :class:`GuardedHTTPProtocol` gives every request ``read_timeout`` seconds from the
start of the connection (or, on a kept-alive connection, from the end of the previous response)
until its headers are complete; then it answers 408 and closes. The body has the same deadline,
enforced while the app reads it (:func:`strata.server.deps.read_body`), and the number of
connections is capped by uvicorn's ``limit_concurrency`` (:func:`strata.server.run.uvicorn_options`).

The timeout comes from the app's lifespan state (``READ_TIMEOUT_KEY``), which uvicorn hands to every
connection, so each app (and each test server) carries its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.auto import AutoHTTPProtocol

READ_TIMEOUT_KEY = "strata.read_timeout"
DEFAULT_READ_TIMEOUT = 30.0
_TIMEOUT_BODY = b'{"code":"request_timeout","message":"the request headers did not arrive in time"}'
TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


class GuardedHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP protocol (httptools, else h11) with a deadline for each request's headers."""

    _header_timer: asyncio.TimerHandle | None = None
    _cycle_before: Any = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_headers()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._cancel_header_timer()
        timeout = float(self.app_state.get(READ_TIMEOUT_KEY, DEFAULT_READ_TIMEOUT))
        self._cycle_before = self.cycle  # a request whose headers are complete has a new cycle
        self._header_timer = self.loop.call_later(timeout, self._headers_due)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_due(self) -> None:
        self._header_timer = None
        if self.cycle is self._cycle_before and not self.transport.is_closing():
            self.transport.write(TIMEOUT_RESPONSE)
            self.transport.close()
