"""Shared fixtures.

``tiny_registry`` exports a tiny, randomly initialised image model (k-means
codebooks on its own latents) through the real ``codec.export`` path into a
temporary models folder, so pipeline and CLI tests run in seconds and do not
depend on the shipped weights. ``shipped_registry`` is the repository's
``models/`` folder.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic photo-like test image: smooth gradients, edges, texture and noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([
        128 + 100 * np.sin(xx / (7 + 3 * seed) + yy / 11),
        128 + 90 * np.cos(yy / 9 - xx / 23),
        96 + 60 * np.sin((xx + yy) / 17) * np.cos(xx / 5),
    ], axis=-1)
    img[h // 3 : h // 2, w // 4 : w // 2] += 60  # a sharp-edged block
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def png_bytes(image: np.ndarray, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory):
    torch = pytest.importorskip("torch")
    from codec.export import export_image_model
    from codec.nets.image import ImageNetConfig
    from codec.quantize.rvq import RVQConfig
    from codec.registry import Registry
    from codec.train.image import ImageAutoencoder, ImageTrainConfig

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
        lat = model.g_a(x.float())
        model.quantizer.init_kmeans(lat.permute(0, 2, 3, 1).reshape(-1, 8))
    ckpt = root / "ckpt.pt"
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "step": 0, "best": 0.0}, ckpt)
    models = root / "models"
    models.mkdir()
    export_image_model(ckpt, "tiny-image", data, models, description="test model")
    return Registry(models)


@pytest.fixture(scope="session")
def tiny_codec(tiny_registry):
    from codec.pipeline import ImageCodec

    return ImageCodec.load(tiny_registry, "tiny-image")


@pytest.fixture(scope="session")
def shipped_registry():
    from codec.registry import Registry

    return Registry(ROOT / "models")
