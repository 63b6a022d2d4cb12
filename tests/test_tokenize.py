"""``strata tokenize`` and :mod:`strata.bulk` in one process (no Ray): shards, resume, bad files, determinism."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from strata.cli import main

from tests.conftest import png_bytes, synthetic_image

pytest.importorskip("pyarrow")

SIZES = {"a.png": (40, 56), "b.png": (32, 48), "c.jpg": (48, 40), "d.png": (24, 72), "sub/e.png": (40, 40)}


def images() -> dict[str, np.ndarray]:
    return {name: synthetic_image(h, w, seed=i) for i, (name, (h, w)) in enumerate(SIZES.items())}


@pytest.fixture
def dataset(tmp_path) -> Path:
    root = tmp_path / "in"
    for name, image in images().items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(png_bytes(image, "JPEG", quality=95) if name.endswith(".jpg") else png_bytes(image))
    (root / "notes.txt").write_text("not an input")  # a folder lists images only
    return root


def run(tiny_registry, src, out, *extra: str) -> int:
    return main(["--models", str(tiny_registry.root), "tokenize", str(src), "--out", str(out), "--shard-size", "2",
                 *extra])


def snapshot(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_shards_hold_the_codes_of_encode(dataset, tmp_path, tiny_registry, tiny_codec, capsys) -> None:
    from strata.bulk import read_shards
    from strata.frontend.image import read_image

    out = tmp_path / "out"
    assert run(tiny_registry, dataset, out, "--layers", "3", "--streams") == 0
    captured = capsys.readouterr()
    assert "3 shards (3 written, 0 already complete), 5/5 files tokenized" in captured.out
    assert captured.err.count("shard-0000") == 3  # a progress line per shard
    assert sorted(p.name for p in out.iterdir()) == ["errors.jsonl", "manifest.json", "shard-00000.parquet",
                                                     "shard-00001.parquet", "shard-00002.parquet"]
    table = read_shards(out).to_pylist()
    assert [row["id"] for row in table] == sorted(SIZES)  # sorted relative paths, shard i = files [2i, 2i+2)
    for row in table:
        image = read_image((dataset / row["id"]).read_bytes())  # the JPEG as decoded, not the source array
        expected = tiny_codec.encode(image, 3)
        codes = np.asarray(row["codes"], dtype=np.int16).reshape(row["codes_shape"])
        np.testing.assert_array_equal(codes, expected.codes)
        assert (row["height"], row["width"]) == SIZES[row["id"]] == expected.size
        assert (row["model"], row["layers"]) == ("tiny-image", 3)
        assert row["stream"] == tiny_codec.compress(image, 3)
        np.testing.assert_array_equal(tiny_codec.decompress(row["stream"]), tiny_codec.decode(expected))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["inputs"] == 5 and manifest["rows"] == 5 and manifest["errors"] == 0
    assert (manifest["model"], manifest["layers"], manifest["shard_size"]) == ("tiny-image", 3, 2)
    assert [s["files"] for s in manifest["shards"]] == [2, 2, 1]
    assert (out / "errors.jsonl").read_text() == ""


def test_schema_and_glob_input(dataset, tmp_path, tiny_registry) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "out"
    assert run(tiny_registry, f"{dataset}/*.png", out) == 0
    schema = pq.read_schema(out / "shard-00000.parquet")
    types = [(f.name, f"list<{f.type.value_type}>" if hasattr(f.type, "value_type") else str(f.type)) for f in schema]
    assert types == [("id", "string"), ("height", "int32"), ("width", "int32"), ("model", "string"),
                     ("layers", "int16"), ("codes", "list<int16>"), ("codes_shape", "list<int32>")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"] == 3 and manifest["layers"] == 4  # the glob's PNGs directly in the folder; all layers


def test_rerun_is_a_no_op_with_the_same_bytes(dataset, tmp_path, tiny_registry, capsys) -> None:
    out = tmp_path / "out"
    assert run(tiny_registry, dataset, out) == 0
    first = snapshot(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")}
    capsys.readouterr()
    assert run(tiny_registry, dataset, out) == 0
    assert "0 written, 3 already complete" in capsys.readouterr().out
    assert snapshot(out) == first
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*")} == mtimes  # not rewritten
    other = tmp_path / "other"  # a fresh run elsewhere: the same bytes (deterministic output)
    assert run(tiny_registry, dataset, other) == 0
    assert snapshot(other) == first


def test_an_interrupted_run_resumes(dataset, tmp_path, tiny_registry, capsys) -> None:
    from strata.bulk import TokenizeJob, tokenize

    reference = tmp_path / "reference"
    assert run(tiny_registry, dataset, reference) == 0
    expected = snapshot(reference)

    out = tmp_path / "out"

    def stop_after_one(result, plan) -> None:
        raise KeyboardInterrupt  # a Ctrl-C right after the first shard

    job = TokenizeJob(str(dataset), out, shard_size=2, models_dir=str(tiny_registry.root))
    with pytest.raises(KeyboardInterrupt):
        tokenize(job, on_shard=stop_after_one)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "shard-00000.parquet"]  # no temporary left
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    (out / "shard-00001.parquet").write_bytes(expected["shard-00001.parquet"][:100])  # a torn write (not atomic)
    (out / ".shard-00002.parquet.tmp-123").write_bytes(b"partial")  # a killed writer's temporary file
    capsys.readouterr()
    assert run(tiny_registry, dataset, out) == 0
    assert "2 written, 1 already complete" in capsys.readouterr().out
    assert snapshot(out) == expected

    (out / "shard-00002.parquet").unlink()  # the last shard lost: only it is redone
    capsys.readouterr()
    assert run(tiny_registry, dataset, out) == 0
    assert "1 written, 2 already complete" in capsys.readouterr().out
    assert snapshot(out) == expected


def test_bad_files_are_reported_and_skipped(dataset, tmp_path, tiny_registry, capsys) -> None:
    from PIL import Image

    (dataset / "bad.png").write_text("this is not an image")
    (dataset / "empty.jpg").write_bytes(b"")
    (dataset / "torn.png").write_bytes((dataset / "a.png").read_bytes()[:200])
    Image.new("1", (9000, 8000)).save(dataset / "huge.png")  # 72 M pixels: over the 64 M limit, a few KB of PNG
    out = tmp_path / "out"
    assert run(tiny_registry, dataset, out) == 0
    captured = capsys.readouterr()
    errors = [line for line in captured.err.splitlines() if line.startswith("strata: error:")]
    assert len(errors) == 4
    for name in ("bad.png", "empty.jpg", "torn.png", "huge.png"):
        assert sum(f"error: {name}: " in line for line in errors) == 1
    assert "5/9 files tokenized" in captured.out and "4 could not be read" in captured.out
    recorded = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert {e["file"]: e["code"] for e in recorded} == {
        "bad.png": "unsupported_media", "empty.jpg": "unsupported_media", "torn.png": "unsupported_media",
        "huge.png": "limit_exceeded"}
    from strata.bulk import read_shards

    assert sorted(read_shards(out).column("id").to_pylist()) == sorted(SIZES)
    first = snapshot(out)
    assert run(tiny_registry, dataset, out) == 0  # a rerun keeps errors.jsonl (from the shards' metadata)
    assert snapshot(out) == first


def test_other_settings_into_the_same_folder_are_refused(dataset, tmp_path, tiny_registry, capsys) -> None:
    out = tmp_path / "out"
    assert run(tiny_registry, dataset, out) == 0
    capsys.readouterr()
    assert run(tiny_registry, dataset, out, "--layers", "2") == 1
    err = capsys.readouterr().err
    assert err.startswith("strata: error:") and err.count("\n") == 1 and "layers 4 → 2" in err
    (dataset / "new.png").write_bytes(png_bytes(synthetic_image(32, 32, 9)))
    assert run(tiny_registry, dataset, out) == 1
    assert "inputs 5 → 6" in capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "2"], "--workers applies to --ray"),
    (["--shard-size", "0"], "--shard-size must be >= 1"),
    (["--layers", "9"], "layers must be in 1..4"),
    (["--modality", "audio"], "no default audio model"),
])
def test_usage_errors(dataset, tmp_path, tiny_registry, capsys, args, message) -> None:
    assert run(tiny_registry, dataset, tmp_path / "out", *args) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_missing_inputs(tmp_path, tiny_registry, capsys) -> None:
    assert run(tiny_registry, tmp_path / "nowhere", tmp_path / "out") == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run(tiny_registry, tmp_path / "empty", tmp_path / "out") == 1
    assert "no image files" in capsys.readouterr().err


def test_missing_pyarrow_names_the_extra(dataset, tmp_path, tiny_registry, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert run(tiny_registry, dataset, tmp_path / "out") == 1
    assert capsys.readouterr().err == ("strata: error: strata tokenize needs the 'ray' extra (no module 'pyarrow'): "
                                       "pip install 'strata-codec[ray]'\n")
    assert not (tmp_path / "out").exists()


def test_audio(tmp_path, tiny_audio_registry, tiny_audio_codec) -> None:
    from strata.bulk import read_shards
    from strata.frontend.audio import read_audio

    from tests.conftest import flac_bytes, synthetic_sound

    src = tmp_path / "clips"
    src.mkdir()
    for i in range(3):
        (src / f"s{i}.flac").write_bytes(flac_bytes(synthetic_sound(0.5 + 0.25 * i, i)))
    (src / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    out = tmp_path / "out"
    assert main(["--models", str(tiny_audio_registry.root), "tokenize", str(src), "--out", str(out),
                 "--modality", "audio", "--layers", "2"]) == 0
    rows = read_shards(out).to_pylist()
    assert [r["id"] for r in rows] == ["s0.flac", "s1.flac", "s2.flac"]
    for row in rows:
        samples = read_audio((src / row["id"]).read_bytes(), max_seconds=60, rate=22050).samples
        expected = tiny_audio_codec.encode(samples, 2)
        np.testing.assert_array_equal(np.reshape(row["codes"], row["codes_shape"]), expected.codes)
        assert (row["samples"], row["sample_rate"]) == (expected.samples, 22050)
    assert [json.loads(line)["file"] for line in (out / "errors.jsonl").read_text().splitlines()] == ["bad.wav"]


# The run's identity includes the encoder's search: a model update that changes the manifest's
# ``extra.rdo_lambda`` changes the codes, not the weights.
def with_rdo_lambda(registry, tmp_path, lam: float):
    """A copy of ``registry``'s folder whose ``tiny-image`` entry asks for RD-optimised search at ``lam``."""
    import json
    import shutil

    from strata.registry import Registry

    root = tmp_path / f"models-{lam}"
    shutil.copytree(registry.root, root)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["models"]["tiny-image"].setdefault("extra", {})["rdo_lambda"] = lam
    (root / "manifest.json").write_text(json.dumps(manifest))
    return Registry(root)


