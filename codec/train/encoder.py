"""A lighter analysis network for a trained image model, by distillation (``strata train encoder``).

::

    x ─►─┤ teacher g_a (frozen, float32) ├─►─ y        (precomputed once per training image)
    x ─►─┤ student g_a (narrower)        ├─►─ y'   loss = MSE(y', y) on latents away from the crop border

The codes, and so the stream, depend on the analysis network only through the latent it hands to
the quantizer: a student that reproduces the teacher's latent produces streams that the model's
unchanged synthesis network, codebooks and prior decode, so it can replace the teacher at encode
time without a new model (:func:`strata.export.encoder.export_light_analysis`). Most of an encode
is the analysis network (docs/results.md, *Where the time goes*), so a narrower one is the lever
on encode speed that leaves the decoder and every existing stream alone.

The student is an :class:`~strata.train.nets.image.Analysis` with its own widths and blocks
(``enc_channels``, ``enc_blocks``). It starts from the teacher's linear block-PCA path and a zeroed
nonlinear path, i.e. at the teacher's linear approximation. The teacher's latents are computed on
whole training images (as the service sees them) and crops are taken on the 8-pixel grid; the loss
skips ``margin`` latent rows and columns at each crop border, where the student sees zero padding
that the teacher did not.

Validation runs the whole codec (student ``g_a``, the teacher's quantizer and ``g_s``) on centre
crops of ``images/val`` and reports PSNR per layer count beside the teacher's; ``best.pt`` keeps the
step with the highest mean PSNR. Checkpoints are ordinary image checkpoints
(:func:`strata.train.image.read_checkpoint`) whose ``g_a`` is the student, plus the teacher's path.
Runs resume from ``last.pt``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from strata.train.data import center_crops, load_images
from strata.train.image import ImageAutoencoder, ImageTrainConfig, read_checkpoint, validate
from strata.train.loop import PartRun, fit_part, restore, rng_state, save_checkpoint, start
from strata.train.nets.image import Analysis


@dataclass
class EncoderTrainConfig:
    """Settings of an analysis-distillation run."""

    teacher: str  # image checkpoint whose g_a is distilled (a run's best.pt or checkpoints/<name>/checkpoint.pt)
    data: str = "../shared/data/images"  # folder with train/ and val/
    enc_channels: tuple[int, int, int] = (32, 64, 128)  # student widths at 1/2, 1/4, 1/8 resolution
    enc_blocks: tuple[int, int, int] = (0, 0, 1)  # student residual blocks per scale
    steps: int = 16000
    batch: int = 8
    crop: int = 192  # pixels, a multiple of 8
    margin: int = 3  # latent rows/columns left out of the loss along a crop side inside the image
    edge: float = 0.25  # probability that a crop touches the image border on an axis
    lr: float = 5e-4
    lr_min: float = 1e-5
    decay_start: float = 0.3
    warmup: int = 200
    grad_clip: float = 1.0
    max_bad_steps: int = 20
    eval_every: int = 2000
    val_crop: int = 256
    threads: int = 1
    amp: bool = True  # bf16 autocast of the student's forward and backward
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EncoderTrainConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class LatentCrops:
    """Random crops on the ``factor``-pixel grid of images and of their teacher latents, drawn by area.

    Each crop comes with a loss mask over its latent positions: ``margin`` rows or columns are left out
    along a side of the crop that lies inside the image (there the student sees zero padding the teacher
    did not), but not along a side on the image's own border, which the student has to learn to treat as
    the teacher does. ``edge`` is the probability that a crop is pushed against the image's border on an
    axis (each end equally likely), so that border positions are not rare.
    """

    def __init__(self, images: list[np.ndarray], latents: list[np.ndarray], crop: int, factor: int, margin: int,
                 seed: int, edge: float = 0.25) -> None:
        if crop % factor:
            raise ValueError(f"crop must be a multiple of {factor} pixels, got {crop}")
        if not 0 <= 2 * margin < crop // factor:
            raise ValueError(f"margin {margin} leaves no latent of a {crop}-pixel crop in the loss")
        keep = [i for i, im in enumerate(images) if min(im.shape[:2]) >= crop]
        if not keep:
            raise ValueError(f"no training image is at least {crop} pixels on each side")
        self.images = [images[i] for i in keep]
        self.latents = [latents[i] for i in keep]
        area = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.p = area / area.sum()
        self.crop, self.factor, self.margin, self.edge = crop, factor, margin, edge
        self.rng = np.random.default_rng(seed)

    def _start(self, cells: int) -> int:
        """Top (or left) latent index of a crop of ``crop/factor`` cells along an axis of ``cells``."""
        last = cells - self.crop // self.factor
        if self.rng.random() < self.edge:
            return 0 if self.rng.random() < 0.5 else last
        return int(self.rng.integers(0, last + 1))

    def sample(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``n`` crops: pixels ``float [n, 3, crop, crop]`` in [0, 1], latents ``[n, D, c, c]`` (``c = crop/f``)
        and the loss mask ``float [n, 1, c, c]``."""
        f, c, m = self.factor, self.crop, self.margin
        g = c // f
        xs, ys, masks = [], [], []
        for i in self.rng.choice(len(self.images), size=n, p=self.p):
            im, lat = self.images[i], self.latents[i]
            r, q = self._start(lat.shape[1]), self._start(lat.shape[2])
            xs.append(im[r * f : r * f + c, q * f : q * f + c])
            ys.append(lat[:, r : r + g, q : q + g])
            mask = np.zeros((1, g, g), np.float32)
            top, left = (0 if r == 0 else m), (0 if q == 0 else m)
            bottom = g if r + g == lat.shape[1] else g - m
            right = g if q + g == lat.shape[2] else g - m
            mask[:, top:bottom, left:right] = 1
            masks.append(mask)
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255
        return x, torch.from_numpy(np.stack(ys)), torch.from_numpy(np.stack(masks))


