"""Where the time of an image compress and decompress goes: per stage, and per ONNX operator.

Stages, timed one by one on the same images (median of ``--repeat`` runs, both threads unless
``--threads``): reading the PNG, padding, ``g_a``, the code search, entropy coding and packing;
parsing, entropy decoding, the code sum, ``g_s``, conversion to ``uint8``, and the PNG of the answer.
Then onnxruntime's own profiler runs ``g_a`` and ``g_s`` on the first image and the operator
times are summed by operator type (the top ``--top``), so the networks' share can be split further.

    python bench/profile_image.py --data ../shared/data/images/kodak --limit 4 [--model NAME] [--layers K]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
from strata.frontend.image import list_images, pad_uint8, read_image, to_uint8, write_image
from strata.image import ImageCodec
from strata.registry import Registry


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def stage_times(codec: ImageCodec, png: bytes, layers: int, repeat: int) -> dict[str, float]:
    """Milliseconds of each stage of one compress and one decompress of the PNG ``png``."""
    image = read_image(png)
    padded = pad_uint8(image, codec.factor)
    x = padded.astype(np.float32) / 255.0
    latent = codec.analysis(x)
    codes = codec._search(latent, layers)
    stream = codec.compress(image, layers)
    grid_codes = codes[:, 0]
    latent_q = codec.quantizer.decode(codes)
    y = codec.synthesis(latent_q)
    pixels = to_uint8(y)[0].transpose(1, 2, 0)
    return {
        "read PNG": median_ms(lambda: read_image(png), repeat),
        "pad + scale": median_ms(lambda: pad_uint8(image, codec.factor).astype(np.float32) / 255.0, repeat),
        "g_a (ONNX)": median_ms(lambda: codec.analysis(x), repeat),
        "code search": median_ms(lambda: codec._search(latent, layers), repeat),
        "entropy coding + pack": median_ms(lambda: codec._pack(grid_codes, image.shape[:2]), repeat),
        "compress, all": median_ms(lambda: codec.compress(image, layers), repeat),
        "parse + entropy decoding": median_ms(lambda: codec.decompress_codes(stream), repeat),
        "code sum": median_ms(lambda: codec.quantizer.decode(codes), repeat),
        "g_s (ONNX)": median_ms(lambda: codec.synthesis(latent_q), repeat),
        "to uint8": median_ms(lambda: to_uint8(y), repeat),
        "PNG of the answer": median_ms(lambda: write_image(np.ascontiguousarray(pixels)), repeat),
        "decompress, all": median_ms(lambda: codec.decompress(stream), repeat),
    }


def operator_times(path: Path, x: np.ndarray, threads: int, runs: int = 3) -> dict[str, float]:
    """Mean milliseconds per run of each operator type of the ONNX graph at ``path`` on input ``x``."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with tempfile.TemporaryDirectory() as tmp:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        session.run(None, {name: x})  # warm-up, excluded below by counting the last ``runs`` only
        for _ in range(runs):
            session.run(None, {name: x})
        trace = json.loads(Path(session.end_profiling()).read_text())
    per_run: dict[str, list[float]] = defaultdict(list)
    kernel_events = [e for e in trace if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    n_nodes = len(kernel_events) // (runs + 1)
    for event in kernel_events[n_nodes:]:  # skip the warm-up run's nodes
        per_run[event["args"]["op_name"]].append(event["dur"] / 1e3)
    return {op: sum(v) / runs for op, v in per_run.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=Path("../shared/data/images/kodak"))
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model")
    ap.add_argument("--layers", type=int, help="layers to compress (default: all)")
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all cores)")
    ap.add_argument("--top", type=int, default=8, help="operator types listed per network")
    args = ap.parse_args()
    registry = Registry()
    codec = ImageCodec.load(registry, args.model, threads=args.threads)
    k = args.layers or codec.layers
    files = list_images(args.data)[: args.limit]
    rows = [stage_times(codec, f.read_bytes(), k, args.repeat) for f in files]
    shape = read_image(files[0].read_bytes()).shape
    print(f"{codec.name}, {k} layers, {len(files)} images of {args.data.name} (first {shape[1]}×{shape[0]}), "
          f"threads={args.threads or 'all'}; median of {args.repeat} runs, mean over images\n")
    print("| stage | ms/image | share of its direction |")
    print("|---|---:|---:|")
    mean = {s: float(np.mean([r[s] for r in rows])) for s in rows[0]}
    for stage, ms in mean.items():
        total = mean["compress, all"] if list(mean).index(stage) <= 5 else mean["decompress, all"]
        share = "" if stage.endswith(", all") else f"{100 * ms / total:.0f}%"
        print(f"| {stage} | {ms:.1f} | {share} |")

    image = read_image(files[0].read_bytes())
    x = pad_uint8(image, codec.factor).astype(np.float32) / 255.0
    latent = codec.quantizer.decode(codec._search(codec.analysis(x), k))
    for role, inp in (("analysis", x), ("synthesis", latent)):
        ops = operator_times(registry.path(codec.entry, role), inp, args.threads)
        total = sum(ops.values())
        print(f"\n{role} ({'g_a' if role == 'analysis' else 'g_s'}): {total:.1f} ms in operators, by type\n")
        print("| operator | ms | share |")
        print("|---|---:|---:|")
        for op, ms in sorted(ops.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"| {op} | {ms:.1f} | {100 * ms / total:.0f}% |")


if __name__ == "__main__":
    main()
