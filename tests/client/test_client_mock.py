"""The SDK against ``httpx.MockTransport``: request building, response parsing, error mapping.

No server and no numpy: these run in a venv with only httpx and pytest.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest
import strata.client as client
from strata.client import (
    AsyncClient,
    BadRequestError,
    Client,
    Codes,
    Compressed,
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

from tests.client.conftest import HEADERS, PNG, STREAM, Recorder, error

URL = "http://strata.test:9000"


@pytest.fixture
def no_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Behave as in the httpx-only install, whether or not numpy is here."""
    monkeypatch.setattr("strata.client._base.has_numpy", lambda: False)


def sync_client(recorder: Recorder, **kw) -> Client:
    return Client(URL, transport=httpx.MockTransport(recorder), **kw)


def test_compress_builds_request_and_parses_result(recorder: Recorder) -> None:
    with sync_client(recorder, api_key="k" * 20) as c:
        result = c.compress(PNG, model="tiny-image", layers=2)
    req = recorder.last
    assert req.method == "POST" and req.url.path == "/v1/images:compress"
    assert dict(req.url.params) == {"model": "tiny-image", "layers": "2"}
    assert req.headers["content-type"] == "image/png" and req.headers["x-api-key"] == "k" * 20
    assert req.content == PNG
    assert result == Compressed(STREAM, "tiny-image", 4, 0.5571, 56, 40) and len(result) == len(STREAM)


def test_no_api_key_header_without_key_and_env_key_is_used(recorder: Recorder, monkeypatch) -> None:
    with sync_client(recorder) as c:
        c.compress(PNG)
    assert "x-api-key" not in recorder.last.headers and dict(recorder.last.url.params) == {}
    monkeypatch.setenv("STRATA_API_KEY", "from-the-environment")
    with sync_client(recorder) as c:
        c.models()
    assert recorder.last.headers["x-api-key"] == "from-the-environment"


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (PNG, "image/png"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 10, "image/jpeg"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"GIF89a....", "application/octet-stream"),
    ],
)
def test_image_content_type_is_sniffed_from_bytes_and_paths(recorder, tmp_path, data, content_type) -> None:
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    with sync_client(recorder) as c:
        c.compress(data)
        assert recorder.last.headers["content-type"] == content_type
        c.compress(path)
        assert recorder.last.headers["content-type"] == content_type and recorder.last.content == data
        c.compress(str(path))
        assert recorder.last.content == data


def test_decompress_params_and_result(recorder: Recorder) -> None:
    stream = Compressed(STREAM, "tiny-image", 4, 0.5, 56, 40)
    with sync_client(recorder) as c:
        image = c.decompress(stream, layers=3, format="webp", partial=True)
        assert dict(recorder.last.url.params) == {"layers": "3", "format": "webp", "partial": "true"}
        assert recorder.last.headers["content-type"] == "application/octet-stream"
        assert recorder.last.content == STREAM
        assert (image.format, image.layers, image.model, image.width, image.height) == ("webp", 3, "tiny-image", 56, 40)
        assert image.stream_layers == 4 and image.data == b"image-bytes-3"
        c.decompress(STREAM)
        assert dict(recorder.last.url.params) == {"format": "png"}


def test_client_side_argument_errors_send_nothing(recorder: Recorder) -> None:
    with sync_client(recorder) as c:
        with pytest.raises(ValueError, match="format must be one of"):
            c.decompress(STREAM, format="gif")
        with pytest.raises(TypeError, match="image must be bytes"):
            c.compress(12345)
        with pytest.raises(TypeError, match="stream must be bytes"):
            c.decompress(3.5)
        with pytest.raises(TypeError, match="codes must be a Codes"):
            c.decode([[[1]]])
    assert recorder.requests == []


def test_progressive_decodes_every_prefix(recorder: Recorder) -> None:
    with sync_client(recorder) as c:
        images = list(c.progressive(STREAM))
    assert [im.layers for im in images] == [1, 2, 3, 4]
    assert [r.url.params["layers"] for r in recorder.requests] == ["1", "2", "3", "4"]


