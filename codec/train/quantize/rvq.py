"""Residual vector quantizer (RQ-VAE / SoundStream) for training.

Layer ``l`` quantizes the residual left by layers ``< l`` with its own codebook of
``K`` vectors; the decoded latent is the sum of the first ``k`` code vectors, so
any prefix of layers decodes.

Training follows the recipe of docs/design.md §2 (quantizer): k-means initialisation
(:meth:`ResidualVQ.init_kmeans`), EMA codebook updates, dead-code reset from the
current batch, a commitment loss (β = 0.25) on every prefix, and *quantizer
dropout*: the caller passes a random number of active layers per batch.

Inference lives in :mod:`strata.quantize.search` (numpy, no torch); both sides
use the same codebooks, exported with :meth:`ResidualVQ.codebooks`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class RVQConfig:
    """Hyper-parameters of the residual quantizer."""

    layers: int = 8  # L: number of residual layers
    codebook_size: int = 256  # K: codes per layer
    dim: int = 32  # D: code vector dimension (= latent channels)
    decay: float = 0.99  # EMA decay of the codebook statistics
    beta: float = 0.25  # commitment loss weight
    dead_threshold: float = 1.0  # EMA cluster size below which a code is reset


@dataclass
class RVQOutput:
    """Result of :meth:`ResidualVQ.forward`."""

    quantized: torch.Tensor  # [B, D, H, W] straight-through sum of the active layers
    codes: torch.Tensor  # [k, B, H, W] int64
    commit_loss: torch.Tensor  # scalar, already weighted by beta


def _nearest(x: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code for each row of ``x`` [N, D] in ``codebook`` [K, D]."""
    dist = (codebook * codebook).sum(1)[None, :] - 2.0 * x @ codebook.t()
    return dist.argmin(1)


class ResidualVQ(nn.Module):
    """``L`` residual layers of ``K`` codes of dimension ``D`` with EMA updates."""

    def __init__(self, cfg: RVQConfig) -> None:
        super().__init__()
        self.cfg = cfg
        L, K, D = cfg.layers, cfg.codebook_size, cfg.dim
        self.register_buffer("embed", torch.randn(L, K, D) * 0.1)
        self.register_buffer("cluster_size", torch.ones(L, K))
        self.register_buffer("embed_sum", self.embed.clone())
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def layers(self) -> int:
        return self.cfg.layers

    def codebook_size(self, layer: int) -> int:
        return self.cfg.codebook_size

    def codebooks(self) -> torch.Tensor:
        """The codebooks ``[L, K, D]`` (a copy, float32)."""
        return self.embed.detach().float().clone()

    @torch.no_grad()
    def keep_layers(self, n: int) -> None:
        """Drop every layer after the first ``n`` (a prefix of a residual stack is a residual stack).

        With quantizer dropout each prefix was trained to decode on its own, so an export can ship
        only the layer counts worth having. Raises ``ValueError`` unless ``1 ≤ n ≤ layers``.
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.cfg.layers:
            raise ValueError(f"layers to keep must be an integer in 1..{self.cfg.layers}, got {n!r}")
        self.cfg = replace(self.cfg, layers=n)
        for name in ("embed", "cluster_size", "embed_sum"):
            setattr(self, name, getattr(self, name)[:n].clone())

    @torch.no_grad()
    def init_kmeans(self, latents: torch.Tensor, iters: int = 15, seed: int = 0) -> None:
        """Initialise every layer by k-means on the residuals of ``latents`` [N, D]."""
        gen = torch.Generator().manual_seed(seed)
        residual = latents.float()
        K = self.cfg.codebook_size
        for layer in range(self.cfg.layers):
            centroids = residual[torch.randperm(len(residual), generator=gen)[:K]].clone()
            for _ in range(iters):
                idx = _nearest(residual, centroids)
                sums = torch.zeros_like(centroids).index_add_(0, idx, residual)
                counts = torch.bincount(idx, minlength=K).float()
                empty = counts == 0
                centroids = torch.where(empty[:, None], centroids, sums / counts.clamp(min=1)[:, None])
                if empty.any():
                    pick = torch.randint(len(residual), (int(empty.sum()),), generator=gen)
                    centroids[empty] = residual[pick]
            self.embed[layer] = centroids
            self.embed_sum[layer] = centroids
            self.cluster_size[layer] = 1.0
            residual = residual - centroids[_nearest(residual, centroids)]
        self.initialised.fill_(True)

    def forward(self, z: torch.Tensor, n_layers: int) -> RVQOutput:
        """Quantize ``z`` [B, D, H, W] with the first ``n_layers`` layers."""
        if not 1 <= n_layers <= self.cfg.layers:
            raise ValueError(f"n_layers must be in 1..{self.cfg.layers}, got {n_layers}")
        B, D, H, W = z.shape
        with torch.autocast(z.device.type, enabled=False):
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, D)
            residual = flat.detach()
            total = torch.zeros_like(flat)
            codes = []
            commit = flat.new_zeros(())
            for layer in range(n_layers):
                embed = self.embed[layer]
                idx = _nearest(residual, embed)
                q = embed[idx]
                if self.training:
                    self._ema_update(layer, residual, idx)
                residual = residual - q
                total = total + q
                commit = commit + F.mse_loss(flat, total.detach())
                codes.append(idx.view(B, H, W))
            quantized = flat + (total - flat).detach()
            quantized = quantized.view(B, H, W, D).permute(0, 3, 1, 2)
        return RVQOutput(quantized, torch.stack(codes), self.cfg.beta * commit)

    @torch.no_grad()
    def _ema_update(self, layer: int, x: torch.Tensor, idx: torch.Tensor) -> None:
        K, decay = self.cfg.codebook_size, self.cfg.decay
        counts = torch.bincount(idx, minlength=K).float()
        sums = torch.zeros(K, x.shape[1], device=x.device).index_add_(0, idx, x)
        self.cluster_size[layer].mul_(decay).add_(counts, alpha=1 - decay)
        self.embed_sum[layer].mul_(decay).add_(sums, alpha=1 - decay)
        n = self.cluster_size[layer].sum()
        smoothed = (self.cluster_size[layer] + 1e-5) / (n + K * 1e-5) * n
        self.embed[layer] = self.embed_sum[layer] / smoothed[:, None]
        dead = self.cluster_size[layer] < self.cfg.dead_threshold
        if dead.any():
            pick = torch.randint(len(x), (int(dead.sum()),), device=x.device)
            self.embed[layer][dead] = x[pick]
            self.embed_sum[layer][dead] = x[pick]
            self.cluster_size[layer][dead] = 1.0
