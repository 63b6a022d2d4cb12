"""Training loop of the mel codec (``strata train audio``, issue #4).

::

    FLAC files ─► decoded once (22 050 Hz) ─► log-mel of every clip (the serving frontend, numpy), cached
        random crops [B, 80, crop] (+ a random gain: the log-mel shifted by log g, re-floored)
        ─► g_a ─► RVQ (random k per batch: quantizer dropout) ─► g_s ─► MSE of the normalised log-mel

Per-band mean and standard deviation of the training mels are computed once and
stored in both networks (:mod:`strata.train.nets.melcodec`). Model selection never sees
a test split: the held-out part of the *training* files (the vocoder's
name-hash split, :func:`strata.train.data.split_heldout`) is coded whole at
every evaluation, and the mean over layer counts of the normalised-mel RMSE
selects ``best.pt``. The log records RMSE per layer count, per-layer perplexity
and the static-entropy bitrate estimate in kbps.

The run directory holds ``config.json``, ``log.jsonl``, ``last.pt`` (resume point),
``best.pt`` and ``cache/``. The loop (LR schedule, warm-up, divergence guard, logging,
checkpoints, resuming) is the image trainer's (:mod:`strata.train.loop`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from strata.frontend.audio import DEFAULT_MEL, log_mel
from strata.train.checkpoint import read_checkpoint as read_torch_checkpoint
from strata.train.data import load_audio, split_sets
from strata.train.loop import Objective, fit, start
from strata.train.nets.melcodec import MelAnalysis, MelNetConfig, MelSynthesis
from strata.train.quantize.families import build_quantizer
from strata.train.quantize.rsq import RSQConfig
from strata.train.quantize.rvq import RVQConfig
from torch import nn

AUDIO_FAMILIES = ("rvq", "rsq")  # one-scale residual families: the mel grid is only 10 rows high

FRAMES_PER_SECOND = DEFAULT_MEL.sample_rate / DEFAULT_MEL.hop


@dataclass
class AudioTrainConfig:
    """Data, networks and schedule of a mel codec training run (saved as ``config.json``)."""

    data: str = "../shared/data/audio"  # folder with <set>/train/ sub-folders
    sets: tuple[str, ...] = ("speech", "environment")
    steps: int = 20_000
    batch: int = 16
    crop: int = 128  # mel frames per training crop (a multiple of 4; 1.49 s)
    gain_db: float = 12.0  # random attenuation of each crop, uniform in [−gain_db, 0] dB
    lr: float = 3e-4
    lr_min: float = 1e-5
    decay_start: float = 0.6
    warmup: int = 500
    grad_clip: float = 1.0
    max_bad_steps: int = 20
    eval_every: int = 500
    heldout: float = 0.1  # fraction of the training files held out for selection (by name hash)
    threads: int = 2
    amp: bool = True  # bf16 autocast of the networks
    seed: int = 0
    net: MelNetConfig = field(default_factory=MelNetConfig)
    rvq: RVQConfig = field(default_factory=RVQConfig)
    quantizer: str = "rvq"  # family: "rvq" or "rsq" (HQ-VAE's stochastic residual quantization, Table 2's setting)
    rsq: RSQConfig = field(default_factory=RSQConfig)

    def __post_init__(self) -> None:
        if self.crop % self.net.time_factor or self.crop <= 0:
            raise ValueError(f"crop must be a positive multiple of {self.net.time_factor}, got {self.crop}")
        if self.quantizer not in AUDIO_FAMILIES:
            raise ValueError(f"quantizer must be one of {', '.join(AUDIO_FAMILIES)}, got {self.quantizer!r}")
        if self.quantizer_config.dim != self.net.latent_dim:
            raise ValueError(f"{self.quantizer}.dim {self.quantizer_config.dim} != net.latent_dim "
                             f"{self.net.latent_dim}")
        if not self.sets:
            raise ValueError("need at least one audio set")

    @property
    def quantizer_config(self) -> RVQConfig | RSQConfig:
        """The config of the quantizer family this run trains."""
        return self.rsq if self.quantizer == "rsq" else self.rvq

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> AudioTrainConfig:
        d = dict(d)  # configs saved before the families existed have no quantizer key: RVQ
        net = MelNetConfig.from_dict(d.pop("net"))
        rvq = RVQConfig(**d.pop("rvq"))
        rsq = RSQConfig(**d.pop("rsq", {}))
        d["sets"] = tuple(d.get("sets", ()))
        return cls(net=net, rvq=rvq, rsq=rsq, **d)


class MelAutoencoder(nn.Module):
    """``mel ─►─┤g_a├─►─┤RVQ or RSQ├─►─┤g_s├─► mel`` assembled from its parts (training only)."""

    def __init__(self, net: MelNetConfig, rvq: RVQConfig | RSQConfig) -> None:
        super().__init__()
        self.g_a, self.quantizer, self.g_s = MelAnalysis(net), build_quantizer(rvq), MelSynthesis(net)

    def set_stats(self, mean: np.ndarray, std: np.ndarray) -> None:
        m, s = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        self.g_a.set_stats(m, s)
        self.g_s.set_stats(m, s)


def read_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict:
    """A mel codec training or exported checkpoint (with ``model`` weights and ``config``)."""
    ckpt = read_torch_checkpoint(path, ("model", "config"), device)
    if "g_a.mean" not in ckpt["model"]:
        raise ValueError(f"{path} is not a mel codec checkpoint")
    return ckpt


def pad_frames(mel: np.ndarray, multiple: int) -> np.ndarray:
    """Pad ``[..., n_mels, F]`` at the end of time to a multiple of ``multiple`` frames (edge values)."""
    extra = -mel.shape[-1] % multiple
    return np.pad(mel, [(0, 0)] * (mel.ndim - 1) + [(0, extra)], mode="edge") if extra else mel


def clip_mels(files: list[Path], cache_dir: Path | None) -> list[np.ndarray]:
    """Log-mel ``[80, F]`` of every clip (zero-padded to a whole number of 4-frame columns, like serving)."""
    out = []
    for clip in load_audio(files, cache_dir):
        n = max(len(clip), 1024)
        padded = np.zeros(n + (-n % 1024), np.float32)
        padded[: len(clip)] = clip
        out.append(log_mel(padded))
    return out


class RandomMelCrops:
    """Random ``crop``-frame windows of the mels (every frame equally likely), with a random gain."""

    def __init__(self, mels: list[np.ndarray], crop: int, gain_db: float, seed: int = 0) -> None:
        self.mels = [m for m in mels if m.shape[1] >= crop]
        if not self.mels:
            raise ValueError(f"no training clip has {crop} mel frames")
        self.crop, self.gain_db = crop, gain_db
        self.rng = np.random.default_rng(seed)
        lengths = np.array([m.shape[1] for m in self.mels], dtype=np.float64)
        self.weights = lengths / lengths.sum()
        self.floor = float(np.log(DEFAULT_MEL.log_floor))

    def sample(self, n: int) -> np.ndarray:
        out = np.empty((n, self.mels[0].shape[0], self.crop), dtype=np.float32)
        for i, k in enumerate(self.rng.choice(len(self.mels), size=n, p=self.weights)):
            m = self.mels[k]
            s = int(self.rng.integers(0, m.shape[1] - self.crop + 1))
            out[i] = m[:, s : s + self.crop]
            if self.gain_db > 0:  # a gain g scales the mel magnitudes: log-mel + ln g, floored again
                shift = -self.rng.uniform(0, self.gain_db) / 20 * math.log(10)
                out[i] = np.maximum(out[i] + shift, self.floor)
        return out


def band_stats(mels: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-band mean and standard deviation over all frames of ``mels``."""
    allm = np.concatenate(mels, axis=1).astype(np.float64)
    return allm.mean(axis=1).astype(np.float32), allm.std(axis=1).astype(np.float32)


