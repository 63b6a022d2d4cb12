import json

import numpy as np
import pytest

from codec.cli import main
from codec.frontend.image import read_image
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
    ],
)
def test_errors_exit_1_with_message(files, capsys, argv, message):
    tmp, _, models = files
    assert main([*models, *[a.format(tmp=tmp) for a in argv]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("strata: error:") and message in err and "Traceback" not in err


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
    image_ckpt = tiny_registry.root / "tiny-image" / "checkpoint.pt"
    models = ["--models", str(tmp_path / "models")]
    cases = [
        (["export", "image", "--checkpoint", str(tmp_path / "missing.pt"), "--name", "x"], "does not exist"),
        (["train", "image", "--init-from", str(junk), "--run", str(tmp_path / "r1")], "not a readable"),
        (["train", "vocoder", "--init-from", str(image_ckpt), "--run", str(tmp_path / "r2")], "lacks generator"),
        ([*models, "export", "image", "--checkpoint", str(image_ckpt), "--name", "x", "--layers", "9"],
         "integer in 1..4"),
        (["export", "vocoder", "--checkpoint", str(image_ckpt), "--layers", "2"], "not to a vocoder"),
    ]
    for argv, message in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("strata: error:") and message in err and "Traceback" not in err
