"""Offline test of other quantizers for an image model's upper layers: distortion against bits, no retraining.

Takes the latents of a registered one-scale model on ``DATA/train`` and ``DATA/val`` (its full analysis
network), quantizes them with the model's first ``--keep`` layers (nearest-code search), and then compares
ways of quantizing what is left, each fitted on the training residuals with k-means and measured on the
validation ones:

- ``model``: the model's own next layers (32-dim codebooks of 256);
- ``rvq-256``: fresh residual stages of 256 codes;
- ``rvq-1024``: fresh residual stages of 1 024 codes (larger codebooks);
- ``pvq-2x256``: fresh product stages, the vector split in two halves with 256 codes each (product VQ:
  two codes per position per stage).

Prints, after each stage, the cumulative bits per position (the static entropy of each stage's codes, fitted
on the training codes) and the mean squared latent error on the validation residuals. The latent error is a
proxy: the decoder is not retrained for the new codes, so this measures the quantizer alone.

    python bench/upper_layers.py --data ../shared/data/images --model image-rvq7
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from strata.frontend.image import list_images, read_image
from strata.image import ImageCodec, analyse
from strata.registry import Registry

BLOCK = 65536
Stage = list[tuple[slice, np.ndarray]]  # (the latent dimensions a codebook covers, the codebook)


def nearest(x: np.ndarray, book: np.ndarray) -> np.ndarray:
    norms = (book * book).sum(1)[None]
    return np.concatenate([(norms - 2 * x[i:i + BLOCK] @ book.T).argmin(1) for i in range(0, len(x), BLOCK)])


def kmeans(x: np.ndarray, k: int, iterations: int, seed: int, sample: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = x[rng.choice(len(x), min(sample, len(x)), replace=False)]
    book = x[rng.choice(len(x), k, replace=False)].copy()
    for _ in range(iterations):
        a = nearest(x, book)
        sums = np.zeros_like(book)
        np.add.at(sums, a, x)
        counts = np.bincount(a, minlength=k)
        empty = counts == 0
        book[~empty] = sums[~empty] / counts[~empty, None]
        book[empty] = x[rng.integers(len(x), size=int(empty.sum()))]
    return book


def static_bits(train: np.ndarray, val: np.ndarray, k: int) -> float:
    p = np.bincount(train, minlength=k) + 0.5
    return float(-np.log2((p / p.sum())[val]).mean())


def latents(codec: ImageCodec, folder: Path, limit: int) -> np.ndarray:
    out: list[np.ndarray] = []

    def grab(latent: np.ndarray, layers: int | None) -> np.ndarray:
        out.append(latent[0].reshape(latent.shape[1], -1).T.copy())
        return codec.quantizer.encode(latent, 1)

    files = list_images(folder)
    for f in files[:limit] if limit else files:
        analyse(codec.analysis, codec.quantizer, read_image(f.read_bytes()), codec.factor, 1,
                context=codec.context_a, search=grab)
    return np.concatenate(out)


def measure(name: str, train: np.ndarray, val: np.ndarray, stages: Callable[[np.ndarray], Iterator[Stage]]) -> None:
    t, v, bits, row = train.copy(), val.copy(), 0.0, []
    for stage in stages(train):
        for dims, book in stage:
            at, av = nearest(t[:, dims], book), nearest(v[:, dims], book)
            bits += static_bits(at, av, len(book))
            t[:, dims] -= book[at]
            v[:, dims] -= book[av]
        row.append(f"{bits:6.2f} / {float((v ** 2).mean()):.6f}")
    print(f"| {name} | " + " | ".join(row) + " |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="folder with train/ and val/ images (never Kodak)")
    ap.add_argument("--model", default="image-rvq7")
    ap.add_argument("--keep", type=int, default=3, help="the model's layers kept before the comparison")
    ap.add_argument("--stages", type=int, default=4, help="32-dim stages of 256 codes to match (8 bits each)")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--sample", type=int, default=300_000, help="training residuals k-means sees")
    ap.add_argument("--limit", type=int, default=0, help="first N images of each split (default: all)")
    args = ap.parse_args()
    codec = ImageCodec.load(Registry(), args.model, encoder="full")
    books = np.asarray(codec.quantizer.codebooks, dtype=np.float32)
    dim = books.shape[-1]
    train, val = latents(codec, args.data / "train", args.limit), latents(codec, args.data / "val", args.limit)
    for layer in range(args.keep):
        train -= books[layer][nearest(train, books[layer])]
        val -= books[layer][nearest(val, books[layer])]
    print(f"{args.model}: {len(train)} training and {len(val)} validation positions; after {args.keep} layers the "
          f"validation latent error is {float((val ** 2).mean()):.6f}\n")
    print("| quantizer | after each stage: bits per position / latent MSE |\n|---|---|")
    whole = slice(0, dim)
    halves = (slice(0, dim // 2), slice(dim // 2, dim))

    def fresh(k: int, n: int, split: bool) -> Callable[[np.ndarray], Iterator[Stage]]:
        def stages(x: np.ndarray) -> Iterator[Stage]:
            x = x.copy()
            for s in range(n):
                stage = []
                for h, dims in enumerate(halves if split else (whole,)):
                    book = kmeans(x[:, dims], k, args.iterations, 10 * s + h, args.sample)
                    x[:, dims] -= book[nearest(x[:, dims], book)]
                    stage.append((dims, book))
                yield stage
        return stages

    model_layers = range(args.keep, min(args.keep + args.stages, len(books)))
    measure("model", train, val, lambda x: iter([[(whole, books[layer])] for layer in model_layers]))
    measure("rvq-256", train, val, fresh(256, args.stages, False))
    measure("rvq-1024", train, val, fresh(1024, max(1, args.stages * 8 // 10), False))
    measure("pvq-2x256", train, val, fresh(256, max(1, args.stages // 2), True))


if __name__ == "__main__":
    main()
