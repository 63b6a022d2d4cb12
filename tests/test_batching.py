"""The GPU micro-batcher, exercised on the CPU with batching forced on."""

from __future__ import annotations

import contextlib
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from strata.server.batching import MicroBatcher
from strata.server.config import Settings

from tests.conftest import png_bytes, synthetic_image


class CountingNet:
    """A deterministic per-sample "network" that records the batch sizes it is called with."""

    provider = "cpu"

    def __init__(self, delay: float = 0.0) -> None:
        self.batches: list[int] = []
        self.lock = threading.Lock()
        self.delay = delay

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self.lock:
            self.batches.append(x.shape[0])
        if self.delay:
            threading.Event().wait(self.delay)
        return np.tanh(x * 1.5 + x.mean(axis=(1, 2, 3), keepdims=True))[:, :2]


def run_concurrently(fn, inputs, threads: int = 16) -> list[np.ndarray]:
    barrier = threading.Barrier(min(threads, len(inputs)))

    def call(x):
        with contextlib.suppress(threading.BrokenBarrierError):  # start together when possible
            barrier.wait(timeout=5)
        return fn(x)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(call, inputs))


def mixed_inputs(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shapes = [(1, 3, 16, 24), (1, 3, 8, 8), (2, 3, 16, 24), (1, 3, 24, 16)]
    return [rng.random(shapes[i % len(shapes)], dtype=np.float32) for i in range(n)]


def test_batched_results_equal_unbatched_and_calls_are_grouped() -> None:
    net = CountingNet(delay=0.01)
    batcher = MicroBatcher(net, max_batch_size=8, max_wait_ms=50)
    inputs = mixed_inputs(48)
    outputs = run_concurrently(batcher, inputs)
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, CountingNet()(x))
    assert batcher.items == 48
    assert batcher.calls == len(net.batches) < 48  # calls were grouped …
    assert max(net.batches) > 1 and max(net.batches) <= 8  # … and never past the batch size
    # Each (shape, rows) combination ran batched and singly once, to check the bytes; then batched only.
    assert all(batcher.verdicts.known.values()) and batcher.verdicts.known
    assert sum(net.batches) >= sum(x.shape[0] for x in inputs)


def test_a_batch_that_changes_the_bytes_is_not_used() -> None:
    """A network whose output depends on the other rows of its batch (as a GPU's kernel choice may): the
    first batch of each combination is checked against single calls, found different, and every later
    group of that combination runs singly, so each caller always gets its single-call bytes."""

    class Dependent:
        name = "dependent"

        def __call__(self, x: np.ndarray) -> np.ndarray:
            return x * 2.0 + x.mean(axis=0, keepdims=True) * (x.shape[0] > 1)

    batcher = MicroBatcher(Dependent(), max_batch_size=4, max_wait_ms=50)
    inputs = [np.random.default_rng(i).random((1, 3, 8, 8), dtype=np.float32) for i in range(12)]
    for _ in range(2):
        outputs = run_concurrently(batcher, inputs)
        for x, y in zip(inputs, outputs, strict=True):
            np.testing.assert_array_equal(y, x * 2.0)
    assert batcher.verdicts.known and not any(batcher.verdicts.known.values())


def test_real_onnx_network_batched_equals_unbatched(tiny_codec) -> None:
    net = tiny_codec.analysis
    counting = CountingWrapper(net)
    batcher = MicroBatcher(counting, max_batch_size=4, max_wait_ms=50)
    rng = np.random.default_rng(1)
    inputs = [rng.random((1, 3, 32, 48) if i % 3 else (1, 3, 16, 16), dtype=np.float32) for i in range(16)]
    outputs = run_concurrently(batcher, inputs, threads=8)
    # Exact on the CPU: onnxruntime's convolutions loop over batch items, so an item's arithmetic does
    # not depend on its batch-mates. (A GPU may reorder reductions by batch size: there, compare codes.)
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, net(x))
    assert counting.calls < 16
    assert batcher.provider == "cpu"


class CountingWrapper:
    def __init__(self, net) -> None:
        self.net, self.calls, self.lock = net, 0, threading.Lock()

    @property
    def provider(self) -> str:
        return self.net.provider

    def __call__(self, x):
        with self.lock:
            self.calls += 1
        return self.net(x)


def test_a_single_call_is_not_delayed_past_max_wait() -> None:
    import time

    batcher = MicroBatcher(CountingNet(), max_batch_size=8, max_wait_ms=20)
    start = time.perf_counter()
    batcher(np.zeros((1, 3, 4, 4), np.float32))
    assert time.perf_counter() - start < 0.5
    big = np.zeros((8, 3, 4, 4), np.float32)  # a full batch on its own runs at once
    assert batcher(big).shape == (8, 2, 4, 4)


def test_errors_reach_every_caller_of_the_batch() -> None:
    class Failing:
        provider = "cpu"
        calls = 0

        def __call__(self, x):
            Failing.calls += 1
            threading.Event().wait(0.01)
            raise ValueError("bad batch")

    batcher = MicroBatcher(Failing(), max_batch_size=4, max_wait_ms=50)

    def call(x):
        try:
            batcher(x)
        except ValueError as e:
            return str(e)
        return "no error"

    results = run_concurrently(call, [np.zeros((1, 3, 4, 4), np.float32) for _ in range(8)], threads=8)
    assert results == ["bad batch"] * 8 and Failing.calls < 8


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(CountingNet(), max_batch_size=0)
    with pytest.raises(ValueError):
        MicroBatcher(CountingNet(), max_wait_ms=-1)


def test_settings_choose_batching() -> None:
    auto = Settings(batching="auto", workers=4)
    assert auto.use_batching("cuda") and not auto.use_batching("cpu")
    assert Settings(batching="on", workers=4).use_batching("cpu")
    assert not Settings(batching="off", workers=4).use_batching("cuda")


def test_server_with_batching_forced_on(tiny_registry, tiny_codec) -> None:
    import asyncio

    from strata.client import AsyncClient
    from strata.server.main import create_app

    from tests.conftest import running_server, server_settings

    app = create_app(server_settings(tiny_registry, batching="on", workers=8, batch_max_wait_ms=50))
    images = [synthetic_image(32, 48, seed=i) for i in range(12)]

    async def main(url: str) -> list[bytes]:
        async with AsyncClient(url, timeout=60) as c:
            return [r.data for r in await asyncio.gather(*(c.compress(png_bytes(im)) for im in images))]

    with running_server(app) as url:
        first = asyncio.run(main(url))  # batch sizes seen for the first time also run singly, to check them
        analysis = app.state.codecs.image_codec(None).analysis
        assert isinstance(analysis, MicroBatcher) and analysis.items == 12
        results = asyncio.run(main(url))
        verdicts = dict(analysis.verdicts.known)
    # requests were grouped (a verdict exists only for a batch of several rows), and on the CPU the batched
    # bytes equal the single calls', so those groups share one onnxruntime call from then on
    assert verdicts and all(verdicts.values())
    expected = [tiny_codec.compress(image) for image in images]
    assert results == first == expected  # byte for byte the unbatched library
