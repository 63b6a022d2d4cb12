"""Export a trained mel codec (and a vocoder) for serving (``strata export audio``).

From a mel codec checkpoint and an exported vocoder it writes, under ``models/<name>/``:

- ``analysis.onnx``: raw log-mel ``"mel"`` ``[B, 80, F]`` (F a multiple of 4) → ``"latent"``
  ``[B, D, 10, F/4]``; ``synthesis.onnx``: ``"latent"`` → ``"mel"``. float16-stored weights,
  the torch networks rounded the same way first (as the image export).
- ``codebooks.npz``, ``prior.npz`` (contexts chosen on the held-out training clips),
  ``prior_static.npz`` and ``checkpoint.pt``, as the image export.
- ``vocoder.onnx`` (+ ``vocoder.pt``): copied from a :func:`codec.train.vocoder.export_vocoder`
  folder. The vocoder is verified by sha256 at load time but is *not* part of the weights hash
  that streams carry: the codes do not depend on it, so a better vocoder ships without
  invalidating streams.

The receptive fields of both transforms (in mel frames, measured on the exported graphs by
perturbing one frame) go into the manifest entry, for the chunked processing of long inputs.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from codec.export import (
    BASE_FILES,
    export_onnx,
    file_refs,
    fit_priors,
    keep_layers,
    register,
    round_to_fp16,
    save_codebooks_and_checkpoint,
)
from codec.registry import SERVING_ROLES, ModelEntry, Registry, weights_hash
from codec.train.audio import AudioTrainConfig, MelAutoencoder, clip_mels, read_checkpoint
from codec.train.vocoder import list_audio, split_heldout


def load_audio_checkpoint(path: Path) -> tuple[MelAutoencoder, AudioTrainConfig, dict]:
    """Model (eval mode, float32) and config from a mel codec training or exported checkpoint."""
    ckpt = read_checkpoint(path)
    cfg = AudioTrainConfig.from_dict(ckpt["config"])
    model = MelAutoencoder(cfg.net, cfg.rvq)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()})
    return model.eval(), cfg, ckpt


def measure_receptive_field(
    fn: Callable[[np.ndarray], np.ndarray],
    length: int,
    factor_in: int,
    factor_out: int,
    make_input: Callable[[int, np.random.Generator], np.ndarray],
) -> int:
    """One-sided receptive field (in mel frames) of ``fn`` along time, by perturbing the middle input position.

    ``make_input(n)`` builds an input with ``n`` positions on its last axis; ``factor_in`` /
    ``factor_out`` are the mel frames per input / output position.
    """
    rng = np.random.default_rng(0)
    x = make_input(length, rng)
    mid = length // 2
    y0 = fn(x)
    x2 = x.copy()
    x2[..., mid] += 1.0 + rng.standard_normal(x2[..., mid].shape).astype(np.float32)
    changed = np.nonzero(np.abs(fn(x2) - y0).reshape(-1, y0.shape[-1]).max(axis=0) > 0)[0]
    if not len(changed):
        return 0
    lo, hi = changed.min() * factor_out, (changed.max() + 1) * factor_out  # mel frames touched
    centre_lo, centre_hi = mid * factor_in, (mid + 1) * factor_in
    return int(max(centre_lo - lo, hi - centre_hi, 0))


def export_audio_model(
    checkpoint: Path,
    vocoder_dir: Path,
    name: str,
    data: Path,
    models_dir: Path,
    description: str = "",
    cache: Path | None = None,
    make_default: bool = True,
    layers: int | None = None,
) -> ModelEntry:
    """Export ``checkpoint`` (+ the vocoder in ``vocoder_dir``) as audio model ``name`` and register it.

    ``layers`` keeps only the first that many residual layers (default: all that were trained).
    """
    from codec.audio_pipeline import AudioCodec, analyse_mel
    from codec.quantize.search import ResidualCodebooks
    from codec.runtime import CPU, OnnxNet

    vocoder_dir = Path(vocoder_dir)
    if not (vocoder_dir / "vocoder.onnx").is_file():
        raise FileNotFoundError(f"no vocoder.onnx in {vocoder_dir} (make one with strata export vocoder)")
    model, cfg, ckpt = load_audio_checkpoint(checkpoint)
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
    codebooks = save_codebooks_and_checkpoint(model, cfg.to_dict(), ckpt, out)
    for fn in ("vocoder.onnx", "vocoder.pt"):
        if (vocoder_dir / fn).is_file() and (vocoder_dir / fn).resolve() != (out / fn).resolve():
            shutil.copyfile(vocoder_dir / fn, out / fn)

    analysis = OnnxNet.load(out / "analysis.onnx", [CPU])
    synthesis = OnnxNet.load(out / "synthesis.onnx", [CPU])
    tf = net.time_factor
    rf_a = measure_receptive_field(analysis, 256, 1, tf,
                                   lambda n, r: (r.standard_normal((1, net.n_mels, n)) - 5).astype(np.float32))
    rf_s = measure_receptive_field(synthesis, 64, tf, 1,
                                   lambda n, r: r.standard_normal((1, D, net.rows, n)).astype(np.float32))

    # Codes through the exact serving path (ONNX g_a + numpy search) to fit the prior on.
    L, K = cfg.rvq.layers, cfg.rvq.codebook_size
    quantizer = ResidualCodebooks(codebooks)
    train_files, held_files = [], []
    for s in cfg.sets:
        tr, he = split_heldout(list_audio(Path(data) / s / "train"), cfg.heldout)
        train_files += tr
        held_files += he
    train_codes = [analyse_mel(analysis, quantizer, m, tf) for m in clip_mels(train_files, cache)]
    held_codes = [analyse_mel(analysis, quantizer, m, tf) for m in clip_mels(held_files, cache)]
    kinds = fit_priors(train_codes, held_codes, [K] * L, out)

    roles = [*BASE_FILES, ("vocoder", "vocoder.onnx")]
    if (out / "vocoder.pt").is_file():
        roles.append(("vocoder_checkpoint", "vocoder.pt"))
    files = file_refs(models_dir, out, roles)
    entry = ModelEntry(
        name=name,
        modality="audio",
        factor=tf,
        layers=L,
        codebook_sizes=(K,) * L,
        latent_dim=D,
        files=files,
        weights_sha256=weights_hash(files, SERVING_ROLES["audio"]),
        description=description,
        extra={"contexts": kinds, "train_step": ckpt.get("step"), "config": cfg.to_dict(),
               "freq_factor": net.freq_factor, "n_mels": net.n_mels, "sample_rate": 22050, "hop": 256,
               "receptive_field": {"analysis": rf_a, "synthesis": rf_s}},
    )
    register(models_dir, entry, make_default)
    # The registered model must load (sha256 verified) and round-trip a held-out clip.
    codec = AudioCodec.load(Registry(models_dir), name)
    clip = np.sin(np.linspace(0, 2000, 22050)).astype(np.float32) * 0.3
    if not np.array_equal(codec.decompress_codes(codec.compress(clip)).codes, codec.encode(clip).codes):
        raise RuntimeError(f"exported model {name!r} does not round-trip")
    return entry


def replace_vocoder(models_dir: Path, name: str, vocoder_dir: Path, description: str | None = None) -> ModelEntry:
    """Give the registered audio model ``name`` the vocoder in ``vocoder_dir`` (from ``strata export vocoder``).

    Only ``vocoder.onnx`` (and ``vocoder.pt`` when the folder has one) and their sha256 pins change:
    the codec's files and its weights hash stay as they are, so every stream the model wrote still
    decodes (the codes do not depend on the vocoder). ``description`` replaces the entry's when given.
    The swapped model must load and decode a short sound, or the error says why.
    """
    from codec.audio_pipeline import AudioCodec
    from codec.runtime import CPU
    from codec.vocoder.hifigan import HifiGanVocoder

    models_dir, vocoder_dir = Path(models_dir), Path(vocoder_dir)
    reg = Registry(models_dir)
    entry = reg.entry(name)
    if entry.modality != "audio":
        raise ValueError(f"{name!r} is an {entry.modality} model; only audio models have a vocoder")
    if not (vocoder_dir / "vocoder.onnx").is_file():
        raise FileNotFoundError(f"no vocoder.onnx in {vocoder_dir} (make one with strata export vocoder)")
    # The new vocoder must run before the model's folder or manifest is touched.
    trial = HifiGanVocoder.load(vocoder_dir / "vocoder.onnx", [CPU])
    if trial.n_mels != entry.extra.get("n_mels", 80) or trial.hop != entry.extra.get("hop", 256):
        raise ValueError(f"{vocoder_dir / 'vocoder.onnx'} takes {trial.n_mels} mels at hop {trial.hop}; "
                         f"{name!r} needs {entry.extra.get('n_mels', 80)} at hop {entry.extra.get('hop', 256)}")
    out = (models_dir / entry.files["vocoder"].path).parent
    roles = [("vocoder", "vocoder.onnx")]
    if (vocoder_dir / "vocoder.pt").is_file():
        roles.append(("vocoder_checkpoint", "vocoder.pt"))
    for _, fn in roles:
        if (vocoder_dir / fn).resolve() != (out / fn).resolve():
            shutil.copyfile(vocoder_dir / fn, out / fn)
    files = dict(entry.files)
    if len(roles) == 1:  # a vocoder.pt left from the old vocoder would describe another generator
        files.pop("vocoder_checkpoint", None)
        (out / "vocoder.pt").unlink(missing_ok=True)
    files.update(file_refs(models_dir, out, roles))
    new = dataclasses.replace(entry, files=files, description=entry.description if description is None else description)
    register(models_dir, new, make_default=False)
    codec = AudioCodec.load(Registry(models_dir), name)
    sound = np.sin(np.linspace(0, 2000, 22050)).astype(np.float32) * 0.3
    wave = codec.decompress(codec.compress(sound))
    if wave.shape != sound.shape or not np.isfinite(wave).all():
        raise RuntimeError(f"model {name!r} with the new vocoder does not decode a test sound")
    return new


__all__ = ["export_audio_model", "load_audio_checkpoint", "measure_receptive_field", "replace_vocoder"]