def test_the_search_setting_is_part_of_the_run(tmp_path, tiny_registry) -> None:
    from strata import bulk
    from strata.image import ImageCodec

    src = tmp_path / "in"
    src.mkdir()
    image = synthetic_image(40, 56, seed=2)
    (src / "a.png").write_bytes(png_bytes(image))
    rdo = with_rdo_lambda(tiny_registry, tmp_path, 0.05)
    job = bulk.TokenizeJob(str(src), tmp_path / "out", models_dir=str(tiny_registry.root))
    assert bulk.plan(job).config["rdo_lambda"] == 0.0
    bulk.tokenize(job)
    moved = bulk.TokenizeJob(str(src), tmp_path / "out", models_dir=str(rdo.root))
    with pytest.raises(bulk.InputError, match=r"other settings or inputs \(rdo_lambda 0.0 → 0.05\)"):
        bulk.tokenize(moved)
    # the workers encode with the planned λ, whatever the manifest says when they start
    plan = bulk.plan(bulk.TokenizeJob(str(src), tmp_path / "out2", models_dir=str(rdo.root)))
    worker = bulk.ShardWorker(dict(plan.config, rdo_lambda=0.0), str(rdo.root), str(src), str(tmp_path))
    nearest = ImageCodec.load(tiny_registry, "tiny-image", rdo_lambda=0.0).encode(image).codes
    np.testing.assert_array_equal(worker.encode_file("a.png").codes, nearest)
    worker = bulk.ShardWorker(plan.config, str(rdo.root), str(src), str(tmp_path))
    assert worker.codec.rdo_lambda == 0.05
    rd = ImageCodec.load(rdo, "tiny-image").encode(image).codes
    np.testing.assert_array_equal(worker.encode_file("a.png").codes, rd)
    assert not np.array_equal(rd, nearest)  # the setting matters: the test would not notice a lost λ otherwise
