"""Training loop of the image codec (``strata train image``).

Trains ``g_a``, ``g_s`` and the quantizer (the residual VQ, or the family named by
``ImageTrainConfig.quantizer``: :mod:`strata.train.quantize.families`) end to end on random crops of
``images/train`` with MSE, selects on centre crops of ``images/val`` (mean PSNR
over all layer counts) and never reads Kodak. Every ``eval_every`` steps it
logs PSNR per layer count, per-layer perplexity and the static-entropy bpp
estimate, and writes ``last.pt`` (resume point) and ``best.pt``.

The run directory holds ``config.json``, ``log.jsonl``, ``last.pt``, ``best.pt``.
Resuming (``--resume``) continues from ``last.pt`` with the same RNG stream.

Guards against a run blowing up (a resumed run whose schedule jumps from the end of a
decay back to the peak LR did, at step 12 100 of the first model): every start of the
process ramps the LR up linearly over ``warmup`` steps, gradients are clipped to a
global norm of ``grad_clip``, and a step whose loss is not finite or spikes far above its
running mean is skipped;
``max_bad_steps`` skipped steps in a row stop the run with :class:`TrainingDivergedError`
(:mod:`strata.train.schedule`). The loop itself is shared with the mel codec (:mod:`strata.train.loop`);
this module supplies the data, the networks and the validation.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from strata.train.checkpoint import read_checkpoint as read_torch_checkpoint
from strata.train.data import RandomCrops, center_crops, load_images
from strata.train.loop import Objective, fit, lr_at, start
from strata.train.nets.image import Analysis, ImageNetConfig, Synthesis, block_pca
from strata.train.quantize.families import FAMILIES, QuantizerConfig, build_quantizer, decode_codes
from strata.train.quantize.hrvq import HRVQConfig
from strata.train.quantize.rsq import RSQConfig
from strata.train.quantize.rvq import RVQConfig
from strata.train.quantize.topbottom import TopBottomConfig
from torch import nn

PCA_BATCHES = 32  # training batches whose 8×8 blocks initialise the linear paths (32 × 8 × 256 blocks)


@dataclass
class ImageTrainConfig:
    """Schedule and data settings of an image training run."""

    data: str = "../shared/data/images"  # folder with train/ and val/ sub-folders
    steps: int = 60_000  # total optimiser steps of the schedule
    batch: int = 8
    crop: int = 128
    lr: float = 3e-4
    lr_min: float = 1e-5
    decay_start: float = 0.6  # fraction of steps after which the LR follows a cosine to lr_min
    warmup: int = 500  # steps of linear LR ramp-up at every start of the process (new, resumed or initialised)
    grad_clip: float = 1.0  # global gradient-norm clip (0: off)
    max_bad_steps: int = 20  # consecutive non-finite losses before the run stops
    eval_every: int = 1000
    val_crop: int = 256
    threads: int = 2
    amp: bool = True  # bf16 autocast (CPUs with AVX512-BF16/AMX, and GPUs)
    seed: int = 0
    net: ImageNetConfig = field(default_factory=ImageNetConfig)
    rvq: RVQConfig = field(default_factory=RVQConfig)
    quantizer: str = "rvq"  # family (strata.train.quantize.families.FAMILIES); its config below
    hrvq: HRVQConfig = field(default_factory=HRVQConfig)
    rsq: RSQConfig = field(default_factory=RSQConfig)
    topbottom: TopBottomConfig = field(default_factory=TopBottomConfig)  # topbottom and sq-topbottom

    def __post_init__(self) -> None:
        if self.quantizer not in FAMILIES:
            raise ValueError(f"quantizer must be one of {', '.join(FAMILIES)}, got {self.quantizer!r}")

    @property
    def quantizer_config(self) -> QuantizerConfig:
        """The config of the quantizer family this run trains."""
        if self.quantizer in ("topbottom", "sq-topbottom"):
            return replace(self.topbottom, stochastic=self.quantizer == "sq-topbottom")
        return getattr(self, self.quantizer)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImageTrainConfig:
        d = dict(d)  # configs saved before the families existed have no quantizer key: RVQ
        net = ImageNetConfig.from_dict(d.pop("net"))
        rvq = RVQConfig(**d.pop("rvq"))
        hrvq = HRVQConfig(**d.pop("hrvq", {}))
        rsq = RSQConfig(**d.pop("rsq", {}))
        topbottom = TopBottomConfig(**d.pop("topbottom", {}))
        return cls(net=net, rvq=rvq, hrvq=hrvq, rsq=rsq, topbottom=topbottom, **d)


class ImageAutoencoder(nn.Module):
    """``x ─►─┤g_a├─►─┤quantizer├─►─┤g_s├─► x̂`` assembled from its parts (training only)."""

    def __init__(self, g_a: nn.Module, quantizer: nn.Module, g_s: nn.Module) -> None:
        super().__init__()
        self.g_a, self.quantizer, self.g_s = g_a, quantizer, g_s

    @classmethod
    def from_config(cls, net: ImageNetConfig, rvq: QuantizerConfig) -> ImageAutoencoder:
        """The autoencoder with the quantizer of ``rvq``'s family (any config of :data:`QuantizerConfig`)."""
        if rvq.dim != net.latent_dim:
            raise ValueError(f"quantizer dim {rvq.dim} must equal the latent dim {net.latent_dim}")
        return cls(Analysis(net), build_quantizer(rvq), Synthesis(net))


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict:
    """An image training or exported checkpoint (with ``model`` weights and ``config``)."""
    return read_torch_checkpoint(path, ("model", "config"), device)


def psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def validate(model: ImageAutoencoder, val: np.ndarray, device: torch.device, amp: bool) -> dict:
    """PSNR (8-bit rounding) per layer count, perplexity and static bits per layer."""
    model.eval()
    L = model.quantizer.layers
    x = torch.from_numpy(val).to(device).float() / 255
    psnrs, codes_all = [], []
    for chunk in x.split(8):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            y = model.g_a(chunk)
        codes_all.append(list(model.quantizer(y.float(), L).codes))
    size = tuple(y.shape[2:])
    codes = [torch.cat([c[layer] for c in codes_all]) for layer in range(L)]  # L maps [N, h_l, w_l]
    for k in range(1, L + 1):
        se = 0.0
        for i, chunk in enumerate(x.split(8)):
            c = [layer_codes[i * 8 : i * 8 + len(chunk)] for layer_codes in codes[:k]]
            yq = decode_codes(model.quantizer, c, size)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                xh = model.g_s(yq)
            xh = (xh.float().clamp(0, 1) * 255).round() / 255
            se += float(((xh - chunk) ** 2).sum())
        psnrs.append(psnr(se / x.numel()))
    bits, ppl = [], []
    for layer in range(L):
        p = torch.bincount(codes[layer].flatten(), minlength=model.quantizer.codebook_size(layer)).double()
        p = p[p > 0] / p.sum()
        h = float(-(p * p.log2()).sum())
        bits.append(h * codes[layer][0].numel())  # bits per image of this layer
        ppl.append(2**h)
    bpp = list(np.cumsum(bits) / (x.shape[2] * x.shape[3]))
    model.train()
    return {"psnr": psnrs, "bpp_static": bpp, "perplexity": ppl, "score": float(np.mean(psnrs))}


def train(
    cfg: ImageTrainConfig,
    run_dir: Path,
    resume: bool = False,
    max_minutes: float | None = None,
    init_from: Path | None = None,
    stop_at: int | None = None,
) -> Path:
    """Train (or resume) in ``run_dir``; returns the path of ``best.pt``.

    ``resume`` continues from ``run_dir/last.pt`` (weights, optimiser, RNG). ``init_from`` starts a
    new run from the weights of another checkpoint, e.g. the float16 ``checkpoint.pt`` that
    ``strata export image --checkpoints DIR`` keeps (its step count is kept, the optimiser starts afresh).
    """
    run_dir, device = start(run_dir, cfg.threads, cfg.seed)
    data = Path(cfg.data)
    for sub in ("train", "val"):
        if "kodak" in str((data / sub).resolve()).lower():
            raise ValueError("Kodak is for evaluation only and is never used for training")

    model = ImageAutoencoder.from_config(cfg.net, cfg.quantizer_config).to(device)
    crops = RandomCrops(load_images(data / "train", run_dir / "cache"), cfg.crop, seed=cfg.seed)
    val = center_crops(load_images(data / "val", run_dir / "cache"), cfg.val_crop)

    def batch() -> torch.Tensor:
        return torch.from_numpy(crops.sample(cfg.batch)).to(device).float() / 255

    def describe(v: dict) -> str:
        psnr_str = " ".join(f"{p:.2f}" for p in v["psnr"])
        return f"val PSNR/k [{psnr_str}] bpp~{v['bpp_static'][-1]:.3f}"

    objective = Objective(
        synthesise=model.g_s,
        target=lambda x: x,
        validate=lambda: validate(model, val, device, cfg.amp),
        higher_is_better=True,
        metric="psnr",
        metric_of_mse=psnr,
        bar_formats=(".5f", ".2f"),
        describe=describe,
        best_note="best val score {:.3f} dB",
    )
    def new_run() -> None:
        if cfg.net.linear_skip:  # start from a block PCA of the training crops (codec.nets.image)
            with torch.no_grad():
                mean, components = block_pca(torch.cat([batch() for _ in range(PCA_BATCHES)]), cfg.net.latent_dim)
            model.g_a.init_linear(mean, components)
            model.g_s.init_linear(mean, components)

    return fit(cfg, run_dir, model, batch, crops.rng, objective, read_checkpoint, device,
               resume=resume, max_minutes=max_minutes, init_from=init_from, stop_at=stop_at, new_run=new_run)


__all__ = ["ImageAutoencoder", "ImageTrainConfig", "lr_at", "psnr", "read_checkpoint", "train", "validate"]
