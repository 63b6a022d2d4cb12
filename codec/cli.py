"""The ``strata`` command line.

::

    strata compress IN.png|IN.wav OUT.strata [--layers K] [--model NAME] [--url URL [--api-key KEY]]
    strata decompress IN.strata OUT.png|OUT.wav|OUT.npy [--layers K] [--partial] [--vocoder griffinlim] [--refine N]
                      [--url URL [--api-key KEY]]
    strata info IN.strata
    strata truncate IN.strata OUT.strata --layers K
    strata eval images [--data DIR] [--out DIR]
    strata eval audio [--data DIR] [--out DIR] [--model NAME] [--limit N] [--codec-griffinlim] [--update-manifest]
    strata train image [--data DIR] [--run DIR] [--resume]
    strata train audio [--run DIR] [--resume] [--init-from CKPT] [--steps N] [--sets S,S]
    strata train vocoder [--run DIR] [--resume] [--init-from CKPT] [--steps N] [--recon-steps N]
                         [--stft-weight W] [--stft-resolutions N:H:W,...] [--frame-weight W]
                         [--phase-weight W] [--balanced-upsampling] [--d-warmup N] [--d-width F] [--sets S,S] [--amp]
    strata export image --checkpoint CKPT --name NAME
    strata export vocoder --checkpoint CKPT [--out DIR]
    strata export audio --checkpoint CKPT --vocoder DIR --name NAME
    strata export audio --vocoder DIR --name NAME              (replace only the vocoder of a shipped model)
    strata serve [--host H] [--port P] [--workers N]

``--url`` runs compress / decompress on a Strata server through the SDK (:mod:`client`)
instead of the local library; ``--api-key`` defaults to ``$STRATA_API_KEY``. ``info`` and
``truncate`` are pure bitstream operations and always run locally.

Images and sounds: ``compress`` tells a sound from an image by the file's first bytes, not its
name (WAV ``RIFF…WAVE``, FLAC ``fLaC``, Ogg ``OggS``: the formats the audio frontend reads; a
mislabelled ``photo.wav`` that holds a PNG is still an image) and uses the default model of that
modality. ``decompress`` reads the modality from the stream header: an image stream decodes to
``.png``, ``.webp`` or ``.npy`` (pixels), an audio stream to ``.wav`` (16-bit, 22 050 Hz, HiFi-GAN
or ``--vocoder griffinlim``) or ``.npy`` (the decoded log-mel, float32 ``[80, frames]``).

Files: ``-`` (standard input or output) is not supported, an output may not be its command's input,
and the stream that ``compress`` and ``truncate`` write may not be named like an image or a sound
(``.png``, ``.wav``, …). Errors about what an input holds (not an image, a corrupted stream) name
the file.

``main(argv)`` returns the exit status (0 success, 1 error, 2 usage) and is
what the tests call. Errors print one line to stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from codec import __version__
from codec.errors import (
    BitstreamError,
    LimitExceededError,
    StrataError,
    TruncatedStreamError,
    UnsupportedMediaError,
)

# A model name: a folder under the models folder and the name in its streams (1..64 ASCII bytes).
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# Suffixes of the media files the CLI reads or writes (and of a few common others): not a stream's name.
MEDIA_SUFFIXES = frozenset((".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".npy",
                            ".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aif", ".aiff"))


class CliError(Exception):
    """A user-facing error: printed as ``strata: error: …`` with exit status 1."""


def _read(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        stdin = " (reading standard input is not supported)" if path == "-" else ""
        raise CliError(f"cannot read {path}: {e.strerror or e}{stdin}") from None
    if not data:
        raise CliError(f"{path} is empty")
    return data


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror or e}") from None


def _check_paths(args: argparse.Namespace, writes_stream: bool) -> None:
    """Refuse an output that would be written to stdout, over the input, or (a stream) under a media name."""
    if args.output == "-":
        raise CliError("writing to standard output ('-') is not supported; give an output file")
    out = Path(args.output)
    try:
        same = out.exists() and out.samefile(args.input)
    except OSError:
        same = False
    if same:
        raise CliError(f"output {args.output} is the input file; write to another path")
    if writes_stream and out.suffix.lower() in MEDIA_SUFFIXES:
        raise CliError(f"output {args.output} would hold a Strata stream, not {out.suffix} data; "
                       f"name it e.g. {out.with_suffix('.strata')}")


@contextmanager
def _about(path: str, partial_hint: bool = False) -> Iterator[None]:
    """Errors about what the input file holds name it: ``strata: error: IN: …``."""
    try:
        yield
    except (BitstreamError, UnsupportedMediaError, LimitExceededError) as e:
        hint = partial_hint and isinstance(e, TruncatedStreamError)
        raise CliError(f"{path}: {e}" + ("; --partial decodes the complete layers" if hint else "")) from None


def _looks_like_image(data: bytes) -> bool:
    """Whether ``data`` starts like a PNG, JPEG or WebP file (the images ``read_image`` opens)."""
    return (data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff"
            or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"))


def _check_url(args: argparse.Namespace) -> None:
    if args.url is not None and not args.url.strip():
        raise CliError("--url is empty; give a server URL such as http://127.0.0.1:8000, or leave it out")


def _registry(args: argparse.Namespace):
    from codec.registry import Registry

    return Registry(Path(args.models) if args.models else None)


def _codec_for(args: argparse.Namespace, name: str | None):
    from codec.pipeline import ImageCodec

    return ImageCodec.load(_registry(args), name)


def _audio_codec_for(args: argparse.Namespace, name: str | None):
    from codec.audio_pipeline import AudioCodec

    return AudioCodec.load(_registry(args), name)


def _is_audio(data: bytes) -> bool:
    """Whether ``data`` starts like a WAV, FLAC or Ogg file (what ``compress`` sends to the audio codec)."""
    return (data[:4] == b"RIFF" and data[8:12] == b"WAVE") or data[:4] in (b"fLaC", b"OggS")


def _stream_header(data: bytes, remote: bool):
    """The stream's header; for ``--url``, ``None`` when it does not parse (the server then says why)."""
    from codec.bitstream import parse
    from codec.errors import BitstreamError

    try:
        return parse(data, partial=True).header
    except BitstreamError:
        if remote:
            return None
        raise


