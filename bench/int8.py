"""Static int8 (QDQ) quantization of an image model's transforms: how much faster, and what it costs in PSNR.

Quantizes ``g_a`` and ``g_s`` with onnxruntime (weights int8 per channel, activations uint8, ranges
calibrated on centre crops of ``--calibration`` images, never on the evaluation set), then on the images of
``--data`` (validation images) times both networks on a 768×512 input against the float ones, and reports
the PSNR change per layer count with int8 ``g_s`` alone and with both int8. The issue's rule for shipping
a quantized network is a loss of at most 0.1 dB at every layer count.

    python bench/int8.py --calibration ../shared/data/images/train --data ../shared/data/images/val --limit 6
    python bench/int8.py --registered --data ../shared/data/images/kodak --limit 24   # the shipped file
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from strata.eval.metrics import psnr
from strata.frontend.image import list_images, pad_uint8, read_image, to_uint8
from strata.image import ImageCodec
from strata.registry import Registry


class Feed(CalibrationDataReader):
    def __init__(self, name: str, inputs: list[np.ndarray]) -> None:
        self.items = iter([{name: x} for x in inputs])

    def get_next(self) -> dict | None:
        return next(self.items, None)


def quantize(src: Path, out: Path, inputs: list[np.ndarray], method: CalibrationMethod,
             exclude: list[str]) -> ort.InferenceSession:
    pre = out.with_suffix(".pre.onnx")
    with contextlib.chdir(out.parent):  # the pre-processing leaves temporary files in the working folder
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)  # folds the float16 weight casts
    name = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    quantize_static(str(pre), str(out), Feed(name, inputs), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=method, nodes_to_exclude=exclude)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(out), opts, providers=["CPUExecutionProvider"])


def timed(fn, x: np.ndarray, repeat: int = 3) -> float:
    fn(x)
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn(x)
    return 1e3 * (time.perf_counter() - t0) / repeat


def registered(args: argparse.Namespace) -> None:
    """The model's registered int8 synthesis against its float one: the same streams decoded both ways."""
    registry = Registry()
    f32 = ImageCodec.load(registry, args.model)
    i8 = ImageCodec.load(registry, args.model, precision="int8")
    z = f32.quantizer.decode(f32.quantizer.encode(f32.analysis(np.random.default_rng(0).random(
        (1, 3, 512, 768), dtype=np.float32))))
    t32, t8 = timed(f32.synthesis, z), timed(i8.synthesis, z)
    print(f"{f32.name}: registered int8 g_s ({', '.join(f32.entry.extra['synthesis_int8']['float_nodes'])} in "
          f"float) against float, streams of the default encoder\n")
    print(f"g_s on 768×512: float {t32:.0f} ms, int8 {t8:.0f} ms ({t32 / t8:.2f}×)\n")
    ks = range(1, f32.layers + 1)
    base, delta = {k: [] for k in ks}, {k: [] for k in ks}
    files = list_images(args.data)[: args.limit]
    for path in files:
        image = read_image(path.read_bytes())
        stream = f32.compress(image)
        for k in ks:
            p32 = psnr(image, f32.decompress(stream, k))
            base[k].append(p32)
            delta[k].append(psnr(image, i8.decompress(stream, k)) - p32)
    print(f"| layers | float PSNR | int8 − float, mean (worst) over {len(files)} images of {args.data.name} |")
    print("|---:|---:|---:|")
    for k in ks:
        print(f"| {k} | {np.mean(base[k]):.2f} | {np.mean(delta[k]):+.3f} ({min(delta[k]):+.3f}) |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--calibration", type=Path, help="images whose crops set the ranges (train)")
    ap.add_argument("--registered", action="store_true", help="measure the model's registered int8 synthesis "
                    "(strata export int8) on --data instead of quantizing here")
    ap.add_argument("--data", type=Path, required=True, help="images the PSNR is measured on (validation)")
    ap.add_argument("--limit", type=int, default=6)
    ap.add_argument("--crops", type=int, default=16, help="calibration crops (256×256)")
    ap.add_argument("--method", choices=["minmax", "entropy", "percentile"], default="minmax")
    ap.add_argument("--exclude", nargs="*", default=[], help="ONNX node names left in float (e.g. the output "
                    "convolution /net/net.14/Conv and the linear path /skip/skip.0/Conv of g_s)")
    args = ap.parse_args()
    if args.registered:
        registered(args)
        return
    if args.calibration is None:
        ap.error("--calibration is needed unless --registered")
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[args.method]
    registry = Registry()
    codec = ImageCodec.load(registry, args.model, rdo_lambda=0.0)
    crops = [pad_uint8(read_image(p.read_bytes())[:256, :256], codec.factor).astype(np.float32) / 255.0
             for p in list_images(args.calibration)[: args.crops]]
    latents = [codec.quantizer.decode(codec.quantizer.encode(codec.analysis(x))) for x in crops]
    with tempfile.TemporaryDirectory() as tmp:
        ga8 = quantize(registry.path(codec.entry, "analysis"), Path(tmp) / "analysis.onnx", crops, method,
                       args.exclude)
        gs8 = quantize(registry.path(codec.entry, "synthesis"), Path(tmp) / "synthesis.onnx", latents, method,
                       args.exclude)

        def a8(x: np.ndarray) -> np.ndarray:
            return ga8.run(None, {ga8.get_inputs()[0].name: x})[0]

        def s8(z: np.ndarray) -> np.ndarray:
            return gs8.run(None, {gs8.get_inputs()[0].name: z})[0]

        rng = np.random.default_rng(0)
        x = rng.random((1, 3, 512, 768), dtype=np.float32)
        z = codec.quantizer.decode(codec.quantizer.encode(codec.analysis(x)))
        kept = f", left in float: {' '.join(args.exclude)}" if args.exclude else ""
        print(f"{codec.name}, calibration {args.method} on {len(crops)} crops of {args.calibration.name}{kept}\n")
        print("| network | float ms | int8 ms | speed-up |")
        print("|---|---:|---:|---:|")
        for name, f32, i8, inp in (("g_a", codec.analysis, a8, x), ("g_s", codec.synthesis, s8, z)):
            t32, t8 = timed(f32, inp), timed(i8, inp)
            print(f"| {name} (768×512) | {t32:.0f} | {t8:.0f} | {t32 / t8:.2f}× |")

        ks = range(1, codec.layers + 1)
        d_s, d_both, base = {k: [] for k in ks}, {k: [] for k in ks}, {k: [] for k in ks}
        for path in list_images(args.data)[: args.limit]:
            image = read_image(path.read_bytes())
            h, w = image.shape[:2]
            xp = pad_uint8(image, codec.factor).astype(np.float32) / 255.0
            y32, y8 = codec.analysis(xp), a8(xp)

            def pixels(y: np.ndarray, h: int = h, w: int = w) -> np.ndarray:
                return to_uint8(y)[0].transpose(1, 2, 0)[:h, :w]

            for k in ks:
                l32 = codec.quantizer.decode(codec.quantizer.encode(y32, k))
                l8 = codec.quantizer.decode(codec.quantizer.encode(y8, k))
                p32 = psnr(image, pixels(codec.synthesis(l32)))
                base[k].append(p32)
                d_s[k].append(psnr(image, pixels(s8(l32))) - p32)
                d_both[k].append(psnr(image, pixels(s8(l8))) - p32)
        print(f"\nPSNR on {args.limit} images of {args.data.name}: mean change against the float networks "
              "(worst image in brackets)\n")
        print("| layers | float PSNR | int8 g_s | int8 g_a + g_s |")
        print("|---:|---:|---:|---:|")
        for k in ks:
            print(f"| {k} | {np.mean(base[k]):.2f} | {np.mean(d_s[k]):+.2f} ({min(d_s[k]):+.2f}) "
                  f"| {np.mean(d_both[k]):+.2f} ({min(d_both[k]):+.2f}) |")


if __name__ == "__main__":
    main()
