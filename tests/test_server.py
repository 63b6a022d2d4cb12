"""The HTTP service end to end: a real uvicorn server on tiny_registry, driven by the SDK.

Every result must equal the library's (``tiny_codec``) byte for byte / pixel for pixel.
"""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import numpy as np
import pytest
from PIL import Image
from strata.client import AsyncClient, Client, Codes, NotFoundError
from strata.frontend.image import read_image, write_image

from tests.conftest import png_bytes, synthetic_image

pytest.importorskip("fastapi")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return synthetic_image(40, 56, seed=3)


@pytest.fixture(scope="module")
def png(image) -> bytes:
    return png_bytes(image)


@pytest.fixture
def api(live_server):
    with Client(live_server, timeout=30) as c:
        yield c


def test_health_readiness_and_models(api, live_server, tiny_registry) -> None:
    assert httpx.get(f"{live_server}/healthz").json() == {"status": "ok"}
    health = api.health()
    assert health.status == "ready" and health.provider == "cpu" and health.models == ("tiny-image",)
    (info,) = api.models()
    entry = tiny_registry.entry("tiny-image")
    assert info.name == "tiny-image" and info.default and info.layers == entry.layers == 4
    assert info.codebook_sizes == entry.codebook_sizes and info.factor == entry.factor
    assert info.weights_sha256 == entry.weights_sha256[:16] and info.description == "test model"
    assert api.model("tiny-image") == info
    with pytest.raises(NotFoundError) as e:
        api.model("nope")
    assert e.value.code == "unknown_model" and e.value.status == 404


@pytest.mark.parametrize("layers", [None, 1, 3])
def test_compress_equals_the_library(api, tiny_codec, image, png, layers) -> None:
    result = api.compress(png, layers=layers)
    assert result.data == tiny_codec.compress(image, layers)
    assert (result.model, result.layers, result.width, result.height) == ("tiny-image", layers or 4, 56, 40)
    assert result.bpp == round(8 * len(result.data) / (40 * 56), 4)


def test_compress_accepts_arrays_paths_and_jpeg(api, tiny_codec, image, tmp_path) -> None:
    assert api.compress(image).data == tiny_codec.compress(image)
    path = tmp_path / "in.png"
    path.write_bytes(png_bytes(image))
    assert api.compress(path).data == tiny_codec.compress(image)
    jpeg = png_bytes(image, "JPEG", quality=90)
    assert api.compress(jpeg).data == tiny_codec.compress(read_image(jpeg))
    webp = png_bytes(image, "WEBP", lossless=True)
    assert api.compress(webp).data == tiny_codec.compress(image)


@pytest.mark.parametrize("layers", [None, 1, 2])
def test_decompress_equals_the_library(api, tiny_codec, image, layers) -> None:
    stream = tiny_codec.compress(image)
    decoded = api.decompress(stream, layers=layers)
    assert decoded.data.startswith(b"\x89PNG") and decoded.format == "png"
    np.testing.assert_array_equal(decoded.to_array(), tiny_codec.decompress(stream, layers))
    assert (decoded.layers, decoded.stream_layers, decoded.model) == (layers or 4, 4, "tiny-image")
    assert (decoded.width, decoded.height) == (56, 40)


def test_decompress_formats(api, tiny_codec, image) -> None:
    stream = api.compress(image)
    expected = tiny_codec.decompress(stream.data, 2)
    as_npy = api.decompress(stream, layers=2, format="npy")
    array = np.load(io.BytesIO(as_npy.data), allow_pickle=False)
    assert array.dtype == np.uint8 and array.shape == (40, 56, 3)
    np.testing.assert_array_equal(array, expected)
    as_webp = api.decompress(stream, layers=2, format="webp")
    with Image.open(io.BytesIO(as_webp.data)) as im:
        assert im.format == "WEBP" and im.size == (56, 40)
    assert as_webp.data == write_image(expected, "webp")  # the library's WebP of the same pixels