def _npy_bytes(array) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


@contextmanager
def _remote(args: argparse.Namespace) -> Iterator:
    """A :class:`client.Client` for ``--url``; the SDK's errors become :class:`CliError`."""
    from client import Client, StrataAPIError, StrataClientError

    try:
        with Client(args.url, api_key=args.api_key or None) as c:
            yield c
    except StrataAPIError as e:
        r = e.response
        if e.code.startswith("http_") and r is not None and "html" in r.headers.get("content-type", ""):
            # a web page (another server, a proxy), not a Strata server's JSON error body
            raise CliError(f"{args.url}: HTTP {e.status} {r.reason_phrase}: "
                           "an HTML page, not a Strata server's answer") from None
        raise CliError(f"{args.url}: {e}") from None
    except StrataClientError as e:
        raise CliError(f"{args.url}: {e}") from None
    except ValueError as e:  # a malformed URL
        raise CliError(str(e)) from None


def _print_compressed(output: str, nbytes: int, model: str, layers: int, bpp: float) -> None:
    print(f"{output}: {nbytes} bytes, {model}, {layers} layers, {bpp:.4f} bpp")


def _print_compressed_audio(output: str, nbytes: int, model: str, layers: int, kbps: float, seconds: float) -> None:
    print(f"{output}: {nbytes} bytes, {model}, {layers} layers, {kbps:.3f} kbps, {seconds:.2f} s")


def _compress_audio(args: argparse.Namespace, data: bytes) -> int:
    if args.url:
        with _remote(args) as c:
            result = c.compress_audio(data, layers=args.layers, model=args.model)
        _write(args.output, result.data)
        _print_compressed_audio(args.output, len(result.data), result.model, result.layers, result.kbps, result.seconds)
        return 0

    from codec.audio_pipeline import SAMPLE_RATE
    from codec.frontend.audio import read_audio

    codec = _audio_codec_for(args, args.model)
    with _about(args.input):
        sound = read_audio(data, max_seconds=codec.limits.max_samples / SAMPLE_RATE, rate=SAMPLE_RATE)
    codes = codec.encode(sound.samples, args.layers)
    stream = codec.compress_codes(codes)
    _write(args.output, stream)
    _print_compressed_audio(args.output, len(stream), codec.name, codes.layers,
                            8 * len(stream) / codes.seconds / 1000, codes.seconds)
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    _check_url(args)
    _check_paths(args, writes_stream=True)
    data = _read(args.input)
    if _is_audio(data):
        return _compress_audio(args, data)
    if args.url:
        with _remote(args) as c:
            result = c.compress(data, model=args.model, layers=args.layers)
        _write(args.output, result.data)
        _print_compressed(args.output, len(result.data), result.model, result.layers, result.bpp)
        return 0

    from codec.frontend.image import read_image

    if not _looks_like_image(data):
        raise CliError(f"{args.input}: not a PNG, JPEG or WebP image, nor a WAV, FLAC or Ogg sound "
                       f"({len(data)} bytes)")
    with _about(args.input):
        image = read_image(data)
    codec = _codec_for(args, args.model)
    with _about(args.input):
        data = codec.compress(image, args.layers)
    _write(args.output, data)
    h, w = image.shape[:2]
    _print_compressed(args.output, len(data), codec.name, args.layers or codec.layers, 8 * len(data) / (h * w))
    return 0


