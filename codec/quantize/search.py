"""Residual VQ at inference time, in numpy (no torch on the serving path).

Shares its codebooks ``[L, K, D]`` with :class:`strata.train.quantize.rvq.ResidualVQ`
(exported by ``strata.export.image``) and implements the common quantizer interface::

    encode(latent [B, D, H, W], layers) -> codes [k, B, H, W]   (int64)
    decode(codes [k, B, H, W])          -> latent [B, D, H, W]   (float32)

Layer ``l`` picks the code nearest to the residual left by layers ``< l``;
decoding sums the first ``k`` code vectors, so any prefix of layers decodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from strata.errors import InputError, LayersError, ModelIntegrityError

SEARCH_BLOCK = 16384  # latent vectors searched at a time (a 1-MP image has 16 384 at ×8)


@dataclass(frozen=True)
class ResidualCodebooks:
    """Residual VQ codebooks ``[L, K, D]`` (float32)."""

    codebooks: np.ndarray

    def __post_init__(self) -> None:
        cb = self.codebooks
        if cb.ndim != 3 or cb.dtype != np.float32 or not np.isfinite(cb).all():
            raise ModelIntegrityError(f"codebooks must be finite float32 [L, K, D], got {cb.dtype} {cb.shape}")
        object.__setattr__(self, "_norms", (cb * cb).sum(-1))  # [L, K], cached |e|²

    @property
    def layers(self) -> int:
        return int(self.codebooks.shape[0])

    @property
    def top_layers(self) -> int:
        """Layers on a grid two times coarser (none: every layer is on the latent grid)."""
        return 0

    @property
    def dim(self) -> int:
        return int(self.codebooks.shape[2])

    def codebook_size(self, layer: int) -> int:
        return int(self.codebooks.shape[1])

    def _check_layers(self, layers: int | None, available: int) -> int:
        k = available if layers is None else layers
        if not isinstance(k, (int, np.integer)) or not 1 <= k <= available:
            raise LayersError(f"layers must be in 1..{available}, got {layers}")
        return int(k)

    def encode(self, latent: np.ndarray, layers: int | None = None) -> np.ndarray:
        """Codes ``[k, B, H, W]`` of ``latent`` ``[B, D, H, W]`` for the first ``layers`` layers (default all)."""
        if latent.ndim != 4 or latent.shape[1] != self.dim:
            raise InputError(f"latent must be [B, {self.dim}, H, W], got {latent.shape}")
        k = self._check_layers(layers, self.layers)
        B, D, H, W = latent.shape
        # A copy: the search subtracts in place, and a channels-last latent would give a view of the caller's array.
        residual = np.array(latent.transpose(0, 2, 3, 1).reshape(-1, D), dtype=np.float32, order="C", copy=True)
        codes = np.empty((k, B * H * W), dtype=np.int64)
        norms = self._norms  # type: ignore[attr-defined]
        # In blocks of SEARCH_BLOCK vectors: the distance matrix of a block is SEARCH_BLOCK × K floats, where
        # one of the whole latent of a 4096² image would be 268 MB per layer.
        for lo in range(0, residual.shape[0], SEARCH_BLOCK):
            r = residual[lo : lo + SEARCH_BLOCK]
            for layer in range(k):
                book = self.codebooks[layer]
                idx = (norms[layer][None, :] - 2.0 * (r @ book.T)).argmin(1)
                codes[layer, lo : lo + SEARCH_BLOCK] = idx
                r -= book[idx]
        return codes.reshape(k, B, H, W)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Latent ``[B, D, H, W]``: the sum of the code vectors of ``codes`` ``[k, B, H, W]``."""
        if codes.ndim != 4:
            raise InputError(f"codes must be [k, B, H, W], got shape {codes.shape}")
        k = self._check_layers(codes.shape[0], self.layers)
        K = self.codebooks.shape[1]
        if codes.size and (codes.min() < 0 or codes.max() >= K):
            raise InputError(f"codes must be in 0..{K - 1}")
        total = self.codebooks[0][codes[0]]
        for layer in range(1, k):
            total = total + self.codebooks[layer][codes[layer]]
        return np.ascontiguousarray(total.transpose(0, 3, 1, 2), dtype=np.float32)