def test_partial_stream(api, tiny_codec, image) -> None:
    stream = tiny_codec.compress(image)
    cut = stream[:-3]  # the last chunk is incomplete: 3 complete layers remain
    decoded = api.decompress(cut, partial=True, format="npy")
    assert decoded.layers == 3 and decoded.stream_layers == 3
    np.testing.assert_array_equal(decoded.to_array(), tiny_codec.decompress(stream, 3))


def test_progressive(api, tiny_codec, image) -> None:
    stream = tiny_codec.compress(image)
    images = list(api.progressive(stream, format="npy"))
    assert [im.layers for im in images] == [1, 2, 3, 4]
    for k, im in enumerate(images, start=1):
        np.testing.assert_array_equal(im.to_array(), tiny_codec.decompress(stream, k))


@pytest.mark.parametrize("layers", [None, 2])
def test_tokens_round_trip_npy(api, tiny_codec, image, png, layers) -> None:
    codes = api.encode(png, layers=layers)
    expected = tiny_codec.encode(image, layers)
    assert isinstance(codes.array, np.ndarray) and codes.array.dtype == np.int16
    np.testing.assert_array_equal(codes.array, expected.codes)
    assert (codes.model, codes.height, codes.width, codes.layers) == ("tiny-image", 40, 56, layers or 4)
    np.testing.assert_array_equal(api.decode(codes, format="npy").to_array(), tiny_codec.decode(expected))
    prefix = api.decode(codes, layers=1, format="npy")
    assert prefix.layers == 1
    np.testing.assert_array_equal(prefix.to_array(), tiny_codec.decode(expected, 1))


def test_tokens_round_trip_json(api, live_server, tiny_codec, image, png, monkeypatch) -> None:
    expected = tiny_codec.encode(image)
    raw = httpx.post(f"{live_server}/v1/images:encode", params={"format": "json"}, content=png,
                     headers={"content-type": "image/png"})
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    doc = raw.json()
    assert doc["codes"] == expected.codes.tolist() and (doc["model"], doc["height"], doc["width"], doc["layers"]) == (
        "tiny-image", 40, 56, 4)
    decoded = httpx.post(f"{live_server}/v1/images:decode", params={"layers": 2, "format": "npy"}, content=raw.content,
                         headers={"content-type": "application/json"})
    assert decoded.status_code == 200 and decoded.headers["x-strata-layers"] == "2"
    np.testing.assert_array_equal(np.load(io.BytesIO(decoded.content)), tiny_codec.decode(expected, 2))
    # The SDK without numpy: JSON both ways, nested lists.
    monkeypatch.setattr("strata.client._base.has_numpy", lambda: False)
    codes = api.encode(png)
    assert codes.array == expected.codes.tolist()
    out = api.decode(Codes(codes.array, codes.model, codes.height, codes.width, codes.layers), format="png")
    np.testing.assert_array_equal(read_image(out.data), tiny_codec.decode(expected))


def test_async_client_round_trip_and_progressive(live_server, tiny_codec, image, png) -> None:
    async def main() -> None:
        async with AsyncClient(live_server, timeout=30) as c:
            stream = await c.compress(png, layers=3)
            assert stream.data == tiny_codec.compress(image, 3)
            images = [im async for im in c.progressive(stream, format="npy")]
            assert [im.layers for im in images] == [1, 2, 3]
            for k, im in enumerate(images, start=1):
                np.testing.assert_array_equal(im.to_array(), tiny_codec.decompress(stream.data, k))
            codes = await c.encode(png)
            np.testing.assert_array_equal((await c.decode(codes, format="npy")).to_array(),
                                          tiny_codec.decode(tiny_codec.encode(image)))
            assert (await c.health()).status == "ready"

    asyncio.run(main())


def test_32_concurrent_compressions(live_server, tiny_codec) -> None:
    images = [synthetic_image(24 + 8 * (i % 4), 32 + 8 * (i % 3), seed=i) for i in range(32)]
    expected = [tiny_codec.compress(im, 1 + i % 4) for i, im in enumerate(images)]

    async def main() -> list[bytes]:
        async with AsyncClient(live_server, timeout=60) as c:
            results = await asyncio.gather(*(c.compress(png_bytes(im), layers=1 + i % 4)
                                             for i, im in enumerate(images)))
        return [r.data for r in results]

    assert asyncio.run(main()) == expected


