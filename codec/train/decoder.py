"""A synthesis network retrained on a registered image model's own codes (``strata train decoder``).

::

    image ─►─┤ the model's encoder, as registered (ONNX g_a + its RD search) ├─►─ codes   (once per image)
    codes[:k] ─►─┤ codebooks ├─►─ ŷ_k ─►─┤ g_s (trained) ├─►─ x̂     loss = MSE(x̂, x), k uniform in 1..L

The stream carries codes; ``g_s`` only turns them into pixels. A synthesis network trained further on
the codes the registered encoder actually produces (its analysis network and its rate–distortion search,
not the nearest-code search of training) decodes every existing stream of the model better, and changes
neither the codes, nor the prior, nor the context networks, nor the light analysis network: those stay
shared with the original model (:func:`strata.export.decoder.export_decoder` registers the result as a
new model, because the same stream decodes to different pixels).

The codes are computed once on whole ``images/train`` images (and their mirror images) and cached in the
run folder. Training takes random crops on the code grid with the matching pixel crop; the loss leaves
out ``margin`` rows and columns of pixels-per-code along a crop side inside the image, where ``g_s``
sees zero padding it never sees in service. Validation decodes the codes of whole ``images/val``
images at every layer count in float32 and keeps the step with the highest mean PSNR in ``best.pt``;
the first record is the registered network's own score. Kodak is refused. Runs resume from ``last.pt``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from strata.train.checkpoint import read_checkpoint
from strata.train.data import load_images
from strata.train.image import ImageTrainConfig, psnr
from strata.train.image import read_checkpoint as read_image_checkpoint
from strata.train.loop import PartRun, fit_part, restore, rng_state, save_checkpoint, start
from strata.train.nets.image import Synthesis

if TYPE_CHECKING:
    from strata.image import ImageCodec


@dataclass
class DecoderTrainConfig:
    """Settings of a synthesis retraining run."""

    model: str  # the registered image model whose codes are decoded
    checkpoint: str  # its training checkpoint, whose g_s is the starting point (checkpoints/<name>/checkpoint.pt)
    models: str = "models"  # the models folder that registers ``model``
    data: str = "../shared/data/images"  # folder with train/ and val/
    encoder: str = "full"  # which of the model's analysis networks makes the codes ("full" or "light")
    mirror: bool = True  # also train on the codes of each image mirrored left-right
    steps: int = 12000
    batch: int = 8
    crop: int = 24  # code-grid cells per crop side (×8 pixels)
    margin: int = 1  # cells left out of the loss along a crop side inside the image
    lr: float = 1e-4
    lr_min: float = 1e-6
    decay_start: float = 0.2
    warmup: int = 200
    grad_clip: float = 1.0
    max_bad_steps: int = 20
    eval_every: int = 1000
    threads: int = 2
    amp: bool = True  # bf16 autocast of g_s in training; validation runs in float32
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DecoderTrainConfig:
        """The config saved in a run's ``config.json``; ``ValueError`` for one of another kind of run."""
        names = {f.name for f in fields(cls)}
        unknown, missing = sorted(set(d) - names), sorted(n for n in ("model", "checkpoint") if n not in d)
        if unknown or missing:
            raise ValueError("not the config of a strata train decoder run ("
                             + "; ".join([*(["unknown fields " + ", ".join(unknown)] if unknown else []),
                                          *(["missing " + ", ".join(missing)] if missing else [])]) + ")")
        return cls(**d)


