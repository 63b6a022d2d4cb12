"""A distilled, lighter analysis network for a registered image model (``strata export encoder``).

Exports the ``g_a`` of a :mod:`strata.train.encoder` checkpoint to ``analysis.light.onnx`` beside the
model's own networks and registers it as the model's ``analysis_light`` file. The checkpoint must have
been distilled from this model: its quantizer has to equal the registered codebooks, otherwise the
student's latents would be quantized against codebooks it never saw.

The synthesis network, codebooks and prior are untouched, so the model's weights hash and every stream
made with either analysis network stay valid (a model that shares the analysis network, such as a
refitted prior's, gets the light network too): ``ImageCodec.load(..., encoder="light")`` (or the service's
``STRATA_IMAGE_ENCODER=light``) encodes with the light network, and any decoder of the model decodes the
result. Before registering, the export round-trips a validation image through the registered model with
the new network and records the student's validation PSNR per layer count beside its teacher's.
"""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import torch
from strata.export.common import export_onnx, round_to_fp16
from strata.quantize import Quantizer
from strata.registry import FileRef, ModelEntry, Registry, sha256_file, write_manifest

ROLE = "analysis_light"
FILE = "analysis.light.onnx"
CODEBOOK_TOLERANCE = 1e-2  # float16 rounding of the checkpoints' codebooks, relative to their largest value


def export_light_analysis(checkpoint: Path, models_dir: Path, name: str, check_image: np.ndarray | None = None,
                          checkpoints_dir: Path | None = None) -> ModelEntry:
    """Write ``<models_dir>/<name>/analysis.light.onnx`` from a distillation checkpoint and register it.

    ``check_image`` (RGB ``uint8 [H, W, 3]``): round-tripped through the registered model with the new
    network before the manifest changes (default: a 64×96 gradient). ``checkpoints_dir`` receives
    ``<name>/analysis_light.pt``, the student's float16 weights and network config (what the ONNX parity
    test rebuilds it from; :func:`load_light_analysis`).
    """
    from strata.export.image import load_checkpoint
    from strata.image import ImageCodec  # serving side
    from strata.runtime import OnnxNet
    from strata.train.quantize.families import inference_codebooks

    ckpt_path = Path(checkpoint)
    model, cfg, ckpt = load_checkpoint(ckpt_path)
    if "encoder" not in ckpt:
        raise ValueError(f"{ckpt_path} is not a distilled-encoder checkpoint (strata train encoder writes one)")
    registry = Registry(models_dir)
    entry = registry.entry(name)
    if entry.modality != "image":
        raise ValueError(f"model {name!r} is an {entry.modality} model; a light analysis network is for images")
    full = ImageCodec.load(registry, name)
    registered = full.quantizer
    ours = inference_codebooks(model.quantizer)
    same_shape = (ours.layers, cfg.net.latent_dim) == (registered.layers, entry.latent_dim)
    if not same_shape or not _same_codebooks(ours, registered):
        raise ValueError(f"{ckpt_path} was not distilled from model {name!r}: its quantizer differs from the "
                         "registered codebooks")
    round_to_fp16(model.g_a)
    out = registry.path(entry, "analysis").parent / FILE
    f = cfg.net.factor
    export_onnx(model.g_a, torch.rand(1, 3, 4 * f, 6 * f), out, "image", "latent")

    info = {"enc_channels": list(cfg.net.enc_channels or cfg.net.channels), "enc_blocks": list(cfg.net.enc_blocks),
            "train_step": ckpt.get("step"), "teacher": Path(ckpt["encoder"]["teacher"]).name,
            "val_psnr": _val_psnr(ckpt_path.parent / "log.jsonl", ckpt.get("step")),
            "teacher_val_psnr": ckpt.get("teacher_psnr")}
    files = {**entry.files, ROLE: FileRef(str(out.relative_to(Path(models_dir))), sha256_file(out))}
    updated = dataclasses.replace(entry, files=files, extra={**entry.extra, ROLE: info})
    light = ImageCodec(updated, OnnxNet.load(out), full.synthesis, full.quantizer, full.prior)
    image = check_image if check_image is not None else _gradient()
    stream = light.compress(image)
    if not np.array_equal(full.decompress(stream), light.decode(light.encode(image))):
        raise RuntimeError(f"the light analysis network of {name!r} does not round-trip")
    # Models that share this analysis network (a refitted prior points at its original's files) share its
    # light network too: their manifest entries are updated with the new file's hash as well.
    entries = dict(registry.entries)
    entries[name] = updated
    for other, e in registry.entries.items():
        if other != name and e.files.get("analysis") == entry.files["analysis"]:
            entries[other] = dataclasses.replace(e, files={**e.files, ROLE: files[ROLE]},
                                                 extra={**e.extra, ROLE: info})
    write_manifest(Path(models_dir), entries, dict(registry.defaults))
    if checkpoints_dir is not None:
        path = Path(checkpoints_dir) / name / "analysis_light.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"g_a": {k: v.half() for k, v in model.g_a.state_dict().items()}, "net": cfg.net.to_dict(),
                    "encoder": ckpt["encoder"], "step": ckpt.get("step")}, path)
    return updated


def load_light_analysis(path: Path) -> torch.nn.Module:
    """The student ``g_a`` (eval mode, float32) of an ``analysis_light.pt`` written by :func:`export_light_analysis`."""
    from strata.train.checkpoint import read_checkpoint
    from strata.train.nets.image import Analysis, ImageNetConfig

    ckpt = read_checkpoint(path, ("g_a", "net"))
    g_a = Analysis(ImageNetConfig.from_dict(ckpt["net"]))
    g_a.load_state_dict({k: v.float() for k, v in ckpt["g_a"].items()})
    return g_a.eval()


def _same_codebooks(a: Quantizer, b: Quantizer) -> bool:
    """Whether two quantizers hold the same arrays, up to the float16 rounding of compact checkpoints."""
    x, y = _arrays(a), _arrays(b)
    if x.keys() != y.keys():
        return False
    for k, v in y.items():
        scale = CODEBOOK_TOLERANCE * max(float(np.abs(v).max(initial=0.0)), 1e-6)
        if x[k].shape != v.shape or (v.size and float(np.abs(x[k] - v).max()) > scale):
            return False
    return True


def _arrays(quantizer: Quantizer) -> dict[str, np.ndarray]:
    from strata.quantize import save_quantizer

    buf = io.BytesIO()
    save_quantizer(buf, quantizer)  # type: ignore[arg-type]
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        return {k: z[k].astype(np.float64) for k in z.files}


def _val_psnr(run_log: Path, step: int | None) -> list[float] | None:
    """Validation PSNR per layer count at ``step``, from the run's ``log.jsonl`` when it lies beside the checkpoint."""
    if not run_log.exists():
        return None
    for line in run_log.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("step") == step and "psnr" in rec:
            return rec["psnr"]
    return None


def _gradient() -> np.ndarray:
    h, w = 64, 96
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)], axis=-1).astype(np.uint8)


__all__ = ["FILE", "ROLE", "export_light_analysis", "load_light_analysis"]