def test_metrics(api, live_server, png) -> None:
    api.compress(png)
    with pytest.raises(NotFoundError):
        api.model("nope")
    httpx.get(f"{live_server}/no/such/path")
    text = httpx.get(f"{live_server}/metrics").text
    assert 'strata_http_requests_total{method="POST",route="/v1/images:compress",status="200"}' in text
    assert 'strata_http_requests_total{method="GET",route="/v1/models/{name}",status="404"}' in text
    assert 'route="unmatched"' in text and "/no/such/path" not in text
    assert 'strata_http_request_duration_seconds_bucket{le="0.5",method="POST",route="/v1/images:compress"}' in text
    assert 'strata_http_request_bytes_total{route="/v1/images:compress"}' in text
    assert 'strata_http_response_bytes_total{route="/v1/images:compress"}' in text
    assert "strata_inference_queue_depth 0.0" in text


# ------------------------------------------------------------------------------------ OpenAPI
ROUTES = {
    "/healthz": {"get"}, "/readyz": {"get"}, "/metrics": {"get"},
    "/v1/models": {"get"}, "/v1/models/{name}": {"get"},
    "/v1/images:compress": {"post"}, "/v1/images:decompress": {"post"},
    "/v1/images:encode": {"post"}, "/v1/images:decode": {"post"},
    # Always mounted; without an audio model in the manifest they answer 404 unknown_model.
    "/v1/audio:compress": {"post"}, "/v1/audio:decompress": {"post"},
    "/v1/audio:encode": {"post"}, "/v1/audio:decode": {"post"}, "/v1/audio:mel": {"post"},
}


def test_openapi_documents_routes_bodies_and_errors(live_server) -> None:
    spec = httpx.get(f"{live_server}/openapi.json").json()
    assert {path: set(ops) for path, ops in spec["paths"].items()} == ROUTES
    error_schema = spec["components"]["schemas"]["ErrorBody"]
    assert set(error_schema["required"]) == {"code", "message"}
    for path, ops in spec["paths"].items():
        if not path.startswith("/v1/") or "post" not in ops:
            continue
        op = ops["post"]
        for status in ("401", "413", "415", "422", "503"):
            content = op["responses"][status]["content"]["application/json"]
            assert content["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (path, status)
        assert op["requestBody"]["required"] is True and op["requestBody"]["content"], path
        if path == "/v1/audio:mel":  # the frontend's log-mel of a sound: no codes, no layers
            continue
        assert "X-Strata-Layers" in op["responses"]["200"]["headers"], path
        params = {p["name"] for p in op["parameters"]}
        assert "layers" in params, path
    assert set(spec["paths"]["/v1/images:decode"]["post"]["requestBody"]["content"]) == {
        "application/x-npy", "application/json", "application/octet-stream"}
    assert set(spec["paths"]["/v1/images:compress"]["post"]["requestBody"]["content"]) == {
        "image/png", "image/jpeg", "image/webp", "application/octet-stream"}
    assert "404" in spec["paths"]["/v1/images:compress"]["post"]["responses"]
    assert "securitySchemes" not in spec.get("components", {})  # this server has no API keys
    json.dumps(spec)  # serialisable as served


def test_docs_page_works_offline(live_server) -> None:
    """/docs is Swagger UI whose scripts and styles the service serves itself (no CDN)."""
    import re

    page = httpx.get(f"{live_server}/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
    for asset in assets:
        r = httpx.get(f"{live_server}{asset}")
        assert r.status_code == 200 and len(r.content) > 100, asset
    assert "/openapi.json" in page.text and httpx.get(f"{live_server}/openapi.json").status_code == 200
    assert httpx.get(f"{live_server}/redoc").status_code == 404  # its page would load a CDN
