"""The quantizer families behind one training interface.

=========  ==========================================  ====================================
family     training module                             numpy inference
=========  ==========================================  ====================================
``rvq``    :class:`~strata.train.quantize.rvq.ResidualVQ`      :class:`~strata.quantize.search.ResidualCodebooks`
``hrvq``   :class:`~strata.train.quantize.hrvq.HierarchicalResidualVQ`  :class:`~strata.quantize.tree.TreeCodebooks`
``rsq``    :class:`~strata.train.quantize.rsq.ResidualSQ`      :class:`~strata.quantize.search.ResidualCodebooks`
=========  ==========================================  ====================================

Every training module has ``forward(z, n_layers)`` returning ``quantized``, ``codes`` and
its loss term, ``layers``, ``codebook_size(layer)``, ``init_kmeans(latents)`` and an
``initialised`` buffer. The helpers here hide what differs: how the loss term joins the
reconstruction MSE (:func:`quantizer_loss`), how codes decode in torch (:func:`decode_codes`)
and what the numpy side is built from (:func:`inference_codebooks`).
"""

from __future__ import annotations

import torch
from strata.quantize.search import ResidualCodebooks
from strata.quantize.tree import TreeCodebooks
from strata.train.quantize.hrvq import HierarchicalResidualVQ, HRVQConfig
from strata.train.quantize.rsq import ResidualSQ, RSQConfig, RSQOutput
from strata.train.quantize.rvq import ResidualVQ, RVQConfig
from torch import nn

FAMILIES = ("rvq", "hrvq", "rsq")
QuantizerConfig = RVQConfig | HRVQConfig | RSQConfig


def family_of(cfg: QuantizerConfig) -> str:
    for name, kind in (("rvq", RVQConfig), ("hrvq", HRVQConfig), ("rsq", RSQConfig)):
        if isinstance(cfg, kind):
            return name
    raise TypeError(f"not a quantizer config: {type(cfg).__name__}")


def build_quantizer(cfg: QuantizerConfig) -> nn.Module:
    """The training module of ``cfg``'s family."""
    return {"rvq": ResidualVQ, "hrvq": HierarchicalResidualVQ, "rsq": ResidualSQ}[family_of(cfg)](cfg)


def quantizer_loss(out, mse: torch.Tensor, values_per_position: float) -> torch.Tensor:
    """The term a trainer adds to its reconstruction ``mse`` for the quantizer output ``out``.

    RVQ and HR-VQ return their commitment/codebook terms ready to add. RSQ returns the latent
    nats of its ELBO; with the decoder variance at its maximum-likelihood value σ² = MSE, the
    ELBO divided by ``D_x / (2σ²)`` is ``mse + 2σ²/ρ · latent_nats`` (``ρ``: data values
    the target has per latent position, e.g. 3·8·8 = 192 for the image codec).
    """
    if isinstance(out, RSQOutput):
        return 2.0 * mse.detach().clamp(min=1e-10) / values_per_position * out.latent_nats
    return out.commit_loss


def decode_codes(quantizer: nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """Latent ``[B, D, H, W]`` of ``codes`` ``[k, B, H, W]`` in torch (RVQ has no ``decode``: sum of its codes)."""
    if isinstance(quantizer, ResidualVQ):
        return sum(quantizer.embed[layer][codes[layer]] for layer in range(len(codes))).permute(0, 3, 1, 2)
    return quantizer.decode(codes)


def inference_codebooks(quantizer: nn.Module) -> ResidualCodebooks | TreeCodebooks:
    """The numpy search of a trained quantizer, with the same ``encode``/``decode`` interface."""
    if isinstance(quantizer, HierarchicalResidualVQ):
        root, children = quantizer.codebooks()
        return TreeCodebooks(root.cpu().numpy(), children.cpu().numpy())
    return ResidualCodebooks(quantizer.codebooks().cpu().numpy())


__all__ = ["FAMILIES", "QuantizerConfig", "build_quantizer", "decode_codes", "family_of", "inference_codebooks",
           "quantizer_loss"]