class CodeCrops:
    """Random crops on the code grid of images and their code stacks, drawn by area, with a loss mask.

    ``codes[i]`` is ``uint8/int [L, h, w]`` for ``images[i]`` ``uint8 [H, W, 3]`` with ``h = ceil(H / f)``;
    a crop of ``crop`` cells covers ``crop·f`` pixels. The mask leaves out ``margin·f`` pixels along each
    crop side that lies inside the image (not along the image's own border, which ``g_s`` also meets in
    service). Only cells whose pixels lie wholly inside the image are drawn.
    """

    def __init__(self, images: list[np.ndarray], codes: list[np.ndarray], crop: int, factor: int, margin: int,
                 seed: int) -> None:
        if not 0 <= 2 * margin < crop:
            raise ValueError(f"margin {margin} leaves no cell of a {crop}-cell crop in the loss")
        keep = [i for i, im in enumerate(images) if min(im.shape[0], im.shape[1]) // factor >= crop]
        if not keep:
            raise ValueError(f"no training image is at least {crop * factor} pixels on each side")
        self.images = [images[i] for i in keep]
        self.codes = [codes[i] for i in keep]
        area = np.array([im.shape[0] * im.shape[1] for im in self.images], dtype=np.float64)
        self.p = area / area.sum()
        self.crop, self.factor, self.margin = crop, factor, margin
        self.rng = np.random.default_rng(seed)

    def sample(self, n: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """``n`` crops: codes ``int64 [L, n, c, c]``, pixels ``float [n, 3, c·f, c·f]`` in [0, 1] and the
        loss mask ``float [n, 1, c·f, c·f]``."""
        f, c, m = self.factor, self.crop, self.margin
        cs, xs, masks = [], [], []
        for i in self.rng.choice(len(self.images), size=n, p=self.p):
            im, code = self.images[i], self.codes[i]
            rows, cols = im.shape[0] // f, im.shape[1] // f
            r, q = int(self.rng.integers(0, rows - c + 1)), int(self.rng.integers(0, cols - c + 1))
            cs.append(code[:, r : r + c, q : q + c])
            xs.append(im[r * f : (r + c) * f, q * f : (q + c) * f])
            mask = np.zeros((1, c * f, c * f), np.float32)
            top, left = (0 if r == 0 else m * f), (0 if q == 0 else m * f)
            bottom = c * f if r + c == code.shape[1] else (c - m) * f
            right = c * f if q + c == code.shape[2] else (c - m) * f
            mask[:, top:bottom, left:right] = 1
            masks.append(mask)
        x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255
        return np.stack(cs, axis=1).astype(np.int64), x, torch.from_numpy(np.stack(masks))


def views(images: list[np.ndarray], mirror: bool) -> list[np.ndarray]:
    """The images, each followed by its mirror image (left-right) when ``mirror``."""
    return [v for im in images for v in ((im, np.ascontiguousarray(im[:, ::-1])) if mirror else (im,))]


def model_codes(codec: ImageCodec, images: list[np.ndarray], cache: Path) -> list[np.ndarray]:
    """The codes ``uint8 [L, h, w]`` the codec's encoder makes of each image, all layers; kept in ``cache`` (an
    ``.npz``) and read back from it when it holds as many stacks as there are images."""
    if cache.exists():
        with np.load(cache) as z:
            codes = [z[f"c{i}"] for i in range(len(z.files))]
        if len(codes) == len(images):
            return codes
    codes = [codec.encode(im).codes.astype(np.uint8) for im in images]
    np.savez(cache, **{f"c{i}": c for i, c in enumerate(codes)})
    return codes


@torch.no_grad()
def validate(g_s: torch.nn.Module, quantizer, images: list[np.ndarray], codes: list[np.ndarray]) -> dict:
    """PSNR (8-bit rounding, float32 network) per layer count over whole images, and their mean as ``score``."""
    g_s.eval()
    L = int(codes[0].shape[0])
    se, n = np.zeros(L), 0
    for im, code in zip(images, codes, strict=True):
        h, w = im.shape[:2]
        x = torch.from_numpy(np.array(im)).permute(2, 0, 1).float()
        for k in range(1, L + 1):
            latent = torch.from_numpy(quantizer.decode(code[:k, None].astype(np.int64)))
            xh = (g_s(latent)[0, :, :h, :w].clamp(0, 1) * 255).round()
            se[k - 1] += float(((xh - x) ** 2).sum()) / 255**2
        n += x.numel()
    g_s.train()
    psnrs = [psnr(s / n) for s in se]
    return {"psnr": psnrs, "score": float(np.mean(psnrs))}


def _save(path: Path, g_s: torch.nn.Module, opt: torch.optim.Optimizer, step: int, best: float,
          cfg: DecoderTrainConfig, rng: np.random.Generator, start_psnr: list[float]) -> None:
    """A run checkpoint: ``model`` holds ``g_s``'s weights, ``start_psnr`` the registered network's scores."""
    save_checkpoint(path, g_s, opt, step, best, cfg, rng_state(rng), extra={"start_psnr": start_psnr})


def read_run_checkpoint(path: Path, device: str | torch.device = "cpu") -> dict:
    """A ``strata train decoder`` checkpoint (``ModelIntegrityError`` for another kind of file)."""
    return read_checkpoint(path, ("model", "step", "start_psnr"), device)


def load_synthesis(checkpoint: Path) -> tuple[Synthesis, ImageTrainConfig]:
    """``g_s`` (float32) and the training config of an image checkpoint."""
    ckpt = read_image_checkpoint(Path(checkpoint))
    tcfg = ImageTrainConfig.from_dict(ckpt["config"])
    g_s = Synthesis(tcfg.net)
    prefix = "g_s."
    g_s.load_state_dict({k[len(prefix):]: v.float() for k, v in ckpt["model"].items() if k.startswith(prefix)})
    return g_s, tcfg


def train(cfg: DecoderTrainConfig, run_dir: Path, resume: bool = False, max_minutes: float | None = None) -> Path:
    """Retrain (or resume retraining) ``g_s`` in ``run_dir``; returns the path of ``best.pt``."""
    from strata.image import ImageCodec
    from strata.registry import Registry

    data = Path(cfg.data)
    for sub in ("train", "val"):
        if "kodak" in str((data / sub).resolve()).lower():
            raise ValueError("Kodak is for evaluation only and is never used for training")
        if not (data / sub).is_dir():
            raise ValueError(f"{data / sub} is not a folder")
    codec = ImageCodec.load(Registry(Path(cfg.models)), cfg.model, encoder=cfg.encoder, threads=cfg.threads)
    if codec.quantizer.top_layers:
        raise ValueError(f"model {cfg.model!r} is a two-scale model; decoder retraining handles one-scale models")
    g_s, tcfg = load_synthesis(Path(cfg.checkpoint))
    if tcfg.net.latent_dim != codec.quantizer.dim:
        raise ValueError(f"{cfg.checkpoint} does not belong to model {cfg.model!r} (latent dim differs)")
    run_dir, device = start(run_dir, cfg.threads, cfg.seed)
    g_s = g_s.to(device)
    opt = torch.optim.Adam(g_s.parameters(), lr=cfg.lr)
    cache = run_dir / "cache"
    cache.mkdir(exist_ok=True)
    f = codec.factor
    print("codes of the training images…", flush=True)
    images = views(load_images(data / "train", cache), cfg.mirror)
    codes = model_codes(codec, images, cache / "codes_train.npz")
    val_images = load_images(data / "val", cache)
    val_codes = model_codes(codec, val_images, cache / "codes_val.npz")
    crops = CodeCrops(images, codes, cfg.crop, f, cfg.margin, cfg.seed)

    step, best, start_psnr = 0, -math.inf, []
    last = run_dir / "last.pt"
    if resume and last.exists():
        ckpt = restore(last, g_s, opt, crops.rng, lambda p: read_run_checkpoint(p, device))
        step, best, start_psnr = ckpt["step"], ckpt["best"], ckpt["start_psnr"]
    if not start_psnr:
        v = validate(g_s, codec.quantizer, val_images, val_codes)
        start_psnr, best = v["psnr"], v["score"]
        _save(run_dir / "best.pt", g_s, opt, 0, best, cfg, crops.rng, start_psnr)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    print("starting val PSNR/k [" + " ".join(f"{p:.2f}" for p in start_psnr) + "]", flush=True)

    L = codec.quantizer.layers

    def loss() -> torch.Tensor:
        c, x, mask = crops.sample(cfg.batch)
        k = int(crops.rng.integers(1, L + 1))
        latent = torch.from_numpy(codec.quantizer.decode(c[:k])).to(device)
        x, mask = x.to(device), mask.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
            xh = g_s(latent)
        return (((xh.float() - x) ** 2) * mask).sum() / (mask.sum() * 3)

    def evaluate(_: float) -> tuple[float, dict, str]:
        v = validate(g_s, codec.quantizer, val_images, val_codes)
        delta = [p - s for p, s in zip(v["psnr"], start_psnr, strict=True)]
        return v["score"], {**v, "delta_psnr": delta}, (
            "val PSNR/k − start [" + " ".join(f"{d:+.3f}" for d in delta) + "]")

    def save(path: Path, at: int, score: float) -> None:
        _save(path, g_s, opt, at, score, cfg, crops.rng, start_psnr)

    fit_part(cfg, run_dir, list(g_s.parameters()), opt, step, best,
             PartRun(loss, "train_psnr", psnr, ".2f", evaluate, save), max_minutes)
    return run_dir / "best.pt"


__all__ = ["CodeCrops", "DecoderTrainConfig", "load_synthesis", "model_codes", "read_run_checkpoint", "train",
           "validate", "views"]
