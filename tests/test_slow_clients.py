"""Slow clients: headers and bodies have a deadline, connections are capped, and /healthz keeps answering."""

from __future__ import annotations

import socket
import threading
import time
from urllib.parse import urlparse

import httpx
import pytest

pytest.importorskip("fastapi")

from tests.conftest import running_server, server_settings  # noqa: E402

TIMEOUT = 1.0


def _connect(url: str) -> socket.socket:
    u = urlparse(url)
    s = socket.create_connection((u.hostname, u.port), timeout=10)
    return s


def _trickle(sock: socket.socket, first: bytes, drip: bytes, seconds: float) -> tuple[bytes, float]:
    """Send ``first``, then ``drip`` a byte every 0.2 s until the server answers or ``seconds`` pass; returns the
    answer (b"" if the server just closed) and when it came."""
    start = time.monotonic()
    sock.sendall(first)
    sock.settimeout(0.2)
    answer = b""
    i = 0
    while time.monotonic() - start < seconds:
        try:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
            if b"\r\n\r\n" in answer and answer.endswith(b"}"):
                break
        except TimeoutError:
            if drip:
                try:
                    sock.sendall(drip[i % len(drip) : i % len(drip) + 1])
                except OSError:
                    break
                i += 1
        except OSError:
            break
    return answer, time.monotonic() - start


@pytest.fixture(scope="module")
def slow_server(tiny_registry):
    from strata.server.main import create_app

    app = create_app(server_settings(tiny_registry, read_timeout=TIMEOUT, max_connections=40))
    with running_server(app) as url:
        yield url


def test_slow_headers_and_bodies_are_cut_while_health_answers(slow_server):
    results: dict[str, list[tuple[bytes, float]]] = {"header": [], "body": [], "silent": []}
    lock = threading.Lock()

    def slow_header() -> None:
        with _connect(slow_server) as s:
            r = _trickle(s, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"abcdef", 10)
        with lock:
            results["header"].append(r)

    def slow_body() -> None:
        with _connect(slow_server) as s:
            head = (b"POST /v1/images:compress HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                    b"Content-Length: 100000\r\n\r\n\x89PNG")
            r = _trickle(s, head, b"\x00", 10)
        with lock:
            results["body"].append(r)

    def silent() -> None:
        with _connect(slow_server) as s:
            r = _trickle(s, b"", b"", 10)  # connects and sends nothing
        with lock:
            results["silent"].append(r)

    threads = [threading.Thread(target=f) for f in [slow_header] * 10 + [slow_body] * 20 + [silent] * 5]
    for t in threads:
        t.start()
    time.sleep(0.3)
    health = []
    while any(t.is_alive() for t in threads):
        t0 = time.monotonic()
        health.append((httpx.get(f"{slow_server}/healthz", timeout=5).status_code, time.monotonic() - t0))
        time.sleep(0.1)
    for t in threads:
        t.join(timeout=15)

    assert len(results["header"]) == 10 and len(results["body"]) == 20 and len(results["silent"]) == 5
    for answer, took in results["header"] + results["silent"]:
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer[:200]
        assert took < TIMEOUT + 2
    for answer, took in results["body"]:
        assert answer.startswith(b"HTTP/1.1 408") and b"request_timeout" in answer, answer[:200]
        assert b"did not arrive within 1 s" in answer and took < TIMEOUT + 2
    assert health and all(code == 200 and took < 1.0 for code, took in health), health


def test_a_kept_alive_connection_gets_a_fresh_deadline(slow_server):
    with httpx.Client(timeout=5) as client:  # one connection, several requests spaced under the timeout
        for _ in range(3):
            assert client.get(f"{slow_server}/healthz").status_code == 200
            time.sleep(TIMEOUT * 0.6)


def test_connections_are_capped(tiny_registry):
    from strata.server.main import create_app

    app = create_app(server_settings(tiny_registry, read_timeout=TIMEOUT, max_connections=4))
    with running_server(app) as url:
        idle = [_connect(url) for _ in range(4)]
        try:
            time.sleep(0.2)
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 503  # over the cap
        finally:
            for s in idle:
                s.close()
        time.sleep(TIMEOUT + 0.5)
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
