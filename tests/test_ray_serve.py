"""The Ray Serve deployment (:mod:`strata.server.ray_serve`) answers like the uvicorn service: same round trip,
same error bodies, same OpenAPI document, models loaded by the app's lifespan on the replica; with dynamic
batching (``@serve.batch``) its streams and pixels are byte-identical to single calls."""

from __future__ import annotations

import socket
import threading
from concurrent.futures import ThreadPoolExecutor

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
    try:  # two logical CPUs: the plain app and the batched one, one replica each
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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


@pytest.fixture(scope="module")
def batched_server(ray_server, tiny_registry) -> str:
    """A second application on the same Serve instance, batching on the CPU (a long wait, so that concurrent
    requests surely meet in the queue)."""
    from strata.server.ray_serve import build_app

    app = build_app({"models_dir": str(tiny_registry.root), "num_gpus": 0, "batching": "on",
                     "batch_max_size": 4, "batch_max_wait_ms": 50})
    serve.run(app, name="batched", route_prefix="/batched")
    return f"{ray_server}/batched"


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
    assert serve.get_app_handle("strata").batch_stats.remote().result() == {}  # auto on the CPU: no batching


def test_batched_replies_are_byte_identical_to_single_calls(batched_server, tiny_registry) -> None:
    """Concurrent requests of two image sizes meet in the replica's ``@serve.batch`` queue; every stream and
    every decoded pixel equals what a single-call codec with the replica's thread count (1) gives."""
    from strata.frontend.image import read_image
    from strata.image import ImageCodec

    reference = ImageCodec.load(tiny_registry, "tiny-image", threads=1)
    images = [synthetic_image(40, 56, seed=s) for s in range(6)] + [synthetic_image(24, 32, seed=s) for s in (7, 8)]
    start = threading.Barrier(len(images))

    with httpx.Client(timeout=120) as c, ThreadPoolExecutor(len(images)) as pool:
        def compress(image: np.ndarray) -> bytes:
            start.wait(timeout=30)
            r = c.post(f"{batched_server}/v1/images:compress?layers=3", content=png_bytes(image),
                       headers={"content-type": "image/png"})
            assert r.status_code == 200, r.text
            return r.content

        def decompress(stream: bytes) -> np.ndarray:
            start.wait(timeout=30)
            d = c.post(f"{batched_server}/v1/images:decompress", content=stream,
                       headers={"content-type": "application/octet-stream"})
            assert d.status_code == 200, d.text
            return read_image(d.content)

        for _ in range(2):  # the first round verifies each batch shape; the second returns batched outputs
            streams = list(pool.map(compress, images))
            start.reset()
            pixels = list(pool.map(decompress, streams))
            start.reset()
            for image, stream, decoded in zip(images, streams, pixels, strict=True):
                assert stream == reference.compress(image, 3)
                np.testing.assert_array_equal(decoded, reference.decompress(stream))

    stats = serve.get_app_handle("batched").batch_stats.remote().result()
    assert set(stats) == {"tiny-image analysis", "tiny-image synthesis"}
    for net in stats.values():
        assert net["items"] == 2 * len(images)
        assert max(int(rows) for rows in net["rows_per_call"]) > 1  # calls were grouped …
        assert net["verdicts"] and all(net["verdicts"].values())  # … and equal, byte for byte, to single calls


class ExactNet:
    """Per-item arithmetic (as onnxruntime's CPU kernels): a batch gives the single calls' bytes."""

    provider = "cpu"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(1.5 * x)[:, :2]


