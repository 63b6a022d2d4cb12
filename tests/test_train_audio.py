"""The mel codec training loop (``strata.train.audio``) on a tiny model and synthetic FLACs: it trains, logs,
checkpoints and resumes exactly; its crops, band statistics and data checks; the ``strata train audio`` CLI."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from tests.conftest import flac_bytes, synthetic_sound

torch = pytest.importorskip("torch")
from strata.frontend.audio import DEFAULT_MEL  # noqa: E402
from strata.train.audio import (  # noqa: E402
    AudioTrainConfig,
    RandomMelCrops,
    band_stats,
    read_checkpoint,
    train,
)
from strata.train.nets.melcodec import MelNetConfig  # noqa: E402
from strata.train.quantize.rvq import RVQConfig  # noqa: E402

LAYERS, K = 3, 8


@pytest.fixture
def data(tmp_path):
    """<tmp>/audio/{speech,environment}/train/*.flac: three synthetic clips of 1.0-1.6 s per set."""
    for s in ("speech", "environment"):
        (tmp_path / "audio" / s / "train").mkdir(parents=True)
        for i in range(3):
            sound = synthetic_sound(1.0 + 0.3 * i, seed=i + (3 if s == "environment" else 0))
            (tmp_path / "audio" / s / "train" / f"{s}{i}.flac").write_bytes(flac_bytes(sound))
    return tmp_path / "audio"


def tiny_config(data, steps: int, eval_every: int, **kw) -> AudioTrainConfig:
    return AudioTrainConfig(
        data=str(data),
        steps=steps,
        batch=2,
        crop=32,
        eval_every=eval_every,
        threads=1,
        amp=False,
        net=MelNetConfig(latent_dim=4, channels=(4, 4, 8), enc_blocks=(1, 1, 1), dec_blocks=(1, 1, 1)),
        rvq=RVQConfig(layers=LAYERS, codebook_size=K, dim=4),
        **kw,
    )


def _log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_trains_logs_and_checkpoints(data, tmp_path):
    run = tmp_path / "run"
    cfg = tiny_config(data, 4, 2)
    best = train(cfg, run)
    assert best == run / "best.pt"
    for name in ("config.json", "log.jsonl", "last.pt", "best.pt"):
        assert (run / name).is_file(), name
    assert list((run / "cache").glob("audio-*.npz"))
    assert AudioTrainConfig.from_dict(json.loads((run / "config.json").read_text())) == cfg

    log = _log(run)
    assert [r["step"] for r in log] == [2, 4]
    for r in log:
        assert len(r["rmse"]) == len(r["kbps_static"]) == len(r["perplexity"]) == LAYERS
        assert all(math.isfinite(v) and v > 0 for v in r["rmse"])
        assert r["score"] == pytest.approx(np.mean(r["rmse"]))
        # cumulative kbps: at most log2(K) bits per code position, 10 rows × 21.5 columns per second
        assert all(b >= a for a, b in zip(r["kbps_static"], r["kbps_static"][1:], strict=False))
        assert 0 < r["kbps_static"][-1] <= LAYERS * math.log2(K) * 10 * DEFAULT_MEL.sample_rate / 1024 / 1000 + 1e-9
        assert all(1 <= p <= K + 1e-9 for p in r["perplexity"])
        assert {"train_loss", "train_rmse", "lr", "steps_per_s", "time"} <= set(r)

    last, best_ckpt = read_checkpoint(run / "last.pt"), read_checkpoint(run / "best.pt")
    assert last["step"] == 4 and {"model", "opt", "rng", "config", "best"} <= set(last)
    assert best_ckpt["best"] == pytest.approx(min(r["score"] for r in log))
    assert best_ckpt["step"] == min(log, key=lambda r: r["score"])["step"]
    assert last["model"]["g_a.mean"].shape == (80,) and bool(last["model"]["quantizer.initialised"])


def _run_and_weights(cfg, run, resume: bool = False, max_minutes: float | None = None) -> dict:
    train(cfg, run, resume=resume, max_minutes=max_minutes)
    return read_checkpoint(run / "last.pt")["model"]


def test_resume_continues_exactly(data, tmp_path, capsys):
    """A 6-step run in one go, and the same run stopped at step 3 (``max_minutes=0`` stops at the first
    checkpoint) then resumed, give identical weights (same data crops, same quantizer dropout draws, same
    optimiser state, same LR schedule). Warm-up is off: it restarts at every start on purpose
    (codec.train.schedule), which would change the learning rate of the resumed steps.

    The comparison can fail: resuming with another crop RNG state gives other weights.
    """
    cfg = tiny_config(data, 6, 3, warmup=0)
    straight = _run_and_weights(cfg, tmp_path / "a")

    run = tmp_path / "b"
    at_three = _run_and_weights(cfg, run, max_minutes=0)
    assert [r["step"] for r in _log(run)] == [3]
    shutil.copytree(run, tmp_path / "c")
    capsys.readouterr()
    resumed = _run_and_weights(cfg, run, resume=True)
    assert "resumed from" in capsys.readouterr().out
    assert [r["step"] for r in _log(run)] == [3, 6]
    assert _log(run)[-1]["rmse"] == _log(tmp_path / "a")[-1]["rmse"]
    assert straight.keys() == resumed.keys()
    for k in straight:
        assert torch.equal(straight[k], resumed[k]), k
    assert any(not torch.equal(at_three[k], resumed[k]) for k in at_three)  # it did train on

    other = tmp_path / "c"
    ckpt = torch.load(other / "last.pt", weights_only=False)
    ckpt["rng"]["numpy"] = np.random.default_rng(12345).bit_generator.state
    torch.save(ckpt, other / "last.pt")
    diverged = _run_and_weights(cfg, other, resume=True)
    assert any(not torch.equal(straight[k], diverged[k]) for k in straight)


@pytest.mark.parametrize("sets", [("speech", "test"), ("speech/test",), ("environment", "speech/test/x")])
def test_test_split_is_refused(data, tmp_path, sets):
    (data / "speech" / "test").mkdir()
    shutil.copy(next((data / "speech" / "train").iterdir()), data / "speech" / "test")
    with pytest.raises(ValueError, match="test split"):
        train(tiny_config(data, 2, 2, sets=sets), tmp_path / "run")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_random_crops_and_gain():
    floor = np.float32(np.log(DEFAULT_MEL.log_floor))
    quiet = np.full((80, 60), floor + 0.05, np.float32)  # just above the floor
    loud = np.zeros((80, 240), np.float32)  # 0 everywhere: a crop's value is its shift
    too_short = np.zeros((80, 31), np.float32)
    crops = RandomMelCrops([quiet, loud, too_short], crop=32, gain_db=12.0, seed=0)
    assert len(crops.mels) == 2  # the clip shorter than a crop is dropped
    x = crops.sample(400)
    assert x.shape == (400, 80, 32) and x.dtype == np.float32
    assert x.min() >= floor  # the gain never pushes a value below the log floor
    from_loud = x[np.abs(x - floor).max(axis=(1, 2)) > 0.06]  # the quiet clip ends up at (or near) the floor
    shifts = from_loud[:, 0, 0]
    assert (from_loud == shifts[:, None, None]).all()  # one gain per crop
    lowest = -12 / 20 * math.log(10)  # −12 dB on a magnitude: log-mel − 1.38
    assert lowest - 1e-6 <= shifts.min() < lowest + 0.1 and -0.1 < shifts.max() <= 0
    assert 0.7 < len(from_loud) / len(x) < 0.9  # clips drawn by length: 240 of 300 frames
    from_quiet = x[np.abs(x - floor).max(axis=(1, 2)) <= 0.06]
    assert len(from_quiet) and from_quiet.max() <= floor + 0.05 + 1e-6

    ramp = np.tile(np.arange(100, dtype=np.float32), (80, 1))
    exact = RandomMelCrops([ramp], crop=32, gain_db=0.0, seed=1).sample(50)  # no gain: windows of the mel
    starts = exact[:, 0, 0].astype(int)
    np.testing.assert_array_equal(exact, np.stack([ramp[:, s : s + 32] for s in starts]))
    assert starts.min() >= 0 and starts.max() <= 100 - 32 and len(set(starts)) > 10
    with pytest.raises(ValueError, match="32 mel frames"):
        RandomMelCrops([too_short], crop=32, gain_db=0.0)


def test_band_stats_weigh_every_frame():
    a = np.zeros((80, 10), np.float32)
    b = np.full((80, 30), 4.0, np.float32)
    b[5] = np.arange(30)
    mean, std = band_stats([a, b])
    assert mean.shape == std.shape == (80,) and mean.dtype == std.dtype == np.float32
    # 10 frames of 0 and 30 of 4: mean 3 (not the mean of the clip means, 2), std sqrt((10·9 + 30·1) / 40)
    np.testing.assert_allclose(mean[0], 3.0, rtol=1e-6)
    np.testing.assert_allclose(std[0], math.sqrt(3.0), rtol=1e-6)
    allm = np.concatenate([a, b], axis=1).astype(np.float64)
    np.testing.assert_allclose(mean, allm.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(std, allm.std(axis=1), rtol=1e-6)


def test_cli_missing_data_folder(tmp_path, capsys):
    from strata.cli import main

    missing = tmp_path / "no-such-folder"
    argv = ["train", "audio", "--data", str(missing), "--run", str(tmp_path / "run"), "--steps", "1", "--threads", "1"]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("strata: error:") and str(missing) in lines[0], err
    assert "Traceback" not in err and out == ""


def test_rsq_mel_codec_trains_exports_and_serves(data, tmp_path, tiny_audio_registry):
    """``quantizer="rsq"``: HQ-VAE's stochastic residual quantizer on the mel; the export names the family and
    the served model round-trips at every layer count (its search is the nearest-code one)."""
    from strata.audio import AudioCodec
    from strata.cli import main
    from strata.export.audio import export_audio_model
    from strata.registry import Registry
    from strata.train.quantize.rsq import RSQConfig

    run = tmp_path / "rsq"
    cfg = tiny_config(data, 4, 2, quantizer="rsq", rsq=RSQConfig(layers=LAYERS, codebook_size=K, dim=4))
    train(cfg, run)
    state = torch.load(run / "last.pt", weights_only=False)["model"]
    assert int(state["quantizer.step"]) == 4 and "quantizer.log_s2" in state
    assert json.loads((run / "config.json").read_text())["quantizer"] == "rsq"
    assert all(math.isfinite(v) for v in _log(run)[-1]["rmse"])
    vocoder = tiny_audio_registry.root / "tiny-audio"  # holds vocoder.onnx
    models = tmp_path / "models"
    shutil.copytree(tiny_audio_registry.root, models)
    assert main(["--models", str(models), "export", "audio", "--checkpoint", str(run / "best.pt"), "--vocoder",
                 str(vocoder), "--name", "tiny-rsq", "--data", str(data), "--no-default"]) == 0
    entry = Registry(models).entry("tiny-rsq")
    assert entry.quantizer == "rsq" and entry.layers == LAYERS
    assert Registry(models).defaults["audio"] == "tiny-audio"  # --no-default: registered beside the default
    export_audio_model(run / "best.pt", vocoder, "tiny-rsq", data, models)
    assert Registry(models).defaults["audio"] == "tiny-rsq"  # the library's default: make it the default
    codec = AudioCodec.load(Registry(models), "tiny-rsq")
    sound = synthetic_sound(1.2, seed=9)
    stream, codes = codec.compress(sound), codec.encode(sound)
    for k in range(1, LAYERS + 1):
        np.testing.assert_array_equal(codec.decompress_codes(stream, k).codes, codes.codes[:k])
    with pytest.raises(ValueError, match="quantizer"):
        AudioTrainConfig(quantizer="hrvq")
