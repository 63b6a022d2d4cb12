"""`strata eval audio` end to end on the tiny audio model: the report, the plots, the table and the manifest record."""

from __future__ import annotations

import json
import shutil
import sys

import pytest
from strata.audio import AudioCodec
from strata.cli import main
from strata.eval.audio import (
    ALL,
    CODEC,
    CODEC_GL,
    GRIFFINLIM,
    HIFIGAN,
    SPLITS,
    TRUE_MEL,
    evaluate_audio,
    format_report,
    matched_opus_targets,
)
from strata.registry import Registry

from tests.conftest import flac_bytes, synthetic_sound

pytest.importorskip("matplotlib")

LAYERS = 4  # the tiny model's


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """speech/test and environment/test with a few short clips, and a train split that must not be read."""
    root = tmp_path_factory.mktemp("audio-data")
    for split, seeds in (("speech", (0, 1, 2)), ("environment", (3, 4))):
        (root / split / "test").mkdir(parents=True)
        for s in seeds:
            (root / split / "test" / f"{split}{s}.flac").write_bytes(flac_bytes(synthetic_sound(1.0 + 0.2 * s, s)))
        (root / split / "train").mkdir()
        (root / split / "train" / "broken.flac").write_bytes(b"not a sound")
    return root


@pytest.fixture
def models(tiny_audio_registry, tmp_path):
    root = tmp_path / "models"
    shutil.copytree(tiny_audio_registry.root, root)
    return root


def _strict_json(text: str) -> dict:
    def refuse(name: str):
        raise AssertionError(f"report.json holds {name}")

    return json.loads(text, parse_constant=refuse)


