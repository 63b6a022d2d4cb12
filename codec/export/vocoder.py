"""Export a trained HiFi-GAN generator (``strata export vocoder``): ``vocoder.onnx`` for serving
and ``vocoder.pt`` (the float16-exact generator) to resume training from.

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
from strata.train.vocoder import load_generator


@dataclass(frozen=True)
class ExportedVocoder:
    onnx: Path  # vocoder.onnx: mel [B, 80, F] → audio [B, 1, F·256], float16-stored weights
    checkpoint: Path  # vocoder.pt: generator state (weight-norm form) + config, for init_from / resuming
    max_abs_diff: float  # ONNX vs the torch generator of vocoder.pt on a random mel


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
    gen = fp16_generator(load_generator(checkpoint))
    state = {k: v.half() if v.is_floating_point() and torch.equal(v.half().float(), v) else v
             for k, v in gen.state_dict().items()}
    torch.save({"generator": state, "config": gen.cfg.to_dict(), "train_config": src.get("train_config"),
                "step": src.get("step"), "best": src.get("best"), "metrics": src.get("metrics")},
               out / "vocoder.pt")
    onnx_path = export_generator(gen, out / "vocoder.onnx")
    store_fp16(onnx_path)

    mel = torch.randn(1, gen.cfg.n_mels, frames, generator=torch.Generator().manual_seed(0)) - 4
    with torch.no_grad():
        ref = load_generator(out / "vocoder.pt")(mel).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"mel": mel.numpy()})[0]
    diff = float(np.abs(got - ref).max())
    if diff > 1e-3:
        raise RuntimeError(f"exported vocoder.onnx differs from the torch generator by {diff}")
    return ExportedVocoder(onnx_path, out / "vocoder.pt", diff)


__all__ = ["ExportedVocoder", "export_vocoder", "fp16_generator"]
