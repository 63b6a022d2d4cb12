"""Vocoder training loop on a tiny synthetic dataset: phases, checkpoints, resume, export, held-out split."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from strata.cli import main
from strata.export.vocoder import export_vocoder
from strata.train.data import load_audio, split_heldout
from strata.train.nets.hifigan_model import HiFiGANConfig, phase_imbalance
from strata.train.vocoder import (
    RandomSegments,
    VocoderTrainConfig,
    build_discriminators,
    load_generator,
    selection_score,
    train,
)

sf = pytest.importorskip("soundfile")

TINY_GEN = HiFiGANConfig(upsample_initial_channel=16)  # V3 layout at 1/16 of the width


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tone(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 40 * seed
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 6)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.3 * x / np.abs(x).max() + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def audio_root(tmp_path_factory) -> Path:
    """``speech/train``: seven short FLAC clips (one at 16 kHz, one shorter than a segment); ``speech/test`` too."""
    root = tmp_path_factory.mktemp("audio")
    for split, n in (("train", 7), ("test", 2)):
        (root / "speech" / split).mkdir(parents=True)
        for i in range(n):
            rate = 16000 if i == 3 else 22050
            seconds = 0.15 if i == 5 else 0.6 + 0.1 * i
            sf.write(root / "speech" / split / f"clip{split}{i:02d}.flac", _tone(seconds, rate, i), rate)
    return root


def _cfg(root: Path, **kw) -> VocoderTrainConfig:
    base = dict(
        data=str(root), gen=TINY_GEN, mpd_channels=(4, 8, 8), msd_channels=(8, 8, 16, 16, 16, 16, 16),
        msd_groups=(1, 4, 4, 4, 4, 4, 1), segment=4096, batch=2, steps=3, recon_steps=2, eval_every=2,
        adv_eval_every=2, log_every=1, pesq_clips=1, threads=1,
    )
    return VocoderTrainConfig(**{**base, **kw})


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_config_round_trips_through_json():
    cfg = VocoderTrainConfig(sets=("speech", "environment"), gen=TINY_GEN)
    assert VocoderTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert VocoderTrainConfig().gen == HiFiGANConfig.v3()
    with pytest.raises(ValueError, match="multiple of the hop"):
        VocoderTrainConfig(segment=5000)


def test_discriminator_width():
    quarter = VocoderTrainConfig().with_discriminator_width(0.25)
    assert quarter.mpd_channels == (8, 32, 128, 256, 256)
    assert quarter.msd_channels == (32, 32, 64, 128, 256, 256, 256) and quarter.msd_groups == (1, 4, 16, 16, 16, 16, 1)
    cpu = torch.device("cpu")

    def size(cfg: VocoderTrainConfig) -> int:  # builds them: every group divides its layer
        return sum(p.numel() for d in build_discriminators(cfg, cpu) for p in d.parameters())

    assert size(quarter) < size(VocoderTrainConfig()) / 10
    assert VocoderTrainConfig().with_discriminator_width(1.0) == VocoderTrainConfig()
    for w in (0.0, 1.5):
        with pytest.raises(ValueError, match="width"):
            VocoderTrainConfig().with_discriminator_width(w)
    # A config that could not build its discriminators fails when made, not when the adversarial phase starts.
    with pytest.raises(ValueError, match="msd_channels"):
        VocoderTrainConfig(msd_channels=(128, 130, 256, 512, 1024, 1024, 1024))
    with pytest.raises(ValueError, match="mpd_channels"):
        VocoderTrainConfig(mpd_channels=())


def test_heldout_split_is_deterministic_and_disjoint(audio_root):
    names = [Path(f"librispeech_{i:04d}-0000.flac") for i in range(300)]
    train_a, held_a = split_heldout(names, 0.1)
    train_b, held_b = split_heldout(list(reversed(names)), 0.1)
    assert {p.name for p in held_a} == {p.name for p in held_b}  # order-independent, by name only
    assert not {p.name for p in train_a} & {p.name for p in held_a}
    assert len(train_a) + len(held_a) == len(names)
    assert 15 <= len(held_a) <= 45  # about 10 %
    # Adding files moves no other file across the split.
    _, held_c = split_heldout(names + [Path("new_a.flac"), Path("new_b.flac")], 0.1)
    assert {p.name for p in held_a} <= {p.name for p in held_c}
    # Few files: at least one on each side.
    files = sorted((audio_root / "speech" / "train").iterdir())
    tr, he = split_heldout(files, 0.1)
    assert tr and he and len(tr) + len(he) == len(files)


def test_audio_is_decoded_resampled_and_cached(audio_root, tmp_path):
    files = sorted((audio_root / "speech" / "train").iterdir())
    clips = load_audio(files, tmp_path)
    assert len(clips) == len(files) and all(c.dtype == np.float32 for c in clips)
    assert len(clips[3]) == pytest.approx(0.9 * 22050, abs=2)  # the 16 kHz clip, resampled
    assert len(list(tmp_path.glob("audio-*.npz"))) == 1
    again = load_audio(files, tmp_path)  # from the cache
    assert all(np.array_equal(a, b) for a, b in zip(clips, again, strict=True))
    seg = RandomSegments(clips, 4096, seed=0).sample(8)
    assert seg.shape == (8, 4096) and seg.dtype == np.float32


def test_train_both_phases_then_resume(audio_root, tmp_path):
    run = tmp_path / "run"
    cfg = _cfg(audio_root)
    assert train(cfg, run) == run / "best.pt"
    for name in ("config.json", "log.jsonl", "last.pt", "best.pt", "best_recon.pt"):
        assert (run / name).exists(), name
    log = _log(run)
    steps = [r for r in log if r["kind"] == "train"]
    assert [r["step"] for r in steps] == [1, 2, 3]
    assert [r["phase"] for r in steps] == ["reconstruction", "reconstruction", "adversarial"]
    assert "disc" not in steps[1] and "stft" in steps[1]
    assert {"disc", "adv", "fm", "mel_l1"} <= steps[2].keys() and steps[2]["disc"] > 0
    evals = [r for r in log if r["kind"] == "eval"]
    assert [r["step"] for r in evals] == [2, 3] and all(np.isfinite(r["val_mel_l1"]) for r in evals)
    assert evals[0]["select"] == "mel_l1" and evals[1]["select"] in ("pesq", "mel_l1")
    last = torch.load(run / "last.pt", weights_only=False)
    assert last["step"] == 3 and {"mpd", "msd", "opt_d", "opt_g", "rng"} <= last.keys()
    assert torch.load(run / "best_recon.pt", weights_only=False)["step"] == 2

    # Resume through the CLI: same config, continues at step 4.
    saved = (run / "config.json").read_text()
    data = ["--data", json.loads(saved)["data"]]
    assert main(["train", "vocoder", *data, "--run", str(run), "--resume", "--steps", "4", "--stft-weight", "3"]) == 0
    resumed = VocoderTrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert resumed == VocoderTrainConfig.from_dict({**json.loads(saved), "steps": 4, "stft_weight": 3.0})
    new = _log(run)[len(log):]
    assert [r["step"] for r in new if r["kind"] == "train"] == [4]
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 4
    # A resumed run keeps its generator's layout.
    assert main(["train", "vocoder", *data, "--run", str(run), "--resume", "--steps", "5",
                 "--balanced-upsampling"]) == 1
    assert main(["train", "vocoder", *data, "--run", str(run), "--resume", "--steps", "5", "--d-width", "0.5"]) == 1
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 4
    # Without config.json, --resume takes the config saved in last.pt (not the defaults).
    (run / "config.json").unlink()
    assert main(["train", "vocoder", *data, "--run", str(run), "--resume", "--steps", "5"]) == 0
    again = VocoderTrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert again == VocoderTrainConfig.from_dict({**json.loads(saved), "steps": 5, "stft_weight": 3.0})
    assert torch.load(run / "last.pt", weights_only=False)["step"] == 5


def test_selection_uses_pesq_in_the_adversarial_phase_only():
    v = {"val_mel_l1": 0.4, "pesq_wb": 2.3}
    assert selection_score(v, "reconstruction", "pesq") == (0.4, "mel_l1")
    assert selection_score(v, "adversarial", "pesq") == (-2.3, "pesq")
    assert selection_score(v, "adversarial", "mel_l1") == (0.4, "mel_l1")
    # No PESQ (packages missing, no speech scored): mel L1 still selects.
    assert selection_score({"val_mel_l1": 0.4, "pesq_wb": None}, "adversarial", "pesq") == (0.4, "mel_l1")
    # A higher PESQ is a lower (better) score.
    better = selection_score({**v, "pesq_wb": 2.5}, "adversarial", "pesq")[0]
    assert better < selection_score(v, "adversarial", "pesq")[0]
    with pytest.raises(ValueError, match="adv_select"):
        VocoderTrainConfig(adv_select="stoi")


def test_discriminator_warmup_freezes_the_generator(audio_root, tmp_path):
    run = tmp_path / "run"
    train(_cfg(audio_root, steps=4, recon_steps=1, d_warmup=2, eval_every=1, pesq_clips=0), run)
    steps = {r["step"]: r for r in _log(run) if r["kind"] == "train"}
    assert "disc" in steps[2] and "mel_l1" not in steps[2] and "mel_l1" not in steps[3]
    assert {"disc", "mel_l1", "adv", "fm"} <= steps[4].keys()
    assert [r["step"] for r in _log(run) if r["kind"] == "eval"] == [1, 4]  # none while the generator is frozen
    recon = torch.load(run / "best_recon.pt", weights_only=False)["generator"]  # step 1
    after = torch.load(run / "last.pt", weights_only=False)["generator"]  # step 4: one generator update
    assert any(not torch.equal(recon[k], after[k]) for k in recon)
    # Stopped inside the warm-up: the generator is still the step-1 one.
    run2 = tmp_path / "run2"
    train(_cfg(audio_root, steps=3, recon_steps=1, d_warmup=2, eval_every=1, pesq_clips=0), run2)
    frozen = torch.load(run2 / "last.pt", weights_only=False)
    assert frozen["step"] == 3 and "mpd" in frozen
    first = torch.load(run2 / "best_recon.pt", weights_only=False)["generator"]
    assert all(torch.equal(first[k], frozen["generator"][k]) for k in first)
    with pytest.raises(ValueError, match="d_warmup"):
        VocoderTrainConfig(d_warmup=-1)
    with pytest.raises(ValueError, match="STFT loss weights"):
        VocoderTrainConfig(stft_weight=-1.0)


def test_frame_and_phase_losses_and_stft_resolutions(audio_root, tmp_path):
    res = ((512, 50, 240), (2048, 512, 2048))
    train(_cfg(audio_root, steps=2, recon_steps=5, eval_every=2, frame_weight=3.0, phase_weight=2.0,
               stft_resolutions=res), tmp_path)
    steps = [r for r in _log(tmp_path) if r["kind"] == "train"]
    assert all(r["frame"] > 0 and r["stft"] > 0 and 0 < r["phase"] < 2 for r in steps)
    ev = [r for r in _log(tmp_path) if r["kind"] == "eval"][-1]
    assert 0 <= ev["frame_locked"] < 1 and 0 < ev["val_phase"] < 2
    cfg = VocoderTrainConfig.from_dict(json.loads((tmp_path / "config.json").read_text()))
    assert cfg.stft_resolutions == res and cfg.frame_weight == 3.0 and cfg.phase_weight == 2.0
    with pytest.raises(ValueError, match="frame_weight"):
        VocoderTrainConfig(frame_weight=-1.0)
    with pytest.raises(ValueError, match="phase_weight"):
        VocoderTrainConfig(phase_weight=-1.0)
    for bad in ((), ((512, 50),), ((512, 50, 1024),), ((16384, 256, 1024),)):
        with pytest.raises(ValueError, match="stft_resolutions"):
            VocoderTrainConfig(stft_resolutions=bad)


def test_resume_reproduces_an_uninterrupted_run(audio_root, tmp_path):
    cfg = _cfg(audio_root, steps=2, recon_steps=10, eval_every=1, pesq_clips=0)
    train(cfg, tmp_path / "a")
    one = _cfg(audio_root, steps=1, recon_steps=10, eval_every=1, pesq_clips=0)
    train(one, tmp_path / "b")
    train(cfg, tmp_path / "b", resume=True)
    a, b = (torch.load(tmp_path / r / "last.pt", weights_only=False)["generator"] for r in ("a", "b"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_max_minutes_stops_with_a_checkpoint(audio_root, tmp_path):
    train(_cfg(audio_root, steps=50, recon_steps=50, eval_every=25, pesq_clips=0), tmp_path, max_minutes=0)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["step"] == 1
    assert [r["step"] for r in _log(tmp_path) if r["kind"] == "eval"] == [1]


def test_export_matches_the_torch_generator(audio_root, tmp_path):
    pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    train(_cfg(audio_root, steps=1, recon_steps=1, eval_every=1, pesq_clips=0), run)
    out = export_vocoder(run / "best.pt", tmp_path / "export")
    assert out.onnx.exists() and out.checkpoint.exists() and out.max_abs_diff < 1e-4
    import onnxruntime as ort

    gen = load_generator(out.checkpoint)
    mel = torch.randn(2, 80, 13, generator=torch.Generator().manual_seed(1)) - 5
    with torch.no_grad():
        ref = gen(mel).numpy()
    got = ort.InferenceSession(str(out.onnx), providers=["CPUExecutionProvider"]).run(None, {"mel": mel.numpy()})[0]
    assert got.shape == (2, 1, 13 * 256)
    np.testing.assert_allclose(got, ref, atol=1e-4)
    # The exported generator starts another run (init_from), keeping its step.
    run2 = tmp_path / "run2"
    train(_cfg(audio_root, steps=2, recon_steps=5, eval_every=1, pesq_clips=0), run2, init_from=out.checkpoint)
    assert [r["step"] for r in _log(run2) if r["kind"] == "train"] == [2]
    # ... and a run with balanced upsamplers (same parameters), whose export keeps the balance.
    bal = HiFiGANConfig(upsample_initial_channel=16, balanced_upsampling=True)
    run3 = tmp_path / "run3"
    train(_cfg(audio_root, gen=bal, steps=2, recon_steps=5, eval_every=1, pesq_clips=0), run3, init_from=out.checkpoint)
    out3 = export_vocoder(run3 / "best.pt", tmp_path / "export3")
    folded = load_generator(out3.checkpoint)
    assert folded.cfg.balanced_upsampling and out3.max_abs_diff < 1e-3
    folded.remove_weight_norm()
    assert all(phase_imbalance(up.weight, up.stride[0]) < 1e-5 for up in folded.ups)
    other = HiFiGANConfig(upsample_initial_channel=32)
    with pytest.raises(ValueError, match="another configuration"):
        train(_cfg(audio_root, gen=other, steps=1, recon_steps=5, pesq_clips=0), tmp_path / "run4",
              init_from=out.checkpoint)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["vocoder", "--stft-weight", "-1"], "--stft-weight"),
        (["vocoder", "--d-width", "0"], "--d-width"),
        (["vocoder", "--d-width", "2"], "--d-width"),
        (["vocoder", "--stft-resolutions", "512:50"], "--stft-resolutions"),
        (["vocoder", "--stft-resolutions", "512:50:1024"], "stft_resolutions"),
        (["vocoder", "--config", "{tmp}/cfg.json"], "d_warmup must be >= 0"),
        (["vocoder", "--data", "{tmp}/none"], "no audio folder"),
    ],
)
def test_cli_rejects_bad_training_flags(tmp_path, capsys, args, message):
    (tmp_path / "cfg.json").write_text('{"d_warmup": -1}')
    data = [] if "--data" in args else ["--data", str(tmp_path)]
    argv = ["train", args[0], "--run", str(tmp_path / "run"), *data, *(a.format(tmp=tmp_path) for a in args[1:])]
    assert main(argv) == 1
    assert message in capsys.readouterr().err


def test_experiment_settings_come_from_a_config_file(tmp_path, audio_root):
    """--frame-weight, --phase-weight and --d-warmup are not flags: a --config file sets them for a new run."""
    settings = {k: v for k, v in _cfg(audio_root, recon_steps=5, pesq_clips=0).to_dict().items() if k != "data"}
    (tmp_path / "cfg.json").write_text(json.dumps({**settings, "phase_weight": 2.0}))
    run = tmp_path / "run"
    assert main(["train", "vocoder", "--data", str(audio_root), "--run", str(run), "--steps", "1",
                 "--config", str(tmp_path / "cfg.json")]) == 0
    cfg = VocoderTrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    assert cfg.phase_weight == 2.0 and cfg.recon_steps == 5 and cfg.steps == 1


def test_shipped_generator_is_balanced_and_loads():
    """checkpoints/audio-rvq8/vocoder.pt (run voc-bal, step 65 000): the served balanced V3 generator, which
    starts a run (init_from); checkpoints/voc-v3-36358.pt, the one shipped before, loads as the plain V3."""
    checkpoints = Path(__file__).parent.parent / "checkpoints"
    path = checkpoints / "audio-rvq8" / "vocoder.pt"
    if not path.exists():
        pytest.skip(f"{path} is not in this checkout")
    old = checkpoints / "voc-v3-36358.pt"
    assert load_generator(old).cfg == HiFiGANConfig() and torch.load(old, weights_only=False)["step"] == 36_358
    gen = load_generator(path)
    assert gen.cfg == HiFiGANConfig(balanced_upsampling=True)
    assert torch.load(path, weights_only=False)["step"] == 65_000
    gen.remove_weight_norm()
    assert all(phase_imbalance(up.weight, up.stride[0]) < 1e-3 for up in gen.ups)  # float16-rounded weights
    with torch.no_grad():
        y = gen(torch.full((1, 80, 48), -4.0))[0, 0, 16 * 256:-16 * 256]
    ripple = (y - y.mean()).reshape(-1, 256).mean(0).abs().max()
    assert ripple < 1e-3 * max(float(y.abs().mean()), 1e-3)  # a steady mel: no frame-rate comb
