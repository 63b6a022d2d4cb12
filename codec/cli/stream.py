"""``strata compress | decompress | info | truncate``: files to streams and back, locally or on a
server (``--url``, through the SDK).

Images and sounds: ``compress`` tells a sound from an image by the file's first bytes, not its
name (WAV ``RIFF…WAVE``, FLAC ``fLaC``, Ogg ``OggS``; a mislabelled ``photo.wav`` that holds a
PNG is still an image) and uses the default model of that modality. ``decompress`` reads the
modality from the stream header: an image stream decodes to ``.png``, ``.webp`` or ``.npy``
(pixels), an audio stream to ``.wav`` (16-bit, 22 050 Hz) or ``.npy`` (the decoded log-mel,
float32 ``[80, frames]``). ``info`` and ``truncate`` are bitstream operations and always run
locally.

Files: ``-`` (standard input or output) is not supported, an output may not be its command's
input, and the stream that ``compress`` and ``truncate`` write may not be named like an image
or a sound (``.png``, ``.wav``, …). Errors about what an input holds name the file.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

from strata.cli.common import (
    CliError,
    about,
    audio_codec,
    check_paths,
    check_url,
    image_codec,
    is_audio,
    looks_like_image,
    npy_bytes,
    read_input,
    remote,
    stream_header,
    write_chunks,
    write_output,
)


def _print_compressed(output: str, nbytes: int, model: str, layers: int, bpp: float) -> None:
    print(f"{output}: {nbytes} bytes, {model}, {layers} layers, {bpp:.4f} bpp")


def _print_compressed_audio(output: str, nbytes: int, model: str, layers: int, kbps: float, seconds: float) -> None:
    print(f"{output}: {nbytes} bytes, {model}, {layers} layers, {kbps:.3f} kbps, {seconds:.2f} s")


def _compress_audio(args: argparse.Namespace, data: bytes) -> int:
    if args.url:
        with remote(args) as c:
            result = c.compress_audio(data, layers=args.layers, model=args.model)
        write_output(args.output, result.data)
        _print_compressed_audio(args.output, len(result.data), result.model, result.layers, result.kbps, result.seconds)
        return 0

    from strata.audio import SAMPLE_RATE
    from strata.frontend.audio import read_audio

    codec = audio_codec(args, args.model)
    with about(args.input):
        sound = read_audio(data, max_seconds=codec.limits.max_samples / SAMPLE_RATE, rate=SAMPLE_RATE)
    codes = codec.encode(sound.samples, args.layers)
    stream = codec.compress_codes(codes)
    write_output(args.output, stream)
    _print_compressed_audio(args.output, len(stream), codec.name, codes.layers,
                            8 * len(stream) / codes.seconds / 1000, codes.seconds)
    return 0


def cmd_compress(args: argparse.Namespace) -> int:
    check_url(args)
    check_paths(args, writes_stream=True)
    data = read_input(args.input)
    if is_audio(data):
        if args.encoder:
            raise CliError("--encoder applies to images; this is a sound")
        return _compress_audio(args, data)
    if args.url and args.encoder:
        raise CliError("--encoder applies to local compression; a server encodes with its own setting "
                       "(STRATA_IMAGE_ENCODER)")
    if args.url:
        with remote(args) as c:
            result = c.compress(data, model=args.model, layers=args.layers)
        write_output(args.output, result.data)
        _print_compressed(args.output, len(result.data), result.model, result.layers, result.bpp)
        return 0

    from strata.frontend.image import read_image

    if not looks_like_image(data):
        raise CliError(f"{args.input}: not a PNG, JPEG or WebP image, nor a WAV, FLAC or Ogg sound "
                       f"({len(data)} bytes)")
    with about(args.input):
        image = read_image(data)
    codec = image_codec(args, args.model, encoder=args.encoder or "full")
    with about(args.input):
        data = codec.compress(image, args.layers)
    write_output(args.output, data)
    h, w = image.shape[:2]
    _print_compressed(args.output, len(data), codec.name, args.layers or codec.layers, 8 * len(data) / (h * w))
    return 0


def _output_format(path: str) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".png", ".webp", ".npy"):
        raise CliError(f"output must end in .png, .webp or .npy, got {path!r}")
    return suffix[1:]


def _decompress_audio(args: argparse.Namespace, data: bytes, model: str) -> int:
    if args.url and args.precision:
        raise CliError("--precision applies to local decoding; a server decodes with its own setting "
                       "(STRATA_AUDIO_PRECISION)")
    suffix = Path(args.output).suffix.lower()
    if suffix not in (".wav", ".npy"):
        raise CliError(f"an audio stream decodes to .wav (the sound) or .npy (its log-mel), got {args.output!r}")
    vocoder = args.vocoder  # None: the model's default vocoder
    if args.refine is not None:
        from strata.vocoder.refine import MAX_ITERATIONS

        if suffix == ".npy" or vocoder == "griffinlim":
            raise CliError("--refine applies to .wav output with a network vocoder (hifigan, vocos)")
        if not 0 <= args.refine <= MAX_ITERATIONS:
            raise CliError(f"--refine must be in 0..{MAX_ITERATIONS}, got {args.refine}")
    if args.url:
        with remote(args) as c:
            if suffix == ".npy":
                mel = c.decompress_audio_mel(data, layers=args.layers, partial=args.partial)
                out = mel if isinstance(mel, bytes) else npy_bytes(mel)
                write_output(args.output, out)
            else:  # written as the server sends it
                write_chunks(args.output, c.iter_decompress_audio(data, layers=args.layers, vocoder=vocoder,
                                                                  partial=args.partial, refine=args.refine))
        return 0

    from strata.frontend.audio import pcm16, wav_header

    codec = audio_codec(args, model, precision=args.precision or "float")
    with about(args.input, partial_hint=not args.partial):
        if suffix == ".npy":
            write_output(args.output, npy_bytes(codec.decompress_mel(data, args.layers, partial=args.partial)))
            return 0
        codes = codec.decompress_codes(data, args.layers, partial=args.partial)
        pieces = codec.iter_decode(codes, None, vocoder=vocoder, refine=args.refine)  # checked here, before a write
        header = wav_header(int(codes.samples), int(codes.sample_rate))
        write_chunks(args.output, itertools.chain([header], (pcm16(piece) for piece in pieces)))
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    from strata.bitstream import Modality

    check_url(args)
    check_paths(args, writes_stream=False)
    data = read_input(args.input)
    with about(args.input):
        header = stream_header(data, remote=bool(args.url))
    if header is not None and header.modality is Modality.AUDIO:
        return _decompress_audio(args, data, header.model)
    if args.vocoder or args.refine is not None:
        flag = "--vocoder" if args.vocoder else "--refine"
        raise CliError(f"{flag} applies to audio streams; this is an image stream")
    fmt = _output_format(args.output)
    if args.url and args.precision:
        raise CliError("--precision applies to local decoding; a server decodes with its own setting "
                       "(STRATA_IMAGE_PRECISION)")
    if args.url:
        with remote(args) as c:
            image = c.decompress(data, layers=args.layers, format=fmt, partial=args.partial)
        write_output(args.output, image.data)
        return 0

    from strata.frontend.image import write_image

    codec = image_codec(args, header.model, precision=args.precision or "float")
    with about(args.input, partial_hint=not args.partial):
        image = codec.decompress(data, args.layers, partial=args.partial)
    write_output(args.output, npy_bytes(image) if fmt == "npy" else write_image(image, fmt))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from strata.bitstream import Modality, parse

    data = read_input(args.input)
    with about(args.input):
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
    from strata.bitstream import truncate

    check_paths(args, writes_stream=True)
    data = read_input(args.input)
    with about(args.input):
        data = truncate(data, args.layers)
    write_output(args.output, data)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    remote = argparse.ArgumentParser(add_help=False)
    remote.add_argument("--url", help="run on this Strata server (e.g. http://127.0.0.1:8000) instead of locally")
    remote.add_argument("--api-key", default=os.environ.get("STRATA_API_KEY"),
                        help="the server's API key (default: $STRATA_API_KEY)")

    c = sub.add_parser("compress", help="image or sound (WAV/FLAC/OGG, told by content) → stream", parents=[remote])
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--layers", type=int, help="residual layers to spend (default: all)")
    c.add_argument("--model", help="model name (default: the manifest's default image or audio model)")
    c.add_argument("--encoder", choices=["full", "light"], help="images: the model's analysis network (default "
                   "full; light: its distilled one, 5x faster, the service's default; any decoder of the model "
                   "reads the stream)")
    c.set_defaults(func=cmd_compress, command_name="compress")

    d = sub.add_parser("decompress", help="stream → image (.png, .webp, .npy) or sound (.wav, or .npy: log-mel)",
                       parents=[remote])
    d.add_argument("input")
    d.add_argument("output")
    d.add_argument("--layers", type=int, help="decode only the first K layers")
    d.add_argument("--partial", action="store_true", help="decode the complete layers of a stream cut short")
    d.add_argument("--vocoder", choices=["hifigan", "vocos", "griffinlim"],
                   help="audio streams: how the decoded mel becomes a waveform (default: the model's own; vocos "
                   "only where the model has one; ignored for .npy)")
    d.add_argument("--refine", type=int, metavar="N",
                   help="audio streams, hifigan or vocos: mel-consistency iterations after the network (0: its raw "
                   "output; default: the vocoder's)")
    d.add_argument("--precision", choices=["float", "int8"], help="the synthesis network (default float; int8: the "
                   "model's int8 one, as the service decodes: 2.8x faster for images, 2.2x for the mel of sound)")
    d.set_defaults(func=cmd_decompress, command_name="decompress")

    i = sub.add_parser("info", help="print a stream's header and how many layers are complete and pass their CRC")
    i.add_argument("input")
    i.add_argument("--json", action="store_true", help="print the header as one JSON object")
    i.set_defaults(func=cmd_info)

    t = sub.add_parser("truncate", help="keep the first K layers of a stream")
    t.add_argument("input")
    t.add_argument("output")
    t.add_argument("--layers", type=int, required=True, help="layers to keep (1 to the layers the stream holds)")
    t.set_defaults(func=cmd_truncate)

