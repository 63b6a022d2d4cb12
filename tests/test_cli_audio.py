"""``strata compress / decompress / info`` on sounds: locally on a models folder with both tiny models, and
through a live server (``--url``). Results must equal the library's byte for byte.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from strata import bitstream
from strata.audio import SAMPLE_RATE
from strata.cli import main
from strata.frontend.audio import read_audio, resample, write_wav
from strata.frontend.image import read_image

from tests.conftest import assert_wav_of, flac_bytes, png_bytes, synthetic_image, synthetic_sound

SOUND = synthetic_sound(1.3, seed=4)


@pytest.fixture
def files(tmp_path, tiny_av_registry):
    (tmp_path / "in.wav").write_bytes(flac_bytes(SOUND, SAMPLE_RATE, "WAV"))
    stereo = np.stack([SOUND, -SOUND], axis=1)
    (tmp_path / "in.flac").write_bytes(flac_bytes(stereo, SAMPLE_RATE, "FLAC"))
    (tmp_path / "in.png").write_bytes(png_bytes(synthetic_image(40, 56, seed=7)))
    return tmp_path, ["--models", str(tiny_av_registry.root)]


def samples_of(path) -> np.ndarray:
    sound = read_audio(path.read_bytes(), 600)
    return resample(sound.samples, sound.sample_rate, SAMPLE_RATE)


def test_compress_decompress_info_locally(files, tiny_audio_codec, capsys) -> None:
    tmp, models = files
    samples = samples_of(tmp / "in.wav")
    assert main([*models, "compress", str(tmp / "in.wav"), str(tmp / "a.strata")]) == 0
    stream = (tmp / "a.strata").read_bytes()
    assert stream == tiny_audio_codec.compress(samples)
    out = capsys.readouterr().out
    assert f"{len(stream)} bytes, tiny-audio, 4 layers" in out and "kbps, 1.30 s" in out

    assert main([*models, "decompress", str(tmp / "a.strata"), str(tmp / "a.wav")]) == 0
    assert_wav_of((tmp / "a.wav").read_bytes(), tiny_audio_codec.decompress(stream))
    args = ["decompress", str(tmp / "a.strata"), str(tmp / "b.wav"), "--layers", "2", "--vocoder", "griffinlim"]
    assert main([*models, *args]) == 0
    assert (tmp / "b.wav").read_bytes() == write_wav(
        tiny_audio_codec.decompress(stream, 2, vocoder="griffinlim"), SAMPLE_RATE
    )
    assert main([*models, "decompress", str(tmp / "a.strata"), str(tmp / "mel.npy"), "--layers", "1"]) == 0
    mel = np.load(tmp / "mel.npy")
    assert mel.dtype == np.float32 and mel.shape == (80, -(-SOUND.size // 256))
    np.testing.assert_array_equal(mel, tiny_audio_codec.decompress_mel(stream, 1))

    (tmp / "cut.strata").write_bytes(stream[:-3])
    assert main([*models, "decompress", str(tmp / "cut.strata"), str(tmp / "cut.wav"), "--partial"]) == 0
    assert_wav_of((tmp / "cut.wav").read_bytes(), tiny_audio_codec.decompress(stream, 3))

    capsys.readouterr()
    assert main(["info", "--json", str(tmp / "a.strata")]) == 0
    info = json.loads(capsys.readouterr().out)
    seconds = SOUND.size / SAMPLE_RATE
    assert info["modality"] == "audio" and info["model"] == "tiny-audio" and info["layers"] == 4
    assert (info["samples"], info["sample_rate"], info["seconds"]) == (SOUND.size, 22050, round(seconds, 4))
    assert info["kbps"] == round(8 * len(stream) / seconds / 1000, 4) == info["kbps_by_layers"][-1]
    assert len(info["kbps_by_layers"]) == 4 and info["kbps_by_layers"] == sorted(info["kbps_by_layers"])
    assert main(["info", str(tmp / "a.strata")]) == 0
    assert "kbps_by_layers" in capsys.readouterr().out


def test_modality_is_told_by_content_not_name(files, tiny_audio_codec, tiny_codec) -> None:
    tmp, models = files
    (tmp / "sound.png").write_bytes((tmp / "in.flac").read_bytes())  # a FLAC with a misleading name
    (tmp / "photo.wav").write_bytes((tmp / "in.png").read_bytes())  # and a PNG
    assert main([*models, "compress", str(tmp / "sound.png"), str(tmp / "s.strata"), "--layers", "2"]) == 0
    assert (tmp / "s.strata").read_bytes() == tiny_audio_codec.compress(samples_of(tmp / "in.flac"), 2)
    assert main([*models, "compress", str(tmp / "photo.wav"), str(tmp / "p.strata")]) == 0
    header = bitstream.parse((tmp / "p.strata").read_bytes()).header
    assert header.modality is bitstream.Modality.IMAGE and header.model == "tiny-image"
    assert main([*models, "decompress", str(tmp / "p.strata"), str(tmp / "p.png")]) == 0
    np.testing.assert_array_equal(
        read_image((tmp / "p.png").read_bytes()), tiny_codec.decompress((tmp / "p.strata").read_bytes())
    )


def bad_rate_wav() -> bytes:
    fmt = struct.pack("<4sIHHIIHH", b"fmt ", 16, 1, 1, 10_000_000, 20_000_000, 2, 16)
    return (
        struct.pack("<4sI4s", b"RIFF", 4 + len(fmt) + 8 + 200, b"WAVE")
        + fmt
        + struct.pack("<4sI", b"data", 200)
        + bytes(200)
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["decompress", "{tmp}/a.strata", "{tmp}/x.png"], "decodes to .wav"),
        (["decompress", "{tmp}/p.strata", "{tmp}/x.png", "--vocoder", "griffinlim"], "--vocoder applies to audio"),
        (["compress", "{tmp}/in.wav", "{tmp}/x.strata", "--model", "tiny-image"], "not an audio model"),
        (["compress", "{tmp}/in.wav", "{tmp}/x.strata", "--layers", "9"], "layers"),
        (["compress", "{tmp}/bad.wav", "{tmp}/x.strata"], "sample rate 10000000 Hz"),
        (["decompress", "{tmp}/a.strata", "{tmp}/x.wav", "--refine", "40"], "--refine must be in 0..32, got 40"),
        (["decompress", "{tmp}/a.strata", "{tmp}/x.wav", "--refine", "-1"], "--refine must be in 0..32, got -1"),
        (
            ["decompress", "{tmp}/a.strata", "{tmp}/x.wav", "--refine", "2", "--vocoder", "griffinlim"],
            "--refine applies to .wav output with a network vocoder",
        ),
        (
            ["decompress", "{tmp}/a.strata", "{tmp}/x.npy", "--refine", "2"],
            "--refine applies to .wav output with a network vocoder",
        ),
        (
            ["decompress", "{tmp}/p.strata", "{tmp}/x.png", "--refine", "1"],
            "--refine applies to audio streams; this is an image stream",
        ),
        (["compress", "{tmp}/in.wav", "{tmp}/x.strata", "--encoder", "light"], "--encoder applies to images"),
        (["decompress", "{tmp}/a.strata", "{tmp}/x.wav", "--precision", "int8"], "no int8 synthesis network"),
        (["decompress", "{tmp}/a.strata", "{tmp}/x.wav", "--precision", "int8", "--url", "http://127.0.0.1:9"],
         "STRATA_AUDIO_PRECISION"),
        (["decompress", "{tmp}/p.strata", "{tmp}/x.png", "--precision", "int8"], "no int8 synthesis network"),
        (["decompress", "{tmp}/p.strata", "{tmp}/x.png", "--precision", "int8", "--url", "http://127.0.0.1:9"],
         "--precision applies to local decoding"),
    ],
)
def test_errors_exit_1(files, capsys, argv, message) -> None:
    tmp, models = files
    main([*models, "compress", str(tmp / "in.wav"), str(tmp / "a.strata")])
    main([*models, "compress", str(tmp / "in.png"), str(tmp / "p.strata")])
    (tmp / "bad.wav").write_bytes(bad_rate_wav())
    capsys.readouterr()
    assert main([*models, *[a.format(tmp=tmp) for a in argv]]) == 1
    err = capsys.readouterr().err
    assert err.startswith("strata: error:") and message in err and "Traceback" not in err
    assert not (tmp / "x.wav").exists() and not (tmp / "x.npy").exists() and not (tmp / "x.png").exists()


def test_decompress_refine_locally(files, tiny_audio_codec) -> None:
    tmp, models = files
    assert main([*models, "compress", str(tmp / "in.wav"), str(tmp / "a.strata")]) == 0
    stream = (tmp / "a.strata").read_bytes()
    for refine in (0, 3):
        out = tmp / f"r{refine}.wav"
        assert main([*models, "decompress", str(tmp / "a.strata"), str(out), "--refine", str(refine)]) == 0
        assert_wav_of(out.read_bytes(), tiny_audio_codec.decompress(stream, refine=refine))
    args = ["decompress", str(tmp / "a.strata"), str(tmp / "k.wav"), "--layers", "2", "--refine", "0"]
    assert main([*models, *args]) == 0
    assert_wav_of((tmp / "k.wav").read_bytes(), tiny_audio_codec.decompress(stream, 2, refine=0))
    args = ["decompress", str(tmp / "a.strata"), str(tmp / "h.wav"), "--vocoder", "hifigan", "--refine", "0"]
    assert main([*models, *args]) == 0  # --vocoder hifigan is the vocoder --refine applies to
    assert (tmp / "h.wav").read_bytes() == (tmp / "r0.wav").read_bytes()


def test_eval_refine_is_checked_before_it_runs(files, capsys) -> None:
    tmp, models = files
    with pytest.raises(SystemExit) as e:  # an option of 'strata eval audio' only: a usage error
        main([*models, "eval", "images", "--data", str(tmp), "--out", str(tmp / "o"), "--refine", "2"])
    assert e.value.code == 2 and "--refine" in capsys.readouterr().err
    cases = [
        (
            ["eval", "audio", "--data", str(tmp), "--out", str(tmp / "o"), "--refine", "33"],
            "--refine must be in 0..32, got 33",
        ),
        (
            ["eval", "audio", "--data", str(tmp), "--out", str(tmp / "o"), "--refine", "-1"],
            "--refine must be in 0..32, got -1",
        ),
    ]
    for argv, message in cases:
        assert main([*models, *argv]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("strata: error:") and message in err and "Traceback" not in err, err
    assert not (tmp / "o").exists()


def test_no_audio_model_in_the_folder(files, tiny_registry, capsys) -> None:
    tmp, _ = files
    assert main(["--models", str(tiny_registry.root), "compress", str(tmp / "in.wav"), str(tmp / "x.strata")]) == 1
    assert "no default audio model" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ --url
def test_through_the_server(files, live_av_server, tiny_audio_codec, capsys) -> None:
    tmp, _ = files
    url = ["--url", live_av_server]
    samples = samples_of(tmp / "in.flac")
    assert main(["compress", str(tmp / "in.flac"), str(tmp / "r.strata"), "--layers", "3", *url]) == 0
    stream = (tmp / "r.strata").read_bytes()
    assert stream == tiny_audio_codec.compress(samples, 3)
    assert "tiny-audio, 3 layers" in capsys.readouterr().out
    assert main(["decompress", str(tmp / "r.strata"), str(tmp / "r.wav"), *url]) == 0
    assert_wav_of((tmp / "r.wav").read_bytes(), tiny_audio_codec.decompress(stream))
    args = ["decompress", str(tmp / "r.strata"), str(tmp / "g.wav"), "--layers", "1", "--vocoder", "griffinlim"]
    assert main([*args, *url]) == 0
    assert (tmp / "g.wav").read_bytes() == write_wav(
        tiny_audio_codec.decompress(stream, 1, vocoder="griffinlim"), SAMPLE_RATE
    )
    assert main(["decompress", str(tmp / "r.strata"), str(tmp / "r.npy"), "--layers", "2", *url]) == 0
    np.testing.assert_array_equal(np.load(tmp / "r.npy"), tiny_audio_codec.decompress_mel(stream, 2))
    assert main(["decompress", str(tmp / "r.strata"), str(tmp / "r0.wav"), "--refine", "0", *url]) == 0
    assert_wav_of((tmp / "r0.wav").read_bytes(), tiny_audio_codec.decompress(stream, refine=0))
    args = ["decompress", str(tmp / "r.strata"), str(tmp / "r3.wav"), "--layers", "2", "--refine", "3"]
    assert main([*args, *url]) == 0
    assert_wav_of((tmp / "r3.wav").read_bytes(), tiny_audio_codec.decompress(stream, 2, refine=3))
    capsys.readouterr()
    for argv, message in (
        (["--refine", "33"], "--refine must be in 0..32, got 33"),
        (["--refine", "1", "--vocoder", "griffinlim"], "--refine applies to .wav output with a network vocoder"),
    ):
        assert main(["decompress", str(tmp / "r.strata"), str(tmp / "x.wav"), *argv, *url]) == 1
        err = capsys.readouterr().err
        assert err.startswith("strata: error:") and message in err, err
    assert not (tmp / "x.wav").exists()


def test_through_an_image_only_server(files, live_server, capsys) -> None:
    tmp, _ = files
    assert main(["compress", str(tmp / "in.wav"), str(tmp / "x.strata"), "--url", live_server]) == 1
    err = capsys.readouterr().err
    assert "unknown_model" in err and "no audio model" in err


def test_sound_mistakes_name_the_file(files, tiny_audio_codec, capsys) -> None:
    tmp, models = files
    (tmp / "in.aiff").write_bytes(flac_bytes(SOUND, SAMPLE_RATE, "AIFF"))  # a sound, in a format not read
    (tmp / "bad.wav").write_bytes(bad_rate_wav())
    stream = tiny_audio_codec.compress(samples_of(tmp / "in.wav"))
    (tmp / "cut.strata").write_bytes(stream[:-3])
    cases = [
        (["compress", "in.aiff", "x.strata"], "in.aiff: not a PNG, JPEG or WebP image, nor a WAV, FLAC or Ogg sound"),
        (["compress", "bad.wav", "x.strata"], "bad.wav: sample rate 10000000 Hz"),
        (["compress", "in.wav", "x.wav"], "output {tmp}/x.wav would hold a Strata stream, not .wav data"),
        (["compress", "in.flac", "x.mp3"], "name it e.g. {tmp}/x.strata"),
        (["compress", "in.wav", "in.wav"], "is the input file"),
        (["decompress", "cut.strata", "x.wav"], "cut.strata: layer 4 chunk needs"),
        (["decompress", "cut.strata", "x.npy"], "--partial decodes the complete layers"),
    ]
    for argv, message in cases:
        before = (tmp / "in.wav").read_bytes()
        assert main([*models, argv[0], *[str(tmp / a) for a in argv[1:]]]) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("strata: error:") and err.count("\n") == 1 and "Traceback" not in err, err
        assert message.format(tmp=tmp) in err, err
        assert not (tmp / "x.strata").exists() and not (tmp / "x.wav").exists() and not (tmp / "x.npy").exists()
        assert (tmp / "in.wav").read_bytes() == before
