"""Register a registered image model with a learned context model as a new model (``strata export context``).

The new model shares the original's networks, codebooks, prior and encoder settings; its ``context`` file
(:mod:`strata.entropy.context`) joins its weights hash, because the same codes become different bytes. The
original stays registered and its streams keep decoding. The networks are trained by ``strata train
context`` (:mod:`strata.train.context`) against the original's table prior, which they refine: a model
whose prior differs from that one is refused.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
from strata.entropy.context import ContextModel
from strata.export.common import register
from strata.frontend.image import list_images, read_image
from strata.image import ImageCodec
from strata.registry import FileRef, ModelEntry, Registry, serving_roles, sha256_file, weights_hash


def export_context(run: Path, models_dir: Path, new_name: str, make_default: bool = False,
                   description: str | None = None) -> ModelEntry:
    """Register ``new_name``: the model a ``strata train context`` run in ``run`` was trained for, with the run's
    ``context.npz``. Raises ``ValueError`` for an unfinished run, a name already registered, or a model whose
    prior is not the one the networks were trained against."""
    run = Path(run)
    cfg_path, ctx_path, report_path = run / "config.json", run / "context.npz", run / "report.json"
    if not ctx_path.exists() or not cfg_path.exists():
        raise ValueError(f"{run} holds no finished context run (config.json and context.npz)")
    cfg = json.loads(cfg_path.read_text())
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    registry = Registry(models_dir)
    if new_name in registry.entries:
        raise ValueError(f"model {new_name!r} is already registered; a context model needs a new name")
    name = cfg["model"]
    codec = ImageCodec.load(registry, name, encoder="full")
    if codec.context is not None:
        raise ValueError(f"model {name!r} already has a context model")
    context = ContextModel.load(ctx_path)
    context.check_against(codec.prior.codebook_sizes)
    trained = report.get("prior_sha256")
    if trained is not None and trained != codec.entry.files["prior"].sha256:
        raise ValueError(f"the networks in {run} were trained against another prior than {name!r}'s")
    out = Path(models_dir) / new_name
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(ctx_path, out / "context.npz")
    files = dict(codec.entry.files)
    files["context"] = FileRef(str((out / "context.npz").relative_to(models_dir)), sha256_file(out / "context.npz"))
    layers = report.get("layers", {})
    extra = {k: v for k, v in codec.entry.extra.items() if k != "measured_on"}
    extra["context_model"] = {
        "from": name, "from_weights_sha256": codec.entry.weights_sha256,
        "layers_with_network": [int(i) for i, v in layers.items() if v.get("kept")],
        "val_bits_table": [layers[str(i)]["table_bits"] for i in range(len(layers))] if layers else [],
        "val_bits_network": [layers[str(i)]["net_bits"] for i in range(len(layers))] if layers else [],
        "trained_on": f"{Path(cfg['data']).name}/train", "chosen_on": f"{Path(cfg['data']).name}/val",
        "hidden": cfg.get("hidden"), "emb_dim": cfg.get("emb_dim"), "epochs": cfg.get("epochs"),
    }
    entry = dataclasses.replace(
        codec.entry, name=new_name, files=files, weights_sha256=weights_hash(files, serving_roles("image", files)),
        description=description or f"{codec.entry.description}; layers coded with a learned context model",
        bits_per_layer=(), bpp_per_layer=(), extra=extra)
    check = ImageCodec(entry, codec.analysis, codec.synthesis, codec.quantizer, codec.prior, codec.limits,
                       codec.tile, codec.rdo_lambda, context)
    val = list_images(Path(cfg["data"]) / "val")[:1]  # one image is enough to check the round trip
    image = read_image(val[0].read_bytes()) if val else None
    if image is not None and not np.array_equal(check.decompress(check.compress(image)),
                                                check.decode(check.encode(image))):
        raise RuntimeError(f"model {new_name!r} does not round-trip")
    register(Path(models_dir), entry, make_default=make_default)
    return entry


__all__ = ["export_context"]