@torch.no_grad()
def validate(model: MelAutoencoder, mels: list[np.ndarray], device: torch.device, amp: bool) -> dict:
    """Normalised-mel RMSE per layer count, per-layer perplexity and static-entropy kbps per layer count."""
    model.eval()
    L, K = model.quantizer.layers, model.quantizer.cfg.codebook_size
    se, n, codes_all, frames = np.zeros(L), 0, [], 0
    for m in mels:
        x = torch.from_numpy(pad_frames(m, 4))[None].to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            y = model.g_a(x)
        codes = model.quantizer(y.float(), L).codes  # [L, 1, rows, cols]
        codes_all.append(codes.flatten(1))
        target = model.g_a.normalise(x)[..., : m.shape[1]]
        embed = model.quantizer.embed
        yq = torch.zeros_like(y, dtype=torch.float32)
        for k in range(L):
            yq = yq + embed[k][codes[k]].permute(0, 3, 1, 2)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                xh = model.g_s.forward_normalised(yq)
            se[k] += float(((xh.float()[..., : m.shape[1]] - target) ** 2).sum())
        n += target.numel()
        frames += m.shape[1]
    codes = torch.cat(codes_all, dim=1)
    bits, ppl = [], []
    for layer in range(L):
        p = torch.bincount(codes[layer], minlength=K).double()
        p = p[p > 0] / p.sum()
        h = float(-(p * p.log2()).sum())
        bits.append(h)
        ppl.append(2**h)
    positions_per_s = codes.shape[1] / (frames / FRAMES_PER_SECOND)
    kbps = list(np.cumsum(bits) * positions_per_s / 1000)
    rmse = list(np.sqrt(se / n))
    model.train()
    return {"rmse": rmse, "kbps_static": kbps, "perplexity": ppl, "score": float(np.mean(rmse))}


