"""Hierarchical residual vector quantizer (HR-VQVAE) for training.

Layer 1 quantizes the latent with one codebook of ``K`` vectors. Every later layer
quantizes the residual left by the layers above it with a codebook *chosen by the
code of the layer above* (its parent): layer ``l ≥ 2`` holds ``K`` codebooks of ``K``
vectors and searches only the one its parent selects, so encoding costs ``L·K``
distance evaluations per position (not ``K^L``). The decoded latent is the sum of
the code vectors of the present layers, so any prefix of layers decodes.

The tree is capped at the parent: HR-VQVAE's layer ``i`` has ``K^(i-1)`` codebooks
(one per path from the root), which grows exponentially; here a child codebook is
indexed by the parent's code only, so the model holds ``K·D + (L-1)·K²·D`` floats
(``K = 64``, ``L = 10``, ``D = 32``: 1.18 M floats, 4.7 MB in float32, 2.4 MB in float16).

Training uses the objective of HR-VQVAE eq. 5–6 on top of the reconstruction term::

    ‖sg[ξ⁰] − e_C‖² + β₀‖sg[e_C] − ξ⁰‖² + Σ_i ( ‖sg[ξ^{i-1}] − e^i‖² + β_i‖sg[e^i] − ξ^{i-1}‖² )

with ``ξ⁰`` the encoder output, ``ξ^i = ξ^{i-1} − e^i`` the residual after layer ``i``
and ``e_C = Σ_i e^i`` the decoder input (straight-through). Every norm is a mean over
elements, as in :mod:`strata.train.quantize.rvq`; the paper uses β_i = 0.25 for every layer.
Codebooks are learned by these gradients (no EMA, no reset); :meth:`init_kmeans`
starts them from k-means on the residuals, per parent code.

Inference lives in :mod:`strata.quantize.tree` (numpy); both sides use the codebooks
exported with :meth:`HierarchicalResidualVQ.codebooks`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from strata.train.quantize.rvq import _nearest
from torch import nn

SEARCH_CHUNK = 16_384  # positions per gathered [chunk, K, D] block of the tree search


@dataclass(frozen=True)
class HRVQConfig:
    """Hyper-parameters of the hierarchical residual quantizer."""

    layers: int = 10  # L: number of layers (layer 1 plus L-1 tree layers)
    codebook_size: int = 64  # K: codes per codebook (and codebooks per tree layer)
    dim: int = 32  # D: code vector dimension (= latent channels)
    beta: float = 0.25  # β_i of eq. 6 (every layer) and β_0 of eq. 5


@dataclass
class HRVQOutput:
    """Result of :meth:`HierarchicalResidualVQ.forward`."""

    quantized: torch.Tensor  # [B, D, H, W] straight-through sum of the active layers
    codes: torch.Tensor  # [k, B, H, W] int64; codes[l] indexes the codebook chosen by codes[l-1]
    commit_loss: torch.Tensor  # scalar: the quantization terms of eq. 5–6


def tree_search(residual: torch.Tensor, books: torch.Tensor, norms: torch.Tensor, parent: torch.Tensor) -> torch.Tensor:
    """Nearest code of each row of ``residual`` [N, D] in the codebook ``books[parent[n]]`` ([P, K, D]).

    ``norms`` [P, K] are the squared norms of ``books``. The distance is computed as
    ``|e|² − 2 r·e`` like :func:`strata.train.quantize.rvq._nearest` and the numpy search.
    """
    out = torch.empty(len(residual), dtype=torch.long, device=residual.device)
    for s in range(0, len(residual), SEARCH_CHUNK):
        r, p = residual[s : s + SEARCH_CHUNK], parent[s : s + SEARCH_CHUNK]
        dots = torch.bmm(books[p], r[:, :, None])[:, :, 0]  # [n, K]
        out[s : s + SEARCH_CHUNK] = (norms[p] - 2.0 * dots).argmin(1)
    return out


class HierarchicalResidualVQ(nn.Module):
    """A root codebook ``[K, D]`` and ``L-1`` layers of ``K`` child codebooks ``[K, K, D]``."""

    def __init__(self, cfg: HRVQConfig) -> None:
        super().__init__()
        if cfg.layers < 1 or cfg.codebook_size < 1 or cfg.dim < 1:
            raise ValueError(f"layers, codebook_size and dim must be positive, got {cfg}")
        self.cfg = cfg
        L, K, D = cfg.layers, cfg.codebook_size, cfg.dim
        self.root = nn.Parameter(torch.randn(K, D) * 0.1)
        self.children_books = nn.Parameter(torch.randn(L - 1, K, K, D) * 0.01)
        self.register_buffer("initialised", torch.tensor(False))

    @property
    def layers(self) -> int:
        return self.cfg.layers

    def codebook_size(self, layer: int) -> int:
        return self.cfg.codebook_size

    def codebooks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The root codebook ``[K, D]`` and the child codebooks ``[L-1, K, K, D]`` (copies, float32)."""
        return self.root.detach().float().clone(), self.children_books.detach().float().clone()

    @torch.no_grad()
    def keep_layers(self, n: int) -> None:
        """Drop every layer after the first ``n``; raises ``ValueError`` unless ``1 ≤ n ≤ layers``."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.cfg.layers:
            raise ValueError(f"layers to keep must be an integer in 1..{self.cfg.layers}, got {n!r}")
        self.cfg = replace(self.cfg, layers=n)
        self.children_books = nn.Parameter(self.children_books[: n - 1].clone())

    def _search(self, residual: torch.Tensor, layer: int, parent: torch.Tensor | None) -> torch.Tensor:
        if layer == 0:
            return _nearest(residual, self.root.detach())
        books = self.children_books[layer - 1].detach()
        return tree_search(residual, books, (books * books).sum(-1), parent)

    @torch.no_grad()
    def init_kmeans(self, latents: torch.Tensor, iters: int = 15, seed: int = 0) -> None:
        """Initialise the root by k-means on ``latents`` [N, D], then each child codebook by k-means
        on the residuals of the positions whose parent code selects it (all parents at once)."""
        gen = torch.Generator().manual_seed(seed)
        residual = latents.float().cpu()
        N, K = len(residual), self.cfg.codebook_size
        centroids = residual[torch.randperm(N, generator=gen)[:K]].clone()
        if len(centroids) < K:  # fewer latents than codes: repeat them
            centroids = residual[torch.randint(N, (K,), generator=gen)].clone()
        for _ in range(iters):
            idx = _nearest(residual, centroids)
            sums = torch.zeros_like(centroids).index_add_(0, idx, residual)
            counts = torch.bincount(idx, minlength=K).float()
            centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
        self.root.copy_(centroids)
        parent = _nearest(residual, centroids)
        residual = residual - centroids[parent]
        for layer in range(1, self.cfg.layers):
            books = self._grouped_kmeans(residual, parent, iters, gen)
            self.children_books[layer - 1].copy_(books)
            idx = tree_search(residual, books, (books * books).sum(-1), parent)
            residual = residual - books[parent, idx]
            parent = idx
        self.initialised.fill_(True)

    def _grouped_kmeans(self, x: torch.Tensor, parent: torch.Tensor, iters: int, gen: torch.Generator) -> torch.Tensor:
        """``K`` k-means problems at once: codebook ``p`` [K, D] clusters the rows of ``x`` with parent ``p``."""
        N, K, D = len(x), self.cfg.codebook_size, x.shape[1]
        counts = torch.bincount(parent, minlength=K)
        starts = torch.cumsum(counts, 0) - counts
        # members of each parent in a random order: sort by parent, ties broken by a random key
        order = torch.argsort(parent.double() + 0.5 * torch.rand(N, generator=gen, dtype=torch.float64))
        offset = torch.arange(K)[None, :] % counts.clamp(min=1)[:, None]  # [P, K]; distinct members when ≥ K
        pick = order[(starts[:, None] + offset).clamp(max=N - 1)]
        pick = torch.where(counts[:, None] > 0, pick, torch.randint(N, (K, K), generator=gen))  # unused parents
        books = x[pick].clone()  # [P, K, D]
        for _ in range(iters):
            idx = tree_search(x, books, (books * books).sum(-1), parent)
            flat = parent * K + idx
            sums = torch.zeros(K * K, D).index_add_(0, flat, x)
            n = torch.bincount(flat, minlength=K * K).float()
            books = torch.where(n[:, None] > 0, sums / n.clamp(min=1)[:, None], books.view(K * K, D)).view(K, K, D)
        return books

    def forward(self, z: torch.Tensor, n_layers: int) -> HRVQOutput:
        """Quantize ``z`` [B, D, H, W] with the first ``n_layers`` layers."""
        if not 1 <= n_layers <= self.cfg.layers:
            raise ValueError(f"n_layers must be in 1..{self.cfg.layers}, got {n_layers}")
        B, D, H, W = z.shape
        beta = self.cfg.beta
        with torch.autocast(z.device.type, enabled=False):
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, D)  # ξ⁰
            xi = flat
            total = torch.zeros_like(flat)
            loss = flat.new_zeros(())
            codes: list[torch.Tensor] = []
            parent = None
            for layer in range(n_layers):
                with torch.no_grad():
                    idx = self._search(xi.detach(), layer, parent)
                e = self.root[idx] if layer == 0 else self.children_books[layer - 1][parent, idx]
                loss = loss + F.mse_loss(e, xi.detach()) + beta * F.mse_loss(xi, e.detach())  # eq. 6
                xi = xi - e
                total = total + e
                codes.append(idx.view(B, H, W))
                parent = idx
            loss = loss + F.mse_loss(total, flat.detach()) + beta * F.mse_loss(flat, total.detach())  # eq. 5
            quantized = flat + (total - flat).detach()
            quantized = quantized.view(B, H, W, D).permute(0, 3, 1, 2)
        return HRVQOutput(quantized, torch.stack(codes), loss)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, D, H, W]``: the sum of the code vectors of ``codes`` ``[k, B, H, W]``."""
        total = self.root[codes[0]]
        for layer in range(1, len(codes)):
            total = total + self.children_books[layer - 1][codes[layer - 1], codes[layer]]
        return total.permute(0, 3, 1, 2)


__all__ = ["HRVQConfig", "HRVQOutput", "HierarchicalResidualVQ", "tree_search"]
