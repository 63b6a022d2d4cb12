"""Would learned context networks shrink an audio model's streams? Bits per layer on held-out clips.

Trains one context network per layer (``strata.train.context.fit_layer``: the image codec's recipe and
sources, integer network as the coder would run it) on the codes of the model's training clips and
measures it on the clips its training held out, against the model's table prior. Two orientations of
the code grid: as the decoder's wavefront reads it (a row is a frequency band, so the sources in the
layer itself are the band below, at t−1, t, t+1), and transposed (a row is a time step: the sources are
the previous step, bands b−1, b, b+1; decoding would then run sequentially in time)::

    python bench/context_audio.py --model audio-rvq8-v2 --data ../shared/data/audio [--epochs 6]

The table-prior bits are always those of the codec's own orientation. Nothing is exported: a network
worth shipping would be trained and registered through the image path's ``strata train/export context``,
generalised to sound.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from strata.audio import AudioCodec
from strata.frontend.audio import read_audio_file
from strata.registry import Registry
from strata.train.context import ContextTrainConfig, fit_layer
from strata.train.data import split_sets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", help="audio model (default: the default audio model)")
    ap.add_argument("--data", type=Path, required=True, help="folder with <set>/train/ sounds")
    ap.add_argument("--epochs", type=int, default=ContextTrainConfig.epochs)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    registry = Registry()
    codec = AudioCodec.load(registry, args.model or registry.default("audio").name)
    cfg = codec.entry.extra.get("config", {})
    train_files, held_files = split_sets(args.data, cfg.get("sets", ["speech", "environment"]),
                                         float(cfg.get("heldout", 0.1)))
    t0 = time.perf_counter()
    train = [codec.encode(read_audio_file(f)).codes.astype(np.int64) for f in train_files]
    held = [codec.encode(read_audio_file(f)).codes.astype(np.int64) for f in held_files]
    print(f"{codec.name}: codes of {len(train)} training and {len(held)} held-out clips in "
          f"{time.perf_counter() - t0:.0f} s\n")
    fit = ContextTrainConfig(data=str(args.data), model=codec.name, epochs=args.epochs, threads=args.threads)
    prior = codec.prior
    print("| layer | table prior (bits/code) | network, band rows | network, time rows |")
    print("|---:|---:|---:|---:|")
    totals = np.zeros(3)
    for layer in range(prior.num_layers):
        _, table, by_band, vsym = fit_layer(prior, layer, train, held, fit)
        flip = [c.transpose(0, 2, 1).copy() for c in train], [c.transpose(0, 2, 1).copy() for c in held]
        by_time = fit_layer(prior, layer, *flip, fit)[2]
        n = len(vsym)
        totals += [table, min(table, by_band), min(table, by_time)]
        print(f"| {layer + 1} | {table / n:.3f} | {by_band / n:.3f} ({100 * (by_band / table - 1):+.2f}%) | "
              f"{by_time / n:.3f} ({100 * (by_time / table - 1):+.2f}%) |", flush=True)
    print(f"\nall layers (a layer keeps its table where the network loses): band rows "
          f"{100 * (totals[1] / totals[0] - 1):+.2f}%, time rows {100 * (totals[2] / totals[0] - 1):+.2f}%")


if __name__ == "__main__":
    main()
