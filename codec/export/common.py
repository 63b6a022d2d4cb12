"""Steps every model export takes: ONNX graphs with float16-stored weights, codebooks,
entropy priors, a compact training checkpoint, and the manifest entry.

:mod:`strata.export.image`, :mod:`strata.export.audio` and :mod:`strata.export.vocoder` are
built from these.
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
from strata.entropy.prior import CodePrior
from strata.registry import MANIFEST, FileRef, ModelEntry, Registry, sha256_file, write_manifest

ConfigT = TypeVar("ConfigT")  # a training config dataclass with an ``rvq`` field

OPSET = 17


def round_to_fp16(model: torch.nn.Module) -> None:
    """Round every floating-point parameter of ``model`` to float16 precision (in place)."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.half().float())


def store_fp16(path: Path) -> None:
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
) -> float:
    """Export ``net`` with float16-stored weights; ``axes``: the dynamic axes of input and output
    (default: batch, height and width of an image).

    ``net``'s weights must already be float16-exact (:func:`round_to_fp16`): the exported graph then
    computes ``net``'s function, which is checked on ``example`` (``ExportParityError`` beyond
    1e-3 · max(1, |output|)), so no model is registered whose ONNX graph differs from its torch network.
    Returns the largest absolute difference.
    """
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
    store_fp16(path)
    import onnxruntime as ort

    was_training = net.training
    net.eval()
    with torch.no_grad():
        ref = net(example).float().numpy()
    net.train(was_training)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {input_name: example.numpy()})[0]
    diff = float(np.abs(got - ref).max()) if got.shape == ref.shape else float("inf")
    if not diff <= 1e-3 * max(1.0, float(np.abs(ref).max())):
        raise ExportParityError(f"{path.name}: the ONNX graph differs from the torch network by {diff} "
                                f"(output shapes {got.shape} and {ref.shape})")
    return diff


class ExportParityError(RuntimeError):
    """An exported ONNX graph does not compute its torch network's function."""


BASE_FILES = (("analysis", "analysis.onnx"), ("synthesis", "synthesis.onnx"), ("codebooks", "codebooks.npz"),
              ("prior", "prior.npz"), ("prior_static", "prior_static.npz"))
"""Roles and file names every exported codec serves (an audio model adds its vocoder)."""


def keep_layers(model: torch.nn.Module, cfg: ConfigT, layers: int) -> ConfigT:
    """Cut ``model``'s quantizer to its first ``layers`` layers; ``cfg`` with its family's config to match
    (the field named by ``cfg.quantizer``; ``topbottom`` for both two-scale families)."""
    model.quantizer.keep_layers(layers)
    family = getattr(cfg, "quantizer", "rvq")
    field = "topbottom" if family in ("topbottom", "sq-topbottom") else family
    return dataclasses.replace(cfg, **{field: model.quantizer.cfg})


def save_codebooks(model: torch.nn.Module, out: Path) -> np.ndarray:
    """Write ``codebooks.npz`` (float32 ``[L, K, D]``) of ``model``'s quantizer; returns the codebooks."""
    codebooks = model.quantizer.codebooks().numpy().astype(np.float32)
    np.savez(out / "codebooks.npz", codebooks=codebooks)
    return codebooks


def save_compact_checkpoint(model: torch.nn.Module, config: dict, ckpt: dict, path: Path) -> Path:
    """Write a compact training checkpoint to ``path``: float16 network weights, the float quantizer
    state, ``config`` and the training step and best score of ``ckpt``.

    It resumes training or re-exports the model (``strata train ... --init-from``), is a third of
    a training checkpoint's size, and is not served: it lives outside the models folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.half() if v.is_floating_point() and not k.startswith("quantizer.") else v
             for k, v in model.state_dict().items()}
    torch.save({"model": state, "config": config, "step": ckpt.get("step"), "best": ckpt.get("best")}, path)
    return path


def fit_priors(train: list[np.ndarray], heldout: list[np.ndarray], sizes: list[int], out: Path,
               top_layers: int = 0) -> list[str]:
    """Fit and write ``prior.npz`` (the context of each layer chosen on ``heldout``) and ``prior_static.npz``
    (no context: the baseline the conditional prior is reported against); returns the chosen contexts.

    ``top_layers``: the stack's first layers that live on the two-times coarser grid of a two-scale model;
    they are fitted and measured on that grid (``codes[:, ::2, ::2]``), as the codec codes them.
    """
    kinds = choose_contexts(train, heldout, sizes, top_layers)
    fit_prior(train, sizes, kinds, heldout, top_layers).save(out / "prior.npz")
    fit_prior(train, sizes, ["none"] * len(sizes), heldout, top_layers).save(out / "prior_static.npz")
    return kinds


def fit_prior(train: list[np.ndarray], sizes: list[int], kinds: list[str], heldout: list[np.ndarray],
              top_layers: int = 0) -> CodePrior:
    """:meth:`CodePrior.fit`, with the first ``top_layers`` layers fitted on their own (coarser) grid."""
    full = CodePrior.fit(train, sizes, kinds, heldout=heldout)
    if not top_layers:
        return full
    t = top_layers
    top = CodePrior.fit([c[:t, ::2, ::2] for c in train], sizes[:t], kinds[:t],
                        heldout=[c[:t, ::2, ::2] for c in heldout])
    return CodePrior(tuple(top.layers) + tuple(full.layers[t:]))


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


def choose_contexts(train: list[np.ndarray], val: list[np.ndarray], sizes: list[int], top_layers: int = 0) -> list[str]:
    """Per layer, the context kind whose fitted prior codes ``val`` in the fewest bits.

    The first layer of each grid (layer 0, and the first bottom layer of a two-scale model, whose "parent"
    is the top code of its block) may take any kind; see :func:`fit_priors` for ``top_layers``.
    """
    kinds: list[str] = []
    for layer in range(len(sizes)):
        candidates = ["none", "above"] + (["parent"] if layer > 0 else [])
        best, best_bits = "none", float("inf")
        for kind in candidates:
            trial = kinds + [kind] + ["none"] * (len(sizes) - layer - 1)
            prior = fit_prior(train, sizes, trial, val, top_layers)
            bits = sum(float(prior.cross_entropy_bits(c, top_layers)[layer]) for c in val)
            if bits < best_bits:
                best, best_bits = kind, bits
        kinds.append(best)
    return kinds
