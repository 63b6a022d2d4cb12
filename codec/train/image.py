"""Training loop of the image codec (``strata train image``).

Trains ``g_a``, ``g_s`` and the residual VQ end to end on random crops of
``images/train`` with MSE, selects on centre crops of ``images/val`` (mean PSNR
over all layer counts) and never reads Kodak. Every ``eval_every`` steps it
logs PSNR per layer count, per-layer perplexity and the static-entropy bpp
estimate, and writes ``last.pt`` (resume point) and ``best.pt``.

The run directory holds ``config.json``, ``log.jsonl``, ``last.pt``, ``best.pt``.
Resuming (``--resume``) continues from ``last.pt`` with the same RNG stream.

Guards against a run blowing up (a resumed run whose schedule jumps from the end of a
decay back to the peak LR did, at step 12 100 of the first model): every start of the
process ramps the LR up linearly over ``warmup`` steps, gradients are clipped to a
global norm of ``grad_clip``, and a step whose loss is not finite is skipped;
``max_bad_steps`` skipped steps in a row stop the run with :class:`TrainingDivergedError`
(:mod:`codec.train.schedule`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from codec.nets.image import Analysis, ImageNetConfig, Synthesis
from codec.quantize.rvq import ResidualVQ, RVQConfig
from codec.train.checkpoint import read_checkpoint as read_torch_checkpoint
from codec.train.data import RandomCrops, center_crops, load_images
from codec.train.schedule import StepGuard, cosine_lr, warmup_factor


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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ImageTrainConfig:
        d = dict(d)
        net = ImageNetConfig.from_dict(d.pop("net"))
        rvq = RVQConfig(**d.pop("rvq"))
        return cls(net=net, rvq=rvq, **d)


class ImageAutoencoder(nn.Module):
    """``x ─►─┤g_a├─►─┤RVQ├─►─┤g_s├─► x̂`` assembled from its parts (training only)."""

    def __init__(self, g_a: nn.Module, quantizer: ResidualVQ, g_s: nn.Module) -> None:
        super().__init__()
        self.g_a, self.quantizer, self.g_s = g_a, quantizer, g_s

    @classmethod
    def from_config(cls, net: ImageNetConfig, rvq: RVQConfig) -> ImageAutoencoder:
        if rvq.dim != net.latent_dim:
            raise ValueError(f"RVQ dim {rvq.dim} must equal the latent dim {net.latent_dim}")
        return cls(Analysis(net), ResidualVQ(rvq), Synthesis(net))


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict:
    """An image training or exported checkpoint (with ``model`` weights and ``config``)."""
    return read_torch_checkpoint(path, ("model", "config"), device)


def lr_at(cfg: ImageTrainConfig, step: int, since_start: int | None = None) -> float:
    """The LR at ``step``; with ``since_start``, including the warm-up of this process."""
    lr = cosine_lr(step, cfg.steps, cfg.lr, cfg.lr_min, cfg.decay_start)
    return lr if since_start is None else lr * warmup_factor(cfg.warmup, since_start)


def psnr(mse: float) -> float:
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def validate(model: ImageAutoencoder, val: np.ndarray, device: torch.device, amp: bool) -> dict:
    """PSNR (8-bit rounding) per layer count, perplexity and static bits per layer."""
    model.eval()
    L, K = model.quantizer.layers, model.quantizer.cfg.codebook_size
    x = torch.from_numpy(val).to(device).float() / 255
    psnrs, codes_all = [], []
    for chunk in x.split(8):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            y = model.g_a(chunk)
        codes_all.append(model.quantizer(y.float(), L).codes)
    codes = torch.cat(codes_all, dim=1)  # [L, N, h, w]
    embed = model.quantizer.embed
    for k in range(1, L + 1):
        se = 0.0
        for i, chunk in enumerate(x.split(8)):
            c = codes[:k, i * 8 : i * 8 + len(chunk)]
            yq = sum(embed[layer][c[layer]] for layer in range(k)).permute(0, 3, 1, 2)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                xh = model.g_s(yq)
            xh = (xh.float().clamp(0, 1) * 255).round() / 255
            se += float(((xh - chunk) ** 2).sum())
        psnrs.append(psnr(se / x.numel()))
    bits, ppl = [], []
    for layer in range(L):
        p = torch.bincount(codes[layer].flatten(), minlength=K).double()
        p = p[p > 0] / p.sum()
        h = float(-(p * p.log2()).sum())
        bits.append(h)
        ppl.append(2**h)
    factor = 8
    bpp = list(np.cumsum(bits) / factor**2)
    model.train()
    return {"psnr": psnrs, "bpp_static": bpp, "perplexity": ppl, "score": float(np.mean(psnrs))}


def _save(path: Path, model: ImageAutoencoder, opt: torch.optim.Optimizer, step: int, best: float,
          cfg: ImageTrainConfig, rng_state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "best": best,
                "config": cfg.to_dict(), "rng": rng_state}, tmp)
    tmp.replace(path)


def train(
    cfg: ImageTrainConfig,
    run_dir: Path,
    resume: bool = False,
    max_minutes: float | None = None,
    init_from: Path | None = None,
) -> Path:
    """Train (or resume) in ``run_dir``; returns the path of ``best.pt``.

    ``resume`` continues from ``run_dir/last.pt`` (weights, optimiser, RNG). ``init_from`` starts a
    new run from the weights of another checkpoint, e.g. the float16 ``checkpoint.pt`` committed
    under ``models/`` (its step count is kept, the optimiser starts afresh).
    """
    from tqdm import tqdm

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = Path(cfg.data)
    for sub in ("train", "val"):
        if "kodak" in str((data / sub).resolve()).lower():
            raise ValueError("Kodak is for evaluation only and is never used for training")
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)

    model = ImageAutoencoder.from_config(cfg.net, cfg.rvq).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    step, best = 0, -1.0
    last = run_dir / "last.pt"
    crops = RandomCrops(load_images(data / "train", run_dir / "cache"), cfg.crop, seed=cfg.seed)
    val = center_crops(load_images(data / "val", run_dir / "cache"), cfg.val_crop)
    if resume and last.exists():
        ckpt = read_checkpoint(last, device)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        step, best = ckpt["step"], ckpt["best"]
        crops.rng.bit_generator.state = ckpt["rng"]["numpy"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        print(f"resumed from {last} at step {step} (best val score {best:.3f} dB)", flush=True)
    elif init_from is not None:
        ckpt = read_checkpoint(init_from, device)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
        step = int(ckpt.get("step") or 0)
        print(f"initialised from {init_from} (step {step})", flush=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    else:
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log = (run_dir / "log.jsonl").open("a")

    def batch() -> torch.Tensor:
        return torch.from_numpy(crops.sample(cfg.batch)).to(device).float() / 255

    if not bool(model.quantizer.initialised):
        with torch.no_grad():
            lat = torch.cat([model.g_a(batch()) for _ in range(8)])
        model.quantizer.init_kmeans(lat.permute(0, 2, 3, 1).reshape(-1, cfg.net.latent_dim).float())

    L = cfg.rvq.layers
    first_step = step
    guard = StepGuard(cfg.max_bad_steps, f"restart from {run_dir / 'best.pt'} with --init-from and a lower --lr")
    t0, started = time.time(), time.time()
    bar = tqdm(total=cfg.steps, initial=step, dynamic_ncols=True, mininterval=5)
    run_loss = run_mse = 0.0
    n_run = 0
    while step < cfg.steps:
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, step, step - first_step)
        x = batch()
        k = int(torch.randint(1, L + 1, ()).item())
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            y = model.g_a(x)
        q = model.quantizer(y.float(), k)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            xh = model.g_s(q.quantized)
        mse = torch.mean((xh.float() - x) ** 2)
        loss = mse + q.commit_loss
        opt.zero_grad(set_to_none=True)
        if not guard.ok(loss, step):
            continue
        loss.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        run_loss += loss.item()
        run_mse += mse.item()
        n_run += 1
        bar.update(1)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{run_loss / n_run:.5f}", psnr=f"{psnr(run_mse / n_run):.2f}")
        if step % cfg.eval_every == 0 or step == cfg.steps:
            v = validate(model, val, device, cfg.amp)
            dt = time.time() - t0
            rec = {"step": step, "time": time.time(), "steps_per_s": n_run / dt,
                   "lr": lr_at(cfg, step, step - first_step),
                   "train_loss": run_loss / n_run, "train_psnr": psnr(run_mse / n_run), **v}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            psnr_str = " ".join(f"{p:.2f}" for p in v["psnr"])
            bar.write(f"step {step}: {rec['steps_per_s']:.2f} it/s val PSNR/k [{psnr_str}] "
                      f"bpp~{v['bpp_static'][-1]:.3f} ppl {min(v['perplexity']):.0f}-{max(v['perplexity']):.0f}")
            rng_state = {"numpy": crops.rng.bit_generator.state, "torch": torch.get_rng_state()}
            if v["score"] > best:
                best = v["score"]
                _save(run_dir / "best.pt", model, opt, step, best, cfg, rng_state)
            _save(last, model, opt, step, best, cfg, rng_state)
            run_loss = run_mse = 0.0
            n_run = 0
            t0 = time.time()
            if max_minutes is not None and time.time() - started > 60 * max_minutes:
                bar.write(f"stopping after {max_minutes} minutes at step {step}; resume with --resume")
                break
    bar.close()
    log.close()
    return run_dir / "best.pt"
