"""The Ray Serve deployment (:mod:`strata.server.ray_serve`) answers like the uvicorn service: same round trip,
same error bodies, same OpenAPI document, models loaded by the app's lifespan on the replica."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from tests.conftest import png_bytes, synthetic_image

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_server(tiny_registry):
    try:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # no shared memory, no free ports, a sandbox: nothing to test here
        pytest.skip(f"a local Ray cannot start: {e}")
    try:
        from strata.server.ray_serve import build_app

        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        serve.run(build_app({"models_dir": str(tiny_registry.root), "num_gpus": 0}), name="strata", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def test_same_round_trip_errors_and_openapi(ray_server, live_server, tiny_codec) -> None:
    from strata.frontend.image import read_image

    image = synthetic_image(40, 56, seed=3)
    png = png_bytes(image)
    with httpx.Client(timeout=60) as c:
        assert c.get(f"{ray_server}/readyz").json()["models"] == ["tiny-image"]  # loaded in the lifespan
        answers = {}
        for name, url in (("ray", ray_server), ("uvicorn", live_server)):
            r = c.post(f"{url}/v1/images:compress?layers=3", content=png, headers={"content-type": "image/png"})
            assert r.status_code == 200, r.text
            d = c.post(f"{url}/v1/images:decompress", content=r.content,
                       headers={"content-type": "application/octet-stream"})
            assert d.status_code == 200, d.text
            bad = c.post(f"{url}/v1/images:compress", content=b"nope", headers={"content-type": "image/png"})
            openapi = c.get(f"{url}/openapi.json").json()
            answers[name] = (r, d, bad, openapi)
    (r1, d1, bad1, api1), (r2, d2, bad2, api2) = answers["ray"], answers["uvicorn"]
    assert r1.content == r2.content == tiny_codec.compress(image, 3)
    assert {k: v for k, v in r1.headers.items() if k.startswith("x-strata")} == \
        {k: v for k, v in r2.headers.items() if k.startswith("x-strata")}
    a, b = read_image(d1.content), read_image(d2.content)
    assert np.abs(a.astype(int) - b).max() <= 1  # other onnxruntime thread counts may round g_s differently
    assert (bad1.status_code, bad1.json()) == (bad2.status_code, bad2.json()) == (
        415, {"code": "unsupported_media", "message": "not a PNG, JPEG or WebP image (4 bytes)"})
    assert api1 == api2


def test_build_app_arguments() -> None:
    from strata.server.ray_serve import build_app, settings_env

    env = settings_env({"max_pixels": 1024, "cors_origins": ["https://a.example"]}, num_cpus=2)
    assert env["STRATA_MAX_PIXELS"] == "1024" and env["STRATA_CORS_ORIGINS"] == "https://a.example"
    assert env["STRATA_WORKERS"] == "2" and env["STRATA_ORT_THREADS"] == "1"
    with pytest.raises(ValueError, match="unknown argument 'colour'"):
        build_app({"colour": "blue"})
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        build_app({"replicas": 0})
