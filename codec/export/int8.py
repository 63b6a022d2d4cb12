"""An int8 synthesis network for a registered image model (``strata export int8``).

Quantizes the model's ``g_s`` statically with onnxruntime (QDQ: int8 weights per output channel, uint8
activations whose ranges come from latents of centre crops of ``calibration`` images, never the evaluation
set) and registers it as the model's ``synthesis_int8`` file. Three convolutions stay in float, because
int8 there costs the most quality for the least time: the first one, the output one and the linear skip
path (``docs/notes/int8.md``: on validation images the loss fell from up to 0.28 dB to at most 0.06 dB
at any layer count, for a 2.7–2.8× faster ``g_s``).

The codes do not depend on ``g_s``, so the model's weights hash, and every stream made with it, stay
valid: ``ImageCodec.load(..., precision="int8")`` (or the service's ``STRATA_IMAGE_PRECISION=int8``)
decodes the same streams with the int8 network.
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


def export_int8_synthesis(models_dir: Path, name: str, calibration: Path, crops: int = 16,
                          crop: int = 256) -> ModelEntry:
    """Write ``<models_dir>/<name>/synthesis.int8.onnx`` and register it in the model's manifest entry."""
    from strata.image import ImageCodec  # serving side

    registry = Registry(models_dir)
    codec = ImageCodec.load(registry, name, rdo_lambda=0.0)
    files = list_images(Path(calibration))[:crops]
    if not files:
        raise ValueError(f"no calibration images in {calibration}")
    latents = []
    for path in files:
        x = pad_uint8(read_image(path.read_bytes())[:crop, :crop], codec.factor).astype(np.float32) / 255.0
        latents.append(codec.quantizer.decode(codec.quantizer.encode(codec.analysis(x))))
    src = registry.path(codec.entry, "synthesis")
    out = src.parent / FILE
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):  # onnxruntime leaves temporary files
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # folds the float16 weight casts
        keep = float_convolutions(onnx.load(str(pre)))
        name_in = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        quantize_static(str(pre), str(out), _Feed(name_in, latents), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                        nodes_to_exclude=keep)
    entry = codec.entry
    files_ = {**entry.files, ROLE: FileRef(str(out.relative_to(Path(models_dir))), sha256_file(out))}
    extra = {**entry.extra, ROLE: {"float_nodes": keep, "calibration": Path(calibration).name, "crops": len(files)}}
    updated = dataclasses.replace(entry, files=files_, extra=extra)
    register(Path(models_dir), updated, make_default=registry.defaults.get("image") == name)
    return updated


__all__ = ["FILE", "ROLE", "export_int8_synthesis", "float_convolutions"]
