"""An int8 synthesis network for a registered image or audio model (``strata export int8``).

Quantizes the model's ``g_s`` statically with onnxruntime (QDQ: int8 weights per output channel, uint8
activations whose ranges come from the latents of training data, never the evaluation set: top-left
crops of ``calibration`` images, or the first seconds of the training clips of an audio model's sets under
``calibration``, held-out clips excluded) and registers it as the model's ``synthesis_int8`` file. The
first and output convolutions and the linear skip path (image models) stay in float, because int8 there
costs the most quality for the least time (``docs/notes/int8.md``: on validation images the loss fell
from up to 0.28 dB to at most 0.06 dB at any layer count, for a 2.7–2.8× faster ``g_s``; the mel
synthesis network runs 2.2× faster, PESQ-WB within 0.05 of float at every layer count on held-out speech,
no direction).

The codes do not depend on ``g_s``, so the model's weights hash, and every stream made with it, stay
valid: ``ImageCodec.load(..., precision="int8")`` / ``AudioCodec.load(..., precision="int8")`` (or the
service's ``STRATA_IMAGE_PRECISION`` / ``STRATA_AUDIO_PRECISION``) decode the same streams with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from strata.export.common import register
from strata.frontend.image import list_images, pad_uint8, read_image
from strata.registry import FileRef, ModelEntry, Registry, sha256_file

ROLE = "synthesis_int8"
FILE = "synthesis.int8.onnx"


class _Feed(CalibrationDataReader):
    def __init__(self, name: str, inputs: list[np.ndarray]) -> None:
        self.items = iter([{name: x} for x in inputs])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def float_convolutions(model: onnx.ModelProto) -> list[str]:
    """The convolutions left in float: the skip path's, and the first and last of the main path."""
    convs = [n.name for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    main = [c for c in convs if not c.startswith("/skip/")]
    keep = {c for c in convs if c.startswith("/skip/")} | ({main[0], main[-1]} if main else set())
    return [c for c in convs if c in keep]


def _image_latents(registry: Registry, name: str, calibration: Path, crops: int, crop: int) -> list[np.ndarray]:
    from strata.image import ImageCodec  # serving side

    codec = ImageCodec.load(registry, name, rdo_lambda=0.0)
    files = list_images(Path(calibration))[:crops]
    if not files:
        raise ValueError(f"no calibration images in {calibration}")
    latents = []
    for path in files:
        x = pad_uint8(read_image(path.read_bytes())[:crop, :crop], codec.factor).astype(np.float32) / 255.0
        latents.append(codec.quantizer.decode(codec.quantizer.encode(codec.analysis(x))))
    return latents


def _audio_latents(registry: Registry, name: str, calibration: Path, clips: int, seconds: float) -> list[np.ndarray]:
    """Latents of the first ``seconds`` of ``clips`` training clips spread evenly over the model's sets (the files
    its training did not hold out, under ``<calibration>/<set>/train/``)."""
    from strata.audio import SAMPLE_RATE, AudioCodec
    from strata.frontend.audio import read_audio_file
    from strata.train.data import split_sets

    codec = AudioCodec.load(registry, name, rdo_lambda=0.0)
    cfg = codec.entry.extra.get("config", {})
    files = split_sets(Path(calibration), cfg.get("sets", ["speech", "environment"]), float(cfg.get("heldout", 0.1)))[0]
    chosen = [files[i] for i in np.linspace(0, len(files) - 1, min(clips, len(files))).round().astype(int)]
    latents = []
    for path in chosen:
        x = read_audio_file(path)[: int(seconds * SAMPLE_RATE)]
        if x.size > 2048:
            latents.append(codec.quantizer.decode(codec.encode(x).codes[:, None].astype(np.int64)))
    if not latents:
        raise ValueError(f"no calibration clip in {calibration} is longer than 2048 samples")
    return latents


def export_int8_synthesis(models_dir: Path, name: str, calibration: Path, crops: int = 16,
                          crop: int = 256, seconds: float = 6.0) -> ModelEntry:
    """Write ``<models_dir>/<name>/synthesis.int8.onnx`` and register it in the model's manifest entry.

    ``calibration``: a folder of training images (image models: ``crops`` top-left crops of ``crop`` pixels),
    or the folder with ``<set>/train/`` sounds (audio models: the first ``seconds`` of ``crops`` clips).
    """
    registry = Registry(models_dir)
    entry = registry.entry(name)
    latents = (_audio_latents(registry, name, calibration, crops, seconds) if entry.modality == "audio"
               else _image_latents(registry, name, calibration, crops, crop))
    src = registry.path(entry, "synthesis")
    out = src.parent / FILE
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # onnxruntime leaves temporary files
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # folds the float16 weight casts
        keep = float_convolutions(onnx.load(str(pre)))
        name_in = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        quantize_static(str(pre), str(out), _Feed(name_in, latents), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        nodes_to_exclude=keep)
    files_ = {**entry.files, ROLE: FileRef(str(out.relative_to(Path(models_dir))), sha256_file(out))}
    extra = {**entry.extra, ROLE: {"float_nodes": keep, "calibration": Path(calibration).name, "crops": len(latents)}}
    updated = dataclasses.replace(entry, files=files_, extra=extra)
    register(Path(models_dir), updated, make_default=registry.defaults.get(entry.modality) == name)
    return updated


__all__ = ["FILE", "ROLE", "export_int8_synthesis", "float_convolutions"]