def test_encode_decode_as_json_without_numpy(recorder: Recorder, no_numpy) -> None:
    with sync_client(recorder) as c:
        codes = c.encode(PNG, layers=2)
        assert dict(recorder.last.url.params) == {"layers": "2", "format": "json"}
        assert codes.array == [[[1, 2]], [[3, 4]]] and (codes.model, codes.height, codes.width, codes.layers) == (
            "tiny-image", 40, 56, 2)
        image = c.decode(codes, layers=1, format="npy")
    req = recorder.last
    assert req.url.path == "/v1/images:decode" and dict(req.url.params) == {"layers": "1", "format": "npy"}
    assert req.headers["content-type"] == "application/json"
    import json

    assert json.loads(req.content) == codes.to_json()
    assert image.format == "npy" and image.layers == 1


def test_models_model_and_health(recorder: Recorder) -> None:
    with sync_client(recorder) as c:
        (info,) = c.models()
        assert info == c.model("tiny-image")
        assert info.codebook_sizes == (16, 16, 16, 16) and info.default and info.weights_sha256 == "284535500881201b"
        health = c.health()
    assert health.status == "ready" and health.models == ("tiny-image",) and health.provider == "cpu"
    assert [r.url.path for r in recorder.requests] == ["/v1/models", "/v1/models/tiny-image", "/readyz"]


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (401, "unauthorized", UnauthorizedError),
        (404, "unknown_model", NotFoundError),
        (404, "not_found", NotFoundError),
        (413, "body_too_large", PayloadTooLargeError),
        (413, "limit_exceeded", PayloadTooLargeError),
        (413, "stream_limit_exceeded", PayloadTooLargeError),
        (415, "unsupported_media_type", UnsupportedMediaError),
        (415, "unsupported_media", UnsupportedMediaError),
        (422, "invalid_layers", BadRequestError),
        (422, "invalid_request", BadRequestError),
        (422, "invalid_codes", BadRequestError),
        (422, "bad_magic", InvalidStreamError),
        (422, "truncated_stream", InvalidStreamError),
        (422, "corrupted_chunk", InvalidStreamError),
        (422, "unsupported_version", InvalidStreamError),
        (422, "stream_unknown_model", InvalidStreamError),
        (422, "some_future_code", BadRequestError),
        (500, "internal_error", ServerError),
        (503, "overloaded", OverloadedError),
        (503, "not_ready", ServiceUnavailableError),
        (418, "teapot", BadRequestError),
    ],
)
def test_error_mapping(status: int, code: str, cls: type[StrataAPIError]) -> None:
    recorder = Recorder(lambda request: error(status, code, f"message for {code}"))
    with sync_client(recorder) as c, pytest.raises(cls) as info:
        c.compress(PNG)
    e = info.value
    assert type(e) is cls and isinstance(e, StrataAPIError) and isinstance(e, StrataClientError)
    assert (e.status, e.code, e.message) == (status, code, f"message for {code}")
    assert e.request is recorder.last and e.response is not None and e.response.status_code == status
    assert code in str(e) and str(status) in str(e)


def test_error_without_json_body_maps_by_status() -> None:
    recorder = Recorder(lambda request: httpx.Response(502, text="Bad gateway from the proxy"))
    with sync_client(recorder) as c, pytest.raises(ServerError) as info:
        c.models()
    assert info.value.code == "http_502" and "proxy" in info.value.message


def test_success_with_missing_headers_is_an_unexpected_response() -> None:
    recorder = Recorder(lambda request: httpx.Response(200, content=b"?"))
    with sync_client(recorder) as c, pytest.raises(UnexpectedResponseError, match="X-Strata-Model"):
        c.compress(PNG)
    recorder = Recorder(lambda request: httpx.Response(200, text="<html>"))
    with sync_client(recorder) as c, pytest.raises(UnexpectedResponseError, match="not JSON"):
        c.models()


