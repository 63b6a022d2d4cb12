"""Refit a registered image model's entropy prior on the codes its encoder really produces (``strata export prior``).

``strata export image`` fits the prior on nearest-code codes, before a rate–distortion λ exists. Once the
encoder searches with λ > 0 (:mod:`strata.quantize.rdo`) it picks codes the prior finds likely, so the
codes it emits follow another distribution than the one the prior was fitted on. This alternates, as the
design of an entropy-constrained VQ does: encode the training and validation images with the current
prior, refit the prior (contexts chosen again on the validation codes), and repeat ``rounds`` times.
The networks and codebooks stay; only ``prior.npz`` changes.

Streams depend on the prior, so the result is registered as a **new model** (``new_name``) that points
at the original's network and codebook files and has its own prior files and weights hash: streams of
the original model keep decoding with it, and it stays registered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import numpy as np
from strata.entropy.prior import CodePrior
from strata.export.common import choose_contexts, fit_prior, register
from strata.image import ImageCodec, analyse
from strata.quantize.rdo import energy_scales
from strata.registry import FileRef, ModelEntry, Registry, serving_roles, sha256_file, weights_hash
from strata.train.data import load_images

SCHEDULES = ("flat", "energy")  # per-layer λ: the same everywhere, or scaled by the residual each layer refines


def residual_energies(codec: ImageCodec, images: list[np.ndarray]) -> list[float]:
    """Mean squared latent residual left after each layer of the nearest-code search, over ``images``."""
    sums = np.zeros(codec.layers)
    count = 0
    latents: list[np.ndarray] = []

    def keep(latent: np.ndarray, layers: int | None) -> np.ndarray:
        latents.append(latent)
        return codec.quantizer.encode(latent, layers)

    for image in images:
        codes = analyse(codec.analysis, codec.quantizer, image, codec.factor, context=codec.context_a,
                        search=keep).codes
        y = latents.pop()
        for k in range(1, codec.layers + 1):
            sums[k - 1] += float(((y - codec.quantizer.decode(codes[:k, None])) ** 2).sum())
        count += y.size
    return list(sums / count)


def refit_prior(models_dir: Path, name: str, new_name: str, data: Path, rounds: int = 2,
                rdo_lambda: float | None = None, schedule: str = "flat", make_default: bool = False,
                description: str | None = None, cache: Path | None = None,
                log: Callable[[str], object] = print) -> ModelEntry:
    """Register ``new_name``: model ``name`` with its prior refitted on its own RD-searched codes of ``data``.

    ``data`` holds ``train/`` (fitted on) and ``val/`` (chooses each layer's context and the smoothing;
    never Kodak). ``rdo_lambda`` (default: the model's) is the λ of the search the codes come from and is
    recorded as the new model's; ``schedule="energy"`` scales it per layer by the residual each layer
    refines on the validation images (:func:`strata.quantize.rdo.energy_scales`, recorded as
    ``extra.rdo_lambda_scales``), ``"flat"`` keeps the model's scales. Raises ``ValueError`` for a model
    whose encoder does not search with a positive λ (its prior already fits its codes), a name already
    registered, or Kodak as ``data``.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    data = Path(data)
    for sub in ("train", "val"):
        if "kodak" in str((data / sub).resolve()).lower():
            raise ValueError("Kodak is for evaluation only; the prior is fitted on train/ and chosen on val/")
    registry = Registry(models_dir)
    if new_name in registry.entries:
        raise ValueError(f"model {new_name!r} is already registered; a refitted prior needs a new name")
    codec = ImageCodec.load(registry, name, rdo_lambda=rdo_lambda)
    entry = codec.entry
    if codec.context is not None:
        raise ValueError(f"model {name!r} codes with a context model trained against its prior; refit the prior of "
                         f"{entry.extra.get('context_model', {}).get('from', 'the model it came from')!r} instead")

    def rebuilt(entry: ModelEntry, prior: CodePrior) -> ImageCodec:
        """``codec``'s networks and quantizer under ``entry`` with ``prior``."""
        return ImageCodec(entry, codec.analysis, codec.synthesis, codec.quantizer, prior, codec.limits, codec.tile,
                          codec.rdo_lambda)
    if codec.rdo_lambda <= 0:
        raise ValueError(f"model {name!r} encodes with the nearest-code search (rdo_lambda 0): its prior was fitted "
                         "on such codes already; give --rdo-lambda to refit for an RD-optimised search")
    train = load_images(data / "train", cache)
    val = load_images(data / "val", cache)
    if not train or not val:
        raise ValueError(f"{data} needs images in train/ and val/")
    if schedule == "energy":
        if codec.quantizer.top_layers:
            raise ValueError("the energy schedule is for one-scale residual models")
        scales = energy_scales(residual_energies(codec, val))
        entry = dataclasses.replace(entry, extra={**entry.extra, "rdo_lambda_scales": list(scales)})
        codec = rebuilt(entry, codec.prior)
        log("per-layer λ scales: " + " ".join(f"{v:.3f}" for v in scales))
    sizes = [codec.quantizer.codebook_size(layer) for layer in range(codec.layers)]
    top = codec.quantizer.top_layers
    positions = sum(codec.grid(im.shape[:2])[0] * codec.grid(im.shape[:2])[1] for im in val)
    history = []
    for r in range(rounds):
        train_codes = [codec.encode(im).codes for im in train]
        val_codes = [codec.encode(im).codes for im in val]
        before = sum(float(codec.prior.cross_entropy_bits(c, top).sum()) for c in val_codes)
        kinds = choose_contexts(train_codes, val_codes, sizes, top)
        prior = fit_prior(train_codes, sizes, kinds, val_codes, top)
        after = sum(float(prior.cross_entropy_bits(c, top).sum()) for c in val_codes)
        history.append({"round": r + 1, "contexts": kinds, "val_bits_per_position_before": before / positions,
                        "val_bits_per_position_after": after / positions})
        log(f"round {r + 1}: validation codes {before / positions:.3f} → {after / positions:.3f} bits per "
            f"position ({100 * (after / before - 1):+.2f}%), contexts {kinds}")
        codec = rebuilt(entry, prior)
    static = fit_prior(train_codes, sizes, ["none"] * len(sizes), val_codes, top)

    out = Path(models_dir) / new_name
    out.mkdir(parents=True, exist_ok=True)
    codec.prior.save(out / "prior.npz")
    static.save(out / "prior_static.npz")
    files = dict(entry.files)
    for role, fn in (("prior", "prior.npz"), ("prior_static", "prior_static.npz")):
        files[role] = FileRef(str((out / fn).relative_to(models_dir)), sha256_file(out / fn))
    extra = {k: v for k, v in entry.extra.items() if k != "measured_on"}  # the new model is not measured yet
    extra = {**extra, "contexts": kinds, "rdo_lambda": codec.rdo_lambda,
             "prior_refit": {"from": name, "from_weights_sha256": entry.weights_sha256, "rounds": history,
                             "fitted_on": f"{data.name}/train", "chosen_on": f"{data.name}/val"}}
    updated = dataclasses.replace(
        entry, name=new_name, files=files, weights_sha256=weights_hash(files, serving_roles("image", files)),
        description=description or f"{entry.description}; entropy prior refitted on its RD-searched codes",
        bits_per_layer=(), bpp_per_layer=(), extra=extra)
    check = rebuilt(updated, codec.prior)
    image = val[0]
    if not np.array_equal(check.decompress(check.compress(image)), check.decode(check.encode(image))):
        raise RuntimeError(f"model {new_name!r} does not round-trip")
    register(Path(models_dir), updated, make_default=make_default)
    return updated


__all__ = ["refit_prior"]
