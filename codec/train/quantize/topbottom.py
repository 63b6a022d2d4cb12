"""Two-scale top/bottom quantizer (VQ-VAE-2, HQ-TVAE; stochastic twin SQ-VAE-2) for training.

The latent ``z`` [B, D, H, W] is coded at two scales::

    t = down(z)                     [B, Dt, H/2, W/2]   the top map, two times coarser
    t̂ = Σ_{l ≤ Lt} top codes        residual layers on t
    u = up(t̂)                       [B, D, H, W]        what the top says about z
    ẑ = u + Σ_{l ≤ Lb} bottom codes  residual layers on z − u

so the bottom codes only what the upsampled top leaves. The stream's layers are the top's
``Lt`` layers followed by the bottom's ``Lb``: any prefix of ``k`` layers decodes (``k ≤ Lt``:
``up`` of the partial top sum; otherwise ``u`` plus ``k − Lt`` bottom layers), which is how this
family keeps the progressive promise.

``resample`` chooses the scale change: ``"unshuffle"`` (HQ-TVAE) folds each 2×2 block into
channels (pixel-unshuffle, ``4D`` values) and projects them to ``Dt`` with a learned linear map,
and ``up`` is a linear map to ``4D`` followed by pixel-shuffle; ``"pool"`` (the ablation of
HQ-TVAE Table 4) averages each 2×2 block before the projection, and ``up`` repeats the projected
value over the block (nearest upsampling). Both are linear, so the numpy decoder applies them
exactly (:class:`strata.quantize.topbottom.TopBottomCodebooks`). A latent with an odd side is
padded by repeating its last row/column before ``down`` and cropped after ``up``.

Each level is a residual quantizer of the deterministic family (EMA codebooks, commitment β,
dead-code reset: :class:`~strata.train.quantize.rvq.ResidualVQ`) or, with ``stochastic=True``,
of the stochastic one (:class:`~strata.train.quantize.rsq.ResidualSQ`, the SQ-VAE-2 twin: the
latent terms of each level's ELBO summed, in nats per *top* position).

The commitment weight is β = 0.02, not RVQ's 0.25: the top map's vectors (64 values for 4 latent
positions, coded by 4 layers) keep about 12% of their variance as quantization error, so the commitment
term is some ten times RVQ's, and at β = 0.25 (0.047 against a reconstruction MSE of 0.008) it pulled
the encoder towards latents the top could code, away from the image: validation PSNR at 10 layers fell
from 25.5 dB at initialisation to 22.6 dB after 500 steps. At β = 0.02 it rose (25.9, 26.1 dB after
100, 200 steps; ``strata train image --quantizer topbottom``, validation crops).

The training loop draws the number of layers ``k`` uniformly, so a fraction ``Lt / (Lt + Lb)``
of steps reconstruct the image from the top alone: that is the top-only reconstruction term that
keeps the top level alive (VQ-VAE-2's and HQ-TVAE's concern), weighted by its share of steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from strata.train.quantize.rsq import ResidualSQ, RSQConfig
from strata.train.quantize.rvq import ResidualVQ, RVQConfig
from torch import nn

RESAMPLERS = ("unshuffle", "pool")


@dataclass(frozen=True)
class TopBottomConfig:
    """Hyper-parameters of the two-scale quantizer."""

    top_layers: int = 4  # Lt: residual layers on the top map (stride 2 in the latent)
    bottom_layers: int = 6  # Lb: residual layers on the bottom map
    codebook_size: int = 256  # K at both levels
    dim: int = 32  # D (= latent channels)
    top_dim: int = 64  # Dt: channels of the top map
    resample: str = "unshuffle"  # "unshuffle" (pixel-unshuffle/shuffle) or "pool" (average/nearest)
    stochastic: bool = False  # False: VQ-VAE-2 style (EMA, β); True: SQ-VAE-2 (Gumbel-softmax, learned s²)
    beta: float = 0.02  # commitment weight of the deterministic levels (see the module doc)
    decay: float = 0.99  # EMA decay of the deterministic levels
    dead_threshold: float = 1.0  # bottom level's dead-code EMA count; the top's is a quarter (4× fewer vectors)
    temperature_decay: float = 1e-5  # stochastic levels: τ = exp(−r·t)
    s2_init: float = 0.1

    def __post_init__(self) -> None:
        if self.resample not in RESAMPLERS:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLERS)}, got {self.resample!r}")
        if self.top_layers < 1 or self.bottom_layers < 1 or self.top_dim < 1:
            raise ValueError(f"top_layers, bottom_layers and top_dim must be ≥ 1, got {self}")

    @property
    def layers(self) -> int:
        return self.top_layers + self.bottom_layers

    @property
    def folded_dim(self) -> int:
        """Values per top position before the projection: ``4D`` (unshuffle) or ``D`` (pool)."""
        return 4 * self.dim if self.resample == "unshuffle" else self.dim


@dataclass
class TopBottomOutput:
    """Result of :meth:`TopBottomVQ.forward`."""

    quantized: torch.Tensor  # [B, D, H, W]
    codes: list[torch.Tensor]  # k tensors: [B, ⌈H/2⌉, ⌈W/2⌉] for top layers, then [B, H, W]
    commit_loss: torch.Tensor  # deterministic levels: weighted commitment (0 when stochastic)
    latent_nats: torch.Tensor | None  # stochastic levels: ELBO latent nats per top position (else None)


def pad_even(z: torch.Tensor) -> torch.Tensor:
    """``z`` [B, C, H, W] with its last row/column repeated where ``H``/``W`` is odd."""
    ph, pw = z.shape[2] % 2, z.shape[3] % 2
    return F.pad(z, (0, pw, 0, ph), mode="replicate") if ph or pw else z


class TopBottomVQ(nn.Module):
    """A top map (``Lt`` residual layers at half resolution) and a bottom map (``Lb`` layers) on its residual."""

    initialises_from_maps = True  # init_kmeans takes [B, D, H, W] (it needs the 2×2 neighbourhoods)

    def __init__(self, cfg: TopBottomConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.down = nn.Linear(cfg.folded_dim, cfg.top_dim)
        self.up = nn.Linear(cfg.top_dim, cfg.folded_dim)
        self.top = self._level(cfg.top_layers, cfg.top_dim, cfg.dead_threshold / 4)
        self.bottom = self._level(cfg.bottom_layers, cfg.dim, cfg.dead_threshold)
        self.register_buffer("initialised", torch.tensor(False))

    def _level(self, layers: int, dim: int, dead_threshold: float) -> nn.Module:
        """One level's residual quantizer. A code is reset when its EMA count per batch falls under
        ``dead_threshold``; the top map has a quarter of the bottom's vectors per batch, so its threshold is a
        quarter too (with the bottom's, most top codes of a 256-code book read as dead and were reset every step,
        and the churn of the top dragged the bottom down: 22.6 dB at 10 layers after 500 steps, against 25.5
        at initialisation)."""
        cfg = self.cfg
        if cfg.stochastic:
            return ResidualSQ(RSQConfig(layers=layers, codebook_size=cfg.codebook_size, dim=dim,
                                        temperature_decay=cfg.temperature_decay, s2_init=cfg.s2_init))
        return ResidualVQ(RVQConfig(layers=layers, codebook_size=cfg.codebook_size, dim=dim, decay=cfg.decay,
                                    beta=cfg.beta, dead_threshold=dead_threshold))

    @property
    def layers(self) -> int:
        return self.cfg.layers

    def codebook_size(self, layer: int) -> int:
        return self.cfg.codebook_size

    def codebooks(self) -> dict[str, torch.Tensor]:
        """Everything the numpy decoder needs (float32 copies): both levels' codebooks and the linear maps."""
        maps = {f"{name}_{part}": getattr(getattr(self, name), part).detach().float().clone()
                for name in ("down", "up") for part in ("weight", "bias")}
        return {"top": self.top.codebooks(), "bottom": self.bottom.codebooks(), **maps}

    # -- the scale change -------------------------------------------------------------------------
    def fold(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, D, H, W]`` → the top map ``[B, Dt, ⌈H/2⌉, ⌈W/2⌉]``."""
        z = pad_even(z)
        x = F.pixel_unshuffle(z, 2) if self.cfg.resample == "unshuffle" else F.avg_pool2d(z, 2)
        return self.down(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def unfold(self, t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The top map ``[B, Dt, h, w]`` → ``[B, D, H, W]`` with ``(H, W) = size``."""
        x = self.up(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if self.cfg.resample == "unshuffle":
            x = F.pixel_shuffle(x, 2)
        else:
            x = x.repeat_interleave(2, 2).repeat_interleave(2, 3)
        return x[:, :, : size[0], : size[1]]

    @torch.no_grad()
    def keep_layers(self, n: int) -> None:
        """Keep the first ``n`` layers of the stack (``n`` must keep every top layer and at least one bottom one)."""
        cfg = self.cfg
        if isinstance(n, bool) or not isinstance(n, int) or not cfg.top_layers < n <= cfg.layers:
            raise ValueError(f"layers to keep must be an integer in {cfg.top_layers + 1}..{cfg.layers}, got {n!r}")
        self.bottom.keep_layers(n - cfg.top_layers)
        self.cfg = replace(cfg, bottom_layers=n - cfg.top_layers)

    @torch.no_grad()
    def init_kmeans(self, latents: torch.Tensor, iters: int = 15, seed: int = 0) -> None:
        """``down`` from a PCA of the folded latents ``[B, D, H, W]`` (``up`` its transpose), then k-means per level."""
        if latents.dim() != 4:
            raise ValueError(f"the top/bottom quantizer initialises from maps [B, D, H, W], got {tuple(latents.shape)}")
        z = latents.float()
        folded = pad_even(z)
        folded = F.pixel_unshuffle(folded, 2) if self.cfg.resample == "unshuffle" else F.avg_pool2d(folded, 2)
        x = folded.permute(0, 2, 3, 1).reshape(-1, folded.shape[1])
        mean = x.mean(0)
        _, _, v = torch.linalg.svd(x - mean, full_matrices=False)  # v: [min(N, C), C], rows by variance
        dt, c = self.cfg.top_dim, x.shape[1]
        basis = torch.zeros(dt, c)
        n = min(dt, v.shape[0])
        basis[:n] = v[:n]
        self.down.weight.copy_(basis)
        self.down.bias.copy_(-basis @ mean)
        self.up.weight.copy_(basis.t())
        self.up.bias.copy_(mean)
        t = self.fold(z)
        self.top.init_kmeans(t.permute(0, 2, 3, 1).reshape(-1, dt), iters=iters, seed=seed)
        self.top.eval()
        t_hat = self.top(t, self.cfg.top_layers).quantized
        residual = z - self.unfold(t_hat, z.shape[2:])
        self.bottom.init_kmeans(residual.permute(0, 2, 3, 1).reshape(-1, z.shape[1]), iters=iters, seed=seed + 1)
        self.top.train(self.training)
        self.initialised.fill_(True)

    def forward(self, z: torch.Tensor, n_layers: int) -> TopBottomOutput:
        """Quantize ``z`` [B, D, H, W] with the first ``n_layers`` layers of the stack."""
        cfg = self.cfg
        if not 1 <= n_layers <= cfg.layers:
            raise ValueError(f"n_layers must be in 1..{cfg.layers}, got {n_layers}")
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            size = z.shape[2:]
            kt = min(n_layers, cfg.top_layers)
            top = self.top(self.fold(z), kt)
            u = self.unfold(top.quantized, size)
            codes = list(top.codes)
            commit = getattr(top, "commit_loss", z.new_zeros(()))
            nats = getattr(top, "latent_nats", None)
            if n_layers <= cfg.top_layers:
                return TopBottomOutput(u, codes, commit, nats)
            bottom = self.bottom(z - u, n_layers - cfg.top_layers)
            codes += list(bottom.codes)
            if cfg.stochastic:
                nats = nats + 4.0 * bottom.latent_nats  # bottom nats per bottom position, 4 per top position
            else:
                commit = commit + bottom.commit_loss
            return TopBottomOutput(u + bottom.quantized, codes, commit, nats)

    def decode(self, codes: list[torch.Tensor], size: tuple[int, int] | None = None) -> torch.Tensor:
        """Latent ``[B, D, H, W]`` of a prefix of codes; ``size`` (H, W) is needed only for a top-only prefix."""
        cfg = self.cfg
        kt = min(len(codes), cfg.top_layers)
        if size is None:
            if len(codes) <= cfg.top_layers:
                h, w = codes[0].shape[-2:]
                size = (2 * h, 2 * w)
            else:
                size = tuple(codes[cfg.top_layers].shape[-2:])
        u = self.unfold(_level_sum(self.top, codes[:kt]), size)
        if len(codes) <= cfg.top_layers:
            return u
        return u + _level_sum(self.bottom, codes[cfg.top_layers:])


def _level_sum(level: nn.Module, codes: list[torch.Tensor]) -> torch.Tensor:
    """``[B, C, h, w]``: the sum of one level's code vectors (both level kinds keep their codebooks in ``embed``)."""
    total = level.embed[0][codes[0]]
    for layer in range(1, len(codes)):
        total = total + level.embed[layer][codes[layer]]
    return total.permute(0, 3, 1, 2)


__all__ = ["RESAMPLERS", "TopBottomConfig", "TopBottomOutput", "TopBottomVQ", "pad_even"]
