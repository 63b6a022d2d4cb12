"""Export a trained vocoder (``strata export vocoder``): ``vocoder.onnx`` for serving and
``vocoder.pt`` (the float16-exact generator) to resume training from.

A HiFi-GAN generator exports whole (mel → samples). A Vocos network exports up to its STFT
coefficients (mel → ``real``, ``imag``; the serving side inverts them in numpy,
:mod:`strata.vocoder.istft`), and the check compares both the coefficients and the waveform of
that inverse with the torch network's.

:func:`strata.export.audio.export_audio_model` and :func:`~strata.export.audio.replace_vocoder`
then put the ONNX graph into an audio model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from strata.export.common import store_fp16
from strata.train.nets.hifigan_model import Generator, export_generator
from strata.train.nets.vocos_model import VocosGenerator, export_vocos
from strata.train.vocoder import load_generator


@dataclass(frozen=True)
class ExportedVocoder:
    onnx: Path  # vocoder.onnx: mel [B, 80, F] → audio [B, 1, F·256], float16-stored weights
    checkpoint: Path  # vocoder.pt: generator state (weight-norm form) + config, for init_from / resuming
    max_abs_diff: float  # ONNX vs the torch generator of vocoder.pt on a random mel (waveform samples)
    arch: str = "hifigan"  # "hifigan" or "vocos"


def fp16_vocos(gen: VocosGenerator) -> VocosGenerator:
    """A copy of ``gen`` whose parameters are float16-exact (it has no weight norm to re-derive)."""
    out = VocosGenerator(gen.cfg)
    out.load_state_dict(gen.state_dict())
    with torch.no_grad():
        for p in out.parameters():
            p.copy_(p.half().float())
    return out.eval()


def fp16_generator(gen: Generator) -> Generator:
    """A copy of ``gen`` (weight norm kept) whose folded weights and biases are float16-exact.

    Assigning the rounded folded weight re-derives weight norm's ``g`` and ``v`` (``right_inverse``):
    ``v`` = the rounded weight, ``g`` = its norm, so folding gives the rounded weight back.
    """
    from torch.nn.utils import parametrize

    out = Generator(gen.cfg)
    out.load_state_dict(gen.state_dict())
    with torch.no_grad():
        for m in out.modules():
            if parametrize.is_parametrized(m, "weight"):
                m.weight = m.weight.detach().half().float()
            if getattr(m, "bias", None) is not None:
                m.bias.copy_(m.bias.half().float())
    return out.eval()


def export_vocoder(checkpoint: Path | str, out_dir: Path | str, frames: int = 32) -> ExportedVocoder:
    """Write ``vocoder.onnx`` (folded, float16-stored weights) and ``vocoder.pt`` under ``out_dir``.

    The weights are rounded to float16 first (:func:`fp16_generator`), so the ONNX graph and the
    generator of ``vocoder.pt`` compute the same function; the ONNX output is checked against it.
    Not registered in any manifest.
    """
    import onnxruntime as ort

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    src = torch.load(checkpoint, map_location="cpu", weights_only=False)
    loaded = load_generator(checkpoint)
    if isinstance(loaded, VocosGenerator):
        return _export_vocos(fp16_vocos(loaded), src, out, frames)
    gen = fp16_generator(loaded)
    _save_fp16(gen, src, out / "vocoder.pt")
    onnx_path = export_generator(gen, out / "vocoder.onnx")
    store_fp16(onnx_path)

    mel = _check_mel(gen.cfg.n_mels, frames)
    with torch.no_grad():
        ref = load_generator(out / "vocoder.pt")(mel).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"mel": mel.numpy()})[0]
    diff = float(np.abs(got - ref).max())
    if diff > 1e-3:
        raise RuntimeError(f"exported vocoder.onnx differs from the torch generator by {diff}")
    return ExportedVocoder(onnx_path, out / "vocoder.pt", diff)


def _save_fp16(gen: Generator | VocosGenerator, src: dict, path: Path) -> None:
    """``vocoder.pt``: ``gen``'s float16-exact tensors stored as float16, its config, and ``src``'s history."""
    state = {k: v.half() if v.is_floating_point() and torch.equal(v.half().float(), v) else v
             for k, v in gen.state_dict().items()}
    torch.save({"generator": state, "config": gen.cfg.to_dict(), "train_config": src.get("train_config"),
                "step": src.get("step"), "best": src.get("best"), "metrics": src.get("metrics")}, path)


def _check_mel(n_mels: int, frames: int) -> torch.Tensor:
    """The fixed random log-mel ``[1, n_mels, frames]`` an export is checked on."""
    return torch.randn(1, n_mels, frames, generator=torch.Generator().manual_seed(0)) - 4


def _export_vocos(gen: VocosGenerator, src: dict, out: Path, frames: int) -> ExportedVocoder:
    """:func:`export_vocoder` for a Vocos network (``gen`` already float16-exact)."""
    import onnxruntime as ort
    from strata.vocoder.istft import istft

    _save_fp16(gen, src, out / "vocoder.pt")
    onnx_path = export_vocos(gen, out / "vocoder.onnx")
    store_fp16(onnx_path)

    mel = _check_mel(gen.cfg.n_mels, frames)
    ref_gen = load_generator(out / "vocoder.pt")
    with torch.no_grad():
        ref_real, ref_imag = (t[0].numpy() for t in ref_gen.spectrum(mel))
        ref_wave = ref_gen(mel)[0, 0].numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    real, imag = (a[0] for a in sess.run(["real", "imag"], {"mel": mel.numpy()}))
    scale = max(float(np.abs(ref_real).max()), float(np.abs(ref_imag).max()), 1.0)
    spec_diff = max(float(np.abs(real - ref_real).max()), float(np.abs(imag - ref_imag).max())) / scale
    diff = float(np.abs(istft(real, imag, gen.cfg.n_fft, gen.cfg.hop) - ref_wave).max())
    if spec_diff > 1e-3 or diff > 1e-3:
        raise RuntimeError(f"exported Vocos differs from the torch network: coefficients by {spec_diff} "
                           f"(relative), waveform by {diff}")
    return ExportedVocoder(onnx_path, out / "vocoder.pt", diff, "vocos")


__all__ = ["ExportedVocoder", "export_vocoder", "fp16_generator", "fp16_vocos"]
