"""Encode/decode throughput of the shipped image model beside a learned baseline and Pillow's codecs.

For each thread setting (onnxruntime intra-op threads and numpy's BLAS threads, as the service sets both:
1 and all cores) and each layer count asked
for, times ``compress`` (frontend + g_a + code search + entropy coding) and ``decompress`` (entropy
decoding + code sum + g_s) on the given images, with the float synthesis network and, when the model
has one, the int8 one the service decodes with (``STRATA_IMAGE_PRECISION``); and, when it has one,
with its light analysis network and the int8 synthesis one, the service's default
(``STRATA_IMAGE_ENCODER``). In the same run, at the same thread settings: the analysis and synthesis
transforms alone of bmshj2018-factorized (N=128, M=192; :mod:`learned_baseline`, random weights, no
entropy coding: a floor for that codec; needs torch), and Pillow JPEG (q=75), WebP (q=75) and AVIF
(q=60, speed 6) on the same images. Prints a markdown table of megapixels per second and ms per image
(median of --repeat runs).

    python bench/speed.py --data ../shared/data/images/kodak --limit 4
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from strata.eval import baselines
from strata.frontend.image import list_images, pad_uint8, read_image
from strata.image import ImageCodec
from strata.registry import Registry
from strata.runtime import CPU, OnnxNet
from threadpoolctl import threadpool_limits
from timing import median_time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/images/kodak")
    p.add_argument("--limit", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--model")
    p.add_argument("--layers", type=int, nargs="*", help="layer counts (default: 1 and all)")
    args = p.parse_args()
    images = [read_image(f.read_bytes()) for f in list_images(Path(args.data))[: args.limit]]
    mpix = sum(im.shape[0] * im.shape[1] for im in images) / 1e6
    registry = Registry()
    print(f"{len(images)} images, {mpix:.2f} MP in all; megapixels per second (higher is better)\n")
    print("| codec | threads | encode MP/s | decode MP/s | encode ms/image | decode ms/image |")
    print("|---|---:|---:|---:|---:|---:|")
    def row(name: str, threads: int | str, enc: float | None, dec: float) -> None:
        e = (f"{mpix / enc:.2f}", f"{1e3 * enc / len(images):.0f}") if enc is not None else ("–", "–")
        print(f"| {name} | {threads} | {e[0]} | {mpix / dec:.2f} | {e[1]} | {1e3 * dec / len(images):.0f} |")

    try:
        import learned_baseline

        baseline = learned_baseline.export()
    except ImportError as e:  # no torch: the baseline rows are left out
        baseline = None
        print(f"(bmshj2018-factorized transforms not timed: {e})\n")
    for threads in (1, 0):
        label = threads or "all"
        blas = threadpool_limits(limits=threads or os.cpu_count(), user_api="blas")
        codec = ImageCodec.load(registry, args.model, threads=threads)
        int8 = (ImageCodec.load(registry, codec.name, threads=threads, precision="int8")
                if "int8" in ImageCodec.precisions(codec.entry) else None)
        light = (ImageCodec.load(registry, codec.name, threads=threads, encoder="light")
                 if "light" in ImageCodec.encoders(codec.entry) else None)
        for k in args.layers or [1, codec.layers]:
            streams = [codec.compress(im, k) for im in images]
            enc = median_time(lambda: [codec.compress(im, k) for im in images], args.repeat)  # noqa: B023
            dec = median_time(lambda: [codec.decompress(s) for s in streams], args.repeat)  # noqa: B023
            row(f"{codec.name} k={k}", label, enc, dec)
            if int8 is not None:
                dec8 = median_time(lambda: [int8.decompress(s) for s in streams], args.repeat)  # noqa: B023
                row(f"{codec.name} k={k}, int8 synthesis (decode)", label, None, dec8)
            if light is not None:
                enc_l = median_time(lambda: [light.compress(im, k) for im in images], args.repeat)  # noqa: B023
                served = [light.compress(im, k) for im in images]
                dec_s = median_time(lambda: [(int8 or codec).decompress(s) for s in served], args.repeat)  # noqa: B023
                row(f"{codec.name} k={k}, light analysis + {'int8' if int8 else 'float'} synthesis (the service's "
                    "default)", label, enc_l, dec_s)
        if baseline is not None:
            g_a, g_s = (OnnxNet.load(path, [CPU], threads) for path in baseline)
            padded = [pad_uint8(im, 16).astype(np.float32) / 255 for im in images]
            latents = [g_a(x) for x in padded]
            enc = median_time(lambda: [g_a(x) for x in padded], args.repeat)  # noqa: B023
            dec = median_time(lambda: [g_s(y) for y in latents], args.repeat)  # noqa: B023
            row("bmshj2018-factorized transforms (g_a, g_s; no entropy coding)", label, enc, dec)
        blas.restore_original_limits()
    for name, fn, q in (("Pillow JPEG q=75", baselines.jpeg, 75), ("Pillow WebP q=75", baselines.webp, 75),
                        ("Pillow AVIF q=60", baselines.avif, 60)):
        pts = [[fn(im, q) for im in images] for _ in range(args.repeat)]
        enc = float(np.median([sum(p.encode_s for p in run) for run in pts]))
        dec = float(np.median([sum(p.decode_s for p in run) for run in pts]))
        row(name, 1, enc, dec)


if __name__ == "__main__":
    main()
