"""The quantizer families behind one training interface.

=========  ==========================================  ====================================
family     training module                             numpy inference
=========  ==========================================  ====================================
``rvq``    :class:`~strata.train.quantize.rvq.ResidualVQ`      :class:`~strata.quantize.search.ResidualCodebooks`
``hrvq``   :class:`~strata.train.quantize.hrvq.HierarchicalResidualVQ`  :class:`~strata.quantize.tree.TreeCodebooks`
``rsq``    :class:`~strata.train.quantize.rsq.ResidualSQ`      :class:`~strata.quantize.search.ResidualCodebooks`
``topbottom``  ``topbottom.TopBottomVQ`` (this package)       ``strata.quantize.topbottom.TopBottomCodebooks``
``sq-topbottom``  the same, ``stochastic=True`` (SQ-VAE-2)  the same
=========  ==========================================  ====================================

Every training module has ``forward(z, n_layers)`` returning ``quantized``, ``codes`` (a
``[k, B, H, W]`` tensor, or for the two-scale family a list of ``k`` maps of two sizes) and
its loss term, ``layers``, ``codebook_size(layer)``, ``init_kmeans(latents)`` and an
``initialised`` buffer. The helpers here hide what differs: how the loss term joins the
reconstruction MSE (:func:`quantizer_loss`), how codes decode in torch (:func:`decode_codes`)
and what the numpy side is built from (:func:`inference_codebooks`).
"""

from __future__ import annotations

import torch
from strata.quantize.search import ResidualCodebooks
from strata.quantize.topbottom import TopBottomCodebooks
from strata.quantize.tree import TreeCodebooks
from strata.train.quantize.hrvq import HierarchicalResidualVQ, HRVQConfig
from strata.train.quantize.rsq import ResidualSQ, RSQConfig, RSQOutput
from strata.train.quantize.rvq import ResidualVQ, RVQConfig
from strata.train.quantize.topbottom import TopBottomConfig, TopBottomOutput, TopBottomVQ
from torch import nn

FAMILIES = ("rvq", "hrvq", "rsq", "topbottom", "sq-topbottom")
QuantizerConfig = RVQConfig | HRVQConfig | RSQConfig | TopBottomConfig


def family_of(cfg: QuantizerConfig) -> str:
    if isinstance(cfg, TopBottomConfig):
        return "sq-topbottom" if cfg.stochastic else "topbottom"
    for name, kind in (("rvq", RVQConfig), ("hrvq", HRVQConfig), ("rsq", RSQConfig)):
        if isinstance(cfg, kind):
            return name
    raise TypeError(f"not a quantizer config: {type(cfg).__name__}")


def build_quantizer(cfg: QuantizerConfig) -> nn.Module:
    """The training module of ``cfg``'s family."""
    if isinstance(cfg, TopBottomConfig):
        return TopBottomVQ(cfg)
    return {"rvq": ResidualVQ, "hrvq": HierarchicalResidualVQ, "rsq": ResidualSQ}[family_of(cfg)](cfg)


def quantizer_loss(out, mse: torch.Tensor, values_per_position: float) -> torch.Tensor:
    """The term a trainer adds to its reconstruction ``mse`` for the quantizer output ``out``.

    RVQ and HR-VQ return their commitment/codebook terms ready to add. RSQ returns the latent
    nats of its ELBO; with the decoder variance at its maximum-likelihood value σ² = MSE, the
    ELBO divided by ``D_x / (2σ²)`` is ``mse + 2σ²/ρ · latent_nats`` (``ρ``: data values
    the target has per latent position, e.g. 3·8·8 = 192 for the image codec).
    """
    if isinstance(out, RSQOutput) or (isinstance(out, TopBottomOutput) and out.latent_nats is not None):
        return 2.0 * mse.detach().clamp(min=1e-10) / values_per_position * out.latent_nats
    return out.commit_loss


def decode_codes(quantizer: nn.Module, codes, size: tuple[int, int] | None = None) -> torch.Tensor:
    """Latent ``[B, D, H, W]`` of a prefix of ``k`` code maps in torch (RVQ has no ``decode``: sum of its codes).

    ``codes`` is a ``[k, B, H, W]`` tensor or a list of ``k`` maps; ``size`` is the latent's (H, W),
    which only a top-only prefix of the two-scale family needs.
    """
    if isinstance(quantizer, TopBottomVQ):
        return quantizer.decode(list(codes), size)
    if not isinstance(codes, torch.Tensor):
        codes = torch.stack(list(codes))
    if isinstance(quantizer, ResidualVQ):
        return sum(quantizer.embed[layer][codes[layer]] for layer in range(len(codes))).permute(0, 3, 1, 2)
    return quantizer.decode(codes)


def inference_codebooks(quantizer: nn.Module) -> ResidualCodebooks | TreeCodebooks | TopBottomCodebooks:
    """The numpy search of a trained quantizer, with the same ``encode``/``decode`` interface."""
    if isinstance(quantizer, TopBottomVQ):
        cfg = quantizer.cfg
        return TopBottomCodebooks({k: v.cpu().numpy() for k, v in quantizer.codebooks().items()}, cfg.resample)
    if isinstance(quantizer, HierarchicalResidualVQ):
        root, children = quantizer.codebooks()
        return TreeCodebooks(root.cpu().numpy(), children.cpu().numpy())
    return ResidualCodebooks(quantizer.codebooks().cpu().numpy())


__all__ = ["FAMILIES", "QuantizerConfig", "build_quantizer", "decode_codes", "family_of", "inference_codebooks",
           "quantizer_loss"]