def train(
    cfg: AudioTrainConfig,
    run_dir: Path,
    resume: bool = False,
    max_minutes: float | None = None,
    init_from: Path | None = None,
    stop_at: int | None = None,
) -> Path:
    """Train (or resume) in ``run_dir``; returns the path of ``best.pt`` (lower score is better)."""
    run_dir, device = start(run_dir, cfg.threads, cfg.seed)
    for s in cfg.sets:
        if "test" in Path(s).parts:
            raise ValueError(f"set {s!r} names a test split: test data is for evaluation only")
    train_files, held_files = split_sets(Path(cfg.data), cfg.sets, cfg.heldout)
    cache = run_dir / "cache"
    train_mels, held_mels = clip_mels(train_files, cache), clip_mels(held_files, cache)
    crops = RandomMelCrops(train_mels, cfg.crop, cfg.gain_db, seed=cfg.seed)
    print(f"{len(train_files)} training clips ({sum(m.shape[1] for m in train_mels) / FRAMES_PER_SECOND / 60:.1f}"
          f" min), {len(held_files)} held out", flush=True)

    model = MelAutoencoder(cfg.net, cfg.quantizer_config).to(device)

    def batch() -> torch.Tensor:
        return torch.from_numpy(crops.sample(cfg.batch)).to(device)

    def describe(v: dict) -> str:
        rmse_str = " ".join(f"{r:.3f}" for r in v["rmse"])
        kbps_str = " ".join(f"{r:.1f}" for r in v["kbps_static"])
        return f"held-out RMSE/k [{rmse_str}] kbps~[{kbps_str}]"

    objective = Objective(
        synthesise=model.g_s.forward_normalised,
        target=model.g_a.normalise,
        validate=lambda: validate(model, held_mels, device, cfg.amp),
        higher_is_better=False,
        metric="rmse",
        metric_of_mse=math.sqrt,
        bar_formats=(".4f", ".4f"),
        describe=describe,
        best_note="best held-out RMSE {:.4f}",
    )
    return fit(cfg, run_dir, model, batch, crops.rng, objective, read_checkpoint, device, resume=resume,
               max_minutes=max_minutes, init_from=init_from, stop_at=stop_at,
               new_run=lambda: model.set_stats(*band_stats(train_mels)))


__all__ = ["AudioTrainConfig", "MelAutoencoder", "RandomMelCrops", "band_stats", "clip_mels", "read_checkpoint",
           "train", "validate"]
