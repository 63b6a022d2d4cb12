"""Streamed audio decode of a long sound: time to the first samples and in all, beside the one-shot decode.

Joins the clips of ``--data`` (repeated as needed) into one ``--seconds`` sound, compresses it with the
default audio model, then decodes it three ways, as the service does (its default vocoder, and the int8 mel
synthesis network where the model has one), and checks they give the same bytes:

* one shot: ``AudioCodec.decompress`` then ``write_wav``;
* library stream: ``AudioCodec.iter_decode`` (the time of its first piece is the first-sample latency);
* HTTP stream: ``POST /v1/audio:decompress?stream=true`` on a uvicorn server started here (loopback),
  read with the SDK's ``iter_decompress_audio`` (the time of the first chunk after the 44-byte header).

    python bench/stream_audio.py --data ../shared/data/audio/speech/test --seconds 600
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from pathlib import Path

import numpy as np
from strata.audio import SAMPLE_RATE, AudioCodec
from strata.frontend.audio import list_audio, pcm16, read_audio_file, wav_header, write_wav
from strata.registry import Registry


def long_sound(folder: Path, seconds: float) -> np.ndarray:
    clips = [read_audio_file(p) for p in list_audio(folder)]
    n = int(seconds * SAMPLE_RATE)
    joined = np.concatenate(clips)
    return np.resize(joined, n).astype(np.float32)  # repeated to the length asked for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/audio/speech/test"))
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--layers", type=int, help="layers to decode (default all)")
    args = ap.parse_args()
    registry = Registry()
    # The service's decoder: the int8 mel synthesis network where the model has one (STRATA_AUDIO_PRECISION).
    precision = "int8" if "int8" in AudioCodec.precisions(registry.default("audio")) else "float"
    codec = AudioCodec.load(registry, precision=precision)
    sound = long_sound(args.data, args.seconds)
    t0 = time.perf_counter()
    stream = codec.compress(sound)
    encode_s = time.perf_counter() - t0
    print(f"{codec.name} ({precision} g_s, {codec.default_vocoder} vocoder): {args.seconds:.0f} s of sound, stream "
          f"{len(stream)} bytes, encoded in {encode_s:.1f} s")

    t0 = time.perf_counter()
    one_shot = write_wav(codec.decompress(stream, args.layers), SAMPLE_RATE)
    one_shot_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    codes = codec.decompress_codes(stream, args.layers)
    parts, first = [wav_header(int(codes.samples), SAMPLE_RATE)], None
    for piece in codec.iter_decode(codes):
        if first is None:
            first = time.perf_counter() - t0
        parts.append(pcm16(piece))
    lib_s = time.perf_counter() - t0
    assert b"".join(parts) == one_shot, "the library stream differs from the one-shot WAV"

    import uvicorn
    from strata.client import Client
    from strata.server.config import Settings
    from strata.server.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(Settings(models_dir=registry.root)), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with Client(f"http://127.0.0.1:{port}", timeout=3600) as client:
            t0 = time.perf_counter()
            chunks, http_first, got = [], None, 0
            for chunk in client.iter_decompress_audio(stream, layers=args.layers):
                got += len(chunk)
                if http_first is None and got > 44:
                    http_first = time.perf_counter() - t0
                chunks.append(chunk)
            http_s = time.perf_counter() - t0
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert b"".join(chunks) == one_shot, "the HTTP stream differs from the one-shot WAV"

    print("\n| decode | first samples after (s) | all (s) | × real time |")
    print("|---|---:|---:|---:|")
    for name, head, total in (("one shot (decompress + write_wav)", one_shot_s, one_shot_s),
                              ("library stream (iter_decode)", first, lib_s),
                              ("HTTP stream (stream=true, SDK)", http_first, http_s)):
        print(f"| {name} | {head:.2f} | {total:.1f} | {args.seconds / total:.1f} |")
    print("\nall three give the same WAV bytes")


if __name__ == "__main__":
    main()