def _output_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".webp", ".npy"):
        raise CliError(f"output must end in .png, .webp or .npy, got {path!r}")
    return suffix[1:]


def _decompress_audio(args: argparse.Namespace, data: bytes, model: str) -> int:
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".wav", ".npy"):
        raise CliError(f"an audio stream decodes to .wav (the sound) or .npy (its log-mel), got {args.output!r}")
    vocoder = args.vocoder or "hifigan"
    if args.refine is not None:
        from codec.vocoder.refine import MAX_ITERATIONS

        if suffix == ".npy" or vocoder != "hifigan":
            raise CliError("--refine applies to .wav output with the hifigan vocoder")
        if not 0 <= args.refine <= MAX_ITERATIONS:
            raise CliError(f"--refine must be in 0..{MAX_ITERATIONS}, got {args.refine}")
    if args.url:
        with _remote(args) as c:
            if suffix == ".npy":
                mel = c.decompress_audio_mel(data, layers=args.layers, partial=args.partial)
                out = mel if isinstance(mel, bytes) else _npy_bytes(mel)
            else:
                out = c.decompress_audio(data, layers=args.layers, vocoder=vocoder, partial=args.partial,
                                         refine=args.refine)
        _write(args.output, out)
        return 0

    from codec.audio_pipeline import SAMPLE_RATE
    from codec.frontend.audio import write_wav

    codec = _audio_codec_for(args, model)
    with _about(args.input, partial_hint=not args.partial):
        if suffix == ".npy":
            out = _npy_bytes(codec.decompress_mel(data, args.layers, partial=args.partial))
        else:
            audio = codec.decompress(data, args.layers, partial=args.partial, vocoder=vocoder, refine=args.refine)
            out = write_wav(audio, SAMPLE_RATE)
    _write(args.output, out)
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from codec.bitstream import Modality

    _check_url(args)
    _check_paths(args, writes_stream=False)
    data = _read(args.input)
    with _about(args.input):
        header = _stream_header(data, remote=bool(args.url))
    if header is not None and header.modality is Modality.AUDIO:
        return _decompress_audio(args, data, header.model)
    if args.vocoder or args.refine is not None:
        flag = "--vocoder" if args.vocoder else "--refine"
        raise CliError(f"{flag} applies to audio streams; this is an image stream")
    fmt = _output_format(args.output)
    if args.url:
        with _remote(args) as c:
            image = c.decompress(data, layers=args.layers, format=fmt, partial=args.partial)
        _write(args.output, image.data)
        return 0

    from codec.frontend.image import write_image

    codec = _codec_for(args, header.model)
    with _about(args.input, partial_hint=not args.partial):
        image = codec.decompress(data, args.layers, partial=args.partial)
    _write(args.output, _npy_bytes(image) if fmt == "npy" else write_image(image, fmt))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from codec.bitstream import Modality, parse

    data = _read(args.input)
    with _about(args.input):
        stream = parse(data, partial=True)
    h = stream.header
    info = {
        "model": h.model,
        "weights": h.weights.hex(),
        "modality": h.modality.name.lower(),
        "size": list(h.size),
        "grid": list(h.grid),
        "padding": list(h.padding),
        "layers": h.layers,
        "layers_complete": stream.layers,
        "layers_intact": stream.intact_layers,  # complete and passing their CRC32: what --layers can ask for
        "bytes": len(data),
        "header_bytes": len(data) - h.payload_bytes if stream.layers == h.layers else None,
        "chunk_bytes": [n for n, _ in h.chunks],
    }
    if h.modality is Modality.IMAGE:
        pixels = h.size[0] * h.size[1]
        header_bytes = len(h.to_bytes())
        cumulative, total = [], header_bytes
        for n, _ in h.chunks:
            total += n
            cumulative.append(round(8 * total / pixels, 5))
        info["bpp_by_layers"] = cumulative
    elif h.modality is Modality.AUDIO and h.size[0] > 0 and h.size[1] > 0:
        samples, rate = h.size
        seconds = samples / rate
        cumulative, total = [], len(h.to_bytes())
        for n, _ in h.chunks:
            total += n
            cumulative.append(round(8 * total / seconds / 1000, 4))
        info.update(samples=samples, sample_rate=rate, seconds=round(seconds, 4),
                    kbps=round(8 * len(data) / seconds / 1000, 4), kbps_by_layers=cumulative)
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:16s} {v}")
    return 0