class BatchDependentNet(ExactNet):
    """Each item's output depends on its batch-mates (as a GPU that picks another algorithm per batch size)."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(1.5 * x + 1e-3 * x.mean())[:, :2]


def test_groups_by_network_and_shape_and_batches_only_where_verified_equal() -> None:
    from strata.server.ray_serve import BatchedNet, NetCall, run_groups

    exact, dependent = BatchedNet(ExactNet(), 8, name="exact"), BatchedNet(BatchDependentNet(), 8, name="dep")
    rng = np.random.default_rng(0)
    small, large = (1, 3, 8, 8), (1, 3, 16, 8)
    xs = [rng.random(small if i % 3 else large, dtype=np.float32) for i in range(9)]
    for round_ in range(2):
        calls = [NetCall(exact if i % 2 else dependent, x) for i, x in enumerate(xs)]
        outs = run_groups(calls)
        for call, out in zip(calls, outs, strict=True):
            assert out.tobytes() == call.net.net(call.x).tobytes()  # each caller gets its single-call bytes
        if round_ == 0:  # exact: 3 small inputs (one batched call, verified by 3 single ones) and 1 large one
            assert exact.stats()["rows_per_call"] == {"1": 4, "3": 1}
    assert exact.verdicts.known == {((3, 8, 8), 3): True}
    assert dependent.verdicts.known == {((3, 8, 8), 3): False, ((3, 16, 8), 2): False}
    # round 2: the exact network ran its small group in one call; the other one ran every input alone
    assert exact.stats()["rows_per_call"] == {"1": 5, "3": 2}
    assert dependent.stats()["rows_per_call"]["1"] == 2 * 5 and dependent.calls == 2 * 5 + 2


def test_a_failing_group_fails_only_its_own_calls() -> None:
    from strata.server.ray_serve import BatchedNet, NetCall, run_groups

    def broken(x: np.ndarray) -> np.ndarray:
        raise RuntimeError("out of device memory")

    good, bad = BatchedNet(ExactNet(), 8), BatchedNet(broken, 8)
    x = np.ones((1, 3, 4, 4), dtype=np.float32)
    outs = run_groups([NetCall(bad, x), NetCall(good, x), NetCall(bad, x)])
    assert isinstance(outs[0], RuntimeError) and outs[2] is outs[0]
    assert outs[1].tobytes() == ExactNet()(x).tobytes()


def test_real_network_batches_equal_single_calls(tiny_codec) -> None:
    """The exported analysis and synthesis networks on the CPU: batched groups pass the verification."""
    from strata.server.ray_serve import BatchedNet, NetCall, run_groups

    rng = np.random.default_rng(1)
    for onnx, shape in ((tiny_codec.analysis, (1, 3, 32, 48)), (tiny_codec.synthesis, (1, 8, 4, 6))):
        net = BatchedNet(onnx, 8)
        for _ in range(2):
            xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(5)]
            outs = run_groups([NetCall(net, x) for x in xs])
            assert all(y.tobytes() == onnx(x).tobytes() for x, y in zip(xs, outs, strict=True))
        assert net.verdicts.known == {(shape[1:], 5): True} and net.rows_per_call[5] == 2


def test_build_app_arguments() -> None:
    from strata.server.ray_serve import build_app, settings_env

    env = settings_env({"max_pixels": 1024, "cors_origins": ["https://a.example"]}, num_cpus=2)
    assert env["STRATA_MAX_PIXELS"] == "1024" and env["STRATA_CORS_ORIGINS"] == "https://a.example"
    assert env["STRATA_WORKERS"] == "2" and env["STRATA_ORT_THREADS"] == "1"
    # a batching replica gets at least as many inference threads as rows in a batch (one per waiting call)
    assert settings_env({"batching": "on", "batch_max_size": 6}, num_cpus=1)["STRATA_WORKERS"] == "6"
    assert settings_env({}, num_cpus=1, num_gpus=1)["STRATA_WORKERS"] == "8"  # auto batches on a GPU
    assert settings_env({"batching": "off"}, num_cpus=1, num_gpus=1)["STRATA_WORKERS"] == "1"
    with pytest.raises(ValueError, match="STRATA_BATCH_MAX_SIZE must be an integer, got 'many'"):
        settings_env({"batching": "on", "batch_max_size": "many"}, num_cpus=1)
    with pytest.raises(ValueError, match="unknown argument 'colour'"):
        build_app({"colour": "blue"})
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        build_app({"replicas": 0})
    batched = build_app({"batching": "on", "batch_max_size": 4, "num_gpus": 0})
    assert batched._bound_deployment.max_ongoing_requests == 8
