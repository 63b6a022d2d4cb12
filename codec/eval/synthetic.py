"""A deterministic, photo-like synthetic image for tests, golden streams and benchmarks.

Smooth gradients, a sharp-edged block, texture and noise: enough structure for a codec to
behave as on photographs, with no data file to ship.
"""

from __future__ import annotations

import numpy as np


def synthetic_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """RGB ``uint8 [h, w, 3]``, the same for the same arguments on every machine."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([
        128 + 100 * np.sin(xx / (7 + 3 * seed) + yy / 11),
        128 + 90 * np.cos(yy / 9 - xx / 23),
        96 + 60 * np.sin((xx + yy) / 17) * np.cos(xx / 5),
    ], axis=-1)
    img[h // 3 : h // 2, w // 4 : w // 2] += 60  # a sharp-edged block
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
