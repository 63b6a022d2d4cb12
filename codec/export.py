"""Export a trained image model for serving (``strata export image``).

From a training checkpoint it writes, under ``models/<name>/``:

- ``analysis.onnx`` / ``synthesis.onnx``: ``g_a`` and ``g_s`` only (the quantizer
  search and entropy coding stay outside the graph). Weights are rounded to
  float16 and stored as float16 with a Cast to float32, which halves the files;
  the torch networks are rounded the same way first, so ONNX and torch agree.
- ``codebooks.npz``: the RVQ codebooks ``[L, K, D]`` (float32).
- ``prior.npz``: the entropy prior, fitted on the codes of ``images/train`` with
  the context of each layer (none / parent / above) chosen by cross-entropy on
  the codes of ``images/val``.
- ``checkpoint.pt``: float16 weights, codebooks and config, to resume training
  or re-export.

and adds the model to ``models/manifest.json`` with every file's sha256.

The steps every codec export takes (:func:`save_codebooks_and_checkpoint`, :func:`fit_priors`,
:func:`file_refs`, :func:`register`) are here too; :mod:`codec.export_audio` uses them.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from codec.entropy.prior import CodePrior
from codec.registry import (
    MANIFEST,
    SERVING_ROLES,
    FileRef,
    ModelEntry,
    Registry,
    sha256_file,
    weights_hash,
    write_manifest,
)
from codec.train.data import load_images
from codec.train.image import ImageAutoencoder, ImageTrainConfig, read_checkpoint

ConfigT = TypeVar("ConfigT")  # a training config dataclass with an ``rvq`` field

OPSET = 17


def load_checkpoint(path: Path) -> tuple[ImageAutoencoder, ImageTrainConfig, dict]:
    """Model (eval mode, float32) and config from a training or exported checkpoint."""
    ckpt = read_checkpoint(path)
    cfg = ImageTrainConfig.from_dict(ckpt["config"])
    model = ImageAutoencoder.from_config(cfg.net, cfg.rvq)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    return model.eval(), cfg, ckpt


def round_to_fp16(model: torch.nn.Module) -> None:
    """Round every floating-point parameter of ``model`` to float16 precision (in place)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def _store_fp16(path: Path) -> None:
    """Store the graph's float32 initializers as float16 + Cast (values are already fp16-exact)."""
    m = onnx.load(str(path))
    casts, inits = [], []
    for init in m.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.dtype == np.float32 and arr.size >= 64:
            half = numpy_helper.from_array(arr.astype(np.float16), init.name + "__fp16")
            inits.append(half)
            casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT))
        else:
            inits.append(init)
    del m.graph.initializer[:]
    m.graph.initializer.extend(inits)
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(casts + nodes)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def export_onnx(
    net: torch.nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_name: str,
    axes: tuple[dict[int, str], dict[int, str]] | None = None,
) -> None:
    """Export ``net`` with float16-stored weights; ``axes``: the dynamic axes of input and output
    (default: batch, height and width of an image)."""
    image_axes = {0: "batch", 2: "height", 3: "width"}
    in_axes, out_axes = axes or (image_axes, image_axes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[input_name],
            output_names=[output_name],
            dynamic_axes={input_name: in_axes, output_name: out_axes},
        )
    _store_fp16(path)


BASE_FILES = (("analysis", "analysis.onnx"), ("synthesis", "synthesis.onnx"), ("codebooks", "codebooks.npz"),
              ("prior", "prior.npz"), ("prior_static", "prior_static.npz"), ("checkpoint", "checkpoint.pt"))
"""Roles and file names every exported codec has (an audio model adds its vocoder)."""


def keep_layers(model: torch.nn.Module, cfg: ConfigT, layers: int) -> ConfigT:
    """Cut ``model``'s quantizer to its first ``layers`` layers; ``cfg`` with ``rvq.layers`` to match."""
    model.quantizer.keep_layers(layers)
    return dataclasses.replace(cfg, rvq=model.quantizer.cfg)


def save_codebooks_and_checkpoint(model: torch.nn.Module, config: dict, ckpt: dict, out: Path) -> np.ndarray:
    """Write ``codebooks.npz`` (float32 ``[L, K, D]``) and ``checkpoint.pt`` (float16 network weights, float
    quantizer state, ``config`` and the training step and best score of ``ckpt``); returns the codebooks."""
    codebooks = model.quantizer.codebooks().numpy().astype(np.float32)
    np.savez(out / "codebooks.npz", codebooks=codebooks)
    state = {k: v.half() if v.is_floating_point() and not k.startswith("quantizer.") else v
             for k, v in model.state_dict().items()}
    torch.save({"model": state, "config": config, "step": ckpt.get("step"), "best": ckpt.get("best")},
               out / "checkpoint.pt")
    return codebooks


