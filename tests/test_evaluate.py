"""`strata eval images` end to end on the tiny model: the report, the plot and the manifest record."""

import json
import shutil

import pytest
from strata.cli import main
from strata.registry import Registry

from tests.conftest import png_bytes, synthetic_image

pytest.importorskip("matplotlib")
pytest.importorskip("scipy")


def test_eval_images_reports_and_records(tiny_registry, tmp_path, capsys):
    models = tmp_path / "models"
    shutil.copytree(tiny_registry.root, models)
    data = tmp_path / "kodak-like"
    data.mkdir()
    (data / "a.png").write_bytes(png_bytes(synthetic_image(176, 184, seed=2)))
    out = tmp_path / "out"
    assert main(["--models", str(models), "eval", "images", "--data", str(data), "--out", str(out),
                 "--update-manifest"]) == 0
    text = capsys.readouterr().out
    assert "| layers | bpp | PSNR (dB) |" in text and "conditional prior saves" in text
    report = json.loads((out / "report.json").read_text())
    assert report["images"] == 1 and len(report["codec"]) == 4 and (out / "rd.png").stat().st_size > 0
    bpps = [p["bpp"] for p in report["codec"]]
    assert bpps == sorted(bpps)
    for e in report["entropy"]:  # coded size within 1% of the prior's cross-entropy, plus word padding
        assert e["coded_bits"] <= 1.01 * e["prior_bits"] + 32
    entry = Registry(models).entry("tiny-image")
    assert entry.bpp_per_layer == tuple(round(b, 5) for b in bpps)
    assert len(entry.bits_per_layer) == 4
