"""Export a trained mel codec (and a vocoder) for serving (``strata export audio``).

From a mel codec checkpoint and an exported vocoder it writes, under ``<models>/<name>/``:

- ``analysis.onnx``: raw log-mel ``"mel"`` ``[B, 80, F]`` (F a multiple of 4) → ``"latent"``
  ``[B, D, 10, F/4]``; ``synthesis.onnx``: ``"latent"`` → ``"mel"``. float16-stored weights,
  the torch networks rounded the same way first (as the image export).
- ``codebooks.npz``, ``prior.npz`` (contexts chosen on the held-out training clips) and
  ``prior_static.npz``, as the image export.
- ``vocoder.onnx``: copied from a :func:`strata.export.vocoder.export_vocoder` folder. The
  vocoder is verified by sha256 at load time but is *not* part of the weights hash that
  streams carry: the codes do not depend on it, so a better vocoder ships without
  invalidating streams. Or, with ``vocoders_from``, no vocoder file at all: the entry points at
  another registered audio model's vocoder files (a retrained codec keeps the same vocoders).

With ``checkpoints_dir``, the compact codec checkpoint and the vocoder's ``vocoder.pt`` go to
``<checkpoints_dir>/<name>/`` (to resume training from; not served).

The receptive fields of both transforms (in mel frames, measured on the exported graphs by
perturbing one frame) go into the manifest entry, for the chunked processing of long inputs.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
from strata.chunking import receptive_field
from strata.export.common import (
    BASE_FILES,
    export_onnx,
    file_refs,
    fit_priors,
    keep_layers,
    register,
    round_to_fp16,
    save_codebooks,
    save_compact_checkpoint,
)
from strata.registry import FileRef, ModelEntry, Registry, serving_roles, weights_hash
from strata.train.audio import AudioTrainConfig, MelAutoencoder, clip_mels, read_checkpoint
from strata.train.data import split_sets


def load_audio_checkpoint(path: Path) -> tuple[MelAutoencoder, AudioTrainConfig, dict]:
    """Model (eval mode, float32) and config from a mel codec training or exported checkpoint."""
    ckpt = read_checkpoint(path)
    cfg = AudioTrainConfig.from_dict(ckpt["config"])
    model = MelAutoencoder(cfg.net, cfg.quantizer_config)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    return model.eval(), cfg, ckpt


def measure_receptive_field(
    fn: Callable[[np.ndarray], np.ndarray],
    length: int,
    factor_in: int,
    factor_out: int,
    make_input: Callable[[int, np.random.Generator], np.ndarray],
) -> int:
    """One-sided receptive field (in mel frames) of ``fn`` along time (:func:`strata.chunking.receptive_field`).

    ``make_input(n)`` builds an input with ``n`` positions on its last axis; ``factor_in`` /
    ``factor_out`` are the mel frames per input / output position.
    """
    x = make_input(length, np.random.default_rng(0))
    rf = receptive_field(fn, x, Fraction(factor_in, factor_out))  # in input positions
    return int(rf * factor_in)


def export_audio_model(
    checkpoint: Path,
    vocoder_dir: Path | None,
    name: str,
    data: Path,
    models_dir: Path,
    description: str = "",
    cache: Path | None = None,
    make_default: bool = True,
    layers: int | None = None,
    checkpoints_dir: Path | None = None,
    vocoders_from: str | None = None,
) -> ModelEntry:
    """Export ``checkpoint`` (+ the vocoder in ``vocoder_dir``) as audio model ``name`` and register it.

    ``layers`` keeps only the first that many residual layers (default: all that were trained);
    ``checkpoints_dir`` receives ``<name>/checkpoint.pt`` and the vocoder's ``<name>/vocoder.pt``.
    ``vocoders_from`` (instead of ``vocoder_dir``) names a registered audio model whose vocoder files (HiFi-GAN,
    and Vocos when it has one) and default vocoder the new model shares, by reference, without copies.
    """
    from strata.audio import AudioCodec, analyse_mel
    from strata.quantize.search import ResidualCodebooks
    from strata.runtime import CPU, OnnxNet

    if (vocoder_dir is None) == (vocoders_from is None):
        raise ValueError("give either a vocoder folder or a registered model to share the vocoders of")
    shared: dict[str, FileRef] = {}
    shared_extra: dict = {}
    if vocoders_from is not None:
        source = Registry(models_dir).entry(vocoders_from)
        if source.modality != "audio":
            raise ValueError(f"{vocoders_from!r} is an {source.modality} model; only audio models have vocoders")
        shared = {r: source.files[r] for r in ("vocoder", "vocos") if r in source.files}
        shared_extra = {k: source.extra[k] for k in ("vocoder",) if k in source.extra}
    else:
        vocoder_dir = Path(vocoder_dir)
        if not (vocoder_dir / "vocoder.onnx").is_file():
            raise FileNotFoundError(f"no vocoder.onnx in {vocoder_dir} (make one with strata export vocoder)")
        if _vocoder_arch(vocoder_dir / "vocoder.onnx") != "hifigan":
            raise ValueError(f"{vocoder_dir / 'vocoder.onnx'} is a Vocos network; an audio model is exported with "
                             "its HiFi-GAN vocoder, and a Vocos one is added afterwards (export audio --name NAME "
                             "--vocoder DIR, without --checkpoint)")
    model, cfg, ckpt = load_audio_checkpoint(checkpoint)
    if vocoders_from is not None and source.extra.get("n_mels", 80) != cfg.net.n_mels:
        raise ValueError(f"{vocoders_from!r}'s vocoders take {source.extra.get('n_mels', 80)} mels; "
                         f"this codec makes {cfg.net.n_mels}")
    if layers is not None:
        cfg = keep_layers(model, cfg, layers)
    round_to_fp16(model.g_a)
    round_to_fp16(model.g_s)
    out = Path(models_dir) / name
    out.mkdir(parents=True, exist_ok=True)
    net, D = cfg.net, cfg.net.latent_dim
    export_onnx(model.g_a, torch.randn(1, net.n_mels, 16) - 5, out / "analysis.onnx", "mel", "latent",
                axes=({0: "batch", 2: "frames"}, {0: "batch", 3: "columns"}))
    export_onnx(model.g_s, torch.randn(1, D, net.rows, 4), out / "synthesis.onnx", "latent", "mel",
                axes=({0: "batch", 3: "columns"}, {0: "batch", 2: "frames"}))
    codebooks = save_codebooks(model, out)
    if vocoder_dir is not None and (vocoder_dir / "vocoder.onnx").resolve() != (out / "vocoder.onnx").resolve():
        shutil.copyfile(vocoder_dir / "vocoder.onnx", out / "vocoder.onnx")
    if checkpoints_dir is not None:
        kept = save_compact_checkpoint(model, cfg.to_dict(), ckpt, Path(checkpoints_dir) / name / "checkpoint.pt")
        if vocoder_dir is not None:
            _keep_vocoder_checkpoint(vocoder_dir, kept.parent)

    analysis = OnnxNet.load(out / "analysis.onnx", [CPU])
    synthesis = OnnxNet.load(out / "synthesis.onnx", [CPU])
    tf = net.time_factor
    rf_a = measure_receptive_field(analysis, 256, 1, tf,
                                   lambda n, r: (r.standard_normal((1, net.n_mels, n)) - 5).astype(np.float32))
    rf_s = measure_receptive_field(synthesis, 64, tf, 1,
                                   lambda n, r: r.standard_normal((1, D, net.rows, n)).astype(np.float32))

    # Codes through the exact serving path (ONNX g_a + numpy search) to fit the prior on.
    L, K = cfg.quantizer_config.layers, cfg.quantizer_config.codebook_size
    quantizer = ResidualCodebooks(codebooks)
    train_files, held_files = split_sets(Path(data), cfg.sets, cfg.heldout)
    train_codes = [analyse_mel(analysis, quantizer, m, tf) for m in clip_mels(train_files, cache)]
    held_codes = [analyse_mel(analysis, quantizer, m, tf) for m in clip_mels(held_files, cache)]
    kinds = fit_priors(train_codes, held_codes, [K] * L, out)

    files = file_refs(models_dir, out, [*BASE_FILES, *([] if shared else [("vocoder", "vocoder.onnx")])])
    files.update(shared)
    entry = ModelEntry(
        name=name,
        modality="audio",
        factor=tf,
        layers=L,
        codebook_sizes=(K,) * L,
        quantizer=cfg.quantizer,
        latent_dim=D,
        files=files,
        weights_sha256=weights_hash(files, serving_roles("audio", files)),
        description=description,
        extra={"contexts": kinds, "train_step": ckpt.get("step"), "config": cfg.to_dict(),
               "freq_factor": net.freq_factor, "n_mels": net.n_mels, "sample_rate": 22050, "hop": 256,
               "receptive_field": {"analysis": rf_a, "synthesis": rf_s}, **shared_extra,
               **({"vocoders_from": vocoders_from} if vocoders_from else {})},
    )
    register(models_dir, entry, make_default)
    # The registered model must load (sha256 verified) and round-trip a held-out clip.
    codec = AudioCodec.load(Registry(models_dir), name)
    clip = np.sin(np.linspace(0, 2000, 22050)).astype(np.float32) * 0.3
    if not np.array_equal(codec.decompress_codes(codec.compress(clip)).codes, codec.encode(clip).codes):
        raise RuntimeError(f"exported model {name!r} does not round-trip")
    return entry


def _keep_vocoder_checkpoint(vocoder_dir: Path, dest: Path, name: str = "vocoder.pt") -> None:
    """Copy ``vocoder.pt`` of an exported vocoder folder to ``dest/name`` (a stale one there is removed)."""
    dest.mkdir(parents=True, exist_ok=True)
    src = Path(vocoder_dir) / "vocoder.pt"
    if not src.is_file():
        (dest / name).unlink(missing_ok=True)  # it would describe another generator
    elif src.resolve() != (dest / name).resolve():
        shutil.copyfile(src, dest / name)


def _vocoder_arch(path: Path) -> str:
    """``"vocos"`` or ``"hifigan"``: what the exported network at ``path`` is (its ONNX metadata)."""
    from strata.runtime import CPU, OnnxNet

    return "vocos" if OnnxNet.load(path, [CPU]).session.get_modelmeta().custom_metadata_map.get("arch") == "vocos" \
        else "hifigan"


def replace_vocoder(models_dir: Path, name: str, vocoder_dir: Path, description: str | None = None,
                    checkpoints_dir: Path | None = None, make_default: bool = False) -> ModelEntry:
    """Give the registered audio model ``name`` the vocoder in ``vocoder_dir`` (from ``strata export vocoder``).

    A HiFi-GAN network replaces the model's ``vocoder.onnx``; a Vocos network becomes (or replaces) its
    ``vocos.onnx`` (file role ``vocos``), beside the HiFi-GAN one. Only that file and its sha256 pin
    change (with ``checkpoints_dir``, the network's ``vocoder.pt`` is kept in ``<checkpoints_dir>/<name>/``
    as ``vocoder.pt`` or ``vocos.pt``): the codec's files and its weights hash stay as they are, so every
    stream the model wrote still decodes (the codes do not depend on the vocoder). ``make_default`` makes
    this network the model's default vocoder (``extra.vocoder``). A default iteration count chosen for the
    replaced network (``extra.refine``) is dropped: the new one refines with the library's 8 until one is
    chosen for it (``set_default_vocoder``). ``description`` replaces the entry's when
    given. The model must then load and decode a short sound with it, or the error says why.
    """
    from strata.audio import NETWORK_ROLES, AudioCodec, Vocoder
    from strata.runtime import CPU
    from strata.vocoder.loader import load_vocoder
    from strata.vocoder.vocos import VocosVocoder

    models_dir, vocoder_dir = Path(models_dir), Path(vocoder_dir)
    reg = Registry(models_dir)
    entry = reg.entry(name)
    if entry.modality != "audio":
        raise ValueError(f"{name!r} is an {entry.modality} model; only audio models have a vocoder")
    if not (vocoder_dir / "vocoder.onnx").is_file():
        raise FileNotFoundError(f"no vocoder.onnx in {vocoder_dir} (make one with strata export vocoder)")
    # The new vocoder must run before the model's folder or manifest is touched.
    trial = load_vocoder(vocoder_dir / "vocoder.onnx", [CPU])
    if trial.n_mels != entry.extra.get("n_mels", 80) or trial.hop != entry.extra.get("hop", 256):
        raise ValueError(f"{vocoder_dir / 'vocoder.onnx'} takes {trial.n_mels} mels at hop {trial.hop}; "
                         f"{name!r} needs {entry.extra.get('n_mels', 80)} at hop {entry.extra.get('hop', 256)}")
    arch = Vocoder.VOCOS if isinstance(trial, VocosVocoder) else Vocoder.HIFIGAN
    role = NETWORK_ROLES[arch]
    filename = f"{role}.onnx"
    out = models_dir / name  # the model's own folder, also when its vocoders are shared with another model's
    out.mkdir(parents=True, exist_ok=True)
    if (vocoder_dir / "vocoder.onnx").resolve() != (out / filename).resolve():
        shutil.copyfile(vocoder_dir / "vocoder.onnx", out / filename)
    if checkpoints_dir is not None:
        _keep_vocoder_checkpoint(vocoder_dir, Path(checkpoints_dir) / name, f"{role}.pt")
    files = dict(entry.files)
    files.update(file_refs(models_dir, out, [(role, filename)]))
    extra = dict(entry.extra)
    if make_default:
        extra["vocoder"] = arch.value
    tuned = {k: v for k, v in extra.pop("refine", {}).items() if k != arch.value}  # chosen for the old network
    if tuned:
        extra["refine"] = tuned
    new = dataclasses.replace(entry, files=files, extra=extra,
                              description=entry.description if description is None else description)
    register(models_dir, new, make_default=False)
    codec = AudioCodec.load(Registry(models_dir), name)
    sound = np.sin(np.linspace(0, 2000, 22050)).astype(np.float32) * 0.3
    wave = codec.decompress(codec.compress(sound), vocoder=arch)
    if wave.shape != sound.shape or not np.isfinite(wave).all():
        raise RuntimeError(f"model {name!r} with the new vocoder does not decode a test sound")
    return new


def set_default_vocoder(models_dir: Path, name: str, vocoder: str, refine: int | None = None) -> ModelEntry:
    """Make ``vocoder`` (``hifigan``, ``vocos`` or ``griffinlim``) the one the registered audio model ``name``
    decodes with when a caller names none (``extra.vocoder``), and with ``refine``, that network's default
    mel-consistency iterations (``extra.refine``). No file changes, nor the weights hash: every stream
    decodes as before with a named vocoder. Raises :class:`~strata.errors.UnknownModelError` for a name not
    registered, ``ValueError`` for an image model, an unknown vocoder, a network the model does not have, or
    ``refine`` outside 0..32 or given for Griffin-Lim.
    """
    from numbers import Integral

    from strata.audio import Vocoder, entry_vocoders
    from strata.vocoder.refine import MAX_ITERATIONS

    models_dir = Path(models_dir)
    entry = Registry(models_dir).entry(name)
    if entry.modality != "audio":
        raise ValueError(f"{name!r} is an {entry.modality} model; only audio models have a vocoder")
    try:
        chosen = Vocoder(vocoder)
    except ValueError:
        raise ValueError(f"unknown vocoder {vocoder!r}; one of {', '.join(v.value for v in Vocoder)}") from None
    vocoders = entry_vocoders(entry)
    if chosen not in vocoders:
        raise ValueError(f"model {name!r} has no {chosen.value} network (it has "
                         f"{', '.join(v.value for v in vocoders)})")
    extra = {**entry.extra, "vocoder": chosen.value}
    if refine is not None:
        if chosen is Vocoder.GRIFFINLIM:
            raise ValueError("Griffin-Lim takes no refinement iterations")
        if isinstance(refine, bool) or not isinstance(refine, Integral) or not 0 <= refine <= MAX_ITERATIONS:
            raise ValueError(f"refinement iterations must be an integer in 0..{MAX_ITERATIONS}, got {refine!r}")
        extra["refine"] = {**entry.extra.get("refine", {}), chosen.value: int(refine)}
    new = dataclasses.replace(entry, extra=extra)
    register(models_dir, new, make_default=False)
    return new


__all__ = ["export_audio_model", "load_audio_checkpoint", "measure_receptive_field", "replace_vocoder",
           "set_default_vocoder"]
