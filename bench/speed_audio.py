"""Encode/decode speed of the shipped audio model, × real time (docs/design.md §7), beside Griffin-Lim and Opus.

For each thread setting (onnxruntime intra-op threads: 1 and all cores) times, on the given clips
joined into one sound: ``compress`` (resample-free frontend: log-mel + g_a + RVQ search + entropy
coding) at the first and last layer count, ``decompress`` with each network vocoder of the model
(entropy decoding + g_s + network + its default mel-consistency refinement, the model's count; with the float
``g_s`` of the library's default and, when the model has one, the int8 ``g_s`` the service decodes with),
the Vocos network alone when the model has one, and with Griffin-Lim (32 iterations, numpy; not threaded by
onnxruntime), and the vocoders alone on the true log-mel (HiFi-GAN as served, without refinement,
and the refinement alone). Two Griffin-Lims are timed: ours
(numpy, pseudo-inverse mel inversion) and librosa's ``mel_to_audio`` (NNLS mel inversion + 32
iterations: the reference the audio issue compares decode speed with), the latter when librosa is
installed. Opus (opusenc/opusdec subprocesses, hard-CBR 8 kbps) is timed once, when it is
installed. Prints a markdown table of × real time (seconds of audio per second of compute; higher
is better), median of --repeat runs.

    python bench/speed_audio.py --data ../shared/data/audio/speech/test --limit 8
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from strata.audio import SAMPLE_RATE, AudioCodec
from strata.errors import BaselineUnavailableError
from strata.eval.baselines_audio import opus_roundtrip
from strata.frontend.audio import list_audio, log_mel, read_audio_file
from strata.registry import Registry
from strata.vocoder.griffinlim import griffin_lim
from strata.vocoder.refine import refine
from timing import median_time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/audio/speech/test")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--model")
    args = p.parse_args()
    sound = np.concatenate([read_audio_file(f) for f in list_audio(Path(args.data))[: args.limit]])
    seconds = sound.size / SAMPLE_RATE
    mel = log_mel(sound)
    registry = Registry()
    print(f"{args.limit} clips joined: {seconds:.1f} s of audio; × real time (higher is better)\n")
    print("| operation | threads | × real time | ms per second of audio |")
    print("|---|---:|---:|---:|")

    def row(name: str, threads: int | str, t: float) -> None:
        print(f"| {name} | {threads} | {seconds / t:.1f} | {1e3 * t / seconds:.1f} |")

    for threads in (1, 0):
        codec = AudioCodec.load(registry, args.model, threads=threads)
        label = threads or "all"
        for k in (1, codec.layers):
            row(f"{codec.name} compress k={k}", label, median_time(lambda: codec.compress(sound, k), args.repeat))  # noqa: B023
        stream = codec.compress(sound)
        int8 = (AudioCodec.load(registry, args.model, threads=threads, precision="int8")
                if "int8" in AudioCodec.precisions(codec.entry) else None)
        for vocoder in (v for v in codec.vocoders if v != "griffinlim"):
            default = " (default)" if vocoder == codec.default_vocoder else ""
            for c, precision in ((codec, ""), (int8, ", int8 g_s")):
                if c is not None:
                    row(f"{codec.name} decompress k={codec.layers} ({vocoder}{default}{precision})", label,
                        median_time(lambda: c.decompress(stream, vocoder=vocoder), args.repeat))  # noqa: B023
        if codec.vocos is not None:
            row("Vocos network + inverse STFT on the true mel (refine=0)", label,
                median_time(lambda: codec.vocos(mel, refine=0), args.repeat))  # noqa: B023
        row(f"HiFi-GAN on the true mel ({codec.vocoder.refine} refinement it., served)", label,
            median_time(lambda: codec.vocoder(mel), args.repeat))  # noqa: B023
        row("HiFi-GAN network alone (refine=0) on the true mel", label,
            median_time(lambda: codec.vocoder(mel, refine=0), args.repeat))  # noqa: B023
    audio = codec.vocoder(mel, refine=0)
    row(f"refinement alone ({codec.vocoder.refine} it.)", "numpy",
        median_time(lambda: refine(audio, mel, codec.vocoder.refine), args.repeat))
    codec = AudioCodec.load(registry, args.model)
    stream = codec.compress(sound)
    row(f"{codec.name} decompress k={codec.layers} (Griffin-Lim)", "numpy",
        median_time(lambda: codec.decompress(stream, vocoder="griffinlim"), args.repeat))
    row("Griffin-Lim (32 it.) on the true mel", "numpy", median_time(lambda: griffin_lim(mel), args.repeat))
    try:
        from librosa.feature.inverse import mel_to_audio
    except ImportError:
        print("\n(librosa's Griffin-Lim not timed: librosa is not installed)")
    else:
        magnitude_mel = np.exp(mel)
        row("librosa mel_to_audio (NNLS + Griffin-Lim 32 it.) on the true mel", "numpy", median_time(
            lambda: mel_to_audio(magnitude_mel, sr=SAMPLE_RATE, n_fft=1024, hop_length=256, power=1.0,
                                 n_iter=32, fmin=0.0, fmax=8000.0), args.repeat))
    try:
        row("Opus hard-CBR 8 kbps (encode + decode, subprocesses)", 1,
            median_time(lambda: opus_roundtrip(sound, SAMPLE_RATE, 8, mode="hard-cbr"), args.repeat))
    except BaselineUnavailableError as e:  # no opusenc / ffmpeg: only this row is dropped
        print(f"\n(Opus not timed: {e})")


if __name__ == "__main__":
    main()
