"""Fuzz targets for everything that parses untrusted bytes, a mutator, and a runner.

Targets (each takes the bytes of one input):

- ``stream``: the bitstream reader (:func:`strata.bitstream.parse`, whole and partial);
- ``image-stream``: a stream through the entropy decoder (``decompress_codes``, no networks) of the
  shipped image model it names; ``audio-stream``: the same with the default audio model; both with
  small size limits so that every input is fast;
- ``npy`` / ``json``: the HTTP codes payload parsers and the checks against a model;
- ``image-file`` / ``sound-file``: the image and sound frontends (Pillow, libsndfile).

An input may raise a :class:`strata.errors.StrataError` (the service answers those with a 4xx);
anything else is a crash. The mutator makes libFuzzer-style edits (bit flips, interesting
integers in header-sized fields, inserts, deletes, truncations, splices) of inputs from the
committed seed corpus, from a seeded :class:`random.Random`, so a run is reproducible.
``bench/fuzz.py`` runs millions of inputs; ``tests/test_fuzz.py`` runs a bounded slice.
"""

from __future__ import annotations

import random
import struct
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).resolve().parent / "corpus"
ROOT = Path(__file__).resolve().parents[2]

INTERESTING = (0, 1, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


@dataclass
class Target:
    name: str
    run: Callable[[bytes], object]

    def seeds(self) -> list[bytes]:
        folder = CORPUS / self.name
        return [p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()] if folder.is_dir() else []


def build_targets(models: Path | None = None) -> dict[str, Target]:
    """The fuzz targets, with the shipped models (or those in ``models``) for the stream decoders."""
    from strata import AudioCodec, ImageCodec, Registry
    from strata.bitstream import StreamLimits, parse
    from strata.frontend.audio import read_audio
    from strata.frontend.image import read_image
    from strata.server import payloads

    registry = Registry(models or ROOT / "models")
    small = StreamLimits(max_pixels=512 * 512, max_samples=22050 * 30)
    image = ImageCodec.load(registry, limits=small)
    audio = AudioCodec.load(registry, limits=small)

    def stream(data: bytes) -> None:
        try:
            parse(data)
        except _expected():
            pass
        parse(data, partial=True)

    images: dict[str, ImageCodec] = {image.name: image}

    def image_stream(data: bytes) -> None:
        # As the service does: the stream names its model (streams of every shipped image model decode).
        name = parse(data, partial=True).header.model
        if name not in images:
            images[name] = ImageCodec.load(registry, name, limits=small)
        images[name].decompress_codes(data, partial=True)

    def audio_stream(data: bytes) -> None:
        audio.decompress_codes(data, partial=True)

    def npy(data: bytes) -> None:
        array = payloads.load_npy(data)
        payloads.check_codes(array, image.entry.codebook_sizes, (int(array.shape[1]), int(array.shape[2])))

    def json_doc(data: bytes) -> None:
        doc = payloads.codes_from_json(data)
        array = payloads.document_codes(doc, {"model": None, "height": None, "width": None})
        payloads.check_codes(array, image.entry.codebook_sizes, image.grid((doc.height, doc.width)))

    def image_file(data: bytes) -> None:
        read_image(data, max_pixels=512 * 512)

    def sound_file(data: bytes) -> None:
        read_audio(data, max_seconds=10, rate=22050)

    targets = [Target("stream", stream), Target("image-stream", image_stream), Target("audio-stream", audio_stream),
               Target("npy", npy), Target("json", json_doc), Target("image-file", image_file),
               Target("sound-file", sound_file)]
    return {t.name: t for t in targets}


def _expected() -> type[BaseException]:
    from strata.errors import StrataError

    return StrataError


def mutate(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """One to four random edits of ``data`` (``others``: inputs to splice from)."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(9)
        n = len(buf)
        if op == 0 and n:  # flip a bit
            buf[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif op == 1 and n:  # a random byte
            buf[rng.randrange(n)] = rng.randrange(256)
        elif op == 2 and n >= 2:  # an interesting 16- or 32-bit integer (header fields are little-endian)
            width = rng.choice((2, 4)) if n >= 4 else 2
            at = rng.randrange(n - width + 1)
            value = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
            buf[at : at + width] = value.to_bytes(width, "little")
        elif op == 3:  # insert random bytes
            at = rng.randrange(n + 1)
            buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 4 and n:  # delete a range
            at = rng.randrange(n)
            del buf[at : at + rng.randint(1, 32)]
        elif op == 5 and n:  # truncate
            del buf[rng.randrange(n) :]
        elif op == 6 and n:  # duplicate a range
            at = rng.randrange(n)
            piece = buf[at : at + rng.randint(1, 64)]
            to = rng.randrange(n + 1)
            buf[to:to] = piece
        elif op == 7 and others:  # splice with another input
            other = rng.choice(others)
            cut_a, cut_b = rng.randrange(n + 1), rng.randrange(len(other) + 1)
            buf = buf[:cut_a] + bytearray(other[cut_b:])
        elif op == 8 and n:  # an ASCII digit or structural character (for JSON and .npy headers)
            buf[rng.randrange(n)] = ord(rng.choice('0123456789-.e,[]{}":'))
    return bytes(buf)


@dataclass
class Outcome:
    inputs: int = 0
    seconds: float = 0.0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # expected error class -> count
    crashes: list[tuple[bytes, str]] = field(default_factory=list)  # input, traceback


def fuzz(target: Target, inputs: int, seed: int = 0, max_seconds: float | None = None) -> Outcome:
    """Run ``inputs`` mutated inputs (or until ``max_seconds``) through ``target``."""
    expected = _expected()
    rng = random.Random(seed)
    seeds = target.seeds() or [b""]
    out = Outcome()
    start = time.perf_counter()
    for i in range(inputs):
        data = mutate(rng.choice(seeds), rng, seeds) if i >= len(seeds) else seeds[i]
        try:
            target.run(data)
            out.ok += 1
        except expected as e:
            out.errors[type(e).__name__] += 1
        except Exception:  # noqa: BLE001 - a crash is what a fuzzer looks for
            out.crashes.append((data, traceback.format_exc()))
        out.inputs += 1
        if max_seconds is not None and (i & 63) == 0 and time.perf_counter() - start > max_seconds:
            break
    out.seconds = time.perf_counter() - start
    return out


def make_corpus(models: Path | None = None) -> None:
    """(Re)write the seed corpus from the shipped models and small synthetic media (deterministic)."""
    import io
    import json

    import soundfile as sf
    from PIL import Image
    from strata import AudioCodec, ImageCodec, Registry
    from strata.bitstream import truncate
    from strata.eval.synthetic import synthetic_image
    from strata.server.payloads import dump_npy

    registry = Registry(models or ROOT / "models")
    image, audio = ImageCodec.load(registry), AudioCodec.load(registry)
    picture = synthetic_image(24, 40, 3)
    sound = (0.3 * np.sin(np.linspace(0, 300, 6000))).astype(np.float32)
    image_streams = [image.compress(picture, k) for k in (1, image.layers)]
    audio_streams = [audio.compress(sound, k) for k in (1, 3)]
    codes = image.encode(picture, 2)

    def write(target: str, name: str, data: bytes) -> None:
        (CORPUS / target).mkdir(parents=True, exist_ok=True)
        (CORPUS / target / name).write_bytes(data)

    for i, s in enumerate(image_streams + audio_streams + [truncate(image_streams[1], 2)]):
        write("stream", f"{i}.strata", s)
    for i, s in enumerate(image_streams):
        write("image-stream", f"{i}.strata", s)
    for i, s in enumerate(audio_streams):
        write("audio-stream", f"{i}.strata", s)
    write("npy", "codes-int16.npy", dump_npy(codes.codes.astype(np.int16)))
    write("npy", "codes-uint8.npy", dump_npy(codes.codes.astype(np.uint8)))
    doc = {"model": image.name, "height": 24, "width": 40, "layers": 2, "codes": codes.codes.tolist()}
    write("json", "codes.json", json.dumps(doc).encode())
    for fmt, name in (("PNG", "a.png"), ("JPEG", "a.jpg"), ("WEBP", "a.webp")):
        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, format=fmt)
        write("image-file", name, buf.getvalue())
    for fmt, name in (("WAV", "a.wav"), ("FLAC", "a.flac"), ("OGG", "a.ogg")):
        buf = io.BytesIO()
        sf.write(buf, sound[:2000], 8000, format=fmt)
        write("sound-file", name, buf.getvalue())
    write("stream", "header-only.strata", image_streams[0][:struct.calcsize("<4sBH") + 40])


if __name__ == "__main__":
    make_corpus()
    print(f"wrote the seed corpus under {CORPUS}")
