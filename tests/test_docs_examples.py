"""The examples of ``README.md`` and ``docs/api.md`` run against a live server (serving the tiny image and audio
models): the curl commands (through bash and curl when curl exists) and the Python SDK blocks, with the URL
substituted."""

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
from strata.audio import SAMPLE_RATE
from strata.frontend.audio import read_audio, write_wav
from strata.frontend.image import read_image

from tests.conftest import ROOT, assert_wav_of, flac_bytes, png_bytes, synthetic_image, synthetic_sound

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
    (tmp_path / "speech.wav").write_bytes(flac_bytes(synthetic_sound(1.2, seed=21), SAMPLE_RATE, "WAV"))
    monkeypatch.chdir(tmp_path)
    return tmp_path, image


def speech_samples(tmp) -> np.ndarray:
    """``speech.wav`` as the server hands it to the codec (mono float at 22 050 Hz already)."""
    return read_audio((tmp / "speech.wav").read_bytes(), 600).samples


def test_the_doc_has_examples() -> None:
    assert len(blocks("python")) >= 4 and len(blocks("bash")) >= 2


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_and_cli_examples(workdir, live_av_server, tiny_codec, tiny_audio_codec) -> None:
    tmp, image = workdir
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("STRATA_API_KEY", None)
    for block in blocks("bash"):
        script = "set -euo pipefail\n" + block.replace(DOC_URL, live_av_server)
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
    # Audio.
    audio = tiny_audio_codec
    sound = (tmp / "speech.strata").read_bytes()
    assert sound == audio.compress(speech_samples(tmp), 4)
    assert_wav_of((tmp / "speech-coarse.wav").read_bytes(), audio.decompress(sound, 2))
    assert (tmp / "speech-gl.wav").read_bytes() == write_wav(audio.decompress(sound, vocoder="griffinlim"), SAMPLE_RATE)
    np.testing.assert_array_equal(np.load(tmp / "speech-mel.npy"), audio.decompress_mel(sound))
    speech_codes = audio.encode(speech_samples(tmp))
    assert json.loads((tmp / "speech-codes.json").read_text())["codes"] == speech_codes.codes.tolist()
    assert_wav_of((tmp / "speech-from-codes.wav").read_bytes(), audio.decode(speech_codes, 1))
    assert (tmp / "speech-remote.strata").read_bytes() == sound
    assert_wav_of((tmp / "speech-remote.wav").read_bytes(), audio.decompress(sound))


def test_python_examples(workdir, live_av_server, tiny_codec, tiny_audio_codec, capsys, monkeypatch) -> None:
    tmp, image = workdir
    monkeypatch.delenv("STRATA_API_KEY", raising=False)
    namespace: dict = {"__name__": "__docs__"}
    for block in blocks("python"):  # one session, in page order, like a reader would run them
        exec(compile(block.replace(DOC_URL, live_av_server), "docs-example", "exec"), namespace)
    out = capsys.readouterr().out
    stream = (tmp / "photo.strata").read_bytes()
    assert stream == tiny_codec.compress(image, 4)
    np.testing.assert_array_equal(read_image((tmp / "coarse.png").read_bytes()), tiny_codec.decompress(stream, 2))
    assert "422 bad_magic" in out and "invalid_layers - layers must be" in out
    assert "4 of 4 layers" in out
    assert namespace["first_layer_only"].layers == 1
    assert [len(s.data) for s in namespace["streams"]] == [len(tiny_codec.compress(image, 2))] * 4
    sound = (tmp / "speech.strata").read_bytes()
    assert sound == tiny_audio_codec.compress(speech_samples(tmp), 4) and "tiny-audio 4 " in out and "kbps" in out
    assert_wav_of((tmp / "speech-coarse.wav").read_bytes(), tiny_audio_codec.decompress(sound, 2))
    np.testing.assert_array_equal(namespace["mel"], tiny_audio_codec.decompress_mel(sound))
    speech_codes = tiny_audio_codec.encode(speech_samples(tmp))
    np.testing.assert_array_equal(namespace["speech_codes"].array, speech_codes.codes)
    assert namespace["rough"] == write_wav(tiny_audio_codec.decode(speech_codes, 1, vocoder="griffinlim"), SAMPLE_RATE)
