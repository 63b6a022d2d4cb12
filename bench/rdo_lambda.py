"""Choose the encoder's rate–distortion λ (:mod:`strata.quantize.rdo`) of an image model on validation images.

For each λ it compresses every image of ``--data`` (the validation split, never Kodak) at every layer
count, decodes, and reports mean bpp and PSNR per layer count, the BD-rate and BD-PSNR against λ = 0
over the whole curve, and the encode time. The λ with the lowest BD-rate wins; ``--write`` records it
in the models folder's manifest (``extra.rdo_lambda``, not part of the weights hash, so every stream
stays valid) and the codec uses it by default from then on::

    python bench/rdo_lambda.py --model image-rvq7 --data ../shared/data/images/val \\
        --lambdas 0,0.0005,0.001,0.002,0.004 [--write]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from strata.bitstream import truncate
from strata.eval.metrics import bd_psnr, bd_rate, psnr
from strata.frontend.image import list_images, read_image
from strata.image import ImageCodec
from strata.registry import Registry, write_manifest


def curve(codec: ImageCodec, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, float]:
    """Mean bpp and PSNR per layer count over ``images``, and the mean encode time (s) of the full stream."""
    bpp, quality, seconds = [], [], []
    for image in images:
        t0 = time.perf_counter()
        full = codec.compress(image)
        seconds.append(time.perf_counter() - t0)
        pixels = image.shape[0] * image.shape[1]
        rows = []
        for k in range(1, codec.layers + 1):
            stream = truncate(full, k)
            rows.append((8 * len(stream) / pixels, psnr(image, codec.decompress(stream))))
        bpp.append([r[0] for r in rows])
        quality.append([r[1] for r in rows])
    return np.mean(bpp, 0), np.mean(quality, 0), float(np.mean(seconds))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=Path, help="models folder (default: the shipped models)")
    ap.add_argument("--model", help="model name (default: the default image model)")
    ap.add_argument("--data", type=Path, required=True, help="validation images (never Kodak)")
    ap.add_argument("--lambdas", default="0,0.0005,0.001,0.002,0.004")
    ap.add_argument("--limit", type=int)
    ap.add_argument("--write", action="store_true", help="record the best λ in the manifest")
    ap.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = ap.parse_args()
    if "kodak" in str(args.data.resolve()).lower():
        raise SystemExit("choose λ on validation images, never on Kodak")
    registry = Registry(args.models)
    name = args.model or registry.default("image").name
    images = [read_image(p.read_bytes()) for p in list_images(args.data)[: args.limit]]
    lambdas = [float(x) for x in args.lambdas.split(",") if x.strip()]
    if 0.0 not in lambdas:
        lambdas.insert(0, 0.0)
    rows = {}
    for lam in lambdas:
        codec = ImageCodec.load(registry, name, rdo_lambda=lam)
        rows[lam] = curve(codec, images)
    base_bpp, base_psnr, _ = rows[0.0]
    print(f"{name} on {len(images)} images of {args.data}")
    print(f"{'lambda':>8} {'BD-rate':>8} {'BD-PSNR':>8} {'encode s':>9}  bpp/PSNR per layer count")
    results = []
    for lam, (b, q, s) in rows.items():
        rate = bd_rate(base_bpp, base_psnr, b, q) if lam else 0.0
        gain = bd_psnr(base_bpp, base_psnr, b, q) if lam else 0.0
        results.append({"lambda": lam, "bd_rate": rate, "bd_psnr": gain, "encode_s": s, "bpp": b.tolist(),
                        "psnr": q.tolist()})
        pts = " ".join(f"{x:.3f}/{y:.2f}" for x, y in zip(b, q, strict=True))
        print(f"{lam:>8g} {rate:>+7.2f}% {gain:>+7.3f} {s:>9.3f}  {pts}")
    best = min(results, key=lambda r: r["bd_rate"])
    print(f"best λ on {args.data.name}: {best['lambda']:g} ({best['bd_rate']:+.2f}% BD-rate against λ = 0)")
    if args.out:
        args.out.write_text(json.dumps({"model": name, "data": str(args.data), "images": len(images),
                                        "results": results, "best": best["lambda"]}, indent=2) + "\n")
    if args.write:
        entries = dict(registry.entries)
        entry = entries[name]
        extra = {**entry.extra, "rdo_lambda": best["lambda"], "rdo_lambda_chosen_on": str(args.data.name)}
        entries[name] = dataclasses.replace(entry, extra=extra)
        write_manifest(registry.root, entries, dict(registry.defaults))
        print(f"recorded rdo_lambda = {best['lambda']:g} for {name} in {registry.root / 'manifest.json'}")


if __name__ == "__main__":
    main()
