"""Code search and code sums at inference time, one module per quantizer family, all in numpy.

Every family implements one interface (:class:`Quantizer`)::

    encode(latent [B, D, H, W], layers) -> codes [k, B, H, W]   (int64)
    decode(codes [k, B, H, W])          -> latent [B, D, H, W]   (float32)

================  =============================================  =======================================
family            inference class (``strata.quantize.*``)        ``codebooks.npz`` arrays
================  =============================================  =======================================
``rvq``           ``search.ResidualCodebooks``                   ``codebooks [L, K, D]``
``rsq``           the same (stochastic only in training)         ``codebooks [L, K, D]``
``hrvq``          ``tree.TreeCodebooks``                         ``root [K, D]``, ``children [L-1, K, K, D]``
``topbottom``     ``topbottom.TopBottomCodebooks``               ``top``, ``bottom``, 4 linear maps, ``resample``
``sq-topbottom``  the same (SQ-VAE-2 in training)                the same
================  =============================================  =======================================

:func:`load_quantizer` reads a model's ``codebooks.npz`` for the family its manifest entry names and
:func:`save_quantizer` writes one; both use plain numeric arrays (no pickles).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
from strata.errors import ModelIntegrityError
from strata.quantize.search import ResidualCodebooks
from strata.quantize.topbottom import PARTS, RESAMPLERS, TopBottomCodebooks
from strata.quantize.tree import TreeCodebooks

FAMILIES = ("rvq", "rsq", "hrvq", "topbottom", "sq-topbottom")


class Quantizer(Protocol):
    """What the codecs need from a family's inference side."""

    @property
    def layers(self) -> int: ...

    @property
    def dim(self) -> int: ...

    @property
    def top_layers(self) -> int:
        """The first layers that live on a grid two times coarser than the latent's (0 for one-scale families)."""
        ...

    def codebook_size(self, layer: int) -> int: ...

    def encode(self, latent: np.ndarray, layers: int | None = None) -> np.ndarray: ...

    def decode(self, codes: np.ndarray) -> np.ndarray: ...


def load_quantizer(path: Path, family: str) -> Quantizer:
    """The quantizer of ``family`` from its ``codebooks.npz`` (:class:`ModelIntegrityError` if it does not fit)."""
    if family not in FAMILIES:
        raise ModelIntegrityError(f"unknown quantizer family {family!r}; known: {', '.join(FAMILIES)}")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: np.asarray(z[k]) for k in z.files}
    except (OSError, ValueError) as e:
        raise ModelIntegrityError(f"cannot read codebooks {path}: {e}") from None

    def get(name: str) -> np.ndarray:
        if name not in arrays:
            raise ModelIntegrityError(f"codebooks {path} of a {family} model lack the array {name!r}")
        return arrays[name].astype(np.float32) if arrays[name].dtype.kind == "f" else arrays[name]

    if family in ("rvq", "rsq"):
        return ResidualCodebooks(get("codebooks"))
    if family == "hrvq":
        return TreeCodebooks(get("root"), get("children"))
    resample = get("resample")
    if resample.shape != (1,) or resample.dtype.kind not in "iu" or not 0 <= int(resample[0]) < len(RESAMPLERS):
        raise ModelIntegrityError(f"codebooks {path}: 'resample' must be one integer in 0..{len(RESAMPLERS) - 1}")
    return TopBottomCodebooks({k: get(k) for k in PARTS}, RESAMPLERS[int(resample[0])])


def save_quantizer(path: Path, quantizer: Quantizer) -> None:
    """Write ``quantizer`` as the ``codebooks.npz`` that :func:`load_quantizer` reads."""
    if isinstance(quantizer, ResidualCodebooks):
        np.savez(path, codebooks=quantizer.codebooks)
    elif isinstance(quantizer, TreeCodebooks):
        np.savez(path, root=quantizer.root, children=quantizer.children)
    elif isinstance(quantizer, TopBottomCodebooks):
        np.savez(path, resample=np.array([RESAMPLERS.index(quantizer.resample)], dtype=np.int64), **quantizer.parts)
    else:
        raise TypeError(f"not a quantizer: {type(quantizer).__name__}")


__all__ = ["FAMILIES", "Quantizer", "load_quantizer", "save_quantizer"]
