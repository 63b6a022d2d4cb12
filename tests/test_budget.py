"""The work budget: requests are admitted by their estimated compute, never run into an OOM or a long queue."""

from __future__ import annotations

import threading

import anyio
import httpx
import numpy as np
import pytest
from strata.errors import LimitExceededError

pytest.importorskip("fastapi")

from strata.server.cost import IMAGE_DECODE_S_PER_MPX, Work, image_size, retry_after, sound_seconds  # noqa: E402
from strata.server.errors import OverloadedError  # noqa: E402
from strata.server.pool import InferencePool  # noqa: E402

from tests.conftest import flac_bytes, png_bytes, synthetic_image, synthetic_sound  # noqa: E402


def test_estimates_come_from_headers():
    assert image_size(png_bytes(synthetic_image(40, 56))) == (40, 56)
    assert image_size(b"not an image") is None
    assert sound_seconds(flac_bytes(synthetic_sound(1.5))) == pytest.approx(1.5, abs=1e-3)
    assert sound_seconds(b"RIFF....WAVE") is None
    big = Work.image((4096, 4096), decode=True)
    assert big.seconds == pytest.approx(16.777216 * IMAGE_DECODE_S_PER_MPX, rel=0.01) and "4096×4096" in big.what
    assert Work.audio(600, decode=True).seconds > Work.audio(600, decode=True, waveform=False).seconds
    assert retry_after(0.1, 2) == 1 and retry_after(30, 2) == 15


def test_pool_admits_by_work():
    pool = InferencePool(workers=2, max_queue=10, max_work=10.0)
    release = threading.Event()
    seen: dict[str, object] = {}

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: pool.run(release.wait, work=Work(8.0, "a long one")))
            await anyio.sleep(0.05)
            assert pool.admitted_work == 8.0
            with pytest.raises(OverloadedError) as busy:  # 8 + 3 > 10: not now
                await pool.run(lambda: None, work=Work(3.0, "another"))
            seen["retry"] = busy.value.retry_after
            assert await pool.run(lambda: 42, work=Work(1.5, "a small one")) == 42  # 9.5 fits, and runs
            release.set()
        assert pool.admitted_work == 0.0
        with pytest.raises(LimitExceededError, match="over this server's budget of 10 s"):  # never fits
            await pool.run(lambda: None, work=Work(11.0, "a huge one"))

        def boom() -> None:
            raise ValueError("failed")

        with pytest.raises(ValueError):
            await pool.run(boom, work=Work(5.0, "failing"))
        assert pool.admitted_work == 0.0  # released on failure too

    anyio.run(main)
    assert seen["retry"] == 1


def test_a_tiny_stream_claiming_a_huge_image_is_refused_before_any_work(tiny_registry):
    """The 56-byte stream of zero codes whose header says 4096×4096 (it drove the server past 9 GB)."""
    from strata import ImageCodec
    from strata.bitstream import StreamLimits
    from strata.image import ImageCodes
    from strata.server.main import create_app

    from tests.conftest import running_server, server_settings

    codec = ImageCodec.load(tiny_registry, limits=StreamLimits(max_pixels=4096 * 4096))
    stream = codec.compress_codes(ImageCodes(np.zeros((1, 512, 512), np.int64), (4096, 4096), codec.name))
    app = create_app(server_settings(tiny_registry, max_work_seconds=10.0, max_pixels=4096 * 4096))
    with running_server(app) as url:
        r = httpx.post(f"{url}/v1/images:decompress", content=stream,
                       headers={"Content-Type": "application/octet-stream"}, timeout=30)
        assert r.status_code == 413 and r.json()["code"] == "limit_exceeded"
        assert "4096×4096 image decode needs about 54 s" in r.json()["message"]
        big = png_bytes(np.zeros((2048, 4096, 3), np.uint8))
        r = httpx.post(f"{url}/v1/images:compress", content=big, headers={"Content-Type": "image/png"}, timeout=30)
        assert r.status_code == 413 and "2048×4096 image encode" in r.json()["message"]
        ok = httpx.post(f"{url}/v1/images:compress", content=png_bytes(synthetic_image(64, 64)),
                        headers={"Content-Type": "image/png"}, timeout=30)
        assert ok.status_code == 200
        assert httpx.get(f"{url}/healthz").status_code == 200


def test_overloaded_answers_retry_after(tiny_registry):
    """The error handler turns an OverloadedError's retry_after into the Retry-After header."""
    from fastapi.testclient import TestClient
    from strata.server.main import create_app

    from tests.conftest import server_settings

    app = create_app(server_settings(tiny_registry))

    @app.get("/busy-for-test")
    def busy() -> None:
        error = OverloadedError("busy")
        error.retry_after = 7
        raise error

    with TestClient(app) as client:
        r = client.get("/busy-for-test")
    assert r.status_code == 503 and r.headers["Retry-After"] == "7" and r.json()["code"] == "overloaded"
