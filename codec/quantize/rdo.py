"""Rate–distortion optimised code selection (entropy-constrained residual VQ), encoder side only.

The nearest-code search picks, at each position and layer, the code ``c`` minimising the squared error
``‖r − e_c‖²`` of the residual ``r``. This search adds the code's price under the entropy prior the
stream is coded with::

    c* = argmin_c  ‖r − e_c‖² + λ · (−log₂ p(c | context))

so where two codes reconstruct almost equally well it takes the cheaper one. The context is what the
decoder sees (:mod:`strata.entropy.prior`): nothing, the parent code (the layer below, already chosen),
or the code one row up in the same layer (rows are searched top to bottom, so it is known). The
choice is greedy, layer by layer and row by row, like the nearest-code search; the decoder is
unchanged, and ``λ = 0`` gives exactly the nearest-code search's codes.

λ is in the latent's squared-error units per bit, so it belongs to a model: a model's manifest
entry records the value chosen on the validation images (``extra.rdo_lambda``; ``bench/rdo_lambda.py``).
This search serves the one-scale residual families (``rvq``, ``rsq``: :class:`ResidualCodebooks`).
"""

from __future__ import annotations

import numpy as np
from strata.entropy.prior import CodePrior
from strata.errors import InputError
from strata.quantize.search import SEARCH_BLOCK, ResidualCodebooks


def code_prices(prior: CodePrior, layer: int) -> np.ndarray:
    """``−log₂ p(c | context)`` of layer ``layer``: float32 ``[C, K]``, from the probabilities the coder uses
    (cached by the layer's prior: :meth:`strata.entropy.prior.LayerPrior.code_bits`)."""
    return prior.layers[layer].code_bits()


def rd_encode(codebooks: ResidualCodebooks, prior: CodePrior, latent: np.ndarray, layers: int | None,
              lam: float) -> np.ndarray:
    """Codes ``[k, 1, H, W]`` of one latent ``[1, D, H, W]`` chosen by distortion + ``lam`` × bits.

    ``lam = 0`` returns :meth:`ResidualCodebooks.encode`'s codes. Raises :class:`InputError` for a
    negative or non-finite ``lam`` or a batch of more than one latent.
    """
    if not np.isfinite(lam) or lam < 0:
        raise InputError(f"the rate–distortion λ must be a finite number ≥ 0, got {lam}")
    if lam == 0:
        return codebooks.encode(latent, layers)
    if latent.ndim != 4 or latent.shape[0] != 1 or latent.shape[1] != codebooks.dim:
        raise InputError(f"latent must be [1, {codebooks.dim}, H, W], got {latent.shape}")
    k = codebooks._check_layers(layers, codebooks.layers)
    if prior.num_layers < k:
        raise InputError(f"the prior models {prior.num_layers} layers, {k} were asked for")
    _, D, H, W = latent.shape
    residual = np.array(latent[0].transpose(1, 2, 0).reshape(-1, D), dtype=np.float32, order="C", copy=True)
    codes = np.empty((k, H * W), dtype=np.int64)
    norms = codebooks._norms  # type: ignore[attr-defined]
    lam32 = np.float32(lam)
    for layer in range(k):
        book, kind = codebooks.codebooks[layer], prior.layers[layer].kind
        price = lam32 * code_prices(prior, layer)  # [C, K]
        if kind == "above":  # the context of a row is the row above it: rows in order
            ctx = np.full(W, price.shape[0] - 1, dtype=np.int64)  # row 0: the "no neighbour" context
            for row in range(H):
                sl = slice(row * W, (row + 1) * W)
                cost = norms[layer][None, :] - 2.0 * (residual[sl] @ book.T) + price[ctx]
                ctx = cost.argmin(1)
                codes[layer, sl] = ctx
        else:
            for lo in range(0, H * W, SEARCH_BLOCK):
                sl = slice(lo, lo + SEARCH_BLOCK)
                extra = price[0][None, :] if kind == "none" else price[codes[layer - 1, sl]]
                codes[layer, sl] = (norms[layer][None, :] - 2.0 * (residual[sl] @ book.T) + extra).argmin(1)
        residual -= book[codes[layer]]
    return codes.reshape(k, 1, H, W)


__all__ = ["code_prices", "rd_encode"]
