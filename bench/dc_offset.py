"""The served HiFi-GAN's DC offset, and what removing it (``codec/vocoder/dc.py``) costs and changes.

For speech test clips (true mel, no codec), the shipped vocoder's network (no refinement) runs with
``remove_dc`` off and on:
the table gives the output's |mean| / RMS, PESQ-WB, and the time ``remove_dc`` takes per second of
audio (median of 5 runs on the clips joined). A second table gives the largest change DC removal makes
to a pure tone of unit amplitude (away from the ends), the frequency response that matters for speech.

    python bench/dc_offset.py --limit 8
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
from strata.audio import SAMPLE_RATE, AudioCodec
from strata.eval.metrics_audio import pesq_wb
from strata.frontend.audio import list_audio, log_mel, read_audio_file
from strata.registry import Registry
from strata.vocoder.dc import remove_dc

TONES = (40.0, 60.0, 80.0, 100.0, 150.0, 250.0, 1000.0)  # Hz


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/audio/speech/test")
    p.add_argument("--limit", type=int, default=8)
    p.add_argument("--model")
    args = p.parse_args()
    codec = AudioCodec.load(Registry(), args.model)
    raw_voc = dataclasses.replace(codec.vocoder, remove_dc=False, refine=0)  # the network's own output
    files = list_audio(Path(args.data))[: args.limit]
    if not files:
        raise SystemExit(f"no sound files in {args.data}")
    rows, outputs = [], []
    for f in files:
        ref = read_audio_file(f)
        raw = raw_voc(log_mel(ref))[: len(ref)]
        clean = remove_dc(raw.copy())
        ref = ref[: len(raw)]
        outputs.append(raw)
        rows.append([abs(raw.mean()) / raw.std(), abs(clean.mean()) / clean.std(),
                     pesq_wb(ref, raw, SAMPLE_RATE), pesq_wb(ref, clean, SAMPLE_RATE)])
    joined = np.concatenate(outputs)
    times = []
    for _ in range(5):
        x = joined.copy()
        t = time.perf_counter()
        remove_dc(x)
        times.append(time.perf_counter() - t)
    m = np.mean(rows, axis=0)
    seconds = len(joined) / SAMPLE_RATE
    print(f"\n{len(files)} clips from {args.data} ({seconds:.1f} s); model {codec.name}; true mel\n")
    print("| HiFi-GAN output | DC / RMS | PESQ-WB |")
    print("|---|---:|---:|")
    print(f"| as the network gives it | {m[0]:.3f} | {m[2]:.3f} |")
    print(f"| DC removed (served) | {m[1]:.3f} | {m[3]:.3f} |")
    print(f"\nremove_dc: {1000 * np.median(times) / seconds:.2f} ms per second of audio "
          f"({1000 * np.median(times):.1f} ms for {seconds:.1f} s)\n")
    t = np.arange(4 * SAMPLE_RATE) / SAMPLE_RATE
    inner = slice(SAMPLE_RATE, 3 * SAMPLE_RATE)
    print("| tone (Hz) | " + " | ".join(f"{f:g}" for f in TONES) + " |")
    print("|---|" + "---:|" * len(TONES))
    changes = []
    for f in TONES:
        x = np.sin(2 * np.pi * f * t + 0.3).astype(np.float32)
        changes.append(float(np.abs(remove_dc(x.copy()) - x)[inner].max()))
    print("| largest change (unit amplitude) | " + " | ".join(f"{c:.3f}" for c in changes) + " |")


if __name__ == "__main__":
    main()