def fit_priors(train: list[np.ndarray], heldout: list[np.ndarray], sizes: list[int], out: Path) -> list[str]:
    """Fit and write ``prior.npz`` (the context of each layer chosen on ``heldout``) and ``prior_static.npz``
    (no context: the baseline the conditional prior is reported against); returns the chosen contexts."""
    kinds = choose_contexts(train, heldout, sizes)
    CodePrior.fit(train, sizes, kinds, heldout=heldout).save(out / "prior.npz")
    CodePrior.fit(train, sizes, ["none"] * len(sizes), heldout=heldout).save(out / "prior_static.npz")
    return kinds


def file_refs(models_dir: Path, out: Path, roles: Iterable[tuple[str, str]]) -> dict[str, FileRef]:
    """Manifest file references (path relative to ``models_dir``, sha256) of ``(role, file name)`` in ``out``."""
    return {role: FileRef(str((out / fn).relative_to(models_dir)), sha256_file(out / fn)) for role, fn in roles}


def register(models_dir: Path, entry: ModelEntry, make_default: bool = True) -> None:
    """Add ``entry`` to ``models_dir``'s manifest (created if missing), the default of its modality when
    ``make_default`` or when it has none yet."""
    entries: dict[str, ModelEntry] = {}
    defaults: dict[str, str] = {}
    if (Path(models_dir) / MANIFEST).exists():  # keep the other models; a broken manifest is an error, not a reset
        reg = Registry(models_dir)
        entries, defaults = dict(reg.entries), dict(reg.defaults)
    entries[entry.name] = entry
    if make_default or entry.modality not in defaults:
        defaults[entry.modality] = entry.name
    write_manifest(models_dir, entries, defaults)


def export_image_model(
    checkpoint: Path,
    name: str,
    data: Path,
    models_dir: Path,
    description: str = "",
    cache: Path | None = None,
    make_default: bool = True,
    layers: int | None = None,
) -> ModelEntry:
    """Export ``checkpoint`` as model ``name`` into ``models_dir`` and register it.

    ``layers`` keeps only the first that many residual layers (default: all that were trained).
    """
    from codec.pipeline import ImageCodec, analyse  # serving-side classes, no torch
    from codec.quantize.search import ResidualCodebooks
    from codec.runtime import CPU, OnnxNet

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
    codebooks = save_codebooks_and_checkpoint(model, cfg.to_dict(), ckpt, out)

    # Codes through the exact serving path (ONNX g_a + numpy search) to fit the prior on.
    L, K = cfg.rvq.layers, cfg.rvq.codebook_size
    analysis = OnnxNet.load(out / "analysis.onnx", [CPU])
    quantizer = ResidualCodebooks(codebooks)
    val_images = load_images(Path(data) / "val", cache)
    train_codes = [analyse(analysis, quantizer, im, f).codes for im in load_images(Path(data) / "train", cache)]
    val_codes = [analyse(analysis, quantizer, im, f).codes for im in val_images]
    kinds = fit_priors(train_codes, val_codes, [K] * L, out)

    files = file_refs(models_dir, out, BASE_FILES)
    entry = ModelEntry(
        name=name,
        modality="image",
        factor=f,
        layers=L,
        codebook_sizes=(K,) * L,
        latent_dim=cfg.net.latent_dim,
        files=files,
        weights_sha256=weights_hash(files, SERVING_ROLES["image"]),
        description=description,
        extra={"contexts": kinds, "train_step": ckpt.get("step"), "config": cfg.to_dict()},
    )
    register(models_dir, entry, make_default)
    # The registered model must load (sha256 verified) and round-trip a validation image.
    codec = ImageCodec.load(Registry(models_dir), name)
    image = val_images[0]
    if not np.array_equal(codec.decompress(codec.compress(image)), codec.decode(codec.encode(image))):
        raise RuntimeError(f"exported model {name!r} does not round-trip")
    return entry


def choose_contexts(train: list[np.ndarray], val: list[np.ndarray], sizes: list[int]) -> list[str]:
    """Per layer, the context kind whose fitted prior codes ``val`` in the fewest bits."""
    kinds = []
    for layer in range(len(sizes)):
        candidates = ["none", "above"] + (["parent"] if layer > 0 else [])
        best, best_bits = "none", float("inf")
        for kind in candidates:
            trial = kinds + [kind] + ["none"] * (len(sizes) - layer - 1)
            prior = CodePrior.fit(train, sizes, trial, heldout=val)
            bits = sum(float(prior.cross_entropy_bits(c)[layer]) for c in val)
            if bits < best_bits:
                best, best_bits = kind, bits
        kinds.append(best)
    return kinds
