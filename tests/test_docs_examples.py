"""The examples of ``README.md`` and ``docs/api.md`` run against a live server: the curl commands (through bash and
curl when curl exists) and the Python SDK blocks, with the URL substituted."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codec.frontend.image import read_image
from tests.conftest import ROOT, png_bytes, synthetic_image

DOCS = (ROOT / "README.md", ROOT / "docs" / "api.md")
DOC_URL = "http://127.0.0.1:8000"


def blocks(language: str) -> list[str]:
    """The fenced code blocks of ``language`` that talk to the server."""
    found = [b for doc in DOCS for b in re.findall(rf"```{language}\n(.*?)```", doc.read_text(), flags=re.DOTALL)]
    return [b for b in found if DOC_URL in b]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    image = synthetic_image(40, 56, seed=21)
    (tmp_path / "photo.png").write_bytes(png_bytes(image))
    monkeypatch.chdir(tmp_path)
    return tmp_path, image


def test_the_doc_has_examples() -> None:
    assert len(blocks("python")) >= 4 and len(blocks("bash")) >= 2


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_and_cli_examples(workdir, live_server, tiny_codec) -> None:
    tmp, image = workdir
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("STRATA_API_KEY", None)
    for block in blocks("bash"):
        script = "set -euo pipefail\n" + block.replace(DOC_URL, live_server)
        done = subprocess.run(["bash", "-c", script], cwd=tmp, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{block}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    stream = (tmp / "photo.strata").read_bytes()
    assert stream == tiny_codec.compress(image, 4)
    np.testing.assert_array_equal(read_image((tmp / "coarse.png").read_bytes()), tiny_codec.decompress(stream, 2))
    np.testing.assert_array_equal(np.load(tmp / "photo.npy"), tiny_codec.decompress(stream))
    codes = tiny_codec.encode(image)
    assert json.loads((tmp / "codes.json").read_text())["codes"] == codes.codes.tolist()
    np.testing.assert_array_equal(read_image((tmp / "from-codes.png").read_bytes()), tiny_codec.decode(codes, 1))
    assert (tmp / "remote.strata").read_bytes() == stream
    np.testing.assert_array_equal(read_image((tmp / "remote.png").read_bytes()), tiny_codec.decompress(stream))


def test_python_examples(workdir, live_server, tiny_codec, capsys, monkeypatch) -> None:
    tmp, image = workdir
    monkeypatch.delenv("STRATA_API_KEY", raising=False)
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks("python"):  # one session, in page order, like a reader would run them
        exec(compile(block.replace(DOC_URL, live_server), "docs-example", "exec"), namespace)
    out = capsys.readouterr().out
    stream = (tmp / "photo.strata").read_bytes()
    assert stream == tiny_codec.compress(image, 4)
    np.testing.assert_array_equal(read_image((tmp / "coarse.png").read_bytes()), tiny_codec.decompress(stream, 2))
    assert "422 bad_magic" in out and "invalid_layers - layers must be" in out
    assert "4 of 4 layers" in out
    assert namespace["first_layer_only"].layers == 1
    assert [len(s.data) for s in namespace["streams"]] == [len(tiny_codec.compress(image, 2))] * 4
