"""A model's learned context networks against its table prior: bits saved per layer, and what they cost in time.

For every image of ``--data``, the codes of the model's encoder are entropy-coded twice: with the model's
table prior alone and with its context networks (``strata.entropy.context``). Prints per layer the mean
coded bits of each, the saving, and the bpp of every layer count; then the entropy coder's time for the
whole stack (encode, and decode of all layers: the networks decode in a wavefront) on each image, as the
median of ``--repeat`` runs per image, summed over the images. The codes are the same in both, so the PSNR of
a layer count is too: the saving is the BD-rate change.

    python bench/context.py --model image-rvq7-cm --data ../shared/data/images/val     # choose
    python bench/context.py --model image-rvq7-cm --data ../shared/data/images/kodak   # report
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from strata.entropy.coder import decode_stack, encode_stack
from strata.frontend.image import list_images, read_image
from strata.image import ImageCodec
from strata.registry import Registry
from timing import median_time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--model", required=True, help="a model with a context model (strata export context)")
    ap.add_argument("--limit", type=int, default=0, help="first N images (default: all)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime threads of the encoder (0: all cores)")
    args = ap.parse_args()
    codec = ImageCodec.load(Registry(), args.model, threads=args.threads)
    if codec.context is None:
        raise SystemExit(f"model {args.model!r} has no context networks")
    files = list_images(args.data)
    files = files[: args.limit] if args.limit else files
    L = codec.layers
    bits = {"table": np.zeros(L), "network": np.zeros(L)}
    times = {name: {"encode": 0.0, "decode": 0.0} for name in bits}
    pixels = 0
    for path in files:
        image = read_image(path.read_bytes())
        pixels += image.shape[0] * image.shape[1]
        codes = codec.encode(image).codes
        grid = codes.shape[1:]
        for name, ctx in (("table", None), ("network", codec.context)):
            chunks = encode_stack(codec.prior, codes, ctx)
            bits[name] += [8 * len(c) for c in chunks]
            times[name]["encode"] += median_time(
                lambda ctx=ctx, codes=codes: encode_stack(codec.prior, codes, ctx), args.repeat)
            times[name]["decode"] += median_time(
                lambda ctx=ctx, chunks=chunks, grid=grid: decode_stack(codec.prior, chunks, grid, ctx), args.repeat)
            if not np.array_equal(decode_stack(codec.prior, chunks, grid, ctx), codes):
                raise SystemExit(f"{path.name}: {name} coding does not round-trip")
    n = len(files)
    print(f"{codec.name} on {n} images of {args.data} ({pixels / n / 1e6:.3f} MP mean)")
    print(f"{'layer':>5} {'table bits':>11} {'network bits':>13} {'saved':>7} {'bpp table':>10} {'bpp network':>12}")
    for layer in range(L):
        t, m = bits["table"][layer] / n, bits["network"][layer] / n
        bt, bn = bits["table"][: layer + 1].sum() / pixels, bits["network"][: layer + 1].sum() / pixels
        print(f"{layer + 1:>5} {t:>11.0f} {m:>13.0f} {100 * (m / t - 1):>+6.2f}% {bt:>10.4f} {bn:>12.4f}")
    t, m = bits["table"].sum(), bits["network"].sum()
    print(f"{'all':>5} {t / n:>11.0f} {m / n:>13.0f} {100 * (m / t - 1):>+6.2f}%")
    print(f"entropy coding of all layers, ms per image: table {1e3 * times['table']['encode'] / n:.1f} encode / "
          f"{1e3 * times['table']['decode'] / n:.1f} decode; networks {1e3 * times['network']['encode'] / n:.1f} / "
          f"{1e3 * times['network']['decode'] / n:.1f}")


if __name__ == "__main__":
    main()
