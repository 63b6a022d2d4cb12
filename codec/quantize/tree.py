"""HR-VQ codebook-tree search at inference time, in numpy (no torch on the serving path).

Shares its codebooks with :class:`strata.train.quantize.hrvq.HierarchicalResidualVQ`: a root
codebook ``[K, D]`` and child codebooks ``[L-1, K, K, D]``, where ``children[l-1][p]``
is the codebook of layer ``l`` (0-based) under parent code ``p`` of layer ``l-1``.
Implements the common quantizer interface::

    encode(latent [B, D, H, W], layers) -> codes [k, B, H, W]   (int64)
    decode(codes [k, B, H, W])          -> latent [B, D, H, W]   (float32)

Layer 0 picks the nearest root code; layer ``l`` picks the code nearest to the residual
in the codebook selected by the position's layer ``l-1`` code, so a position costs
``L·K`` distances. The search groups positions by parent code and runs one matrix
product per parent that occurs (no per-position Python loop). Decoding sums the
first ``k`` code vectors, so any prefix of layers decodes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from strata.errors import InputError, LayersError, ModelIntegrityError


@dataclass(frozen=True)
class TreeCodebooks:
    """HR-VQ codebooks: ``root`` ``[K, D]`` and ``children`` ``[L-1, K, K, D]`` (float32)."""

    root: np.ndarray
    children: np.ndarray

    def __post_init__(self) -> None:
        root, children = self.root, self.children
        for name, arr, ndim in (("root", root, 2), ("children", children, 4)):
            if not isinstance(arr, np.ndarray) or arr.ndim != ndim or arr.dtype != np.float32:
                raise ModelIntegrityError(f"{name} must be a float32 array with {ndim} axes, got "
                                          f"{getattr(arr, 'dtype', type(arr))} {getattr(arr, 'shape', '')}")
            if not np.isfinite(arr).all():
                raise ModelIntegrityError(f"{name} holds non-finite values")
        K, D = root.shape
        if K < 1 or D < 1 or children.shape[1:] != (K, K, D):
            raise ModelIntegrityError(f"children must be [L-1, {K}, {K}, {D}] for a root of {root.shape}, "
                                      f"got {children.shape}")
        object.__setattr__(self, "_root_norms", (root * root).sum(-1))  # [K]
        object.__setattr__(self, "_child_norms", (children * children).sum(-1))  # [L-1, K, K]

    @property
    def layers(self) -> int:
        return 1 + int(self.children.shape[0])

    @property
    def top_layers(self) -> int:
        """Layers on a grid two times coarser (none: every layer is on the latent grid)."""
        return 0

    @property
    def dim(self) -> int:
        return int(self.root.shape[1])

    def codebook_size(self, layer: int) -> int:
        return int(self.root.shape[0])

    def parameter_count(self) -> int:
        return int(self.root.size + self.children.size)

    def _check_layers(self, layers: int | None, available: int) -> int:
        k = available if layers is None else layers
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= available:
            raise LayersError(f"layers must be in 1..{available}, got {layers}")
        return int(k)

    def encode(self, latent: np.ndarray, layers: int | None = None) -> np.ndarray:
        """Codes ``[k, B, H, W]`` of ``latent`` ``[B, D, H, W]`` for the first ``layers`` layers (default all)."""
        if not isinstance(latent, np.ndarray) or latent.ndim != 4 or latent.shape[1] != self.dim:
            raise InputError(f"latent must be a [B, {self.dim}, H, W] array, got {getattr(latent, 'shape', latent)}")
        if not np.issubdtype(latent.dtype, np.floating) or not np.isfinite(latent).all():
            raise InputError(f"latent must hold finite floating-point values, got {latent.dtype}")
        k = self._check_layers(layers, self.layers)
        B, D, H, W = latent.shape
        # always a copy: for a channels-last latent the reshape is a view, and the search subtracts in place
        residual = np.array(latent.transpose(0, 2, 3, 1).reshape(-1, D), dtype=np.float32, order="C", copy=True)
        N, K = len(residual), self.root.shape[0]
        codes = np.empty((k, N), dtype=np.int64)
        idx = (self._root_norms[None, :] - 2.0 * (residual @ self.root.T)).argmin(1)  # type: ignore[attr-defined]
        codes[0] = idx
        residual -= self.root[idx]
        for layer in range(1, k):
            books, norms = self.children[layer - 1], self._child_norms[layer - 1]  # type: ignore[attr-defined]
            parent = codes[layer - 1]
            order = np.argsort(parent, kind="stable")
            bounds = np.concatenate([[0], np.cumsum(np.bincount(parent, minlength=K))])
            child = np.empty(N, dtype=np.int64)
            for p in np.flatnonzero(bounds[1:] > bounds[:-1]):  # one product per parent code present
                sel = order[bounds[p] : bounds[p + 1]]
                child[sel] = (norms[p][None, :] - 2.0 * (residual[sel] @ books[p].T)).argmin(1)
            codes[layer] = child
            residual -= books[parent, child]
        return codes.reshape(k, B, H, W)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Latent ``[B, D, H, W]``: the sum of the code vectors of ``codes`` ``[k, B, H, W]``."""
        if not isinstance(codes, np.ndarray) or codes.ndim != 4:
            raise InputError(f"codes must be a [k, B, H, W] array, got {getattr(codes, 'shape', codes)}")
        if not np.issubdtype(codes.dtype, np.integer):
            raise InputError(f"codes must be integers, got {codes.dtype}")
        k = self._check_layers(codes.shape[0], self.layers)
        K = self.root.shape[0]
        if codes.size and (codes.min() < 0 or codes.max() >= K):
            raise InputError(f"codes must be in 0..{K - 1}")
        total = self.root[codes[0]]
        for layer in range(1, k):
            total = total + self.children[layer - 1][codes[layer - 1], codes[layer]]
        return np.ascontiguousarray(total.transpose(0, 3, 1, 2), dtype=np.float32)


__all__ = ["TreeCodebooks"]
