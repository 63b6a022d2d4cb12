"""How far each layer count of an image model is from its transform's own ceiling.

Runs a registered one-scale model's analysis and synthesis networks (float, ONNX) on whole images of a
folder, cropped to whole 8-pixel blocks, and prints the PSNR over the folder for each layer count with the
nearest-code search, and for the latent not quantized at all. The last row is the most any quantizer,
codebook size or entropy coder could give this transform: what is left between it and a layer count is
the quantizer's, what is left between it and a target is the transform's.

    python bench/ceiling.py --data ../shared/data/images/val --model image-rvq7
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from strata.frontend.image import list_images, read_image
from strata.image import ImageCodec
from strata.registry import Registry, default_models_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="folder of images (a validation split)")
    p.add_argument("--model", default=None, help="registered one-scale image model (default: the default one)")
    p.add_argument("--models", default=None, help="models folder (default: the shipped models)")
    p.add_argument("--limit", type=int, default=None, help="the first N images only")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args()
    codec = ImageCodec.load(Registry(Path(args.models) if args.models else default_models_dir()), args.model,
                            threads=args.threads)
    if codec.quantizer.top_layers:
        raise SystemExit(f"{codec.name} is a two-scale model; this bench measures one-scale models")
    files = list_images(Path(args.data))[: args.limit]
    if not files:
        raise SystemExit(f"no images in {args.data}")
    L = codec.layers
    se, n = np.zeros(L + 1), 0
    for path in files:
        im = read_image(path.read_bytes())
        im = np.ascontiguousarray(im[: im.shape[0] // 8 * 8, : im.shape[1] // 8 * 8]).astype(np.float64)
        latent = codec.analysis((im.transpose(2, 0, 1)[None] / 255).astype(np.float32))
        codes = codec.quantizer.encode(latent, L)
        for k in range(1, L + 2):
            z = latent if k > L else codec.quantizer.decode(codes[:k])
            out = np.clip(np.round(codec.synthesis(z)[0].transpose(1, 2, 0) * 255), 0, 255)
            se[k - 1] += float(((out - im) ** 2).sum())
        n += im.size
    psnr = 10 * np.log10(255.0**2 * n / se)
    print(f"{codec.name} on {len(files)} images of {args.data} (nearest-code search, float networks)\n")
    print("| layers | PSNR (dB) | below the ceiling (dB) |\n|---|---:|---:|")
    for k in range(L):
        print(f"| {k + 1} | {psnr[k]:.2f} | {psnr[L] - psnr[k]:.2f} |")
    print(f"| not quantized | {psnr[L]:.2f} | 0 |")


if __name__ == "__main__":
    main()
