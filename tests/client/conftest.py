"""Fixtures of the client-only tests: no server, no numpy; everything through ``httpx.MockTransport``.

These tests must run in a venv with only ``httpx`` and ``pytest`` (the SDK's base install)::

    python -m pytest tests/client -p no:cacheprovider --confcutdir=tests/client
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import httpx
import pytest

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 24  # the magic is all the client looks at
STREAM = b"STRA\x01" + b"\x00" * 20
HEADERS = {"X-Strata-Model": "tiny-image", "X-Strata-Layers": "4", "X-Strata-Bytes": str(len(STREAM)),
           "X-Strata-Bpp": "0.5571", "X-Strata-Width": "56", "X-Strata-Height": "40"}


AUDIO_STREAM = b"STRA\x01" + b"\x01" * 20
AUDIO_HEADERS = {"X-Strata-Model": "tiny-audio", "X-Strata-Layers": "4", "X-Strata-Bytes": str(len(AUDIO_STREAM)),
                 "X-Strata-Kbps": "3.2615", "X-Strata-Seconds": "1.3000", "X-Strata-Samples": "28665",
                 "X-Strata-Sample-Rate": "22050"}
WAV = b"RIFF\x24\x00\x00\x00WAVEfmt "  # the magic is all the client looks at


def npy_float32(values: list[float], shape: tuple[int, ...]) -> bytes:
    """A ``.npy`` file made without numpy (format 1.0, little-endian float32, C order)."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    header += " " * (-(10 + len(header) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + struct.pack(
        f"<{len(values)}f", *values)


MEL = npy_float32([0.5, -1.0, 2.0, 3.0, 4.0, -5.5], (2, 3))


def error(status: int, code: str, message: str = "nope") -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message})


class Recorder:
    """A MockTransport handler that records requests and answers with ``respond(request)``."""

    def __init__(self, respond: Callable[[httpx.Request], httpx.Response]) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.respond(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def default_response(request: httpx.Request) -> httpx.Response:
    """A plausible server: answers every route with a well-formed success."""
    path, params = request.url.path, request.url.params
    if path == "/v1/images:compress":
        return httpx.Response(200, content=STREAM, headers=HEADERS)
    if path in ("/v1/images:decompress", "/v1/images:decode"):
        layers = params.get("layers", "4")
        headers = {**HEADERS, "X-Strata-Layers": layers, "X-Strata-Stream-Layers": "4"}
        return httpx.Response(200, content=b"image-bytes-" + layers.encode(), headers=headers)
    if path == "/v1/images:encode":
        doc = {"model": "tiny-image", "height": 40, "width": 56, "layers": 2, "codes": [[[1, 2]], [[3, 4]]]}
        return httpx.Response(200, content=json.dumps(doc).encode(), headers={"content-type": "application/json"})
    if path == "/v1/audio:compress":
        return httpx.Response(200, content=AUDIO_STREAM, headers=AUDIO_HEADERS)
    if path in ("/v1/audio:decompress", "/v1/audio:decode"):
        layers = params.get("layers", "4")
        headers = {**AUDIO_HEADERS, "X-Strata-Layers": layers, "X-Strata-Stream-Layers": "4"}
        if params.get("output") == "mel":
            return httpx.Response(200, content=MEL, headers={**headers, "content-type": "application/x-npy"})
        return httpx.Response(200, content=WAV + layers.encode(), headers={**headers, "content-type": "audio/wav"})
    if path == "/v1/audio:encode":
        doc = {"model": "tiny-audio", "samples": 2048, "sample_rate": 22050, "layers": 2, "codes": [[[1, 2]], [[3, 4]]]}
        return httpx.Response(200, content=json.dumps(doc).encode(), headers={"content-type": "application/json"})
    if path == "/v1/models":
        return httpx.Response(200, json=[MODEL])
    if path == "/v1/models/tiny-audio":
        return httpx.Response(200, json=AUDIO_MODEL)
    if path == "/v1/models/tiny-image":
        return httpx.Response(200, json=MODEL)
    if path == "/readyz":
        return httpx.Response(200, json={"status": "ready", "provider": "cpu", "models": ["tiny-image"]})
    return error(404, "not_found")


MODEL = {"name": "tiny-image", "modality": "image", "layers": 4, "codebook_sizes": [16, 16, 16, 16], "factor": 8,
         "bits_per_layer": [10.0, 9.0, 8.0, 7.0], "bpp_per_layer": [0.1, 0.2, 0.3, 0.4], "description": "test",
         "weights_sha256": "284535500881201b", "default": True}
AUDIO_MODEL = {"name": "tiny-audio", "modality": "audio", "layers": 4, "codebook_sizes": [16, 16, 16, 16], "factor": 4,
               "bits_per_layer": [], "bpp_per_layer": [], "kbps_per_layer": [1.5, 2.5, 3.0, 3.5], "sample_rate": 22050,
               "description": "test audio", "weights_sha256": "0123456789abcdef", "default": True}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder(default_response)


@pytest.fixture(autouse=True)
def no_env_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STRATA_API_KEY", raising=False)
