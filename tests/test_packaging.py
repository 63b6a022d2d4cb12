"""Packaging: the serving path is free of training code, and a built wheel works on its own.

The wheel test builds the wheel, installs it with the ``serve`` extra into a fresh virtual
environment and round-trips an image and a sound from a folder outside the checkout, so it
checks what a user of ``pip install strata-codec[serve]`` gets: the ``strata`` namespace, the
shipped models as package data, the ``strata`` command and ``python -m strata.server``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT

# scipy is not blocked: refinement and Griffin-Lim take scipy.fft's forward FFT. numpy's is 2× slower even
# through float64 (about 1.2 ms more per second of audio at 8 iterations); nothing else of scipy is used.
BLOCKED = ("torch", "onnx", "matplotlib", "librosa", "tqdm", "pesq", "pystoi")

# Refuses to import the training, export and evaluation dependencies, then serves.
SERVING_ONLY = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = set(sys.argv[1].split(","))

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: the serving path must not import it")
            return None

    sys.meta_path.insert(0, Block())

    import numpy as np
    from fastapi.testclient import TestClient

    from strata import AudioCodec, ImageCodec, Registry
    from strata.server.config import Settings
    from strata.server.main import create_app

    registry = Registry()
    image = (np.random.default_rng(0).random((48, 80, 3)) * 255).astype(np.uint8)
    codec = ImageCodec.load(registry)
    stream = codec.compress(image, layers=3)
    assert codec.decompress(stream).shape == image.shape
    sound = (0.3 * np.sin(np.linspace(0, 2000, 22050))).astype(np.float32)
    audio = AudioCodec.load(registry)
    assert audio.decompress(audio.compress(sound, layers=2)).shape == sound.shape

    with TestClient(create_app(Settings())) as client:
        r = client.post("/v1/images:decompress", content=stream, headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 200, r.text
        assert client.get("/docs").status_code == 200

    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED
                    or m.startswith(("strata.train", "strata.export", "strata.eval", "strata.cli")))
    assert not leaked, leaked
    print("serving path ok")
    """
)


def test_serving_path_imports_no_training_export_or_evaluation_code(tmp_path):
    pytest.importorskip("fastapi")
    env = {**os.environ, "STRATA_MODELS": str(ROOT / "models")}
    env.pop("STRATA_MODELS_DIR", None)
    result = subprocess.run([sys.executable, "-c", SERVING_ONLY, ",".join(BLOCKED)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "serving path ok" in result.stdout


def test_public_api_is_lazy_and_complete():
    import strata

    for name in strata.__all__:
        assert getattr(strata, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        strata.nope  # noqa: B018


def _wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the sources (the build leaves build/ and *.egg-info behind)."""
    import shutil

    src, out = tmp_path / "src", tmp_path / "dist"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("codec", "server", "client", "models"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("strata_codec-*.whl")
    return wheel


@pytest.mark.slow
def test_wheel_installs_and_round_trips_outside_the_checkout(tmp_path):
    pytest.importorskip("setuptools")
    wheel = _wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    for entry in manifest["models"].values():  # every served file is package data
        for ref in entry["files"].values():
            assert f"strata/models/{ref['path']}" in names, ref["path"]
    assert not [n for n in names if n.endswith(".pt") or n.startswith(("tests/", "checkpoints/", "bench/"))]
    needed = {"strata/__init__.py", "strata/server/main.py", "strata/client/__init__.py", "strata/cli/main.py"}
    assert needed <= set(names)

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATA_", "PYTHON", "VIRTUAL_ENV"))}
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"{wheel}[serve]"], check=True, env=env,
                   capture_output=True, timeout=900)
    work = tmp_path / "elsewhere"
    work.mkdir()
    script = textwrap.dedent(
        """
        import numpy as np, strata
        from strata import AudioCodec, ImageCodec, Registry

        assert "site-packages" in strata.__file__, strata.__file__
        registry = Registry()
        assert "site-packages" in str(registry.root), registry.root
        image = (np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)
        codec = ImageCodec.load(registry)
        assert codec.decompress(codec.compress(image)).shape == image.shape
        sound = (0.3 * np.sin(np.linspace(0, 2000, 22050))).astype(np.float32)
        audio = AudioCodec.load(registry)
        assert audio.decompress(audio.compress(sound)).shape == sound.shape
        print("wheel ok", registry.names())
        """
    )
    result = subprocess.run([str(python), "-c", script], cwd=work, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "wheel ok" in result.stdout

    # The command line from the same install: a PNG and a WAV through streams and back.
    from tests.conftest import flac_bytes, png_bytes, synthetic_image, synthetic_sound

    (work / "in.png").write_bytes(png_bytes(synthetic_image(48, 64)))
    (work / "in.wav").write_bytes(flac_bytes(synthetic_sound(1.0), fmt="WAV"))
    strata_cmd = str(env_dir / "bin" / "strata")
    for argv in (["compress", "in.png", "img.strata", "--layers", "2"], ["decompress", "img.strata", "out.png"],
                 ["compress", "in.wav", "snd.strata"], ["decompress", "snd.strata", "out.wav"]):
        r = subprocess.run([strata_cmd, *argv], cwd=work, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, (argv, r.stderr)
    # A training command without its extra says which one to install, in one line.
    r = subprocess.run([strata_cmd, "train", "image", "--data", ".", "--run", "run"], cwd=work, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "pip install 'strata-codec[train]'" in r.stderr and "Traceback" not in r.stderr
    # A models folder that is not there: one line naming it.
    r = subprocess.run([strata_cmd, "compress", "in.png", "x.strata"], cwd=work, capture_output=True, text=True,
                       env={**env, "STRATA_MODELS": str(work / "no-models")}, timeout=120)
    assert r.returncode == 1 and "no model manifest" in r.stderr and "Traceback" not in r.stderr
