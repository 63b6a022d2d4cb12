"""Encode/decode throughput of the shipped image model beside Pillow JPEG and WebP (docs/design.md §7).

For each thread setting (onnxruntime intra-op threads: 1 and all cores) and each layer count asked
for, times ``compress`` (frontend + g_a + RVQ search + entropy coding) and ``decompress`` (entropy
decoding + code sum + g_s) on the given images, and Pillow JPEG (q=75) / WebP (q=75) on the same
images. Prints a markdown table of megapixels per second (median of --repeat runs).

    python bench/speed.py --data ../shared/data/images/kodak --limit 4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from strata.eval import baselines
from strata.frontend.image import list_images, read_image
from strata.image import ImageCodec
from strata.registry import Registry
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
    for threads in (1, 0):
        codec = ImageCodec.load(registry, args.model, threads=threads)
        for k in args.layers or [1, codec.layers]:
            streams = [codec.compress(im, k) for im in images]
            enc = median_time(lambda: [codec.compress(im, k) for im in images], args.repeat)  # noqa: B023
            dec = median_time(lambda: [codec.decompress(s) for s in streams], args.repeat)  # noqa: B023
            print(f"| {codec.name} k={k} | {threads or 'all'} | {mpix / enc:.2f} | {mpix / dec:.2f} | "
                  f"{1e3 * enc / len(images):.0f} | {1e3 * dec / len(images):.0f} |")
    for name, fn in (("Pillow JPEG q=75", baselines.jpeg), ("Pillow WebP q=75", baselines.webp)):
        pts = [[fn(im, 75) for im in images] for _ in range(args.repeat)]
        enc = float(np.median([sum(p.encode_s for p in run) for run in pts]))
        dec = float(np.median([sum(p.decode_s for p in run) for run in pts]))
        print(f"| {name} | 1 | {mpix / enc:.2f} | {mpix / dec:.2f} | {1e3 * enc / len(images):.0f} | "
              f"{1e3 * dec / len(images):.0f} |")


if __name__ == "__main__":
    main()
