"""Prometheus metrics of one app (a private :class:`CollectorRegistry`, no global state) and the
ASGI middleware that records them and logs one line per request.

Exposed at ``GET /metrics`` (open, like the health routes: it reveals request counts and
latencies, never bodies or keys; keep it off the public network or behind the proxy's auth)::

    strata_http_requests_total{route, method, status}      requests answered
    strata_http_request_duration_seconds{route, method}    latency histogram
    strata_http_request_bytes_total{route}                 request body bytes received
    strata_http_response_bytes_total{route}                response body bytes sent
    strata_inference_queue_depth                           requests waiting for an inference worker
    strata_inference_in_flight                             requests holding an inference worker
    strata_inference_rejected_total                        requests answered 503 overloaded

``route`` is the route template (``/v1/models/{name}``), or ``unmatched`` for unknown paths, so
the label set stays bounded whatever clients send.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("strata.server.access")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Metrics:
    """The collectors of one app."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "strata_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=r
        )
        self.latency = Histogram(
            "strata_http_request_duration_seconds", "HTTP request latency", ["route", "method"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.request_bytes = Counter("strata_http_request_bytes", "request body bytes received", ["route"], registry=r)
        self.response_bytes = Counter("strata_http_response_bytes", "response body bytes sent", ["route"], registry=r)
        self.queue_depth = Gauge("strata_inference_queue_depth", "requests waiting for an inference worker", registry=r)
        self.in_flight = Gauge("strata_inference_in_flight", "requests holding an inference worker", registry=r)
        self.rejected = Counter("strata_inference_rejected", "requests refused with 503 overloaded", registry=r)

    def render(self) -> bytes:
        """The Prometheus text exposition of this app's metrics."""
        return generate_latest(self.registry)


def route_template(scope: Scope) -> str:
    """The matched route's path template, or ``unmatched``."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class MetricsMiddleware:
    """Pure ASGI middleware: counts, times and logs every HTTP request (no bodies, no headers)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        received = sent = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def counting_send(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counting_receive, counting_send)
        finally:
            elapsed = time.perf_counter() - start
            route, method = route_template(scope), scope.get("method", "")
            m = self.metrics
            m.requests.labels(route, method, str(status)).inc()
            m.latency.labels(route, method).observe(elapsed)
            m.request_bytes.labels(route).inc(received)
            m.response_bytes.labels(route).inc(sent)
            log.info("%s %s %d %.1fms in=%dB out=%dB", method, scope.get("path", ""), status, 1000 * elapsed,
                     received, sent)
