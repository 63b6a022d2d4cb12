"""An image model's light (distilled) analysis network against its full one: speed, rate and PSNR per layer count.

Compresses every image of ``--data`` with both encoders of the registered model (``ImageCodec.load(...,
encoder=...)``) and decodes each stream with the model's decoder, so the rows differ only by the codes
the two analysis networks lead to (``--light-precision int8``: the light encoder's streams decoded with
the int8 synthesis network, the service's default pair, against the library's). Prints, per layer
count, the mean whole-stream bpp and PSNR of each, the PSNR difference (mean and worst image) and the
bpp difference, then the BD-rate of the light encoder's curve against the full one's; and the analysis
network's time on a 768×512 input at 1 and all threads (median of ``--repeat``). The rule for serving a
faster network is a loss of at most 0.1 dB at every layer count.

    python bench/encoder.py --data ../shared/data/images/val      # choose (validation images)
    python bench/encoder.py --data ../shared/data/images/kodak    # report
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from strata.bitstream import truncate
from strata.eval.metrics import bd_rate, psnr
from strata.frontend.image import list_images, read_image
from strata.image import ImageCodec
from strata.registry import Registry
from timing import median_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model")
    ap.add_argument("--limit", type=int, default=0, help="first N images (default: all)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--precision", default="float", help="of the synthesis network the full encoder's streams "
                    "decode with")
    ap.add_argument("--light-precision", help="of the synthesis network the light encoder's streams decode with "
                    "(default: --precision; int8 with --precision float compares the service's default networks "
                    "with the library's)")
    args = ap.parse_args()
    registry = Registry()
    full = ImageCodec.load(registry, args.model, precision=args.precision)
    light = ImageCodec.load(registry, full.name, precision=args.light_precision or args.precision, encoder="light")
    files = list_images(args.data)
    files = files[: args.limit] if args.limit else files
    ks = range(1, full.layers + 1)
    rows = {name: {k: ([], []) for k in ks} for name in ("full", "light")}
    for path in files:
        image = read_image(path.read_bytes())
        pixels = image.shape[0] * image.shape[1]
        for name, codec in (("full", full), ("light", light)):
            stream = codec.compress(image)
            for k in ks:
                part = truncate(stream, k)
                rows[name][k][0].append(8 * len(part) / pixels)
                rows[name][k][1].append(psnr(image, codec.decompress(part)))
    info = light.entry.extra.get("analysis_light", {})
    print(f"{full.name}: light analysis network (widths {info.get('enc_channels')}, blocks {info.get('enc_blocks')}, "
          f"step {info.get('train_step')}) against the full one; {len(files)} images of {args.data.name}; "
          f"{args.precision} synthesis for the full one's streams, {args.light_precision or args.precision} for "
          "the light one's\n")
    print("| layers | full bpp | full PSNR | light bpp | light PSNR | Δ PSNR mean (worst) | Δ bpp |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    curves = {}
    for name in rows:
        curves[name] = ([np.mean(rows[name][k][0]) for k in ks], [np.mean(rows[name][k][1]) for k in ks])
    for i, k in enumerate(ks):
        d = np.subtract(rows["light"][k][1], rows["full"][k][1])
        db = curves["light"][0][i] - curves["full"][0][i]
        print(f"| {k} | {curves['full'][0][i]:.4f} | {curves['full'][1][i]:.2f} | {curves['light'][0][i]:.4f} | "
              f"{curves['light'][1][i]:.2f} | {d.mean():+.3f} ({d.min():+.3f}) | {db:+.4f} |")
    if full.layers >= 4:
        print(f"\nBD-rate, light against full: {bd_rate(*curves['full'], *curves['light']):+.2f}%")
    x = np.random.default_rng(0).random((1, 3, 512, 768), dtype=np.float32)
    print("\n| analysis network, 768×512 | threads | ms |\n|---|---:|---:|")
    for threads in (1, 0):
        for name in ("full", "light"):
            codec = ImageCodec.load(registry, full.name, threads=threads, encoder=name)
            ms = 1e3 * median_time(lambda c=codec: c.analysis(x), args.repeat)
            print(f"| {name} | {threads or 'all'} | {ms:.0f} |")


if __name__ == "__main__":
    main()
