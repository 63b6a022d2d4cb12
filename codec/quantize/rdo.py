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
It may be scaled per layer (``extra.rdo_lambda_scales``): the slope of a rate–distortion curve falls as
the rate grows, so the upper layers, which refine an already small residual, trade less distortion for a
bit than the first ones (:func:`energy_scales`).
This search serves the one-scale residual families (``rvq``, ``rsq``: :class:`ResidualCodebooks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from strata.entropy.prior import CodePrior
from strata.errors import InputError
from strata.quantize.search import SEARCH_BLOCK, ResidualCodebooks


def code_prices(prior: CodePrior, layer: int) -> np.ndarray:
    """``−log₂ p(c | context)`` of layer ``layer``: float32 ``[C, K]``, from the probabilities the coder uses
    (cached by the layer's prior: :meth:`strata.entropy.prior.LayerPrior.code_bits`)."""
    return prior.layers[layer].code_bits()


def check_scales(scales: Sequence[float] | None, layers: int) -> tuple[float, ...] | None:
    """``scales`` as a tuple of ``layers`` finite numbers ≥ 0, or ``None`` (every layer at λ); :class:`InputError`
    otherwise."""
    if scales is None:
        return None
    try:
        out = tuple(float(v) for v in scales)
    except (TypeError, ValueError):
        raise InputError(f"per-layer λ scales must be numbers, got {scales!r}") from None
    if len(out) != layers or not all(np.isfinite(v) and v >= 0 for v in out):
        raise InputError(f"per-layer λ scales must be {layers} finite numbers ≥ 0, got {scales!r}")
    return out


def energy_scales(residual_energy: Sequence[float]) -> tuple[float, ...]:
    """Per-layer λ scales from the mean squared residual left after each layer (``residual_energy[j]``: after
    ``j + 1`` layers): layer ``l ≥ 2`` gets ``e_{l-1} / e_1``, the residual it refines relative to the one the
    second layer refines, and the first layer gets 1 (its input is the whole latent, not a residual)."""
    e = [float(v) for v in residual_energy]
    if not e or not all(np.isfinite(v) and v > 0 for v in e):
        raise ValueError(f"residual energies must be positive, got {residual_energy!r}")
    return (1.0, *(e[j - 1] / e[0] for j in range(1, len(e))))


def rd_encode(codebooks: ResidualCodebooks, prior: CodePrior, latent: np.ndarray, layers: int | None,
              lam: float, scales: Sequence[float] | None = None) -> np.ndarray:
    """Codes ``[k, 1, H, W]`` of one latent ``[1, D, H, W]`` chosen by distortion + λ × bits, with
    ``λ = lam × scales[layer]`` (``scales``: one factor per layer of the codebooks; default 1).

    ``lam = 0`` returns :meth:`ResidualCodebooks.encode`'s codes. Raises :class:`InputError` for a
    negative or non-finite ``lam``, malformed ``scales`` or a batch of more than one latent.
    """
    if not np.isfinite(lam) or lam < 0:
        raise InputError(f"the rate–distortion λ must be a finite number ≥ 0, got {lam}")
    factors = check_scales(scales, codebooks.layers) or (1.0,) * codebooks.layers
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
    for layer in range(k):
        book, kind = codebooks.codebooks[layer], prior.layers[layer].kind
        price = np.float32(lam * factors[layer]) * code_prices(prior, layer)  # [C, K]
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


__all__ = ["check_scales", "code_prices", "energy_scales", "rd_encode"]
