"""Shared fixtures.

``tiny_registry`` exports a tiny, randomly initialised image model (k-means
codebooks on its own latents) through the real ``strata.export.image`` path into a
temporary models folder, so pipeline and CLI tests run in seconds and do not
depend on the shipped weights. ``shipped_registry`` is the repository's
``models/`` folder.

``tiny_audio_registry`` does the same for a tiny audio model (~40 s, once per
session); ``tiny_av_registry`` copies both into one models folder.

``live_server`` runs the real HTTP service (uvicorn, in a thread, on a free
loopback port) on ``tiny_registry``, ``live_av_server`` on ``tiny_av_registry``
(images and audio); :func:`running_server` starts one for any app (dedicated
settings: small limits, API keys, a saturated pool).

numpy, Pillow and the server are imported inside the helpers, not here, so the
client-only tests in ``tests/client`` collect in a venv that has only httpx.
"""

from __future__ import annotations

import io
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like test image (see :func:`strata.eval.synthetic.synthetic_image`)."""
    from strata.eval.synthetic import synthetic_image as make

    return make(h, w, seed)


def png_bytes(image: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory):
    torch = pytest.importorskip("torch")
    import numpy as np
    from strata.export.image import export_image_model
    from strata.registry import Registry
    from strata.train.image import ImageAutoencoder, ImageTrainConfig
    from strata.train.nets.image import ImageNetConfig, block_pca
    from strata.train.quantize.rvq import RVQConfig

    root = tmp_path_factory.mktemp("tiny")
    data = root / "data"
    for split, seeds in (("train", range(4)), ("val", range(4, 6))):
        (data / split).mkdir(parents=True)
        for s in seeds:
            (data / split / f"im{s}.png").write_bytes(png_bytes(synthetic_image(64, 80, s)))
    cfg = ImageTrainConfig(
        data=str(data),
        net=ImageNetConfig(latent_dim=8, channels=(8, 12, 16), enc_blocks=(1, 1, 1), dec_blocks=(1, 1, 1)),
        rvq=RVQConfig(layers=4, codebook_size=16, dim=8),
    )
    torch.manual_seed(0)
    model = ImageAutoencoder.from_config(cfg.net, cfg.rvq).eval()
    with torch.no_grad():
        x = torch.from_numpy(np.stack([synthetic_image(64, 80, s) for s in range(4)])).permute(0, 3, 1, 2) / 255
        model.g_a.init_linear(*block_pca(x, 8))  # the linear paths start as a block PCA, as in training
        model.g_s.init_linear(*block_pca(x, 8))
        lat = model.g_a(x.float())
        model.quantizer.init_kmeans(lat.permute(0, 2, 3, 1).reshape(-1, 8))
    ckpt = root / "ckpt.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "step": 0, "best": 0.0}, ckpt)
    models = root / "models"
    models.mkdir()
    export_image_model(ckpt, "tiny-image", data, models, description="test model", checkpoints_dir=root / "checkpoints")
    return Registry(models)


def synthetic_sound(seconds: float, seed: int = 0, rate: int = 22050) -> np.ndarray:
    """A deterministic speech-like test sound: a gliding harmonic tone with a syllable envelope, plus noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * seed % 3 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * (2.5 + seed % 2) * t), 0, None)
    x = 0.2 * envelope * voiced + 0.01 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def flac_bytes(samples: np.ndarray, rate: int = 22050, fmt: str = "FLAC") -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, format=fmt)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_audio_registry(tmp_path_factory):
    """A tiny, randomly initialised audio model (mel codec + HiFi-GAN), exported through the real path."""
    torch = pytest.importorskip("torch")

    from strata.export.audio import export_audio_model
    from strata.export.vocoder import export_vocoder
    from strata.frontend.audio import list_audio
    from strata.registry import Registry
    from strata.train.audio import AudioTrainConfig, MelAutoencoder, band_stats, clip_mels
    from strata.train.nets.hifigan_model import Generator, HiFiGANConfig
    from strata.train.nets.melcodec import MelNetConfig
    from strata.train.quantize.rvq import RVQConfig

    root = tmp_path_factory.mktemp("tiny-audio")
    data = root / "data"
    for s in ("speech", "environment"):
        (data / s / "train").mkdir(parents=True)
        for i in range(5):
            (data / s / "train" / f"{s}{i}.flac").write_bytes(flac_bytes(synthetic_sound(1.5 + 0.3 * i, i)))
    cfg = AudioTrainConfig(
        data=str(data),
        net=MelNetConfig(latent_dim=8, channels=(8, 12, 16), enc_blocks=(1, 1, 1), dec_blocks=(1, 1, 1)),
        rvq=RVQConfig(layers=4, codebook_size=16, dim=8),
    )
    torch.manual_seed(0)
    model = MelAutoencoder(cfg.net, cfg.rvq).eval()
    mels = clip_mels(list_audio(data / "speech" / "train") + list_audio(data / "environment" / "train"), None)
    model.set_stats(*band_stats(mels))
    with torch.no_grad():
        lat = torch.cat([model.g_a(torch.from_numpy(m[:, : m.shape[1] // 4 * 4])[None]) for m in mels], dim=3)
        model.quantizer.init_kmeans(lat.permute(0, 2, 3, 1).reshape(-1, 8))
    ckpt = root / "mel.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "step": 0, "best": 0.0}, ckpt)
    gen_cfg = HiFiGANConfig(upsample_initial_channel=16)
    gen = Generator(gen_cfg)
    torch.save({"generator": gen.state_dict(), "config": gen_cfg.to_dict(), "step": 0}, root / "gen.pt")
    export_vocoder(root / "gen.pt", root / "vocoder")
    models = root / "models"
    models.mkdir()
    export_audio_model(ckpt, root / "vocoder", "tiny-audio", data, models, description="test audio model",
                       checkpoints_dir=root / "checkpoints")
    return Registry(models)


@pytest.fixture(scope="session")
def tiny_audio_codec(tiny_audio_registry):
    from strata.audio import AudioCodec

    return AudioCodec.load(tiny_audio_registry, "tiny-audio")


@pytest.fixture(scope="session")
def tiny_av_registry(tiny_registry, tiny_audio_registry, tmp_path_factory):
    """One models folder holding both ``tiny-image`` and ``tiny-audio`` (files copied, sha256 pins kept)."""
    import shutil

    from strata.registry import Registry, write_manifest

    models = tmp_path_factory.mktemp("tiny-av") / "models"
    entries, defaults = {}, {}
    for registry in (tiny_registry, tiny_audio_registry):
        for entry in registry.entries.values():
            for ref in entry.files.values():
                (models / ref.path).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(registry.root / ref.path, models / ref.path)
            entries[entry.name] = entry
        defaults.update(registry.defaults)
    write_manifest(models, entries, defaults)
    return Registry(models)


@pytest.fixture(scope="session")
def tiny_codec(tiny_registry):
    from strata.image import ImageCodec

    return ImageCodec.load(tiny_registry, "tiny-image")


@pytest.fixture(scope="session")
def shipped_registry():
    from strata.registry import Registry

    return Registry(ROOT / "models")


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (fast for tiny networks, and the same sums on every machine)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def shipped_checkpoint(model: str, file: str = "checkpoint.pt") -> Path:
    """A shipped model's training checkpoint in the repository's ``checkpoints/`` (not packaged)."""
    path = ROOT / "checkpoints" / model / file
    if not path.is_file():
        pytest.skip(f"{path} is not in this checkout")
    return path


# ------------------------------------------------------------------------------ the HTTP service
@contextmanager
def running_server(app, startup_timeout: float = 30.0) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn server in a thread on a free 127.0.0.1 port; yields its URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    from strata.server.run import uvicorn_options

    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False, timeout_graceful_shutdown=5,
                            **uvicorn_options(app.state.settings))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive():
            sock.close()
            raise RuntimeError("the test server failed to start (see the log above)")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise TimeoutError("the test server did not start in time")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def server_settings(registry, **overrides):
    """Service settings serving ``registry`` (two workers unless overridden)."""
    from strata.server.config import Settings

    return Settings(models_dir=registry.root, **{"workers": 2, "max_queue": 64, "batching": "off", **overrides})


@pytest.fixture(scope="session")
def live_server(tiny_registry) -> Iterator[str]:
    """URL of a real uvicorn server serving ``tiny_registry`` (default settings otherwise)."""
    pytest.importorskip("fastapi")
    from strata.server.main import create_app

    with running_server(create_app(server_settings(tiny_registry))) as url:
        yield url


@pytest.fixture(scope="session")
def live_av_server(tiny_av_registry) -> Iterator[str]:
    """URL of a real uvicorn server serving ``tiny-image`` and ``tiny-audio`` (default settings otherwise)."""
    pytest.importorskip("fastapi")
    from strata.server.main import create_app

    with running_server(create_app(server_settings(tiny_av_registry))) as url:
        yield url


# 16-bit steps by which a decode through the server may differ from the library's. The server's onnxruntime
# sessions run with other thread counts, so g_s's float32 sums may round differently (1e-7); mel-consistency
# refinement boosts the randomly initialised tiny vocoder's faint output by up to +40 dB, and with it those
# differences: measured 1 step in 2 to 6 of 28 665 samples. Anything wrong (layers, vocoder, model) is far louder.
HIFIGAN_LSB = 2


def assert_wav_of(got: bytes, samples: np.ndarray, lsb: int = HIFIGAN_LSB) -> None:
    """``got`` is the 16-bit WAV of ``samples`` (22 050 Hz), sample values within ``lsb`` quantisation steps."""
    import numpy as np
    import soundfile as sf
    from strata.frontend.audio import write_wav

    expected = write_wav(samples, 22050)
    a, rate_a = sf.read(io.BytesIO(got), dtype="int16")
    b, rate_b = sf.read(io.BytesIO(expected), dtype="int16")
    assert (rate_a, a.shape) == (rate_b, b.shape) and got[:44] == expected[:44]
    diff = int(np.abs(a.astype(np.int32) - b).max(initial=0))
    assert diff <= lsb, f"{int((a != b).sum())} of {a.size} samples differ, by up to {diff} steps (allowed {lsb})"