def test_eval_audio_cli_reports_plots_and_records(models, data, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--models", str(models), "eval", "audio", "--data", str(data), "--out", str(out), "--limit", "2"]
    assert main([*argv, "--update-manifest"]) == 0
    text = capsys.readouterr().out
    assert "| system | kbps speech | kbps env. |" in text and "| codec (HiFi-GAN) k=4 |" in text
    assert "HiFi-GAN on the true mel" in text and "recorded kbps per layer" in text

    report = _strict_json((out / "report.json").read_text())
    assert report["model"] == "tiny-audio" and report["layers"] == LAYERS
    assert report["clips"] == {"speech": 2, "environment": 2}  # --limit 2 of each split
    assert report["command"].startswith("strata --models") and "--limit 2" in report["command"]
    assert len(report["weights_sha256"]) == 64 and report["date"] and report["data"] == str(data)
    for name in ("report.json", "pesq_kbps.png", "mels.png"):
        assert (out / name).stat().st_size > 0

    points = {(p["system"], p["label"], p["split"]): p for p in report["points"]}
    for split in (*SPLITS, ALL):
        kbps = []
        for k in range(1, LAYERS + 1):
            p = points[CODEC, f"k={k}", split]
            for key in (
                "kbps",
                "kbps_pooled",
                "mel_rmse",
                "mel_distance",
                "lsd",
                "encode_s",
                "decode_s",
                "encode_xrt",
                "decode_xrt",
            ):
                assert p[key] is not None and p[key] >= 0, (split, k, key)
            assert p["clips"] == (4 if split == ALL else 2)
            if split == "speech" and "PESQ-WB skipped" not in " ".join(report["notes"]):
                assert p["pesq_clips"] + p["stoi_clips"] > 0
            if split != "speech":
                assert p["pesq"] is None and p["stoi"] is None
            kbps.append(p["kbps"])
        assert kbps == sorted(kbps) and kbps[0] < kbps[-1]
        for system in (HIFIGAN, GRIFFINLIM):
            p = points[system, TRUE_MEL, split]
            assert p["kbps"] is None and p["mel_rmse"] is None and p["encode_s"] is None
            assert p["decode_xrt"] > 0 and p["mel_distance"] >= 0
    assert len(report["entropy"]) == LAYERS
    for e in report["entropy"]:
        assert e["coded_kbps"] <= e["raw_kbps"] + 0.5  # a random model's codes still fit in log2 K bits (+ padding)
    if report["opus_backend"]:
        for mode in ("hard-cbr", "vbr"):
            assert points[f"opus-{mode}", "6 kbps", "speech"]["kbps"] > 6

    reg = Registry(models)  # still loadable, sha256 pins intact
    entry = reg.entry("tiny-audio")
    assert len(entry.bits_per_layer) == LAYERS and entry.extra["bits_per_layer_unit"] == "bit/s"
    assert entry.extra["kbps_per_layer"] == [
        round(points[CODEC, f"k={k}", ALL]["kbps"], 4) for k in range(1, LAYERS + 1)
    ]
    assert "receptive_field" in entry.extra and entry.weights_sha256 == report["weights_sha256"]
    AudioCodec.load(reg, "tiny-audio")


def test_missing_pesq_stoi_and_opus_become_notes(tiny_audio_registry, data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pesq", None)  # `import pesq` raises ImportError
    monkeypatch.setitem(sys.modules, "pystoi", None)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # neither opusenc nor ffmpeg
    out = tmp_path / "out"
    r = evaluate_audio(tiny_audio_registry, data, out, limit=1, codec_griffinlim=True, log=lambda _: None)
    notes = " ".join(r.notes)
    assert "PESQ-WB skipped" in notes and "STOI skipped" in notes and "Opus skipped" in notes
    assert r.opus_backend is None and not any(p.system.startswith("opus") for p in r.points)
    assert all(p.pesq is None and p.stoi is None for p in r.points)
    assert [p.label for p in r.series(CODEC_GL, "speech")] == [f"k={k}" for k in range(1, LAYERS + 1)]
    assert all(p.mel_rmse is not None for p in r.series(CODEC_GL))
    table = format_report(r)
    assert "n/a" in table and "note: Opus skipped" in table and "codec (Griffin-Lim) k=1" in table
    assert (out / "pesq_kbps.png").stat().st_size > 0 and (out / "mels.png").stat().st_size > 0
    _strict_json((out / "report.json").read_text())


def test_matched_opus_targets_invert_the_rate_line():
    measured = {6.0: 8.0, 8.0: 10.0, 12.0: 14.0}  # measured = target + 2
    matched, below = matched_opus_targets({1: 3.0, 2: 7.9, 3: 9.1, 4: 11.0, 5: 20.3}, measured)
    assert below == [1, 2]  # 3 and 7.9 kbps need 1 and 5.9 kbps targets, under opusenc's 6
    assert matched == [(3, 7.1), (4, 9.0), (5, 18.3)]
    assert matched_opus_targets({1: 10.1}, measured) == ([], [])  # 8.1: within 0.5 of the 8 kbps target already run
    assert matched_opus_targets({1: 9.0}, {6.0: 8.0}) == ([], [])  # one point: no line


@pytest.mark.parametrize("layout", ["missing", "no-environment", "empty-speech", "broken-clip"])
def test_cli_bad_data_folder_exits_1(models, data, tmp_path, capsys, layout):
    folder = tmp_path / "data"
    if layout != "missing":
        shutil.copytree(data, folder)
        if layout == "no-environment":
            shutil.rmtree(folder / "environment")
        elif layout == "broken-clip":
            (folder / "environment" / "test" / "environment3.flac").write_bytes(b"not a sound")
        else:
            for f in (folder / "speech" / "test").iterdir():
                f.unlink()
    argv = ["--models", str(models), "eval", "audio", "--data", str(folder), "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("strata: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert ("environment3.flac: not a decodable" if layout == "broken-clip" else "error: no ") in err
    assert not (tmp_path / "out").exists()


def test_codec_griffinlim_is_an_audio_option(models, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--models", str(models), "eval", "images", "--data", str(tmp_path), "--out", str(tmp_path / "o"),
              "--codec-griffinlim"])
    assert e.value.code == 2 and "--codec-griffinlim" in capsys.readouterr().err
