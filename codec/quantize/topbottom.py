"""Two-scale top/bottom quantizer at inference time, in numpy (no torch on the serving path).

Shares its parameters with :class:`strata.train.quantize.topbottom.TopBottomVQ`: residual
codebooks for the top map ``top`` ``[Lt, K, Dt]`` and the bottom map ``bottom`` ``[Lb, K, D]``, and
the two linear maps of the scale change (``down_weight`` ``[Dt, C]``, ``down_bias`` ``[Dt]``,
``up_weight`` ``[C, Dt]``, ``up_bias`` ``[C]``, with ``C = 4D`` for pixel-unshuffle and ``C = D``
for average pooling). The stack's layers are the top's, then the bottom's; any prefix decodes. Two views of the codes:

    encode_maps(latent [B, D, H, W], layers) -> k maps: [B, ⌈H/2⌉, ⌈W/2⌉] (top), then [B, H, W]
    decode_maps(maps, size=(H, W))           -> latent [B, D, H, W]   (float32)

and, for the interface every family shares (the stream, the tokens API), the same codes on the
latent grid, each top code repeated over the 2×2 block of latent positions it covers::

    encode(latent [B, D, H, W], layers) -> codes [k, B, H, W]   (int64)
    decode(codes [k, B, H, W])          -> latent [B, D, H, W]   (top layers must be constant on their blocks)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from strata.errors import InputError, LayersError, ModelIntegrityError
from strata.quantize.search import ResidualCodebooks

RESAMPLERS = ("unshuffle", "pool")
PARTS = ("top", "bottom", "down_weight", "down_bias", "up_weight", "up_bias")


def top_size(height: int, width: int) -> tuple[int, int]:
    """The top map's size for a latent of ``height × width``."""
    return (height + 1) // 2, (width + 1) // 2


