"""Export a trained image model for serving (``strata export image``).

From a training checkpoint it writes, under ``<models>/<name>/``:

- ``analysis.onnx`` / ``synthesis.onnx``: ``g_a`` and ``g_s`` only (the quantizer
  search and entropy coding stay outside the graph). Weights are rounded to
  float16 and stored as float16 with a Cast to float32, which halves the files;
  the torch networks are rounded the same way first, so ONNX and torch agree.
- ``codebooks.npz``: the quantizer of the run's family (:func:`strata.quantize.save_quantizer`), whose
  name the manifest entry's ``quantizer`` field records.
- ``prior.npz``: the entropy prior, fitted on the codes of ``images/train`` with
  the context of each layer (none / parent / above) chosen by cross-entropy on
  the codes of ``images/val``; ``prior_static.npz``, the context-free baseline.

and adds the model to ``<models>/manifest.json`` with every file's sha256. With
``checkpoints_dir`` it also writes ``<checkpoints_dir>/<name>/checkpoint.pt``, a compact
training checkpoint (float16 weights) to resume training from; it is not served.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from strata.export.common import (
    BASE_FILES,
    export_onnx,
    file_refs,
    fit_priors,
    keep_layers,
    register,
    round_to_fp16,
    save_compact_checkpoint,
)
from strata.registry import ModelEntry, Registry, serving_roles, weights_hash
from strata.train.data import load_images
from strata.train.image import ImageAutoencoder, ImageTrainConfig, read_checkpoint
from strata.train.quantize.families import family_of, inference_codebooks


def load_checkpoint(path: Path) -> tuple[ImageAutoencoder, ImageTrainConfig, dict]:
    """Model (eval mode, float32) and config from a training or exported checkpoint."""
    ckpt = read_checkpoint(path)
    cfg = ImageTrainConfig.from_dict(ckpt["config"])
    model = ImageAutoencoder.from_config(cfg.net, cfg.quantizer_config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    return model.eval(), cfg, ckpt


def export_image_model(
    checkpoint: Path,
    name: str,
    data: Path,
    models_dir: Path,
    description: str = "",
    cache: Path | None = None,
    make_default: bool = True,
    layers: int | None = None,
    checkpoints_dir: Path | None = None,
) -> ModelEntry:
    """Export ``checkpoint`` as model ``name`` into ``models_dir`` and register it.

    ``layers`` keeps only the first that many residual layers (default: all that were trained);
    ``checkpoints_dir`` receives the compact training checkpoint ``<name>/checkpoint.pt``.
    """
    from strata.image import ImageCodec, analyse, contexts, receptive_fields  # serving-side, no torch
    from strata.quantize import save_quantizer
    from strata.runtime import CPU, OnnxNet

    model, cfg, ckpt = load_checkpoint(checkpoint)
    if layers is not None:
        cfg = keep_layers(model, cfg, layers)
    round_to_fp16(model.g_a)
    round_to_fp16(model.g_s)
    out = Path(models_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    f = cfg.net.factor
    export_onnx(model.g_a, torch.rand(1, 3, 4 * f, 6 * f), out / "analysis.onnx", "image", "latent")
    export_onnx(model.g_s, torch.randn(1, cfg.net.latent_dim, 4, 6), out / "synthesis.onnx", "latent", "image")
    quantizer = inference_codebooks(model.quantizer)
    save_quantizer(out / "codebooks.npz", quantizer)
    if checkpoints_dir is not None:
        save_compact_checkpoint(model, cfg.to_dict(), ckpt, Path(checkpoints_dir) / name / "checkpoint.pt")

    # Codes through the exact serving path (ONNX g_a + numpy search) to fit the prior on.
    L = quantizer.layers
    sizes = [quantizer.codebook_size(layer) for layer in range(L)]
    analysis = OnnxNet.load(out / "analysis.onnx", [CPU])
    synthesis = OnnxNet.load(out / "synthesis.onnx", [CPU])
    rf = receptive_fields(analysis, synthesis, cfg.net.latent_dim, f)  # for tiled inference of large images
    context = contexts(rf, f)[0]
    val_images = load_images(Path(data) / "val", cache)
    train_codes = [analyse(analysis, quantizer, im, f, context=context).codes
                   for im in load_images(Path(data) / "train", cache)]
    val_codes = [analyse(analysis, quantizer, im, f, context=context).codes for im in val_images]
    kinds = fit_priors(train_codes, val_codes, sizes, out, quantizer.top_layers)

    files = file_refs(models_dir, out, BASE_FILES)
    entry = ModelEntry(
        name=name,
        modality="image",
        factor=f,
        layers=L,
        codebook_sizes=tuple(sizes),
        latent_dim=cfg.net.latent_dim,
        files=files,
        weights_sha256=weights_hash(files, serving_roles("image", files)),
        description=description,
        quantizer=family_of(cfg.quantizer_config),
        extra={"contexts": kinds, **({"top_layers": quantizer.top_layers} if quantizer.top_layers else {}),
               "train_step": ckpt.get("step"), "config": cfg.to_dict(), "receptive_field": rf},
    )
    register(models_dir, entry, make_default)
    # The registered model must load (sha256 verified) and round-trip a validation image.
    codec = ImageCodec.load(Registry(models_dir), name)
    image = val_images[0]
    if not np.array_equal(codec.decompress(codec.compress(image)), codec.decode(codec.encode(image))):
        raise RuntimeError(f"exported model {name!r} does not round-trip")
    return entry