def cmd_truncate(args: argparse.Namespace) -> int:
    from codec.bitstream import truncate

    _check_paths(args, writes_stream=True)
    data = _read(args.input)
    with _about(args.input):
        data = truncate(data, args.layers)
    _write(args.output, data)
    return 0


def _check_out_dir(out: Path) -> None:
    """Before an evaluation runs: its output folder must be one (or not exist yet)."""
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file, not a folder")


def cmd_eval(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be a positive number, got {args.limit}")
    if args.threads < 0:
        raise CliError(f"--threads must be >= 0 (0: all cores), got {args.threads}")
    if args.modality == "audio":
        return _eval_audio(args)
    if args.codec_griffinlim or args.refine is not None:
        flag = "--codec-griffinlim" if args.codec_griffinlim else "--refine"
        raise CliError(f"{flag} is an option of 'strata eval audio'")
    from codec.evaluate import evaluate_images, format_report

    data, out = Path(args.data or "../shared/data/images/kodak"), Path(args.out or "eval/images")
    _check_out_dir(out)
    report = evaluate_images(_registry(args), data, out, model=args.model, limit=args.limit, threads=args.threads)
    print(format_report(report))
    if args.update_manifest:
        from codec.evaluate import record_in_manifest

        print(f"recorded bits per layer in {record_in_manifest(_registry(args), report)}")
    return 0


def _eval_audio(args: argparse.Namespace) -> int:
    import shlex

    from codec.evaluate_audio import evaluate_audio, format_report, record_in_manifest
    from codec.vocoder.refine import DEFAULT_ITERATIONS, MAX_ITERATIONS

    data, out = Path(args.data or "../shared/data/audio"), Path(args.out or "docs/eval/audio")
    _check_out_dir(out)
    command = ["strata", *(["--models", args.models] if args.models else []), "eval", "audio",
               "--data", str(data), "--out", str(out)]  # what ran, defaults spelled out, for the report
    for flag, value in (("--model", args.model), ("--limit", args.limit), ("--threads", args.threads or None),
                        ("--refine", args.refine)):
        command += [flag, str(value)] if value is not None else []
    command += ["--codec-griffinlim"] * args.codec_griffinlim + ["--update-manifest"] * args.update_manifest
    refine = DEFAULT_ITERATIONS if args.refine is None else args.refine
    if not 0 <= refine <= MAX_ITERATIONS:
        raise CliError(f"--refine must be in 0..{MAX_ITERATIONS}, got {refine}")
    try:
        report = evaluate_audio(_registry(args), data, out, model=args.model, limit=args.limit, threads=args.threads,
                                codec_griffinlim=args.codec_griffinlim, refine=refine, command=shlex.join(command))
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    print(format_report(report))
    print(f"wrote {out / 'report.json'}, {out / 'pesq_kbps.png'} and {out / 'mels.png'}")
    if args.update_manifest:
        print(f"recorded kbps per layer in {record_in_manifest(_registry(args), report)}")
    return 0


def _check_train_numbers(args: argparse.Namespace) -> None:
    """Options that no run can use, refused before anything loads (they were ignored or failed mid-run)."""
    at_least = (("--steps", args.steps, 1), ("--threads", args.threads, 1), ("--eval-every", args.eval_every, 1),
                ("--recon-steps", args.recon_steps, 0))
    for flag, value, low in at_least:
        if value is not None and value < low:
            raise CliError(f"{flag} must be >= {low}, got {value}")
    for flag, value in (("--lr", args.lr), ("--max-minutes", args.max_minutes)):
        if value is not None and not value > 0:
            raise CliError(f"{flag} must be > 0, got {value}")
    if args.decay_start is not None and not 0 <= args.decay_start <= 1:
        raise CliError(f"--decay-start must be in [0, 1], got {args.decay_start}")
    if args.sets is not None and not [s for s in args.sets.split(",") if s.strip()]:
        raise CliError(f"--sets names no set: {args.sets!r}")


def cmd_train(args: argparse.Namespace) -> int:
    _check_train_numbers(args)
    if args.modality == "vocoder":
        return _train_vocoder(args)
    vocoder_only = (args.recon_steps, args.stft_weight, args.stft_resolutions, args.frame_weight, args.phase_weight,
                    args.d_warmup, args.d_width)
    if args.amp or args.balanced_upsampling or any(v is not None for v in vocoder_only):
        raise CliError("--recon-steps, --stft-weight, --stft-resolutions, --frame-weight, --phase-weight, --d-warmup, "
                       "--d-width, --balanced-upsampling and --amp are options of 'strata train vocoder'")
    if args.modality == "audio":
        from codec.train import audio as trainer

        config_cls, default_run = trainer.AudioTrainConfig, "runs/audio-rvq"
    else:
        if args.sets:
            raise CliError("--sets is an option of 'strata train audio' and 'strata train vocoder'")
        from codec.train import image as trainer

        config_cls, default_run = trainer.ImageTrainConfig, "runs/image-rvq"
    run = Path(args.run or default_run)
    cfg_path = run / "config.json"
    try:
        if args.resume and cfg_path.exists():
            cfg = config_cls.from_dict(json.loads(cfg_path.read_text()))
        elif args.resume and (run / "last.pt").exists():  # config.json lost: last.pt carries the run's config
            cfg = config_cls.from_dict(trainer.read_checkpoint(run / "last.pt")["config"])
        elif args.init_from:
            cfg = config_cls.from_dict(trainer.read_checkpoint(Path(args.init_from))["config"])
        else:
            cfg = config_cls()
        cfg.data = args.data or cfg.data
        if args.sets:
            cfg.sets = tuple(s.strip() for s in args.sets.split(",") if s.strip())
        for attr in ("steps", "decay_start", "lr", "threads", "eval_every"):
            if getattr(args, attr) is not None:
                setattr(cfg, attr, getattr(args, attr))
        trainer.train(cfg, run, resume=args.resume, max_minutes=args.max_minutes,
                      init_from=Path(args.init_from) if args.init_from else None)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    return 0


def _stft_resolutions(text: str) -> tuple[tuple[int, int, int], ...]:
    """``"512:50:240,1024:120:600"`` → ``((512, 50, 240), (1024, 120, 600))`` (n_fft:hop:win)."""
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            out.append(tuple(int(v) for v in parts))
        except ValueError:
            raise CliError(f"--stft-resolutions takes n_fft:hop:win triples, comma-separated; got {item!r}") from None
    return tuple(out)


def _train_vocoder(args: argparse.Namespace) -> int:
    from codec.nets.hifigan import HiFiGANConfig
    from codec.train.checkpoint import read_checkpoint
    from codec.train.vocoder import VocoderTrainConfig, train

    if args.decay_start is not None:
        raise CliError("--decay-start is an option of 'strata train image' (the vocoder's LR decays exponentially)")
    if args.eval_every is not None:
        raise CliError("--eval-every is an option of 'strata train image' and 'strata train audio'")
    run = Path(args.run or "runs/vocoder")
    cfg_path = run / "config.json"
    resuming = args.resume and (cfg_path.exists() or (run / "last.pt").exists())
    if resuming:  # the run's own config; last.pt carries a copy should config.json be missing
        saved = (json.loads(cfg_path.read_text()) if cfg_path.exists()
                 else read_checkpoint(run / "last.pt", ("train_config",))["train_config"])
        cfg = VocoderTrainConfig.from_dict(saved)
    elif args.init_from:
        ckpt = read_checkpoint(args.init_from, ("config", "generator"))
        cfg = VocoderTrainConfig(gen=HiFiGANConfig.from_dict(ckpt["config"]))
    else:
        cfg = VocoderTrainConfig()
    cfg.data = args.data or cfg.data
    if args.sets:
        cfg.sets = tuple(s.strip() for s in args.sets.split(",") if s.strip())
    if args.steps:
        cfg.steps = args.steps
    if args.recon_steps is not None:
        cfg.recon_steps = args.recon_steps
    if args.stft_weight is not None:
        if args.stft_weight < 0:
            raise CliError(f"--stft-weight must be >= 0, got {args.stft_weight}")
        cfg.stft_weight = args.stft_weight
    if args.balanced_upsampling:
        if resuming and not cfg.gen.balanced_upsampling:
            raise CliError("--balanced-upsampling cannot change a run being resumed; start a new run with --init-from")
        cfg.gen = dataclasses.replace(cfg.gen, balanced_upsampling=True)
    if args.frame_weight is not None:
        if args.frame_weight < 0:
            raise CliError(f"--frame-weight must be >= 0, got {args.frame_weight}")
        cfg.frame_weight = args.frame_weight
    if args.phase_weight is not None:
        if args.phase_weight < 0:
            raise CliError(f"--phase-weight must be >= 0, got {args.phase_weight}")
        cfg.phase_weight = args.phase_weight
    if args.stft_resolutions is not None:
        cfg.stft_resolutions = _stft_resolutions(args.stft_resolutions)
    if args.d_width is not None:
        if not 0 < args.d_width <= 1:
            raise CliError(f"--d-width must be in (0, 1], got {args.d_width}")
        narrowed = cfg.with_discriminator_width(args.d_width)
        if resuming and (narrowed.mpd_channels, narrowed.msd_channels) != (cfg.mpd_channels, cfg.msd_channels):
            raise CliError("--d-width cannot change a run being resumed; start a new run with --init-from")
        cfg = narrowed
    if args.d_warmup is not None:
        if args.d_warmup < 0:
            raise CliError(f"--d-warmup must be >= 0, got {args.d_warmup}")
        cfg.d_warmup = args.d_warmup
    if args.lr is not None:
        cfg.lr = args.lr
    if args.threads:
        cfg.threads = args.threads
    if args.amp:
        cfg.amp = True
    try:
        cfg = dataclasses.replace(cfg)  # validates the overrides above (__post_init__)
        train(cfg, run, resume=args.resume, max_minutes=args.max_minutes,
              init_from=Path(args.init_from) if args.init_from else None)
    except (FileNotFoundError, ValueError) as e:
        raise CliError(str(e)) from None
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from codec.registry import default_models_dir

    models = Path(args.models) if args.models else default_models_dir()
    if args.checkpoint is None and args.modality != "audio":
        raise CliError(f"strata export {args.modality} needs --checkpoint")
    if args.modality == "vocoder":
        for flag, value in (("--name", args.name), ("--data", args.data), ("--vocoder", args.vocoder)):
            if value is not None:
                raise CliError(f"{flag} applies to image and audio models, not to a vocoder")
    else:
        if args.out is not None:
            raise CliError("--out is an option of 'strata export vocoder' (models go to the models folder)")
        if args.modality == "image" and args.vocoder is not None:
            raise CliError("--vocoder is an option of 'strata export audio'")
        if args.name is not None and not MODEL_NAME.fullmatch(args.name):
            raise CliError(f"--name must be 1 to 64 letters, digits, '.', '_' or '-' (a folder name and the "
                           f"model name in its streams), starting with a letter or digit; got {args.name!r}")
    if args.modality == "vocoder":
        from codec.train.vocoder import export_vocoder

        if args.layers is not None:
            raise CliError("--layers applies to image and audio models, not to a vocoder")

        out = Path(args.out or "runs/vocoder/export")
        try:
            export_vocoder(Path(args.checkpoint), out)
        except (FileNotFoundError, ValueError) as e:
            raise CliError(str(e)) from None
        print(f"exported vocoder.onnx and vocoder.pt to {out}")
        return 0
    if args.name is None:
        raise CliError(f"strata export {args.modality} needs --name")
    if args.modality == "audio":
        from codec.export_audio import export_audio_model

        if args.vocoder is None:
            raise CliError("strata export audio needs --vocoder DIR (a folder from strata export vocoder)")
        if args.checkpoint is None:  # only the vocoder changes; streams of the model stay valid
            from codec.export_audio import replace_vocoder

            if args.layers is not None:
                raise CliError("--layers needs --checkpoint (replacing a vocoder keeps the model's layers)")
            try:
                entry = replace_vocoder(models, args.name, Path(args.vocoder), args.description or None)
            except (FileNotFoundError, ValueError) as e:
                raise CliError(str(e)) from None
            print(f"replaced the vocoder of {entry.name} in {models}; its weights hash and streams are unchanged")
            return 0
        try:
            entry = export_audio_model(Path(args.checkpoint), Path(args.vocoder), args.name,
                                       Path(args.data or "../shared/data/audio"), models, args.description,
                                       layers=args.layers)
        except (FileNotFoundError, ValueError) as e:
            raise CliError(str(e)) from None
    else:
        from codec.export import export_image_model

        try:
            entry = export_image_model(Path(args.checkpoint), args.name, Path(args.data or "../shared/data/images"),
                                       models, args.description, layers=args.layers)
        except ValueError as e:
            raise CliError(str(e)) from None
    print(f"exported {entry.name} ({entry.weights_sha256[:16]}) to {models}")
    return 0


def _check_listen(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go, so that an unknown host or a port in use is said before the models
    load (uvicorn binds only after its startup, and then exits with its own message)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        raise CliError(f"--host {host!r} is not an address to listen on: {getattr(e, 'strerror', None) or e}") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
        try:
            s.bind(address)
        except OSError as e:
            raise CliError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    if args.port is not None and not 1 <= args.port <= 65535:
        raise CliError(f"--port must be in 1..65535, got {args.port}")
    if args.workers < 1:
        raise CliError(f"--workers must be >= 1, got {args.workers}")

    try:
        import uvicorn
        from pydantic import ValidationError

        from server.config import Settings
    except ImportError as e:
        raise CliError(f"strata serve needs the serve extra (pip install 'strata-codec[serve]'): {e}") from None
    if args.models:  # the app factory reads its settings from the environment (one per uvicorn worker)
        os.environ["STRATA_MODELS_DIR"] = str(Path(args.models).resolve())
    try:
        settings = Settings()
    except ValidationError as e:
        problems = "; ".join(f"STRATA_{'.'.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in e.errors())
        raise CliError(f"invalid settings: {problems}") from None
    host, port = args.host or settings.host, args.port if args.port is not None else settings.port
    _check_listen(host, port)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        "server.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=args.workers,
        log_level=settings.log_level,
        access_log=False,  # the app logs one line per request itself
    )
    return 0


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="strata", description="Learned image and audio compression with residual VQ.")
    p.add_argument("--version", action="version", version=f"strata {__version__}")
    p.add_argument("--models", help="models folder (default: $STRATA_MODELS or the shipped models/)")
    sub = p.add_subparsers(dest="command", required=True)

    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--url", help="run on this Strata server (e.g. http://127.0.0.1:8000) instead of locally")
    remote.add_argument("--api-key", default=os.environ.get("STRATA_API_KEY"),
                        help="the server's API key (default: $STRATA_API_KEY)")

    c = sub.add_parser("compress", help="image or sound (WAV/FLAC/OGG, told by content) → stream", parents=[remote])
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--layers", type=int, help="residual layers to spend (default: all)")
    c.add_argument("--model", help="model name (default: the manifest's default image or audio model)")
    c.set_defaults(func=cmd_compress)

    d = sub.add_parser("decompress", help="stream → image (.png, .webp, .npy) or sound (.wav, or .npy: log-mel)",
                       parents=[remote])
    d.add_argument("input")
    d.add_argument("output")
    d.add_argument("--layers", type=int, help="decode only the first K layers")
    d.add_argument("--partial", action="store_true", help="decode the complete layers of a stream cut short")
    d.add_argument("--vocoder", choices=["hifigan", "griffinlim"],
                   help="audio streams: how the decoded mel becomes a waveform (default hifigan; ignored for .npy)")
    d.add_argument("--refine", type=int, metavar="N",
                   help="audio streams, hifigan: mel-consistency iterations after the network (0: its raw output; "
                   "default: the model's)")
    d.set_defaults(func=cmd_decompress)

    i = sub.add_parser("info", help="print a stream's header and how many layers are complete and pass their CRC")
    i.add_argument("input")
    i.add_argument("--json", action="store_true", help="print the header as one JSON object")
    i.set_defaults(func=cmd_info)

    t = sub.add_parser("truncate", help="keep the first K layers of a stream")
    t.add_argument("input")
    t.add_argument("output")
    t.add_argument("--layers", type=int, required=True, help="layers to keep (1 to the layers the stream holds)")
    t.set_defaults(func=cmd_truncate)

    e = sub.add_parser("eval", help="rate-distortion evaluation")
    e.add_argument("modality", choices=["images", "audio"])
    e.add_argument("--data", help="images: a folder of images (default ../shared/data/images/kodak); "
                   "audio: a folder with speech/test and environment/test (default ../shared/data/audio)")
    e.add_argument("--out", help="output folder (default eval/images or docs/eval/audio)")
    e.add_argument("--model", help="model name (default: the manifest's default model of the modality)")
    e.add_argument("--limit", type=int, help="evaluate only the first N images (audio: N clips of each split)")
    e.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all cores)")
    e.add_argument("--codec-griffinlim", action="store_true",
                   help="audio: also decode the codec's mels with Griffin-Lim at every layer count")
    e.add_argument("--refine", type=int, metavar="N",
                   help="audio: HiFi-GAN's mel-consistency iterations (default: the library's)")
    e.add_argument("--update-manifest", action="store_true",
                   help="record the measured bits per layer and bpp (audio: kbps) in the model's manifest entry")
    e.set_defaults(func=cmd_eval)

    tr = sub.add_parser("train", help="train a model")
    tr.add_argument("modality", choices=["image", "audio", "vocoder"])
    tr.add_argument("--data", help="image: folder with train/ and val/ (default ../shared/data/images); "
                    "audio, vocoder: folder with <set>/train/ (default ../shared/data/audio)")
    tr.add_argument("--run", help="run folder (default runs/image-rvq, runs/audio-rvq or runs/vocoder)")
    tr.add_argument("--steps", type=int, help="total steps of the schedule")
    tr.add_argument("--decay-start", type=float, help="fraction of --steps after which the LR decays (cosine)")
    tr.add_argument("--resume", action="store_true")
    tr.add_argument("--max-minutes", type=float, help="stop (with a checkpoint) after this many minutes")
    tr.add_argument("--init-from", help="start from the weights of a checkpoint, e.g. models/<name>/checkpoint.pt")
    tr.add_argument("--threads", type=int, help="torch threads (default 2)")
    tr.add_argument("--lr", type=float, help="peak learning rate (image default 3e-4, vocoder 2e-4)")
    tr.add_argument("--eval-every", type=int, help="image, audio: steps between evaluations and checkpoints")
    tr.add_argument("--recon-steps", type=int,
                    help="vocoder: generator-only reconstruction steps before the discriminators join")
    tr.add_argument("--sets", help="audio, vocoder: comma-separated audio sets (default speech,environment for "
                    "audio, speech for the vocoder)")
    tr.add_argument("--stft-weight", type=float,
                    help="vocoder: weight of the multi-resolution STFT loss in the reconstruction phase (default 15)")
    tr.add_argument("--stft-resolutions",
                    help="vocoder: n_fft:hop:win,... of the STFT loss (default 512:50:240,1024:120:600,2048:240:1200)")
    tr.add_argument("--frame-weight", type=float,
                    help="vocoder: weight of the frame-pattern loss against the frame-rate buzz (default 0)")
    tr.add_argument("--phase-weight", type=float,
                    help="vocoder: weight of the anti-wrapping phase loss (default 0)")
    tr.add_argument("--balanced-upsampling", action="store_true",
                    help="vocoder: balance the transposed convs' phases (no frame-rate comb; see codec.nets.hifigan)")
    tr.add_argument("--d-warmup", type=int,
                    help="vocoder: first adversarial steps that train only the discriminators (default 0)")
    tr.add_argument("--d-width", type=float,
                    help="vocoder: discriminator channels as a fraction of the paper's (default 1; 0.25 costs ~1/10)")
    tr.add_argument("--amp", action="store_true", help="vocoder: bf16 autocast of the networks (default off)")
    tr.set_defaults(func=cmd_train)

    x = sub.add_parser("export", help="export a checkpoint to ONNX + prior + manifest")
    x.add_argument("modality", choices=["image", "audio", "vocoder"])
    x.add_argument("--checkpoint", help="training checkpoint (audio without it: only replace the model's vocoder)")
    x.add_argument("--name", help="model name in the manifest (image, audio)")
    x.add_argument("--data", help="training data, for fitting the priors (default ../shared/data/images or "
                   "../shared/data/audio)")
    x.add_argument("--vocoder", help="audio: folder holding vocoder.onnx (from strata export vocoder)")
    x.add_argument("--out", help="vocoder: output folder (default runs/vocoder/export)")
    x.add_argument("--description", default="")
    x.add_argument("--layers", type=int, help="image, audio: ship only the first N residual layers (default: all)")
    x.set_defaults(func=cmd_export)

    s = sub.add_parser("serve", help="run the HTTP service (uvicorn; settings from STRATA_* variables)")
    s.add_argument("--host", help="listen address (default: $STRATA_HOST or 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default: $STRATA_PORT or 8000)")
    s.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (each loads the models)")
    s.add_argument("--models", default=argparse.SUPPRESS, help="models folder (default: $STRATA_MODELS_DIR, "
                   "$STRATA_MODELS or the shipped models/)")
    s.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return args.func(args)
    except (StrataError, CliError) as e:
        message = str(e)
    except OSError as e:  # a file or folder that no check above caught, e.g. one an evaluation writes
        message = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
    print(f"strata: error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message
    return 1


if __name__ == "__main__":
    sys.exit(main())