def expand(top: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A top map ``[..., h, w]`` on the latent grid ``size``: each code repeated over its 2×2 block, cropped."""
    out = np.repeat(np.repeat(top, 2, axis=-2), 2, axis=-1)
    return np.ascontiguousarray(out[..., : size[0], : size[1]])


def _pad_even(z: np.ndarray) -> np.ndarray:
    ph, pw = z.shape[2] % 2, z.shape[3] % 2
    return np.pad(z, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge") if ph or pw else z


@dataclass(frozen=True)
class TopBottomCodebooks:
    """The parameters of a trained two-scale quantizer (a dict with the keys of :data:`PARTS`) and its resampling."""

    parts: dict
    resample: str

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLERS:
            raise ModelIntegrityError(f"resample must be one of {', '.join(RESAMPLERS)}, got {self.resample!r}")
        missing = [k for k in PARTS if k not in self.parts]
        if missing:
            raise ModelIntegrityError(f"top/bottom quantizer lacks {', '.join(missing)}")
        for name in PARTS:
            arr = self.parts[name]
            if not isinstance(arr, np.ndarray) or arr.dtype != np.float32 or not np.isfinite(arr).all():
                raise ModelIntegrityError(f"{name} must be a finite float32 array")
        top, bottom = ResidualCodebooks(self.parts["top"]), ResidualCodebooks(self.parts["bottom"])
        dt, d = top.dim, bottom.dim
        c = 4 * d if self.resample == "unshuffle" else d
        shapes = {"down_weight": (dt, c), "down_bias": (dt,), "up_weight": (c, dt), "up_bias": (c,)}
        for name, shape in shapes.items():
            if self.parts[name].shape != shape:
                raise ModelIntegrityError(f"{name} must be {list(shape)}, got {list(self.parts[name].shape)}")
        object.__setattr__(self, "_top", top)
        object.__setattr__(self, "_bottom", bottom)

    @property
    def top_layers(self) -> int:
        return self._top.layers  # type: ignore[attr-defined]

    @property
    def layers(self) -> int:
        return self._top.layers + self._bottom.layers  # type: ignore[attr-defined]

    @property
    def dim(self) -> int:
        return self._bottom.dim  # type: ignore[attr-defined]

    def codebook_size(self, layer: int) -> int:
        t = self.top_layers
        return self._top.codebook_size(layer) if layer < t else self._bottom.codebook_size(layer - t)  # type: ignore[attr-defined]

    def grid(self, layer: int, height: int, width: int) -> tuple[int, int]:
        """The code map size of ``layer`` for a latent of ``height × width``."""
        return top_size(height, width) if layer < self.top_layers else (height, width)

    def fold(self, latent: np.ndarray) -> np.ndarray:
        """``[B, D, H, W]`` → the top map ``[B, Dt, ⌈H/2⌉, ⌈W/2⌉]``."""
        z = _pad_even(latent.astype(np.float32, copy=False))
        B, D, H, W = z.shape
        blocks = z.reshape(B, D, H // 2, 2, W // 2, 2)
        if self.resample == "unshuffle":  # channel order of torch's pixel_unshuffle: (d, dy, dx)
            x = blocks.transpose(0, 2, 4, 1, 3, 5).reshape(B, H // 2, W // 2, 4 * D)
        else:
            x = blocks.mean(axis=(3, 5), dtype=np.float32).transpose(0, 2, 3, 1)
        t = x @ self.parts["down_weight"].T + self.parts["down_bias"]
        return np.ascontiguousarray(t.transpose(0, 3, 1, 2), dtype=np.float32)

    def unfold(self, top: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The top map ``[B, Dt, h, w]`` → ``[B, D, H, W]`` with ``(H, W) = size``."""
        B, _, h, w = top.shape
        x = top.transpose(0, 2, 3, 1) @ self.parts["up_weight"].T + self.parts["up_bias"]  # [B, h, w, C]
        D = self.dim
        if self.resample == "unshuffle":
            z = x.reshape(B, h, w, D, 2, 2).transpose(0, 3, 1, 4, 2, 5).reshape(B, D, 2 * h, 2 * w)
        else:
            z = np.repeat(np.repeat(x.transpose(0, 3, 1, 2), 2, axis=2), 2, axis=3)
        return np.ascontiguousarray(z[:, :, : size[0], : size[1]], dtype=np.float32)

    def encode(self, latent: np.ndarray, layers: int | None = None) -> np.ndarray:
        """Codes ``[k, B, H, W]`` on the latent grid (top codes repeated over their 2×2 blocks)."""
        maps = self.encode_maps(latent, layers)
        H, W = latent.shape[2:]
        return np.stack([expand(m, (H, W)) if m.shape[1:] != (H, W) else m for m in maps])

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Latent ``[B, D, H, W]`` of ``codes`` ``[k, B, H, W]`` on the latent grid; raises :class:`InputError`
        when a top layer's codes differ inside one of its 2×2 blocks (such a stack has no top map)."""
        if not isinstance(codes, np.ndarray) or codes.ndim != 4:
            raise InputError(f"codes must be a [k, B, H, W] array, got {getattr(codes, 'shape', codes)}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise InputError(f"codes must be integers, got {codes.dtype}")
        k = self._check_layers(codes.shape[0])
        H, W = codes.shape[2:]
        maps = []
        for layer in range(k):
            plane = codes[layer]
            if layer < self.top_layers:
                top = plane[:, ::2, ::2]
                if not np.array_equal(expand(top, (H, W)), plane):
                    raise InputError(f"layer {layer} is a top layer: its codes must be equal on each 2×2 block")
                plane = top
            maps.append(np.ascontiguousarray(plane))
        return self.decode_maps(maps, (H, W))

    def encode_maps(self, latent: np.ndarray, layers: int | None = None) -> list[np.ndarray]:
        """The first ``layers`` code maps (default all) of ``latent`` ``[B, D, H, W]``."""
        if not isinstance(latent, np.ndarray) or latent.ndim != 4 or latent.shape[1] != self.dim:
            raise InputError(f"latent must be a [B, {self.dim}, H, W] array, got {getattr(latent, 'shape', latent)}")
        if not np.issubdtype(latent.dtype, np.floating) or not np.isfinite(latent).all():
            raise InputError(f"latent must hold finite floating-point values, got {latent.dtype}")
        k = self._check_layers(layers)
        t = self.top_layers
        top_codes = self._top.encode(self.fold(latent), min(k, t))  # type: ignore[attr-defined]
        codes = list(top_codes)
        if k > t:
            u = self.unfold(self._top.decode(top_codes), latent.shape[2:])  # type: ignore[attr-defined]
            codes += list(self._bottom.encode(latent.astype(np.float32) - u, k - t))  # type: ignore[attr-defined]
        return codes

    def decode_maps(self, codes: list[np.ndarray], size: tuple[int, int]) -> np.ndarray:
        """Latent ``[B, D, H, W]`` (``(H, W) = size``) of a prefix of code maps."""
        k = self._check_layers(len(codes))
        t = self.top_layers
        H, W = size
        for layer, c in enumerate(codes):
            want = self.grid(layer, H, W)
            if not isinstance(c, np.ndarray) or c.ndim != 3 or c.shape[1:] != want:
                raise InputError(f"code map {layer} must be [B, {want[0]}, {want[1]}], got {getattr(c, 'shape', c)}")
        u = self.unfold(self._top.decode(np.stack(codes[: min(k, t)])), size)  # type: ignore[attr-defined]
        if k <= t:
            return u
        return u + self._bottom.decode(np.stack(codes[t:]))  # type: ignore[attr-defined]

    def _check_layers(self, layers: int | None) -> int:
        k = self.layers if layers is None else layers
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.layers:
            raise LayersError(f"layers must be in 1..{self.layers}, got {layers}")
        return int(k)


__all__ = ["PARTS", "RESAMPLERS", "TopBottomCodebooks", "expand", "top_size"]
