"""Training data: images decoded once into memory, random crops cut from them.

Decoding PNGs per step costs more than a training step on two cores (DESIGN §9),
so every image is decoded once to ``uint8`` and kept; a batch is a handful of
numpy slices. The decoded set is cached as an ``.npz`` beside the run.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from codec.frontend.image import list_images


def load_images(folder: Path, cache_dir: Path | None = None) -> list[np.ndarray]:
    """Decode every image in ``folder`` to ``uint8`` RGB ``[H, W, 3]`` (cached)."""
    files = list_images(folder)
    key = hashlib.sha256("\n".join(f"{p.name}:{p.stat().st_size}" for p in files).encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"{Path(folder).name}-{key}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            return [z[f"a{i}"] for i in range(len(files))]
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **{f"a{i}": a for i, a in enumerate(arrays)})
    return arrays


class RandomCrops:
    """Random ``crop × crop`` patches with random flips and 90° rotations.

    Images smaller than the crop are skipped. ``sample(n)`` returns ``uint8``
    ``[n, 3, crop, crop]``.
    """

    def __init__(self, images: list[np.ndarray], crop: int, seed: int = 0) -> None:
        self.images = [im for im in images if min(im.shape[:2]) >= crop]
        if not self.images:
            raise ValueError(f"no training image is at least {crop}×{crop}")
        self.crop = crop
        self.rng = np.random.default_rng(seed)
        # Weight images by area so that every pixel is equally likely.
        areas = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.weights = areas / areas.sum()

    def sample(self, n: int) -> np.ndarray:
        c = self.crop
        out = np.empty((n, c, c, 3), dtype=np.uint8)
        for i, k in enumerate(self.rng.choice(len(self.images), size=n, p=self.weights)):
            im = self.images[k]
            y = self.rng.integers(0, im.shape[0] - c + 1)
            x = self.rng.integers(0, im.shape[1] - c + 1)
            patch = im[y : y + c, x : x + c]
            if self.rng.random() < 0.5:
                patch = patch[:, ::-1]
            patch = np.rot90(patch, k=int(self.rng.integers(0, 4)))
            out[i] = patch
        return out.transpose(0, 3, 1, 2)


def center_crops(images: list[np.ndarray], size: int) -> np.ndarray:
    """Centre ``size × size`` crops of the images at least that large, ``uint8 [n,3,s,s]``."""
    crops = []
    for im in images:
        h, w = im.shape[:2]
        if min(h, w) < size:
            continue
        y, x = (h - size) // 2, (w - size) // 2
        crops.append(im[y : y + size, x : x + size])
    if not crops:
        raise ValueError(f"no validation image is at least {size}×{size}")
    return np.stack(crops).transpose(0, 3, 1, 2)
