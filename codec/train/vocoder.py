"""Training loop of the vocoders (``strata train vocoder``): HiFi-GAN, or Vocos with ``arch="vocos"``.

::

    sound files ─► decoded once (float32, 22 050 Hz, cached .npz) ─► random segments [B, segment]
        segment ─► log_mel_torch (the serving mel) ─► G ─► ŷ
        phase 1, step < recon_steps:  L_G = 45·L1(mel(ŷ), mel(y)) + w·MR-STFT(ŷ, y)            (no discriminators)
        phase 2, step ≥ recon_steps:  L_D = LSGAN(MPD) + LSGAN(D2)
                                      L_G = LSGAN_G(MPD, D2) + 2·FM + 45·L1(mel(ŷ), mel(y))   (the paper's)
        D2 = MSD (HiFi-GAN's multi-scale discriminator, ``disc="msd"``) or the compact multi-resolution
             spectrogram discriminator (``disc="mrd"``, :mod:`strata.train.nets.vocos_model`)

``arch`` picks the generator: HiFi-GAN (``gen``, :mod:`strata.train.nets.hifigan_model`) or the
Vocos-style ConvNeXt stack with an inverse-STFT head (``vocos``, :mod:`strata.train.nets.vocos_model`);
the losses, data, schedule and selection are the same for both.

The reconstruction phase without discriminators makes the run affordable on CPUs: a
generator step with a reconstruction loss costs about 1/30 of an adversarial one. The loss
mel goes up to Nyquist (``loss_fmax``); the generator's input and the selection metric use
the serving mel (8 kHz, ``DEFAULT_MEL``). The STFT loss weighs 15 (``stft_weight``), not 1:
at weight 1 its gradient is about a tenth of the mel term's, and the 80-band mel does not
see the harmonics.

``gen.balanced_upsampling`` removes the comb at multiples of the frame rate that
zero-insertion upsampling leaves (``strata.train.nets.hifigan_model``). ``d_width``
scales both discriminators' channels (:meth:`VocoderTrainConfig.with_discriminator_width`).
``d_warmup``, ``frame_weight`` and ``phase_weight`` are experiment settings, off by default
and without a command-line flag (``--config``); docs/notes/vocoder.md records what each did.

Model selection never touches a test split: a fixed ``heldout`` fraction of the
*training* files, chosen by a hash of the file name (:func:`strata.train.data.split_heldout`),
is held out. Every evaluation runs the generator (eval mode) on those whole clips and logs
the L1 (and RMSE) between the log-mel of the generated audio and that of the reference;
that L1 selects ``best.pt`` in the reconstruction phase. When ``pesq`` and ``pystoi`` are
installed, PESQ-WB and STOI (16 kHz) on a few held-out speech clips are logged too, and
PESQ-WB selects in the adversarial phase (``adv_select``; :func:`selection_score`).

``best.pt`` is selected within a phase: when the adversarial phase begins, the best
reconstruction-phase generator is kept as ``best_recon.pt`` and selection starts over.

The run directory holds ``config.json``, ``log.jsonl`` (``"kind": "train"`` records every
``log_every`` steps, ``"kind": "eval"`` records at every evaluation), ``last.pt`` (resume
point: generator, discriminators once built, both optimisers, step, RNG states),
``best.pt`` / ``best_recon.pt`` (generator only) and ``cache/`` (decoded audio).
The learning rates are a closed form of the step (``lr · lr_decay^⌊step / decay_every⌋``),
so resuming needs no scheduler state beyond the step. :func:`strata.export.vocoder.export_vocoder`
turns a checkpoint into ``vocoder.onnx`` + ``vocoder.pt``.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from strata.frontend.audio import DEFAULT_MEL, MelConfig, list_audio
from strata.train.checkpoint import read_checkpoint
from strata.train.data import load_audio, split_heldout
from strata.train.nets.hifigan_loss import (
    MEL_WEIGHT,
    PHASE_RESOLUTIONS,
    STFT_RESOLUTIONS,
    discriminator_loss,
    feature_matching_loss,
    frame_pattern,
    frame_pattern_loss,
    generator_adversarial_loss,
    multi_resolution_stft_loss,
    phase_loss,
)
from strata.train.nets.hifigan_model import (
    DiscriminatorOutput,
    Generator,
    HiFiGANConfig,
    MultiPeriodDiscriminator,
    MultiScaleDiscriminator,
)
from strata.train.nets.mel import log_mel_torch
from strata.train.nets.vocos_model import MultiResolutionDiscriminator, VocosConfig, VocosGenerator

SAMPLE_RATE = DEFAULT_MEL.sample_rate


def _tuples(v: object) -> object:
    return tuple(_tuples(e) for e in v) if isinstance(v, list | tuple) else v


@dataclass
class VocoderTrainConfig:
    """Data, networks and schedule of a vocoder training run (saved as ``config.json``)."""

    data: str = "../shared/data/audio"  # folder with <set>/train/ sub-folders
    sets: tuple[str, ...] = ("speech",)  # which sets' train/ splits to use, e.g. ("speech", "environment")
    arch: str = "hifigan"  # generator: "hifigan" (gen) or "vocos" (vocos: ConvNeXt + inverse STFT)
    gen: HiFiGANConfig = field(default_factory=HiFiGANConfig.v3)
    vocos: VocosConfig = field(default_factory=VocosConfig)
    disc: str = "msd"  # second discriminator beside the MPD: "msd" (HiFi-GAN's) or "mrd" (compact STFT)
    mrd_channels: int = 32  # channels of every multi-resolution discriminator layer
    mpd_channels: tuple[int, ...] = (32, 128, 512, 1024, 1024)  # the paper's MPD
    msd_channels: tuple[int, ...] = (128, 128, 256, 512, 1024, 1024, 1024)  # the paper's MSD
    msd_groups: tuple[int, ...] = (1, 4, 16, 16, 16, 16, 1)
    segment: int = 8192  # samples per training segment (a multiple of the hop)
    batch: int = 4
    gain_db: float = 0.0  # random attenuation of each segment, uniform in [−gain_db, 0] dB (0: off)
    lr: float = 2e-4  # both optimisers (AdamW, as the paper)
    betas: tuple[float, float] = (0.8, 0.99)
    weight_decay: float = 0.01  # AdamW's decoupled weight decay (the paper's λ = 0.01; 0 gives Adam)
    lr_decay: float = 0.999  # factor per decay period
    decay_every: int = 0  # steps per decay period; 0: one epoch-equivalent (training samples / (batch·segment))
    steps: int = 50_000  # total generator steps, both phases
    recon_steps: int = 30_000  # generator-only reconstruction phase (steps before the discriminators join)
    stft_weight: float = 15.0  # multi-resolution STFT loss weight in the reconstruction phase (see the module doc)
    adv_stft_weight: float = 0.0  # ... and in the adversarial phase (the paper: 0)
    stft_resolutions: tuple[tuple[int, int, int], ...] = STFT_RESOLUTIONS  # (n_fft, hop, win) of the STFT loss
    frame_weight: float = 0.0  # frame-pattern loss (the frame-rate buzz; see the module doc), both phases
    phase_weight: float = 0.0  # anti-wrapping phase loss (phase_loss; see the module doc), both phases
    d_warmup: int = 0  # first adversarial-phase steps that train only the discriminators (generator frozen)
    loss_fmax: float = 11025.0  # top of the loss mel (Hz): Nyquist, as the reference recipe
    eval_every: int = 1000  # steps between evaluations in the reconstruction phase
    adv_eval_every: int = 200  # ... in the adversarial phase (a step there costs ~30× more)
    log_every: int = 50  # steps between "train" records in log.jsonl
    heldout: float = 0.1  # fraction of the training files held out for selection (by name hash)
    pesq_clips: int = 8  # held-out speech clips scored with PESQ-WB/STOI per evaluation (0: off)
    adv_select: str = "pesq"  # what selects best.pt in the adversarial phase: "pesq" (held-out PESQ-WB) or "mel_l1"
    threads: int = 2
    seed: int = 0
    amp: bool = False  # bf16 autocast of the networks (losses stay float32)

    def __post_init__(self) -> None:
        if self.arch not in ("hifigan", "vocos"):
            raise ValueError(f"arch must be 'hifigan' or 'vocos', got {self.arch!r}")
        if self.disc not in ("msd", "mrd"):
            raise ValueError(f"disc must be 'msd' or 'mrd', got {self.disc!r}")
        if self.mrd_channels < 1:
            raise ValueError(f"mrd_channels must be >= 1, got {self.mrd_channels}")
        if self.segment % self.hop or self.segment <= 2048:
            raise ValueError(f"segment must be a multiple of the hop {self.hop} and > 2048, got {self.segment}")
        if not self.sets:
            raise ValueError("need at least one audio set")
        if not 0 < self.heldout < 1:
            raise ValueError(f"heldout must be in (0, 1), got {self.heldout}")
        if self.stft_weight < 0 or self.adv_stft_weight < 0:
            raise ValueError(f"STFT loss weights must be >= 0, got {self.stft_weight} and {self.adv_stft_weight}")
        if self.frame_weight < 0:
            raise ValueError(f"frame_weight must be >= 0, got {self.frame_weight}")
        if self.phase_weight < 0:
            raise ValueError(f"phase_weight must be >= 0, got {self.phase_weight}")
        if not self.stft_resolutions or any(len(r) != 3 or min(r) < 1 or r[2] > r[0] or r[0] // 2 >= self.segment
                                            for r in self.stft_resolutions):
            raise ValueError("stft_resolutions must be (n_fft, hop, win) triples with 1 <= win <= n_fft "
                             f"and n_fft / 2 < segment, got {self.stft_resolutions}")
        if self.d_warmup < 0:
            raise ValueError(f"d_warmup must be >= 0, got {self.d_warmup}")
        if self.adv_select not in ("pesq", "mel_l1"):
            raise ValueError(f"adv_select must be 'pesq' or 'mel_l1', got {self.adv_select!r}")

        if not self.mpd_channels or min(self.mpd_channels) < 1:
            raise ValueError(f"mpd_channels must be positive, got {self.mpd_channels}")
        cins = (1, *self.msd_channels[:-1])
        if (len(self.msd_channels) != len(self.msd_groups) or min(self.msd_channels, default=0) < 1
                or any(ci % g or co % g for ci, co, g in zip(cins, self.msd_channels, self.msd_groups, strict=False))):
            raise ValueError(f"msd_channels {self.msd_channels} must be positive and divisible by msd_groups "
                             f"{self.msd_groups}, layer by layer")

    @property
    def net(self) -> HiFiGANConfig | VocosConfig:
        """The generator's configuration: ``gen`` or ``vocos``, as ``arch`` says."""
        return self.vocos if self.arch == "vocos" else self.gen

    @property
    def hop(self) -> int:
        return self.net.hop

    def with_discriminator_width(self, width: float) -> VocoderTrainConfig:
        """A copy whose MPD and MSD have ``width`` × the paper's channels (MSD's rounded to multiples of 16)."""
        if not 0 < width <= 1:
            raise ValueError(f"discriminator width must be in (0, 1], got {width}")
        paper = VocoderTrainConfig()
        return replace(
            self,
            mpd_channels=tuple(max(1, round(c * width)) for c in paper.mpd_channels),
            msd_channels=tuple(max(16, round(c * width / 16) * 16) for c in paper.msd_channels),
            msd_groups=paper.msd_groups,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> VocoderTrainConfig:
        d = dict(d)
        gen = HiFiGANConfig.from_dict(d.pop("gen"))
        vocos = VocosConfig.from_dict(d.pop("vocos")) if "vocos" in d else VocosConfig()
        return cls(gen=gen, vocos=vocos, **{k: _tuples(v) for k, v in d.items()})


# ----------------------------------------------------------------------------------------------- data


def training_files(cfg: VocoderTrainConfig) -> dict[str, list[Path]]:
    """``{set: files of <data>/<set>/train}`` (never a test split)."""
    out = {}
    for s in cfg.sets:
        if "test" in Path(s).parts:
            raise ValueError(f"set {s!r} names a test split: test data is for evaluation only")
        out[s] = list_audio(Path(cfg.data) / s / "train")
    return out


class RandomSegments:
    """Random ``segment``-sample windows of the clips (every sample equally likely); short clips are zero-padded.

    ``sample(n)`` returns float32 ``[n, segment]``.
    """

    def __init__(self, clips: list[np.ndarray], segment: int, seed: int = 0, gain_db: float = 0.0) -> None:
        self.clips = [c for c in clips if len(c)]
        if not self.clips:
            raise ValueError("no training audio")
        self.segment, self.gain_db = segment, gain_db
        self.rng = np.random.default_rng(seed)
        lengths = np.array([len(c) for c in self.clips], dtype=np.float64)
        self.weights = lengths / lengths.sum()

    def sample(self, n: int) -> np.ndarray:
        out = np.zeros((n, self.segment), dtype=np.float32)
        for i, k in enumerate(self.rng.choice(len(self.clips), size=n, p=self.weights)):
            c = self.clips[k]
            if len(c) >= self.segment:
                s = int(self.rng.integers(0, len(c) - self.segment + 1))
                out[i] = c[s : s + self.segment]
            else:
                out[i, : len(c)] = c
            if self.gain_db > 0:
                out[i] *= np.float32(10 ** (-self.rng.uniform(0, self.gain_db) / 20))
        return out


# ------------------------------------------------------------------------------------------ networks


def build_discriminators(cfg: VocoderTrainConfig, device: torch.device) -> tuple[
        MultiPeriodDiscriminator, MultiScaleDiscriminator | MultiResolutionDiscriminator]:
    """MPD and the second discriminator (``cfg.disc``), initialised from ``seed + 1`` without touching
    the global RNG stream.

    They are built only when the adversarial phase starts (71 M parameters at the paper's width),
    and always identically, so a reconstruction-phase checkpoint need not store them.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed + 1)
        mpd = MultiPeriodDiscriminator(channels=cfg.mpd_channels)
        if cfg.disc == "mrd":
            second = MultiResolutionDiscriminator(channels=cfg.mrd_channels)
        else:
            second = MultiScaleDiscriminator(channels=cfg.msd_channels, groups=cfg.msd_groups)
    return mpd.to(device), second.to(device)


def build_generator(cfg: HiFiGANConfig | VocosConfig) -> Generator | VocosGenerator:
    """A freshly initialised generator of either architecture."""
    return VocosGenerator(cfg) if isinstance(cfg, VocosConfig) else Generator(cfg)


def generator_config(d: dict) -> HiFiGANConfig | VocosConfig:
    """A checkpoint's saved generator configuration (``arch: vocos`` marks a Vocos one)."""
    return VocosConfig.from_dict(d) if d.get("arch") == "vocos" else HiFiGANConfig.from_dict(d)


def load_generator(path: Path | str, map_location: str | torch.device = "cpu") -> Generator | VocosGenerator:
    """A float32 generator (weight norm kept, eval mode) from ``last.pt``, ``best.pt`` or ``vocoder.pt``."""
    ckpt = read_checkpoint(path, ("config", "generator"), map_location)
    gen = build_generator(generator_config(ckpt["config"]))
    gen.load_state_dict({k: v.float() for k, v in ckpt["generator"].items()})
    return gen.eval()


def lr_at(cfg: VocoderTrainConfig, step: int, decay_every: int, start: int = 0) -> float:
    """``lr · lr_decay^⌊(step − start) / decay_every⌋`` (the discriminators' schedule starts at ``recon_steps``)."""
    return cfg.lr * cfg.lr_decay ** (max(0, step - start) // decay_every)


def _autocast(device: torch.device, amp: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if amp else nullcontext()


def _discriminate(d: torch.nn.Module, x: torch.Tensor, device: torch.device, amp: bool) -> DiscriminatorOutput:
    """Scores and feature maps, in float32 whatever the autocast dtype."""
    with _autocast(device, amp):
        out = d(x)
    if not amp:
        return out
    return DiscriminatorOutput([s.float() for s in out.scores], [[f.float() for f in fs] for fs in out.features])


# ------------------------------------------------------------------------------------------ evaluation


def _pesq_stoi(ref: np.ndarray, deg: np.ndarray) -> tuple[float, float] | None:
    """PESQ-WB and STOI at 16 kHz, or ``None`` when the packages are missing or PESQ finds no speech."""
    try:
        import soxr
        from pesq import pesq
        from pystoi import stoi
    except ImportError:
        return None
    r = soxr.resample(ref.astype(np.float64), SAMPLE_RATE, 16000)
    d = soxr.resample(deg.astype(np.float64), SAMPLE_RATE, 16000)
    try:
        return float(pesq(16000, r, d, "wb")), float(stoi(r, d, 16000))
    except Exception:  # pesq.NoUtterancesError and friends on silent or tiny clips
        return None


@torch.no_grad()
def evaluate(
    gen: Generator | VocosGenerator,
    clips: list[np.ndarray],
    device: torch.device,
    amp: bool = False,
    pesq_idx: tuple[int, ...] = (),
) -> dict:
    """Held-out metrics of ``gen`` on whole clips (eval mode; restored to train mode after).

    ``val_mel_l1`` / ``val_mel_rmse``: over every bin of every frame of every clip, between the
    serving log-mel of the generated audio and that of the reference (natural log domain).
    ``pesq_wb`` / ``stoi``: means over the clips ``pesq_idx`` (``None`` when unavailable).
    ``frame_locked``: mean over clips of RMS(:func:`frame_pattern` of ŷ) / RMS(ŷ), the share of the
    output (DC removed) repeated every mel frame: the frame-rate buzz (speech references: about 0.06).
    ``dc_offset``: mean over clips of |mean(ŷ)| / RMS(ŷ − mean(ŷ)).
    ``val_phase``: mean over clips of :func:`strata.train.nets.hifigan_loss.phase_loss` (group delay and
    instantaneous frequency against the reference; 0 is the reference's phase, about 1 an unrelated one).
    """
    was_training = gen.training
    gen.eval()
    abs_sum = sq_sum = 0.0
    count = 0
    pesqs, stois, locked, dc, phase = [], [], [], [], []
    hop = gen.cfg.hop
    for i, clip in enumerate(clips):
        y = torch.from_numpy(np.ascontiguousarray(clip))[None].to(device)
        mel = log_mel_torch(y)
        with _autocast(device, amp):
            y_hat = gen(mel)
        y_hat = y_hat.float()[:, 0]
        diff = log_mel_torch(y_hat) - mel
        abs_sum += float(diff.abs().sum())
        sq_sum += float((diff**2).sum())
        count += diff.numel()
        n = min(y.shape[-1], y_hat.shape[-1])
        if n > max(r[0] for r in PHASE_RESOLUTIONS) // 2:
            phase.append(float(phase_loss(y_hat[:, :n], y[:, :n])))
        whole = y_hat[:, : y_hat.shape[-1] // hop * hop]
        offset = float(whole.mean())
        whole = whole - offset  # a DC offset is not a buzz
        rms = float(whole.pow(2).mean().sqrt())
        if rms > 0:
            locked.append(float(frame_pattern(whole, hop).pow(2).mean().sqrt()) / rms)
            dc.append(abs(offset) / rms)
        if i in pesq_idx:
            scores = _pesq_stoi(clip[: y_hat.shape[-1]], y_hat[0].cpu().numpy())
            if scores is not None:
                pesqs.append(scores[0])
                stois.append(scores[1])
    gen.train(was_training)
    return {
        "val_mel_l1": abs_sum / max(count, 1),
        "val_mel_rmse": math.sqrt(sq_sum / max(count, 1)),
        "pesq_wb": float(np.mean(pesqs)) if pesqs else None,
        "stoi": float(np.mean(stois)) if stois else None,
        "pesq_clips": len(pesqs),
        "frame_locked": float(np.mean(locked)) if locked else None,
        "dc_offset": float(np.mean(dc)) if dc else None,
        "val_phase": float(np.mean(phase)) if phase else None,
    }


def selection_score(metrics: dict, phase: str, adv_select: str) -> tuple[float, str]:
    """The score (lower is better) that selects ``best.pt``, and the name of the metric it came from.

    The reconstruction phase selects on held-out mel L1. The adversarial phase trades mel distance
    for realism, so with ``adv_select="pesq"`` it selects on held-out PESQ-WB (as ``−PESQ``); when
    PESQ is unavailable (packages missing, no speech clip scored) it falls back to mel L1.
    """
    if phase == "adversarial" and adv_select == "pesq" and metrics.get("pesq_wb") is not None:
        return -float(metrics["pesq_wb"]), "pesq"
    return float(metrics["val_mel_l1"]), "mel_l1"


# ---------------------------------------------------------------------------------------- checkpoints


def _atomic_save(obj: dict, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _generator_checkpoint(gen: Generator | VocosGenerator, cfg: VocoderTrainConfig, step: int, best: float,
                          metrics: dict) -> dict:
    return {"generator": gen.state_dict(), "config": cfg.net.to_dict(), "train_config": cfg.to_dict(),
            "step": step, "best": best, "metrics": metrics}


# ---------------------------------------------------------------------------------------------- train


def train(
    cfg: VocoderTrainConfig,
    run_dir: Path,
    resume: bool = False,
    max_minutes: float | None = None,
    init_from: Path | None = None,
) -> Path:
    """Train (or resume) in ``run_dir``; returns the path of ``best.pt``.

    ``resume`` continues from ``run_dir/last.pt`` (networks, optimisers, step, RNG states).
    ``init_from`` starts from the generator of another checkpoint (``last.pt``, ``best.pt`` or an
    exported ``vocoder.pt``): its step count is kept (so a warmed-up generator goes on where its
    schedule was), the optimisers start afresh. ``max_minutes`` evaluates, checkpoints and stops.
    """
    from tqdm import tqdm

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg.seed)

    # Data: every training file decoded once; a fixed slice of them held out for selection.
    train_clips, held_clips, speech_held = [], [], []
    for s, files in training_files(cfg).items():
        tr, he = split_heldout(files, cfg.heldout)
        train_clips += load_audio(tr, run_dir / "cache")
        clips = load_audio(he, run_dir / "cache")
        if s == "speech":
            speech_held = list(range(len(held_clips), len(held_clips) + len(clips)))
        held_clips += clips
    keep = [i for i, c in enumerate(held_clips) if len(c) >= 2 * cfg.hop + DEFAULT_MEL.n_fft]
    speech_held = [keep.index(i) for i in speech_held if i in keep]
    held_clips = [held_clips[i] for i in keep]
    if cfg.pesq_clips and speech_held:
        picks = np.linspace(0, len(speech_held) - 1, min(cfg.pesq_clips, len(speech_held))).round().astype(int)
        pesq_idx = tuple(sorted({speech_held[i] for i in picks}))
    else:
        pesq_idx = ()
    segments = RandomSegments(train_clips, cfg.segment, seed=cfg.seed, gain_db=cfg.gain_db)
    train_samples = sum(len(c) for c in train_clips)
    decay_every = cfg.decay_every or max(1, round(train_samples / (cfg.batch * cfg.segment)))

    gen = build_generator(cfg.net).to(device).train()
    betas = tuple(cfg.betas)
    opt_g = torch.optim.AdamW(gen.parameters(), lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)
    mpd = d2 = opt_d = None

    def build_d() -> None:
        nonlocal mpd, d2, opt_d
        mpd, d2 = build_discriminators(cfg, device)
        params = list(mpd.parameters()) + list(d2.parameters())
        opt_d = torch.optim.AdamW(params, lr=cfg.lr, betas=betas, weight_decay=cfg.weight_decay)

    step, best = 0, math.inf
    last = run_dir / "last.pt"
    if resume and last.exists():
        ckpt = torch.load(last, map_location=device, weights_only=False)
        gen.load_state_dict(ckpt["generator"])
        opt_g.load_state_dict(ckpt["opt_g"])
        if "mpd" in ckpt:
            build_d()
            mpd.load_state_dict(ckpt["mpd"])
            d2.load_state_dict(ckpt[cfg.disc])
            opt_d.load_state_dict(ckpt["opt_d"])
        step, best = ckpt["step"], ckpt["best"]
        decay_every = ckpt.get("decay_every", decay_every)
        segments.rng.bit_generator.state = ckpt["rng"]["numpy"]
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())  # map_location moved it to the device
        if device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])
        print(f"resumed from {last} at step {step} (best selection score {best:.4f})", flush=True)
    elif init_from is not None:
        ckpt = torch.load(init_from, map_location=device, weights_only=False)
        theirs = generator_config(ckpt["config"])
        if isinstance(theirs, HiFiGANConfig):  # balancing the upsamplers keeps the weights' shapes
            theirs = replace(theirs, balanced_upsampling=cfg.gen.balanced_upsampling)
        if theirs != cfg.net:
            raise ValueError(f"{init_from} holds a generator of another configuration: {ckpt['config']}")
        gen.load_state_dict({k: v.float() for k, v in ckpt["generator"].items()})
        step = int(ckpt.get("step") or 0)
        print(f"initialised the generator from {init_from} (step {step})", flush=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    log = (run_dir / "log.jsonl").open("a")

    def write(rec: dict) -> None:
        log.write(json.dumps(rec) + "\n")
        log.flush()

    def save_last() -> None:
        rng = {"numpy": segments.rng.bit_generator.state, "torch": torch.get_rng_state(),
               "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else None}
        ckpt = {**_generator_checkpoint(gen, cfg, step, best, {}), "opt_g": opt_g.state_dict(), "rng": rng,
                "decay_every": decay_every}
        if mpd is not None:
            ckpt.update({"mpd": mpd.state_dict(), cfg.disc: d2.state_dict(), "opt_d": opt_d.state_dict()})
        _atomic_save(ckpt, last)

    def run_eval() -> float:
        """Evaluate, select, checkpoint; returns the seconds it took (kept out of the step timing)."""
        nonlocal best
        t = time.time()
        v = evaluate(gen, held_clips, device, False, pesq_idx)  # float32: the metric must not depend on amp
        phase = "adversarial" if mpd is not None else "reconstruction"
        score, select = selection_score(v, phase, cfg.adv_select)
        improved = score < best
        if improved:
            best = score
            _atomic_save(_generator_checkpoint(gen, cfg, step, best, v), run_dir / "best.pt")
        save_last()
        write({"kind": "eval", "step": step, "time": time.time(), "phase": phase, **v, "select": select,
               "best": best, "improved": improved, "eval_s": time.time() - t})
        extra = f" PESQ {v['pesq_wb']:.2f} STOI {v['stoi']:.3f}" if v["pesq_wb"] is not None else ""
        bar.write(f"step {step} ({phase}): held-out mel L1 {v['val_mel_l1']:.4f} rmse {v['val_mel_rmse']:.4f}"
                  f"{extra}{' *' if improved else ''}")
        return time.time() - t

    mel_loss_cfg = MelConfig(fmax=cfg.loss_fmax)
    amp = cfg.amp
    started = t0 = time.time()
    sums: dict[str, float] = {}
    n_run = 0
    bar = tqdm(total=cfg.steps, initial=step, dynamic_ncols=True, mininterval=5)
    while step < cfg.steps:
        adv = step >= cfg.recon_steps
        if adv and mpd is None:  # the phase boundary: keep the warm-up's best, select afresh from here
            if (run_dir / "best.pt").exists():
                shutil.copyfile(run_dir / "best.pt", run_dir / "best_recon.pt")
            best = math.inf
            build_d()
            bar.write(f"step {step}: adversarial phase (MPD + {cfg.disc.upper()}) begins")
        for g in opt_g.param_groups:
            g["lr"] = lr_at(cfg, step, decay_every)
        y = torch.from_numpy(segments.sample(cfg.batch)).to(device)
        with torch.no_grad():
            mel = log_mel_torch(y)  # the serving mel: [B, 80, segment / hop]
        y = y[:, None]
        warm = adv and step < cfg.recon_steps + cfg.d_warmup  # discriminators only: no generator graph
        with torch.set_grad_enabled(not warm), _autocast(device, amp):
            y_hat = gen(mel)
        y_hat = y_hat.float()
        losses: dict[str, torch.Tensor] = {}
        if adv:
            for g in opt_d.param_groups:
                g["lr"] = lr_at(cfg, step, decay_every, start=cfg.recon_steps)
            fake = y_hat.detach()
            loss_d = discriminator_loss(_discriminate(mpd, y, device, amp).scores,
                                        _discriminate(mpd, fake, device, amp).scores) + \
                discriminator_loss(_discriminate(d2, y, device, amp).scores,
                                   _discriminate(d2, fake, device, amp).scores)
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
            losses["disc"] = loss_d.detach()
        if not warm:
            mel_l1 = F.l1_loss(log_mel_torch(y_hat, mel_loss_cfg), log_mel_torch(y, mel_loss_cfg))
            losses["mel_l1"] = mel_l1.detach()
            loss_g = MEL_WEIGHT * mel_l1
            stft_w = cfg.adv_stft_weight if adv else cfg.stft_weight
            if stft_w > 0:
                stft = multi_resolution_stft_loss(y_hat, y, cfg.stft_resolutions)
                losses["stft"] = stft.detach()
                loss_g = loss_g + stft_w * stft
            if cfg.frame_weight > 0:
                frame = frame_pattern_loss(y_hat, y, cfg.hop)
                losses["frame"] = frame.detach()
                loss_g = loss_g + cfg.frame_weight * frame
            if cfg.phase_weight > 0:
                phase = phase_loss(y_hat, y)
                losses["phase"] = phase.detach()
                loss_g = loss_g + cfg.phase_weight * phase
            if adv:
                adv_loss = fm = 0.0
                for d in (mpd, d2):
                    real, fake_out = _discriminate(d, y, device, amp), _discriminate(d, y_hat, device, amp)
                    adv_loss = adv_loss + generator_adversarial_loss(fake_out.scores)
                    fm = fm + feature_matching_loss(real.features, fake_out.features)
                losses["adv"], losses["fm"] = adv_loss.detach(), fm.detach()
                loss_g = loss_g + adv_loss + fm
            if not torch.isfinite(loss_g):
                raise RuntimeError(f"non-finite generator loss at step {step}; resume from {last} with a lower lr")
            opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            opt_g.step()
        step += 1
        n_run += 1
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        bar.update(1)
        if step % cfg.log_every == 0 or step == cfg.steps or step == cfg.recon_steps:
            dt = time.time() - t0
            means = {k: v / n_run for k, v in sums.items()}
            rec = {"kind": "train", "step": step, "time": time.time(), "phase": "adversarial" if adv else
                   "reconstruction", "steps_per_s": n_run / dt, "s_per_step": dt / n_run,
                   "lr": lr_at(cfg, step - 1, decay_every), **means}
            write(rec)
            bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()} | {"s/step": f"{dt / n_run:.2f}"})
            sums, n_run, t0 = {}, 0, time.time()
        interval = cfg.adv_eval_every if adv else cfg.eval_every
        out_of_time = max_minutes is not None and time.time() - started > 60 * max_minutes
        due = step % interval == 0 and not warm  # the generator has not changed during the warm-up
        if due or step == cfg.steps or step == cfg.recon_steps or out_of_time:
            t0 += run_eval()
            if out_of_time and step < cfg.steps:
                bar.write(f"stopping after {max_minutes} minutes at step {step}; resume with --resume")
                break
    bar.close()
    log.close()
    return run_dir / "best.pt"


# --------------------------------------------------------------------------------------------- export


__all__ = [
    "RandomSegments",
    "VocoderTrainConfig",
    "build_discriminators",
    "build_generator",
    "generator_config",
    "evaluate",
    "load_audio",
    "load_generator",
    "train",
    "training_files",
]
