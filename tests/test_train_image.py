"""The image training loop on a tiny model and tiny synthetic data: it trains, logs, checkpoints and resumes."""

import json

import pytest

from tests.conftest import png_bytes, synthetic_image

torch = pytest.importorskip("torch")
from strata.train.image import ImageTrainConfig, lr_at, train  # noqa: E402
from strata.train.nets.image import ImageNetConfig  # noqa: E402
from strata.train.quantize.rvq import RVQConfig  # noqa: E402


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
    assert [r["skipped_steps"] for r in log] == [0, 0]
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


def test_linear_skip_starts_as_block_pca():
    import numpy as np
    from strata.train.nets.image import Analysis, Synthesis, block_pca

    cfg = ImageNetConfig(latent_dim=32, channels=(8, 8, 8), linear_skip=True)
    g_a, g_s = Analysis(cfg), Synthesis(cfg)
    x = torch.from_numpy(np.stack([synthetic_image(64, 64, s) for s in range(6)])).permute(0, 3, 1, 2).float() / 255
    mean, components = block_pca(x, 32)
    g_a.init_linear(mean, components)
    g_s.init_linear(mean, components)
    blocks = torch.nn.functional.pixel_unshuffle(x - 0.5, 8).permute(0, 2, 3, 1).reshape(-1, 192)
    projected = (blocks - mean) @ components @ components.T + mean
    pca = torch.nn.functional.pixel_shuffle(projected.reshape(6, 8, 8, 192).permute(0, 3, 1, 2), 8) + 0.5
    with torch.no_grad():
        torch.testing.assert_close(g_s(g_a(x)), pca, atol=1e-5, rtol=0)
        assert float(((pca - x) ** 2).mean()) < float(((x - x.mean()) ** 2).mean()) / 100  # PCA reconstructs


def test_new_run_initialises_the_linear_paths(data, tmp_path):
    cfg = tiny_config(data, 2)
    cfg.net = ImageNetConfig(latent_dim=4, channels=(4, 4, 8), enc_blocks=(1, 1, 1), dec_blocks=(1, 1, 1),
                             linear_skip=True)
    train(cfg, tmp_path / "run")
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["model"]
    assert state["g_a.skip.1.weight"].abs().sum() > 0  # set from the PCA, then trained
    assert json.loads((tmp_path / "run" / "config.json").read_text())["net"]["linear_skip"] is True


def test_configs_saved_before_the_linear_path_load_without_it():
    old = {"latent_dim": 32, "channels": [64, 128, 192], "enc_blocks": [1, 1, 1], "dec_blocks": [1, 2, 3]}
    assert ImageNetConfig.from_dict(old).linear_skip is False
    assert ImageNetConfig().linear_skip is True


def test_cli_resume_without_config_json_keeps_the_run_config(data, tmp_path):
    """A run folder that lost config.json resumes with the config in last.pt, not the defaults."""
    from strata.cli import main

    run = tmp_path / "run"
    train(tiny_config(data, 2), run)
    (run / "config.json").unlink()
    assert main(["train", "image", "--data", str(data), "--run", str(run), "--resume", "--steps", "4"]) == 0
    saved = json.loads((run / "config.json").read_text())
    assert saved["rvq"]["layers"] == 3 and saved["steps"] == 4
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 4
