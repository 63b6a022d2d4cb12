"""Choose an audio model's decoder (vocoder and refinement iterations) on held-out training clips.

PESQ-WB and STOI of the codec's output at chosen layer counts, for every ``vocoder:iterations`` pair
asked for, on the speech clips the model's training held out for selection
(``strata.train.data.split_heldout`` with the fraction of the model's training config; the vocoders'
trainer holds out the same files), never on a test split. Also the mean kbit/s per layer count and
the vocoder's time per second of audio (single runs: for speeds, ``bench/speed_audio.py``)::

    python bench/vocoder_codec.py --data ../shared/data/audio --layers 2,3,4 \\
        --decoders hifigan:8,hifigan:16,vocos:8,vocos:16:0.5 [--precision int8] [--limit 28] [--out table.json]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from strata.audio import SAMPLE_RATE, AudioCodec
from strata.bitstream import truncate
from strata.eval.metrics_audio import pesq_wb, stoi
from strata.frontend.audio import list_audio, read_audio_file
from strata.registry import Registry
from strata.train.data import split_heldout


def parse_decoders(text: str) -> list[tuple[str, int | None, float | None]]:
    """``"hifigan:8,vocos:10:0.5,griffinlim"`` → ``[("hifigan", 8, None), ("vocos", 10, 0.5), ("griffinlim", None,
    None)]``: vocoder, refinement iterations and momentum (``None``: the codec's own)."""
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, its, momentum = (item.split(":") + [""] * 2)[:3]
        out.append((name, int(its) if its else None, float(momentum) if momentum else None))
    return out


def with_momentum(codec: AudioCodec, momentum: float | None) -> AudioCodec:
    """``codec`` whose network vocoders refine with ``momentum`` (``None``: ``codec`` itself)."""
    if momentum is None:
        return codec
    variant = copy.copy(codec)
    variant.vocoder = dataclasses.replace(codec.vocoder, momentum=momentum)
    if codec.vocos is not None:
        variant.vocos = dataclasses.replace(codec.vocos, momentum=momentum)
    return variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, help="models folder (default: the shipped models)")
    ap.add_argument("--model", help="model name (default: the default audio model)")
    ap.add_argument("--data", type=Path, required=True, help="folder with speech/train/ (its held-out part is used)")
    ap.add_argument("--layers", default="2,3,4", help="layer counts to decode at")
    ap.add_argument("--decoders", default="hifigan:8,vocos:8",
                    help="comma-separated vocoder[:refinement iterations[:momentum]] (default: the model's own)")
    ap.add_argument("--precision", default="float", choices=["float", "int8"],
                    help="the mel synthesis network to decode with (int8: the model's int8 one, as the service)")
    ap.add_argument("--limit", type=int, help="at most this many held-out clips")
    ap.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = ap.parse_args()
    registry = Registry(args.models)
    codec = AudioCodec.load(registry, args.model or registry.default("audio").name, precision=args.precision)
    heldout = float(codec.entry.extra.get("config", {}).get("heldout", 0.1))
    files = split_heldout(list_audio(args.data / "speech" / "train"), heldout)[1][: args.limit]
    layers = [int(k) for k in args.layers.split(",")]
    decoders = parse_decoders(args.decoders)
    codecs = {d: with_momentum(codec, d[2]) for d in decoders}  # refuses a bad momentum
    for (name, its, _), c in codecs.items():  # refuse a bad vocoder or count before the long loop
        c.decode(c.encode(np.zeros(4096, np.float32), 1), vocoder=name, refine=its)
    scores = {(d, k): [] for d in decoders for k in layers}
    kbps = {k: [] for k in layers}
    seconds = {d: 0.0 for d in decoders}
    total = 0.0
    for f in files:
        x = read_audio_file(f)
        if x.size < SAMPLE_RATE // 2:
            continue
        full = codec.compress(x)
        total += x.size / SAMPLE_RATE * len(layers)
        for k in layers:
            stream = truncate(full, k)
            kbps[k].append(8 * len(stream) / (x.size / SAMPLE_RATE) / 1000)
            codes = codec.decompress_codes(stream)
            for d in decoders:
                t0 = time.perf_counter()
                y = codecs[d].decode(codes, vocoder=d[0], refine=d[1])
                seconds[d] += time.perf_counter() - t0
                n = min(x.size, y.size)
                scores[d, k].append((pesq_wb(x[:n], y[:n], SAMPLE_RATE), stoi(x[:n], y[:n], SAMPLE_RATE)))
    n_clips = len(kbps[layers[0]])
    print(f"{codec.entry.name} ({args.precision} mel synthesis): {n_clips} held-out speech clips of "
          f"{args.data / 'speech' / 'train'}\n")
    heads = " | ".join(f"k={k} ({np.mean(kbps[k]):.2f} kbps)" for k in layers)
    print(f"| decoder | ms per s of audio | {heads} |")
    print("|---|---:|" + "---:|" * len(layers))
    table = []
    for d in decoders:
        label = d[0] + (f" + {d[1]} it." if d[1] is not None else "") + (f", momentum {d[2]}" if d[2] is not None
                                                                          else "")
        cells = []
        for k in layers:
            p, s = np.mean(scores[d, k], axis=0)
            cells.append(f"{p:.3f} / {s:.3f}")
            table.append({"vocoder": d[0], "refine": d[1], "momentum": d[2], "layers": k,
                          "kbps": float(np.mean(kbps[k])), "pesq_wb": float(p), "stoi": float(s)})
        print(f"| {label} | {1000 * seconds[d] / total:.1f} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps({"model": codec.entry.name, "precision": args.precision, "clips": n_clips,
                                        "rows": table}, indent=1))


if __name__ == "__main__":
    main()
