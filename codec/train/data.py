"""Training data: images and sounds decoded once into memory, random crops cut from them, and
the fixed held-out split of the audio training files.

Decoding PNGs per step costs more than a training step on two cores, so every image is
decoded once to ``uint8`` and kept; a batch is a handful of numpy slices. Sounds are decoded
once to float32. Both decoded sets are cached as ``.npz`` files beside the run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from strata.frontend.audio import DEFAULT_MEL, list_audio, read_audio_file
from strata.frontend.image import list_images


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


def heldout_score(name: str) -> float:
    """A fixed pseudo-random number in [0, 1) from a file name (sha256): < fraction means held out."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") / 2**64


def split_heldout(files: list[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """``(train, heldout)``: a file is held out iff :func:`heldout_score` of its name is below ``fraction``.

    Deterministic, independent of the folder and of the other files (adding a file moves no
    other one). With few files at least one is held out and at least one kept.
    """
    held = [p for p in files if heldout_score(p.name) < fraction]
    if not held and len(files) > 1:
        held = [min(files, key=lambda p: heldout_score(p.name))]
    if len(held) == len(files) and files:
        held.remove(max(held, key=lambda p: heldout_score(p.name)))
    names = {p.name for p in held}
    return [p for p in files if p.name not in names], held


def split_sets(data: Path, sets: Sequence[str], fraction: float) -> tuple[list[Path], list[Path]]:
    """``(train, heldout)`` over the sound sets of ``data``: :func:`split_heldout` of each ``<data>/<set>/train/``
    folder, concatenated in the order of ``sets`` (``FileNotFoundError`` for a missing or empty folder)."""
    train: list[Path] = []
    held: list[Path] = []
    for s in sets:
        tr, he = split_heldout(list_audio(Path(data) / s / "train"), fraction)
        train += tr
        held += he
    return train, held


def load_audio(
    files: list[Path], cache_dir: Path | None = None, rate: int = DEFAULT_MEL.sample_rate
) -> list[np.ndarray]:
    """Decode every file once to float32 ``[T]`` at ``rate``; cached as one ``.npz`` per file list."""
    key = hashlib.sha256(
        "\n".join([str(rate)] + [f"{p.parent.name}/{p.name}:{p.stat().st_size}" for p in files]).encode()
    ).hexdigest()[:16]
    cache = Path(cache_dir) / f"audio-{key}.npz" if cache_dir else None
    if cache is not None and cache.exists():
        with np.load(cache) as z:
            samples, offsets = z["samples"], z["offsets"]
    else:
        clips = [read_audio_file(p, rate) for p in files]
        offsets = np.cumsum([0] + [len(c) for c in clips])
        samples = np.concatenate(clips) if clips else np.zeros(0, np.float32)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(cache.stem + ".tmp.npz")
            np.savez(tmp, samples=samples, offsets=offsets)
            tmp.replace(cache)
    return [samples[a:b] for a, b in zip(offsets[:-1], offsets[1:], strict=True)]
