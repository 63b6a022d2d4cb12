import json

import numpy as np
import pytest
from strata.cli import main
from strata.frontend.image import read_image

from tests.conftest import png_bytes, synthetic_image


@pytest.fixture
def files(tmp_path, tiny_registry):
    img = synthetic_image(40, 56, seed=7)
    src = tmp_path / "in.png"
    src.write_bytes(png_bytes(img))
    return tmp_path, img, ["--models", str(tiny_registry.root)]


def test_compress_decompress_truncate_info(files, capsys, tiny_codec):
    tmp, img, models = files
    assert main([*models, "compress", str(tmp / "in.png"), str(tmp / "a.strata")]) == 0
    assert main([*models, "decompress", str(tmp / "a.strata"), str(tmp / "a.png"), "--layers", "2"]) == 0
    assert main([*models, "truncate", str(tmp / "a.strata"), str(tmp / "b.strata"), "--layers", "2"]) == 0
    assert main([*models, "decompress", str(tmp / "b.strata"), str(tmp / "b.png")]) == 0
    a, b = read_image((tmp / "a.png").read_bytes()), read_image((tmp / "b.png").read_bytes())
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, tiny_codec.decompress((tmp / "a.strata").read_bytes(), 2))
    capsys.readouterr()
    assert main(["info", "--json", str(tmp / "b.strata")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layers"] == 2 and info["size"] == [40, 56] and info["model"] == "tiny-image"
    assert info["layers_complete"] == info["layers_intact"] == 2
    corrupted = bytearray((tmp / "b.strata").read_bytes())
    corrupted[-1] ^= 0x01  # last byte of layer 2
    (tmp / "c.strata").write_bytes(bytes(corrupted))
    assert main(["info", "--json", str(tmp / "c.strata")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layers_complete"] == 2 and info["layers_intact"] == 1
    assert main([*models, "decompress", str(tmp / "a.strata"), str(tmp / "a.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp / "a.npy"), tiny_codec.decompress((tmp / "a.strata").read_bytes()))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compress", "{tmp}/missing.png", "{tmp}/x.strata"], "cannot read"),
        (["compress", "{tmp}/in.png", "{tmp}/x.strata", "--layers", "9"], "layers"),
        (["compress", "{tmp}/in.png", "{tmp}/x.strata", "--model", "nope"], "unknown model"),
        (["decompress", "{tmp}/in.png", "{tmp}/x.png"], "not a Strata stream"),
        (["info", "{tmp}/in.png"], "not a Strata stream"),
        (["compress", "{tmp}/in.png", "{tmp}/x.strata", "--encoder", "light"], "no light analysis network"),
        (["compress", "{tmp}/in.png", "{tmp}/x.strata", "--encoder", "light", "--url", "http://127.0.0.1:9"],
         "--encoder applies to local compression"),
    ],
)
def test_errors_exit_1_with_message(files, capsys, argv, message):
    tmp, _, models = files
    assert main([*models, *[a.format(tmp=tmp) for a in argv]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("strata: error:") and message in err and "Traceback" not in err


def test_encoder_and_precision_choose_the_networks(tmp_path, capsys, shipped_registry):
    """``--encoder light`` and ``--precision int8`` pick the shipped default model's faster networks; the
    streams of either encoder decode with the model."""
    from strata.image import ImageCodec

    img = synthetic_image(48, 64, seed=3)
    (tmp_path / "in.png").write_bytes(png_bytes(img))
    light = ImageCodec.load(shipped_registry, encoder="light")
    assert main(["compress", str(tmp_path / "in.png"), str(tmp_path / "l.strata"), "--encoder", "light"]) == 0
    assert (tmp_path / "l.strata").read_bytes() == light.compress(img)
    assert main(["decompress", str(tmp_path / "l.strata"), str(tmp_path / "l.npy"), "--precision", "int8"]) == 0
    int8 = ImageCodec.load(shipped_registry, precision="int8")
    np.testing.assert_array_equal(np.load(tmp_path / "l.npy"), int8.decompress(light.compress(img)))
    assert main(["compress", str(tmp_path / "in.png"), str(tmp_path / "f.strata"), "--encoder", "full"]) == 0
    assert (tmp_path / "f.strata").read_bytes() == ImageCodec.load(shipped_registry).compress(img)


def test_bad_output_suffix(files, capsys):
    tmp, _, models = files
    main([*models, "compress", str(tmp / "in.png"), str(tmp / "a.strata")])
    assert main([*models, "decompress", str(tmp / "a.strata"), str(tmp / "a.gif")]) == 1


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["compress"])
    assert e.value.code == 2


def test_checkpoint_errors(tmp_path, capsys, tiny_registry):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    image_ckpt = tiny_registry.root.parent / "checkpoints" / "tiny-image" / "checkpoint.pt"
    models = ["--models", str(tmp_path / "models")]
    data = ["--data", str(tmp_path)]
    cases = [
        (["export", "image", "--checkpoint", str(tmp_path / "missing.pt"), "--name", "x", *data], "does not exist"),
        (["train", "image", "--init-from", str(junk), *data, "--run", str(tmp_path / "r1")], "not a readable"),
        (["train", "vocoder", "--init-from", str(image_ckpt), *data, "--run", str(tmp_path / "r2")],
         "lacks generator"),
        ([*models, "export", "image", "--checkpoint", str(image_ckpt), "--name", "x", *data, "--layers", "9"],
         "integer in 1..4"),
        (["export", "vocoder", "--checkpoint", str(image_ckpt), "--out", str(tmp_path / "v")], "lacks generator"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("strata: error:") and message in err and "Traceback" not in err


# ------------------------------------------------------------------------- user mistakes, one line each
def one_line_error(capsys, message: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("strata: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err, err
    return err


@pytest.fixture
def mistakes(files, tiny_codec):
    """``files`` plus a stream and the broken inputs a user may hand the CLI."""
    tmp, img, models = files
    stream = tiny_codec.compress(img)
    (tmp / "a.strata").write_bytes(stream)
    (tmp / "cut.strata").write_bytes(stream[:-3])
    flipped = bytearray(stream)
    flipped[-2] ^= 0x10  # inside the last layer's chunk
    (tmp / "flip.strata").write_bytes(bytes(flipped))
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "junk.bin").write_bytes(bytes(range(256)) * 4)
    (tmp / "cut.png").write_bytes((tmp / "in.png").read_bytes()[:300])
    (tmp / "manifest.json").mkdir()
    return tmp, models


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compress", "{tmp}/empty.png", "{tmp}/x.strata"], "empty.png is empty"),
        (["compress", "{tmp}/junk.bin", "{tmp}/x.strata"],
         "junk.bin: not a PNG, JPEG or WebP image, nor a WAV, FLAC or Ogg sound (1024 bytes)"),
        (["compress", "{tmp}/cut.png", "{tmp}/x.strata"], "cut.png: image could not be decoded"),
        (["compress", "{tmp}/in.png", "{tmp}/in.png"], "output {tmp}/in.png is the input file"),
        (["compress", "{tmp}/in.png", "{tmp}/x.png"], "would hold a Strata stream, not .png data"),
        (["compress", "{tmp}/in.png", "-"], "writing to standard output ('-') is not supported"),
        (["compress", "-", "{tmp}/x.strata"], "reading standard input is not supported"),
        (["decompress", "{tmp}/cut.strata", "{tmp}/x.png"], "cut.strata: layer 4 chunk needs"),
        (["decompress", "{tmp}/cut.strata", "{tmp}/x.png"], "--partial decodes the complete layers"),
        (["decompress", "{tmp}/flip.strata", "{tmp}/x.png"], "flip.strata: layer 4 chunk fails its CRC32"),
        (["decompress", "{tmp}/empty.png", "{tmp}/x.png"], "empty.png is empty"),
        (["info", "{tmp}/junk.bin"], "junk.bin: not a Strata stream"),
        (["truncate", "{tmp}/a.strata", "{tmp}/a.strata", "--layers", "1"], "is the input file"),
        (["truncate", "{tmp}/a.strata", "{tmp}/x.webp", "--layers", "1"], "name it e.g. {tmp}/x.strata"),
        (["truncate", "{tmp}/junk.bin", "{tmp}/x.strata", "--layers", "1"], "junk.bin: not a Strata stream"),
        (["--models", "{tmp}/in.png", "compress", "{tmp}/in.png", "{tmp}/x.strata"],
         "cannot read model manifest {tmp}/in.png/manifest.json: Not a directory"),
        (["--models", "{tmp}", "compress", "{tmp}/in.png", "{tmp}/x.strata"], "manifest.json: Is a directory"),
    ],
)
def test_file_mistakes_name_the_file_and_touch_nothing(mistakes, capsys, argv, message):
    tmp, models = mistakes
    before = {p.name: p.read_bytes() for p in tmp.iterdir() if p.is_file()}
    assert main([*models, *[a.format(tmp=tmp) for a in argv]]) == 1
    one_line_error(capsys, message.format(tmp=tmp))
    assert {p.name: p.read_bytes() for p in tmp.iterdir() if p.is_file()} == before  # no output, input intact
    assert not (tmp / "-").exists()


def test_manifest_default_must_be_a_mapping(tmp_path, files, capsys):
    tmp, _, _ = files
    (tmp_path / "manifest.json").write_text('{"format": 1, "models": {}, "default": "image-rvq7"}')
    assert main(["--models", str(tmp_path), "compress", str(tmp / "in.png"), str(tmp / "x.strata")]) == 1
    one_line_error(capsys, "is not a format-1 manifest")


def test_eval_options_are_checked_before_it_runs(tmp_path, capsys, tiny_registry):
    from strata.errors import InputError
    from strata.eval.images import evaluate_images

    (tmp_path / "out.txt").write_text("not a folder")
    where = ["--data", str(tmp_path), "--out", str(tmp_path / "o")]
    cases = [
        (["eval", "images", *where, "--limit", "0"], "--limit must be a positive number, got 0"),  # was: all images
        (["eval", "images", *where, "--limit", "-1"], "--limit must be a positive number, got -1"),
        (["eval", "audio", *where, "--threads", "-1"], "--threads must be >= 0"),
        (["eval", "images", "--data", str(tmp_path / "out.txt"), "--out", str(tmp_path / "o")], "is not a folder"),
        (["eval", "images", "--data", str(tmp_path), "--out", str(tmp_path / "out.txt")],  # was: a traceback
         f"--out {tmp_path / 'out.txt'} is a file, not a folder"),
        (["eval", "audio", "--data", str(tmp_path), "--out", str(tmp_path / "out.txt")], "is a file, not a folder"),
    ]
    for argv, message in cases:
        assert main(["--models", str(tiny_registry.root), *argv]) == 1, argv
        one_line_error(capsys, message)
    with pytest.raises(InputError, match="limit must be a positive number of images"):
        evaluate_images(tiny_registry, tmp_path, tmp_path / "o", limit=-1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["image", "--steps", "0"], "--steps must be >= 1, got 0"),
        (["vocoder", "--steps", "0"], "--steps must be >= 1, got 0"),  # was: ignored
        (["audio", "--threads", "0"], "--threads must be >= 1, got 0"),  # was: a torch traceback
        (["vocoder", "--threads", "0"], "--threads must be >= 1, got 0"),  # was: ignored
        (["image", "--eval-every", "0"], "--eval-every must be >= 1"),  # was: ZeroDivisionError after a step
        (["image", "--lr", "-0.1"], "--lr must be > 0, got -0.1"),
        (["image", "--lr", "nan"], "--lr must be > 0, got nan"),
        (["audio", "--max-minutes", "0"], "--max-minutes must be > 0"),
        (["image", "--decay-start", "1.5"], "--decay-start must be in [0, 1], got 1.5"),
        (["vocoder", "--recon-steps", "-1"], "--recon-steps must be >= 0, got -1"),
        (["audio", "--sets", ","], "--sets names no set: ','"),
        (["image", "--stop-at", "0"], "--stop-at must be >= 1, got 0"),
        (["audio", "--stop-at", "-5"], "--stop-at must be >= 1, got -5"),
    ],
)
def test_train_refuses_unusable_numbers_before_starting(tmp_path, capsys, argv, message):
    assert main(["train", *argv, "--data", str(tmp_path), "--run", str(tmp_path / "run")]) == 1
    one_line_error(capsys, message)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "vocoder", "--eval-every", "100"],  # each trainer has only its own flags
        ["train", "image", "--sets", "speech"],
        ["train", "image", "--amp"],
        ["train", "vocoder", "--phase-weight", "1"],  # experiment settings live in --config files
        ["train", "image"],  # --data and --run are required: no defaults into a source checkout
        ["eval", "images"],
        ["export", "image", "--name", "x", "--data", "d", "--checkpoint", "c", "--out", "d"],
        ["export", "vocoder", "--checkpoint", "c", "--out", "d", "--name", "x"],
    ],
)
def test_foreign_or_missing_options_are_usage_errors(tmp_path, capsys, argv):
    with pytest.raises(SystemExit) as e:
        where = ["--data", str(tmp_path), "--run", str(tmp_path / "run")]
        main([*argv, *where] if argv[0] == "train" and len(argv) > 2 else argv)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_train_config_file_sets_fields_and_names_unknown_ones(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"no_such_field": 1}')
    argv = ["train", "image", "--data", str(tmp_path), "--run", str(tmp_path / "run"), "--config"]
    assert main([*argv, str(bad)]) == 1
    one_line_error(capsys, "unknown field(s) no_such_field")
    bad.write_text("[1, 2]")
    assert main([*argv, str(bad)]) == 1
    one_line_error(capsys, "must hold a JSON object")
    assert main([*argv, str(tmp_path / "missing.json")]) == 1
    one_line_error(capsys, "cannot read --config")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["image", "--name", "../outside"], "--name must be 1 to 64 letters, digits"),
        (["image", "--name", ""], "got ''"),
        (["image", "--name", "modèle"], "got 'modèle'"),  # not ASCII: no stream could carry it
        (["image", "--name", "x" * 65], "--name must be 1 to 64"),
        (["image", "--name", "ok", "--layers", "0"], "--layers must be >= 1, got 0"),
    ],
)
def test_export_refuses_bad_names_and_numbers_before_writing(tmp_path, capsys, tiny_registry, argv, message):
    ckpt = tiny_registry.root.parent / "checkpoints" / "tiny-image" / "checkpoint.pt"
    models = tmp_path / "models"
    argv = [*argv, "--data", str(tmp_path / "data")]
    assert main(["--models", str(models), "export", *argv, "--checkpoint", str(ckpt)]) == 1
    one_line_error(capsys, message)
    assert list(tmp_path.iterdir()) == []


def test_help_describes_both_modalities(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "image and audio compression" in capsys.readouterr().out
