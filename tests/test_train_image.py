"""The image training loop on a tiny model and tiny synthetic data: it trains, logs, checkpoints and resumes."""

import json

import pytest

from tests.conftest import png_bytes, synthetic_image

torch = pytest.importorskip("torch")
from codec.nets.image import ImageNetConfig  # noqa: E402
from codec.quantize.rvq import RVQConfig  # noqa: E402
from codec.train.image import ImageTrainConfig, lr_at, train  # noqa: E402


@pytest.fixture
def data(tmp_path):
    for split, seeds in (("train", range(3)), ("val", range(3, 5))):
        (tmp_path / "images" / split).mkdir(parents=True)
        for s in seeds:
            (tmp_path / "images" / split / f"{s}.png").write_bytes(png_bytes(synthetic_image(48, 64, s)))
    return tmp_path / "images"


def tiny_config(data, steps: int) -> ImageTrainConfig:
    return ImageTrainConfig(
        data=str(data), steps=steps, batch=2, crop=32, eval_every=2, val_crop=32, threads=1, amp=False,
        net=ImageNetConfig(latent_dim=4, channels=(4, 4, 8), enc_blocks=(1, 1, 1), dec_blocks=(1, 1, 1)),
        rvq=RVQConfig(layers=3, codebook_size=8, dim=4),
    )


def test_trains_logs_and_resumes(data, tmp_path):
    run = tmp_path / "run"
    best = train(tiny_config(data, 4), run)
    assert best.exists() and (run / "last.pt").exists()
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4]
    assert len(log[-1]["psnr"]) == 3 and len(log[-1]["perplexity"]) == 3
    assert json.loads((run / "config.json").read_text())["rvq"]["layers"] == 3

    train(tiny_config(data, 6), run, resume=True)
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [2, 4, 6]
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 6


def test_init_from_exported_weights(data, tmp_path):
    first = tmp_path / "a"
    train(tiny_config(data, 2), first)
    train(tiny_config(data, 4), tmp_path / "b", init_from=first / "best.pt")
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=False)["step"] == 4


def test_refuses_kodak(tmp_path):
    kodak = tmp_path / "kodak"
    (kodak / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="Kodak"):
        train(tiny_config(kodak, 2), tmp_path / "run")


def test_lr_schedule():
    cfg = ImageTrainConfig(steps=100, lr=1e-3, lr_min=1e-5, decay_start=0.5)
    assert lr_at(cfg, 0) == lr_at(cfg, 50) == 1e-3
    assert lr_at(cfg, 75) < 1e-3 and abs(lr_at(cfg, 100) - 1e-5) < 1e-12
