"""Register a retrained synthesis network as a new image model (``strata export decoder``).

A ``strata train decoder`` run (:mod:`strata.train.decoder`) retrains a registered model's ``g_s`` on the
codes that model's encoder makes. The new model shares everything else with the original (analysis
networks, codebooks, prior, context networks, RD settings), so it makes the same codes and the same bytes;
its own ``synthesis.onnx`` turns them into different pixels, which is why it is a new model with its own
name and weights hash (the original stays registered, and its streams keep decoding as before). The
original's int8 synthesis network belongs to the old weights and is not carried over: ``strata export
int8`` makes the new model's own. The per-layer bit counts stay valid (same codes) and are kept.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from strata.export.common import export_onnx, register, round_to_fp16
from strata.frontend.image import list_images, read_image
from strata.registry import FileRef, ModelEntry, Registry, serving_roles, sha256_file, weights_hash

DROPPED_ROLES = ("synthesis_int8",)  # files of the original that belong to its synthesis weights


def export_decoder(run: Path, models_dir: Path, new_name: str, make_default: bool = False,
                   description: str | None = None) -> ModelEntry:
    """Register ``new_name``: the model a ``strata train decoder`` run in ``run`` retrained ``g_s`` for, with
    the run's best ``g_s``. Raises ``ValueError`` for a run without a best checkpoint, one whose best is
    its starting network, a name already registered, or an original whose codes the run did not decode."""
    from strata.image import ImageCodec
    from strata.runtime import CPU, OnnxNet
    from strata.train.decoder import DecoderTrainConfig, load_synthesis, read_run_checkpoint

    run = Path(run)
    cfg_path, best_path = run / "config.json", run / "best.pt"
    if not cfg_path.exists() or not best_path.exists():
        raise ValueError(f"{run} holds no decoder run (config.json and best.pt)")
    registry = Registry(models_dir)
    if new_name in registry.entries:
        raise ValueError(f"model {new_name!r} is already registered; a retrained decoder needs a new name")
    cfg = DecoderTrainConfig.from_dict(json.loads(cfg_path.read_text()))
    best = read_run_checkpoint(best_path)
    if not best.get("step"):
        raise ValueError(f"the best network of {run} is the one it started from: nothing to export")
    codec = ImageCodec.load(registry, cfg.model, encoder="full")
    g_s, tcfg = load_synthesis(Path(cfg.checkpoint))
    g_s.load_state_dict(best["model"])
    g_s.eval()
    round_to_fp16(g_s)
    out = Path(models_dir) / new_name
    out.mkdir(parents=True, exist_ok=True)
    path = out / "synthesis.onnx"
    export_onnx(g_s, torch.randn(1, tcfg.net.latent_dim, 4, 6), path, "latent", "image")

    files = {r: f for r, f in codec.entry.files.items() if r not in DROPPED_ROLES}
    files["synthesis"] = FileRef(str(path.relative_to(models_dir)), sha256_file(path))
    extra = {k: v for k, v in codec.entry.extra.items() if k not in DROPPED_ROLES}
    extra["synthesis_retrained"] = {
        "from": cfg.model, "from_weights_sha256": codec.entry.weights_sha256, "step": int(best["step"]),
        "encoder": cfg.encoder, "trained_on": f"{Path(cfg.data).name}/train", "chosen_on": f"{Path(cfg.data).name}/val",
        "val_psnr_start": [round(p, 4) for p in best["start_psnr"]],
    }
    entry = dataclasses.replace(
        codec.entry, name=new_name, files=files, weights_sha256=weights_hash(files, serving_roles("image", files)),
        description=description or f"{codec.entry.description}; synthesis network retrained on the model's codes",
        extra=extra)
    synthesis = OnnxNet.load(path, [CPU])
    check = ImageCodec(entry, codec.analysis, synthesis, codec.quantizer, codec.prior, codec.limits, codec.tile,
                       codec.rdo_lambda, codec.context)
    val = list_images(Path(cfg.data) / "val")[:1]  # one image checks the round trip and the codes
    if val:
        image = read_image(val[0].read_bytes())
        stream, original = check.compress(image), codec.compress(image)
        if (len(stream) - len(new_name) != len(original) - len(cfg.model)
                or not np.array_equal(check.decompress_codes(stream).codes, codec.decompress_codes(original).codes)):
            raise RuntimeError(f"model {new_name!r} does not make {cfg.model!r}'s streams")
        if not np.array_equal(check.decompress(stream), check.decode(check.encode(image))):
            raise RuntimeError(f"model {new_name!r} does not round-trip")
    register(Path(models_dir), entry, make_default=make_default)
    return entry


__all__ = ["DROPPED_ROLES", "export_decoder"]
