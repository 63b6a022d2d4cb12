"""Every error the service answers, with its status and code; and no 500 for bad input.

Dedicated apps (small limits, API keys, a saturated pool) run on their own real servers.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
from dataclasses import replace

import httpx
import numpy as np
import pytest
from strata import bitstream
from strata.client import Client, OverloadedError, UnauthorizedError
from strata.image import ImageCodec
from strata.server.codecs import Codecs
from strata.server.deps import get_codecs
from strata.server.main import create_app

from tests.conftest import png_bytes, running_server, server_settings, synthetic_image

H, W = 40, 56
KEY, KEY2 = "test-key-0123456789abcdef", "second-key-abcdefghijklmn"
IMG = synthetic_image(H, W, seed=5)
PNG = png_bytes(IMG)


@pytest.fixture(scope="module")
def stream(tiny_codec) -> bytes:
    return tiny_codec.compress(IMG)


@pytest.fixture(scope="module")
def codes_npy(tiny_codec) -> bytes:
    return npy(tiny_codec.encode(IMG).codes.astype(np.int16))


def npy(array: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, **kw)
    return buf.getvalue()


def post(url: str, route: str, body: bytes | object, content_type: str | None, **params) -> httpx.Response:
    headers = {"content-type": content_type} if content_type else {}
    return httpx.post(f"{url}/v1/images:{route}", params=params, content=body, headers=headers, timeout=30)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message"} and body["code"] == code and body["message"], body
    return body


def npy_with_shape(shape: str, body: bytes = b"") -> bytes:
    """A version 1.0 ``.npy`` file of ``<i2`` whose header announces ``shape`` (any text), then ``body``."""
    header = f"{{'descr': '<i2', 'fortran_order': False, 'shape': {shape}, }}".encode()
    header += b" " * ((63 - 10 - len(header)) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + body


def restream(data: bytes, **changes) -> bytes:
    """``data`` with header fields replaced (and a valid header CRC)."""
    parsed = bitstream.parse(data)
    return bitstream.pack(replace(parsed.header, **changes), list(parsed.chunks))


# ----------------------------------------------------------------------------- media and bodies
@pytest.mark.parametrize(
    ("route", "content_type"),
    [("compress", "text/plain"), ("encode", "multipart/form-data"), ("decompress", "image/png"),
     ("decompress", "application/json"), ("decode", "image/png"), ("compress", "application/json")],
)
def test_415_wrong_content_type(live_server, route, content_type) -> None:
    body = assert_error(post(live_server, route, b"xxxx", content_type), 415, "unsupported_media_type")
    assert content_type in body["message"]


@pytest.mark.parametrize("body", [b"hello, not an image", PNG[:200], b"GIF89a" + b"\x00" * 50])
@pytest.mark.parametrize("route", ["compress", "encode"])
def test_415_not_an_image(live_server, route, body) -> None:
    assert_error(post(live_server, route, body, "image/png"), 415, "unsupported_media")


@pytest.mark.parametrize(("route", "content_type"), [("compress", "image/png"), ("encode", None),
                                                     ("decompress", None), ("decode", "application/x-npy")])
def test_422_empty_body(live_server, route, content_type) -> None:
    assert "empty" in assert_error(post(live_server, route, b"", content_type), 422, "empty_body")["message"]


def test_missing_content_type_is_octet_stream(live_server, stream, tiny_codec) -> None:
    assert post(live_server, "compress", PNG, None).content == tiny_codec.compress(IMG)
    assert post(live_server, "decompress", stream, None).status_code == 200


# ----------------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(("value", "code"), [("0", "invalid_layers"), ("5", "invalid_layers"),
                                             ("-1", "invalid_layers"), ("abc", "invalid_request"),
                                             ("1.5", "invalid_request")])
@pytest.mark.parametrize("route", ["compress", "decompress", "encode", "decode"])
def test_422_layers_out_of_range(live_server, stream, codes_npy, route, value, code) -> None:
    body, kind, extra = {
        "compress": (PNG, "image/png", {}), "encode": (PNG, "image/png", {}),
        "decompress": (stream, None, {}), "decode": (codes_npy, "application/x-npy", {"height": H, "width": W}),
    }[route]
    assert_error(post(live_server, route, body, kind, layers=value, **extra), 422, code)


@pytest.mark.parametrize("route", ["decompress", "decode"])
def test_422_unknown_format(live_server, stream, codes_npy, route) -> None:
    body = stream if route == "decompress" else codes_npy
    assert_error(post(live_server, route, body, "application/octet-stream", format="gif", height=H, width=W),
                 422, "invalid_request")


def test_404_unknown_model(live_server, codes_npy, tiny_codec) -> None:
    for route, body, kind, extra in [("compress", PNG, "image/png", {}), ("encode", PNG, "image/png", {}),
                                     ("decode", codes_npy, "application/x-npy", {"height": H, "width": W})]:
        body = assert_error(post(live_server, route, body, kind, model="nope", **extra), 404, "unknown_model")
        assert "tiny-image" in body["message"]  # names the valid choices
    doc = {"model": "nope", "height": H, "width": W, "codes": tiny_codec.encode(IMG).codes.tolist()}
    assert_error(post(live_server, "decode", json.dumps(doc), "application/json"), 404, "unknown_model")


# ---------------------------------------------------------------------------------------- streams
STREAM_CASES = {
    "bad_magic": lambda s: b"XXXX" + s[4:],
    "unsupported_version": lambda s: s[:4] + b"\x07" + s[5:],
    "truncated_stream": lambda s: s[:-3],
    "truncated_header": lambda s: s[:12],
    "corrupted_chunk": lambda s: s[:-1] + bytes([s[-1] ^ 0xFF]),
    "bad_header": lambda s: s[:9] + bytes([s[9] ^ 0x01]) + s[10:],
    "trailing_data": lambda s: s + b"\x00",
    "stream_unknown_model": lambda s: restream(s, model="other-model"),
    "weights_mismatch": lambda s: restream(s, weights=b"\x00" * 8),
}


@pytest.mark.parametrize("case", sorted(STREAM_CASES))
def test_422_bad_streams(live_server, stream, case) -> None:
    code = "truncated_stream" if case == "truncated_header" else case
    assert_error(post(live_server, "decompress", STREAM_CASES[case](stream), None), 422, code)


def test_layers_above_those_in_a_truncated_stream(live_server, stream) -> None:
    short = bitstream.truncate(stream, 2)
    assert_error(post(live_server, "decompress", short, None, layers=3), 422, "invalid_layers")
    assert post(live_server, "decompress", short, None, layers=2).headers["x-strata-stream-layers"] == "2"


# ----------------------------------------------------------------------------------------- codes
def _codes(tiny_codec) -> np.ndarray:
    return tiny_codec.encode(IMG).codes


@pytest.mark.parametrize(
    ("name", "make"),
    [
        ("garbage", lambda c: b"definitely not npy"),
        ("npz", lambda c: (lambda b: (np.savez(b, c), b.getvalue())[1])(io.BytesIO())),
        ("float", lambda c: npy(c.astype(np.float32))),
        ("bool", lambda c: npy(c > 3)),
        ("2-D", lambda c: npy(c[0])),
        ("4-D", lambda c: npy(c[None])),
        ("object", lambda c: npy(np.array([[[1, "a"]]], dtype=object), allow_pickle=True)),
        ("short data", lambda c: npy(c)[:-5]),
        ("long data", lambda c: npy(c) + b"\x00\x00"),
        ("huge header", lambda c: npy(c).replace(b"(4, 5, 7)", b"(99999, 99999, 99999)")),
        ("out of range", lambda c: npy(np.where(c == c.max(), 16, c))),
        ("negative", lambda c: npy(c - 1)),
        ("wrong grid", lambda c: npy(c[:, :4])),
        ("too many layers", lambda c: npy(np.concatenate([c, c[:1]]))),
        ("no layers", lambda c: npy(c[:0])),
        ("big ints", lambda c: npy(c.astype(np.uint64) + np.uint64(2**63))),
        # Headers whose shape numpy parses but cannot build: each was a 500 before the checks in load_npy.
        ("negative dims", lambda c: npy_with_shape("(-1, -1, 7)", bytes(14))),  # -1·-1·7 = 7 values
        ("negative dims, positive product", lambda c: npy_with_shape("(-1, -5, 7)", bytes(70))),
        ("dims overflowing int64", lambda c: npy_with_shape("(4294967296, 4294967296, 2)")),  # 2**65 ≡ 0
        ("dim over int64", lambda c: npy_with_shape(f"({2**70}, 1, 1)")),
        ("empty with a dim over intp", lambda c: npy_with_shape(f"({2**63}, 0, 1)")),
    ],
)
def test_422_invalid_npy_codes(live_server, tiny_codec, name, make) -> None:
    body = make(_codes(tiny_codec))
    assert_error(post(live_server, "decode", body, "application/x-npy", height=H, width=W), 422, "invalid_codes")


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("not json", lambda d: b"{not json"),
        ("not an object", lambda d: json.dumps([1, 2, 3])),
        ("no codes", lambda d: json.dumps({k: v for k, v in d.items() if k != "codes"})),
        ("no height", lambda d: json.dumps({k: v for k, v in d.items() if k != "height"})),
        ("ragged", lambda d: json.dumps({**d, "codes": [[[1, 2], [3]]]})),
        ("floats", lambda d: json.dumps({**d, "codes": [[[1.5] * 7] * 5] * 4})),
        ("strings", lambda d: json.dumps({**d, "codes": [[["1"] * 7] * 5] * 4})),
        ("2-D", lambda d: json.dumps({**d, "codes": d["codes"][0]})),
        ("huge ints", lambda d: json.dumps({**d, "codes": [[[2**70] * 7] * 5] * 4})),
        ("layers mismatch", lambda d: json.dumps({**d, "layers": 3})),
        ("out of range", lambda d: json.dumps({**d, "codes": [[[99] * 7] * 5] * 4})),
        ("deep nesting", lambda d: '{"model": "tiny-image", "height": 40, "width": 56, "codes": '
                                   + "[" * 100_000 + "]" * 100_000 + "}"),
        ("zero height", lambda d: json.dumps({**d, "height": 0})),
    ],
)
def test_422_invalid_json_codes(live_server, tiny_codec, name, change) -> None:
    doc = {"model": "tiny-image", "height": H, "width": W, "layers": 4, "codes": _codes(tiny_codec).tolist()}
    assert_error(post(live_server, "decode", change(doc), "application/json"), 422, "invalid_codes")


def test_413_image_side_longer_than_a_stream_holds(live_server, tiny_codec) -> None:
    # A 1-pixel-high image far under the pixel limit whose code grid is one column too wide for the v1 header
    # (16 bits per side). It used to run the networks on `factor` padded rows (8x the pixels the limit counts) and
    # then fail as a 422 `bad_header` for compress, or succeed unbounded for encode / decode (1×16 M pixels: ~40 GB).
    from PIL import Image

    width = 65535 * tiny_codec.factor + 1
    wide = io.BytesIO()
    Image.new("RGB", (width, 1), (90, 120, 200)).save(wide, format="PNG")
    for route in ("compress", "encode"):
        body = assert_error(post(live_server, route, wide.getvalue(), "image/png"), 413, "limit_exceeded")
        assert "v1 stream" in body["message"] and str(65535 * tiny_codec.factor) in body["message"]
    codes = npy(np.zeros((4, 1, 65536), np.int16))
    body = assert_error(post(live_server, "decode", codes, "application/x-npy", height=1, width=width), 413,
                        "limit_exceeded")
    assert "v1 stream" in body["message"]


def test_422_codes_request_problems(live_server, tiny_codec, codes_npy) -> None:
    assert_error(post(live_server, "decode", codes_npy, "application/x-npy"), 422, "invalid_request")
    assert_error(post(live_server, "decode", codes_npy, "application/x-npy", height=H), 422, "invalid_request")
    doc = {"model": "tiny-image", "height": H, "width": W, "codes": _codes(tiny_codec).tolist()}
    assert_error(post(live_server, "decode", json.dumps(doc), "application/json", width=W + 8), 422, "invalid_request")
    assert post(live_server, "decode", json.dumps(doc), "application/json", width=W).status_code == 200


def test_unknown_path_and_method(live_server) -> None:
    assert_error(httpx.get(f"{live_server}/v2/nothing"), 404, "not_found")
    assert_error(httpx.get(f"{live_server}/v1/images:compress"), 405, "method_not_allowed")


# ------------------------------------------------------------------------------------ limits app
@pytest.fixture(scope="module")
def small_server(tiny_registry):
    app = create_app(server_settings(tiny_registry, max_body_bytes=20_000, max_pixels=1_000))
    with running_server(app) as url:
        yield url


def test_413_body_too_large(small_server) -> None:
    big = b"\x89PNG\r\n\x1a\n" + bytes(30_000)
    body = assert_error(post(small_server, "compress", big, "image/png"), 413, "body_too_large")
    assert "20000" in body["message"]
    # Without Content-Length (chunked upload), the limit is enforced on the bytes actually received.
    chunks = iter([bytes(8_000)] * 4)
    response = httpx.post(f"{small_server}/v1/images:decompress", content=chunks, timeout=30)
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "body_too_large")
    # An unknown model is refused before the body is even looked at.
    assert_error(post(small_server, "compress", big, "image/png", model="nope"), 404, "unknown_model")
    # At the limit: read, then refused for what it is.
    assert_error(post(small_server, "compress", bytes(20_000), "image/png"), 415, "unsupported_media")


def test_413_too_many_pixels(small_server, stream, codes_npy) -> None:
    assert H * W > 1_000
    for route in ("compress", "encode"):
        body = assert_error(post(small_server, route, PNG, "image/png"), 413, "limit_exceeded")
        assert "1000" in body["message"]
    assert_error(post(small_server, "decompress", stream, None), 413, "stream_limit_exceeded")
    assert_error(post(small_server, "decode", codes_npy, "application/x-npy", height=H, width=W),
                 413, "limit_exceeded")
    small = png_bytes(synthetic_image(24, 32, 1))
    assert post(small_server, "compress", small, "image/png").status_code == 200


# -------------------------------------------------------------------------------------- API keys
@pytest.fixture(scope="module")
def auth_server(tiny_registry):
    with running_server(create_app(server_settings(tiny_registry, api_keys=(KEY, KEY2)))) as url:
        yield url


def test_401_without_or_with_a_wrong_key(auth_server, caplog) -> None:
    caplog.set_level(logging.INFO)
    for headers in ({}, {"X-API-Key": "wrong-key-0123456789"}, {"X-API-Key": ""}, {"X-API-Key": KEY[:-1]}):
        response = httpx.post(f"{auth_server}/v1/images:compress", content=PNG, headers=headers)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "ApiKey"
        assert_error(httpx.get(f"{auth_server}/v1/models", headers=headers), 401, "unauthorized")
    for key in (KEY, KEY2):
        assert httpx.post(f"{auth_server}/v1/images:compress", content=PNG, headers={"X-API-Key": key}).is_success
    for path in ("/healthz", "/readyz", "/metrics"):  # probes and metrics stay open
        assert httpx.get(f"{auth_server}{path}").status_code == 200
    assert KEY not in caplog.text and KEY2 not in caplog.text and "wrong-key" not in caplog.text
    assert "/v1/images:compress 401" in caplog.text  # the access log line is there, without the key


def test_client_with_api_key(auth_server, tiny_codec) -> None:
    with Client(auth_server, api_key=KEY) as c:
        assert c.compress(PNG).data == tiny_codec.compress(IMG)
    with Client(auth_server, api_key="not-the-right-key-at-all") as c, pytest.raises(UnauthorizedError) as e:
        c.models()
    assert e.value.status == 401 and e.value.code == "unauthorized"


# ------------------------------------------------------------------------------------ saturation
class GatedNet:
    """Wraps a net; every call blocks until ``gate`` opens (a slow model, on demand)."""

    def __init__(self, net, gate: threading.Event) -> None:
        self.net, self.gate = net, gate
        self.entered = 0
        self.lock = threading.Lock()

    @property
    def provider(self) -> str:
        return self.net.provider

    def __call__(self, x):
        with self.lock:
            self.entered += 1
        if not self.gate.wait(timeout=60):
            raise RuntimeError("test gate never opened")
        return self.net(x)


def wait_for(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.01)


def test_503_overloaded_and_health_stays_responsive(tiny_registry, tiny_codec) -> None:
    gate = threading.Event()
    net = GatedNet(tiny_codec.analysis, gate)
    slow = ImageCodec(tiny_codec.entry, net, tiny_codec.synthesis, tiny_codec.quantizer, tiny_codec.prior,
                      tiny_codec.limits)
    app = create_app(server_settings(tiny_registry, workers=2, max_queue=1))
    app.dependency_overrides[get_codecs] = lambda: Codecs({"tiny-image": slow}, "tiny-image")
    results: list[httpx.Response] = []

    def compress(url: str) -> None:
        results.append(post(url, "compress", PNG, "image/png"))

    with running_server(app) as url:
        threads = [threading.Thread(target=compress, args=(url,)) for _ in range(3)]
        try:
            for t in threads[:2]:
                t.start()
            wait_for(lambda: net.entered == 2)  # both workers busy inside the model
            threads[2].start()
            wait_for(lambda: app.state.pool.waiting == 1)  # one request queued
            start = time.perf_counter()
            assert httpx.get(f"{url}/healthz").status_code == 200
            assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
            assert time.perf_counter() - start < 1.0  # the event loop is free
            metrics = httpx.get(f"{url}/metrics").text
            assert "strata_inference_queue_depth 1.0" in metrics and "strata_inference_in_flight 2.0" in metrics
            refused = post(url, "compress", PNG, "image/png")
            assert_error(refused, 503, "overloaded")
            assert refused.headers["retry-after"] == "1"
            with Client(url) as c, pytest.raises(OverloadedError):
                c.compress(PNG)
        finally:
            gate.set()
            for t in threads:
                t.join(timeout=60)
        assert [r.status_code for r in results] == [200, 200, 200]
        assert all(r.content == tiny_codec.compress(IMG) for r in results)
        assert "strata_inference_rejected_total 2.0" in httpx.get(f"{url}/metrics").text


class ExplodingNet:
    provider = "cpu"

    def __call__(self, x):
        raise RuntimeError("secret internal detail /opt/strata/weights")


def test_500_hides_internals(tiny_registry, tiny_codec) -> None:
    broken = ImageCodec(tiny_codec.entry, ExplodingNet(), tiny_codec.synthesis, tiny_codec.quantizer,
                        tiny_codec.prior, tiny_codec.limits)
    app = create_app(server_settings(tiny_registry))
    app.dependency_overrides[get_codecs] = lambda: Codecs({"tiny-image": broken}, "tiny-image")
    with running_server(app) as url:
        body = assert_error(post(url, "compress", PNG, "image/png"), 500, "internal_error")
        assert "secret" not in json.dumps(body)
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_not_ready_without_lifespan(tiny_registry) -> None:
    import asyncio

    app = create_app(server_settings(tiny_registry))  # ASGITransport does not run the lifespan

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as c:
            assert (await c.get("/healthz")).status_code == 200
            assert (await c.get("/readyz")).status_code == 503
            assert_error(await c.post("/v1/images:compress", content=PNG), 503, "not_ready")

    asyncio.run(main())


# ------------------------------------------------------------------------------------------ fuzz
def _mutations(rng: np.random.Generator, seed_bytes: bytes, n: int) -> list[bytes]:
    out = []
    for _ in range(n):
        data = bytearray(seed_bytes)
        for _ in range(int(rng.integers(1, 6))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        cut = int(rng.integers(1, len(data) + 1)) if rng.random() < 0.3 else len(data)
        out.append(bytes(data[:cut]))
    return out


def test_fuzz_never_500(live_server, stream, codes_npy, tiny_codec) -> None:
    rng = np.random.default_rng(1234)
    doc = json.dumps({"model": "tiny-image", "height": H, "width": W, "codes": _codes(tiny_codec).tolist()}).encode()
    seeds = {"compress": PNG, "encode": png_bytes(IMG, "JPEG"), "decompress": stream, "decode": codes_npy}
    kinds = {"compress": ["image/png", "image/jpeg", "application/octet-stream"],
             "encode": ["image/webp", "image/jpeg", None], "decompress": ["application/octet-stream", None],
             "decode": ["application/x-npy", "application/json"]}
    params = [{}, {"layers": "2"}, {"layers": "4", "format": "npy"}, {"format": "webp"}, {"layers": "999999999999"},
              {"height": str(H), "width": str(W)}, {"height": "0", "width": "-3"}, {"partial": "true"}]
    statuses = set()
    with httpx.Client(timeout=30) as http:
        for route, seed in seeds.items():
            bodies = [rng.bytes(int(rng.integers(1, 400))) for _ in range(8)] + _mutations(rng, seed, 24)
            if route == "decode":
                bodies += _mutations(rng, doc, 12)
            for i, body in enumerate(bodies):
                kind = kinds[route][i % len(kinds[route])]
                response = http.post(f"{live_server}/v1/images:{route}", content=body, params=params[i % len(params)],
                                     headers={"content-type": kind} if kind else {})
                statuses.add(response.status_code)
                assert response.status_code < 500, (route, kind, body[:64], response.text)
                if not response.is_success:
                    assert set(response.json()) == {"code", "message"}
    assert statuses & {413, 415, 422}  # the fuzz did hit the error paths
