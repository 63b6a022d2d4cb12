"""Residual stochastic quantizer (RSQ-VAE, HQ-VAE §4.3) for training.

Layer ``l`` sees the residual ``r_l = z − Σ_{l'<l} Z_{l'}`` and quantizes it
*stochastically*: the code posterior is ``P̂_l(b_k | r_l) ∝ exp(−‖r_l − b_k‖² / (2 s_l²))``
with a learned variance ``s_l²`` per layer, and training draws ``Z_l`` from its
Gumbel-softmax relaxation (temperature ``τ``), so the decoder sees a differentiable
mixture of code vectors and every code receives gradient. At inference the
quantizer takes the nearest code (the limit ``τ → 0``, ``s² → 0``), which is the
ordinary residual nearest-code search: :class:`strata.quantize.search.ResidualCodebooks`
serves the exported codebooks unchanged.

Objective: the ELBO of HQ-VAE eq. 14 (constants dropped), per image::

    D_x/2 · log σ² + ‖x − f(Z)‖² / (2σ²) + ‖z − Σ_l Z_l‖² / (2 Σ_l s_l²) − Σ_l H(P̂_l(· | r_l))

summed over latent positions, with ``z`` used for the dequantized ``Z̃`` as the paper
does. The decoder variance σ² takes its maximum-likelihood value, the batch MSE
(HQ-VAE App. F), so dividing the ELBO by ``D_x / (2σ²)`` gives the trainer's
``MSE + 2σ²/ρ · (mean latent nats per position)``, ``ρ`` being data values per
latent position: :func:`strata.train.quantize.families.quantizer_loss` does that scaling.
With quantizer dropout the sums run over the active layers. There is no commitment
β, no EMA, no stop-gradient and no code reset.

Temperature: ``τ = max(c_τ, exp(−r·t))`` with ``t`` the training step (HQ-VAE App. E,
``c_τ = 0``, ``r = 10⁻⁵``). The module counts its own training steps in the buffer
``step`` (saved in checkpoints, so a resumed run continues the schedule).

``s_l² = exp(log_s2[l])``: positive by construction for any parameter value, and
Adam's steps are relative changes of the variance, which moves over decades during
self-annealing. :meth:`init_kmeans` sets the codebooks by residual k-means (as for RVQ)
and each ``s_l²`` to the per-dimension mean squared error left after layer ``l``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from strata.train.quantize.rvq import ResidualVQ, RVQConfig, _nearest
from torch import nn


@dataclass(frozen=True)
class RSQConfig:
    """Hyper-parameters of the residual stochastic quantizer."""

    layers: int = 8  # L
    codebook_size: int = 256  # K
    dim: int = 32  # D (= latent channels)
    temperature_decay: float = 1e-5  # r in τ = max(c_τ, exp(−r·t))
    temperature_min: float = 0.0  # c_τ
    s2_init: float = 0.1  # s² of every layer before k-means initialisation


@dataclass
class RSQOutput:
    """Result of :meth:`ResidualSQ.forward`."""

    quantized: torch.Tensor  # [B, D, H, W]: relaxed sample in training, nearest codes in eval
    codes: torch.Tensor  # [k, B, H, W] int64: the sampled (training) or nearest (eval) codes
    latent_nats: torch.Tensor  # scalar: the latent terms of eq. 14 per latent position (0 in eval)
    entropy: torch.Tensor  # [k]: mean entropy H(P̂_l) per position, in nats (0 in eval)


class ResidualSQ(nn.Module):
    """``L`` residual layers of ``K`` codes with stochastic quantization and learned variances ``s_l²``."""

    def __init__(self, cfg: RSQConfig) -> None:
        super().__init__()
        if cfg.s2_init <= 0 or cfg.temperature_decay < 0 or cfg.temperature_min < 0:
            raise ValueError(f"s2_init must be positive and the temperature settings non-negative, got {cfg}")
        self.cfg = cfg
        L, K, D = cfg.layers, cfg.codebook_size, cfg.dim
        self.embed = nn.Parameter(torch.randn(L, K, D) * 0.1)
        self.log_s2 = nn.Parameter(torch.full((L,), math.log(cfg.s2_init)))
        self.register_buffer("step", torch.tensor(0, dtype=torch.long))
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def layers(self) -> int:
        return self.cfg.layers

    def codebook_size(self, layer: int) -> int:
        return self.cfg.codebook_size

    @property
    def s2(self) -> torch.Tensor:
        """The variances ``s_l²`` [L] (always positive)."""
        return self.log_s2.exp()

    def temperature(self) -> float:
        """The Gumbel-softmax temperature at the current training step."""
        return max(self.cfg.temperature_min, math.exp(-self.cfg.temperature_decay * int(self.step)))

    def codebooks(self) -> torch.Tensor:
        """The codebooks ``[L, K, D]`` (a copy, float32), for :class:`~strata.quantize.search.ResidualCodebooks`."""
        return self.embed.detach().float().clone()

    @torch.no_grad()
    def keep_layers(self, n: int) -> None:
        """Drop every layer after the first ``n``; raises ``ValueError`` unless ``1 ≤ n ≤ layers``."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.cfg.layers:
            raise ValueError(f"layers to keep must be an integer in 1..{self.cfg.layers}, got {n!r}")
        self.cfg = replace(self.cfg, layers=n)
        self.embed = nn.Parameter(self.embed[:n].clone())
        self.log_s2 = nn.Parameter(self.log_s2[:n].clone())

    @torch.no_grad()
    def init_kmeans(self, latents: torch.Tensor, iters: int = 15, seed: int = 0) -> None:
        """Codebooks by residual k-means on ``latents`` [N, D] (as RVQ); ``s_l²``: the error left after layer ``l``."""
        cfg = self.cfg
        helper = ResidualVQ(RVQConfig(layers=cfg.layers, codebook_size=cfg.codebook_size, dim=cfg.dim))
        helper.init_kmeans(latents.float().cpu(), iters=iters, seed=seed)
        self.embed.copy_(helper.embed)
        residual = latents.float().cpu()
        for layer in range(cfg.layers):
            residual = residual - helper.embed[layer][_nearest(residual, helper.embed[layer])]
            self.log_s2[layer] = math.log(max(float((residual**2).mean()), 1e-8))
        self.initialised.fill_(True)

    def forward(self, z: torch.Tensor, n_layers: int) -> RSQOutput:
        """Quantize ``z`` [B, D, H, W] with the first ``n_layers`` layers (stochastic in training mode)."""
        if not 1 <= n_layers <= self.cfg.layers:
            raise ValueError(f"n_layers must be in 1..{self.cfg.layers}, got {n_layers}")
        B, D, H, W = z.shape
        with torch.autocast(z.device.type, enabled=False):
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, D)
            if self.training:
                total, codes, nats, entropy = self._stochastic(flat, n_layers)
                self.step += 1
            else:
                total, codes = self._nearest_codes(flat, n_layers)
                nats, entropy = flat.new_zeros(()), flat.new_zeros(n_layers)
            quantized = total.view(B, H, W, D).permute(0, 3, 1, 2)
        return RSQOutput(quantized, torch.stack([c.view(B, H, W) for c in codes]), nats, entropy)

    def _stochastic(self, flat: torch.Tensor, n_layers: int):
        tau = max(self.temperature(), 1e-6)
        residual, total = flat, torch.zeros_like(flat)
        codes, entropies = [], []
        for layer in range(n_layers):
            book = self.embed[layer]
            dist = (residual * residual).sum(1, keepdim=True) - 2.0 * residual @ book.t() + (book * book).sum(1)[None]
            logits = -dist / (2.0 * self.s2[layer])
            log_p = F.log_softmax(logits, dim=1)
            entropies.append(-(log_p.exp() * log_p).sum(1).mean())
            weights = F.gumbel_softmax(logits, tau=tau, hard=False, dim=1)
            sample = weights @ book
            codes.append(weights.argmax(1))
            residual = residual - sample
            total = total + sample
        entropy = torch.stack(entropies)
        error = ((flat - total) ** 2).sum(1).mean()
        nats = error / (2.0 * self.s2[:n_layers].sum()) - entropy.sum()
        return total, codes, nats, entropy

    def _nearest_codes(self, flat: torch.Tensor, n_layers: int):
        residual, total, codes = flat.detach(), torch.zeros_like(flat), []
        for layer in range(n_layers):
            book = self.embed[layer]
            idx = _nearest(residual, book.detach())
            q = book[idx]
            residual = residual - q.detach()
            total = total + q
            codes.append(idx)
        return total, codes

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, D, H, W]``: the sum of the code vectors of ``codes`` ``[k, B, H, W]``."""
        total = self.embed[0][codes[0]]
        for layer in range(1, len(codes)):
            total = total + self.embed[layer][codes[layer]]
        return total.permute(0, 3, 1, 2)


__all__ = ["RSQConfig", "RSQOutput", "ResidualSQ"]