@torch.no_grad()
def teacher_latents(g_a: torch.nn.Module, images: list[np.ndarray], factor: int) -> list[np.ndarray]:
    """The teacher's float32 latents ``[D, ⌊H/f⌋, ⌊W/f⌋]`` of each whole image (cropped to the grid)."""
    out = []
    for im in images:
        h, w = (im.shape[0] // factor) * factor, (im.shape[1] // factor) * factor
        x = torch.from_numpy(np.array(im[:h, :w])).permute(2, 0, 1)[None].float() / 255
        out.append(g_a(x)[0].numpy())
    return out


def student_config(teacher: ImageTrainConfig, cfg: EncoderTrainConfig) -> ImageTrainConfig:
    """The teacher's training config with the student's analysis widths and blocks."""
    net = replace(teacher.net, enc_channels=tuple(cfg.enc_channels), enc_blocks=tuple(cfg.enc_blocks))
    return replace(teacher, net=net)


def _load_teacher(cfg: EncoderTrainConfig) -> tuple[ImageAutoencoder, ImageTrainConfig]:
    ckpt = read_checkpoint(Path(cfg.teacher))
    tcfg = ImageTrainConfig.from_dict(ckpt["config"])
    model = ImageAutoencoder.from_config(tcfg.net, tcfg.quantizer_config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    return model.eval(), tcfg


def _save(path: Path, model: ImageAutoencoder, opt: torch.optim.Optimizer, step: int, best: float,
          scfg: ImageTrainConfig, cfg: EncoderTrainConfig, rng: np.random.Generator, teacher_psnr: list[float]) -> None:
    save_checkpoint(path, model, opt, step, best, scfg, rng_state(rng),
                    extra={"encoder": cfg.to_dict(), "teacher_psnr": teacher_psnr})


def train(cfg: EncoderTrainConfig, run_dir: Path, resume: bool = False, max_minutes: float | None = None) -> Path:
    """Distil (or resume distilling) in ``run_dir``; returns the path of ``best.pt``."""
    run_dir, device = start(run_dir, cfg.threads, cfg.seed)
    data = Path(cfg.data)
    for sub in ("train", "val"):
        if "kodak" in str((data / sub).resolve()).lower():
            raise ValueError("Kodak is for evaluation only and is never used for training")
    teacher, tcfg = _load_teacher(cfg)
    scfg = student_config(tcfg, cfg)
    f = tcfg.net.factor
    student = Analysis(scfg.net)
    if student.skip is None or teacher.g_a.skip is None:
        raise ValueError("distillation needs a teacher with the linear path (net.linear_skip)")
    student.skip.load_state_dict(teacher.g_a.skip.state_dict())
    torch.nn.init.zeros_(student.net[-1].weight)
    torch.nn.init.zeros_(student.net[-1].bias)
    model = ImageAutoencoder(student, teacher.quantizer, teacher.g_s).to(device)
    for p in (*model.quantizer.parameters(), *model.g_s.parameters()):
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.g_a.parameters(), lr=cfg.lr)

    cache = run_dir / "cache"
    images = load_images(data / "train", cache)
    lat_file = cache / "teacher_latents.npz"
    if lat_file.exists():
        with np.load(lat_file) as z:
            latents = [z[f"l{i}"] for i in range(len(images))]
    else:
        print(f"teacher latents of {len(images)} training images…", flush=True)
        latents = teacher_latents(teacher.g_a, images, f)
        np.savez(lat_file, **{f"l{i}": lat for i, lat in enumerate(latents)})
    crops = LatentCrops(images, latents, cfg.crop, f, cfg.margin, cfg.seed, cfg.edge)
    val = center_crops(load_images(data / "val", cache), cfg.val_crop)

    step, best, teacher_psnr = 0, -math.inf, []
    last = run_dir / "last.pt"
    if resume and last.exists():
        ckpt = restore(last, model, opt, crops.rng, lambda p: read_checkpoint(p, device))
        step, best, teacher_psnr = ckpt["step"], ckpt["best"], ckpt["teacher_psnr"]
    if not teacher_psnr:
        full = ImageAutoencoder(teacher.g_a, teacher.quantizer, teacher.g_s)
        teacher_psnr = validate(full, val, device, amp=False)["psnr"]
        model.train()
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    print("teacher val PSNR/k [" + " ".join(f"{p:.2f}" for p in teacher_psnr) + "]", flush=True)

    def loss() -> torch.Tensor:
        x, y, mask = (t.to(device) for t in crops.sample(cfg.batch))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            yh = model.g_a(x)
        return ((yh.float() - y) ** 2 * mask).sum() / (mask.sum() * y.shape[1])

    def evaluate(latent_mse: float) -> tuple[float, dict, str]:
        v = validate(model, val, device, amp=False)
        delta = [p - t for p, t in zip(v["psnr"], teacher_psnr, strict=True)]
        return v["score"], {**v, "delta_psnr": delta}, (
            f"latent MSE {latent_mse:.5f}; val PSNR/k − teacher's [" + " ".join(f"{d:+.3f}" for d in delta) + "]")

    def save(path: Path, at: int, score: float) -> None:
        _save(path, model, opt, at, score, scfg, cfg, crops.rng, teacher_psnr)

    fit_part(cfg, run_dir, list(model.g_a.parameters()), opt, step, best,
             PartRun(loss, "latent_mse", float, ".5f", evaluate, save), max_minutes)
    return run_dir / "best.pt"


__all__ = ["EncoderTrainConfig", "LatentCrops", "student_config", "teacher_latents", "train"]