@pytest.mark.parametrize(
    ("exc", "cls"),
    [
        (httpx.ConnectTimeout("connect timed out"), StrataTimeoutError),
        (httpx.ReadTimeout("read timed out"), StrataTimeoutError),
        (httpx.ConnectError("connection refused"), StrataConnectionError),
        (httpx.RemoteProtocolError("server hung up"), StrataConnectionError),
    ],
)
def test_transport_errors(exc: Exception, cls: type[Exception]) -> None:
    def boom(request: httpx.Request) -> httpx.Response:
        raise exc

    with Client(URL, transport=httpx.MockTransport(boom)) as c, pytest.raises(cls) as info:
        c.compress(PNG)
    assert type(info.value) is cls and info.value.__cause__ is exc and isinstance(info.value, StrataConnectionError)
    assert info.value.request is not None and info.value.request.url.path == "/v1/images:compress"


def test_timeouts_default_and_custom(recorder: Recorder) -> None:
    assert httpx.Timeout(60.0, connect=5.0) == client.DEFAULT_TIMEOUT
    with sync_client(recorder) as c:
        c.models()
    assert recorder.last.extensions["timeout"] == {"connect": 5.0, "read": 60.0, "write": 60.0, "pool": 60.0}
    with sync_client(recorder, timeout=2.5) as c:
        c.models()
    assert recorder.last.extensions["timeout"] == httpx.Timeout(2.5).as_dict()


def test_base_url_with_a_path_prefix_and_bad_urls() -> None:
    recorder = Recorder(lambda request: httpx.Response(200, content=STREAM, headers=HEADERS))
    with Client("https://example.test/strata/", transport=httpx.MockTransport(recorder)) as c:
        c.compress(PNG, layers=1)
    assert str(recorder.last.url) == "https://example.test/strata/v1/images:compress?layers=1"
    with pytest.raises(ValueError, match="http"):
        Client("ftp://example.test")
    with pytest.raises(ValueError, match="not a valid URL"):  # httpx.InvalidURL is not a ValueError
        Client("http://[::1")
    with pytest.raises(ValueError, match="port must be in 1..65535"):  # httpx accepts it; the socket wraps it
        Client("http://example.test:70000")


def test_async_client_shares_the_request_layer(recorder: Recorder, no_numpy) -> None:
    async def main() -> None:
        async with AsyncClient(URL, api_key="a" * 20, transport=httpx.MockTransport(recorder)) as c:
            result = await c.compress(PNG, layers=2)
            assert result.layers == 4 and result.data == STREAM
            images = [im async for im in c.progressive(result)]
            assert [im.layers for im in images] == [1, 2, 3, 4]
            codes = await c.encode(PNG)
            assert isinstance(codes, Codes) and codes.layers == 2
            assert (await c.decode(codes)).format == "png"
            assert (await c.health()).status == "ready"
            assert [m.name for m in await c.models()] == ["tiny-image"]
            assert (await c.model("tiny-image")).layers == 4

    asyncio.run(main())
    assert all(r.headers["x-api-key"] == "a" * 20 for r in recorder.requests)
    assert len(recorder.requests) == 10


def test_async_errors_map_the_same_way() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/readyz":
            raise httpx.ReadTimeout("slow")
        return error(503, "overloaded", "busy")

    async def main() -> None:
        async with AsyncClient(URL, transport=httpx.MockTransport(answer)) as c:
            with pytest.raises(OverloadedError):
                await c.compress(PNG)
            with pytest.raises(StrataTimeoutError):
                await c.health()

    asyncio.run(main())


def test_compressed_and_images_save(tmp_path, recorder: Recorder) -> None:
    with sync_client(recorder) as c:
        result = c.compress(PNG)
        image = c.decompress(result)
    result.save(tmp_path / "a.strata")
    image.save(tmp_path / "a.png")
    assert (tmp_path / "a.strata").read_bytes() == STREAM and (tmp_path / "a.png").read_bytes() == image.data


def test_public_names() -> None:
    for name in client.__all__:
        assert hasattr(client, name), name
    assert set(client.__all__) >= {"Client", "AsyncClient", "Compressed", "Codes", "DecodedImage", "ModelInfo",
                                   "StrataAPIError", "StrataConnectionError", "StrataTimeoutError"}
