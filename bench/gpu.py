"""Throughput of the codec's networks per batch size on the GPU (onnxruntime CUDA provider, IO binding).

    python bench/gpu.py                                   # image g_a/g_s at 256², audio g_a/g_s/vocoder at 512 frames
    python bench/gpu.py --batch-sizes 1 8 32 --image-size 512x512 --seconds 5 --json gpu.json
    python bench/gpu.py --provider cpu --seconds 1        # the same measurement on the CPU (a baseline, or a check)
    python bench/gpu.py --provider cpu --threads 1 --batch-sizes 1 --stage-sizes 256x256 768x512   # one core's split

On a machine without the CUDA provider (onnxruntime without ``CUDAExecutionProvider``, or one whose CUDA
libraries fail to load, so the session falls back to the CPU) it prints one line saying so and exits 0.

For each network of the shipped models (or ``--models``), each batch size B: random inputs of B items, a warm-up
of ``--warmup`` calls (the first CUDA call also picks the convolution algorithms), then two closed loops of
``--seconds`` each:

* **device**: input already in GPU memory, output left there (:class:`strata.runtime.BoundNet`): the
  network's own throughput, what a pipeline that keeps tensors on the GPU gets;
* **host**: copy in, run, copy out (``BoundNet.__call__``): what the codec pays today, since RVQ search
  and entropy coding run on the CPU.

Items are images of ``--image-size`` (analysis: pixels in; synthesis: the latent of that image) or sound
windows of ``--audio-frames`` mel frames (256 samples each at 22 050 Hz; the vocoder makes the waveform of
that many frames). ``GFLOP/item`` counts the convolutions' multiply-adds (×2) at that input size, so
``TFLOP/s`` is the arithmetic rate the device loop reached. ``same`` says whether item 0 of the batch has
the bytes of a batch-1 call (what the Ray Serve batcher verifies before it uses a batched result,
:mod:`strata.server.ray_serve`); when it does not, the largest difference follows in brackets.

Then, for the default image model on the same provider, the **stages** of one ``compress`` and one
``decompress`` of a synthetic photo-like image of each ``--stage-sizes`` (median of ``--repeat`` runs, one
image at a time): decoding the uploaded PNG, ``g_a``, the code search (nearest codes, and the
rate–distortion optimised search that ``compress`` uses when the model sets ``rdo_lambda``), entropy coding;
entropy decoding, the code sum, ``g_s``, encoding the PNG answer. Only the networks move to the GPU; this
table says what is left on the CPU per image, hence where a GPU replica's bottleneck goes
(docs/scaling.md). ``--clock cpu`` times them in this process's CPU time instead of wall time: on a shared
machine that is robust to other work, and right for a single-threaded CPU run (``--provider cpu --threads
1`` with ``OMP_NUM_THREADS=1``), not for GPU work (which uses little host CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from strata.audio import HOP, SAMPLE_RATE
from strata.eval.synthetic import synthetic_image
from strata.frontend.image import pad_uint8, read_image, to_uint8
from strata.image import ImageCodec, ImageCodes
from strata.quantize.rdo import rd_encode
from strata.registry import Registry
from strata.runtime import CPU, CUDA, BoundNet, OnnxNet
from strata.server.payloads import write_image

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class NetSpec:
    """One network to measure: its file, and the input shape of one item for the chosen sizes."""

    label: str  # "image-rvq7 analysis"
    path: Path
    item_shape: tuple[int, ...]  # without the batch axis
    unit: str  # what one item is: "image 256x256", "5.94 s of sound"
    seconds_per_item: float  # sound seconds per item (0 for images): the realtime factor column


@dataclass
class Cell:
    network: str
    batch: int
    item: str
    device_items_per_s: float
    device_ms_per_batch: float
    host_items_per_s: float
    host_ms_per_batch: float
    realtime: float | None  # sound seconds per second (device loop), audio only
    gflop_per_item: float
    device_tflop_per_s: float
    same_as_batch_1: bool
    max_abs_diff: float


@dataclass
class Stage:
    image: str
    operation: str  # compress | decompress
    stage: str
    ms: float  # median over the repeats


def parse_size(text: str) -> tuple[int, int]:
    """``"512x256"`` → (height 256, width 512)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 256x256 (width x height), got {text!r}") from None
    if not (8 <= w <= 8192 and 8 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"sides must be in 8..8192, got {text!r}")
    return h, w


def fixed_dim(path: Path, axis: int) -> int:
    """The static size of ``axis`` of a network's input (a latent's channels, the audio code rows)."""
    shape = ort.InferenceSession(str(path), providers=[CPU]).get_inputs()[0].shape
    if not isinstance(shape[axis], int):
        raise SystemExit(f"gpu.py: error: {path}: input axis {axis} is not fixed ({shape})")
    return shape[axis]


def network_specs(registry: Registry, image_size: tuple[int, int], frames: int) -> list[NetSpec]:
    """The default image and audio models' networks with one item's input shape each."""
    specs = []
    if registry.names("image"):
        entry = registry.default("image")
        h, w = image_size
        f = entry.factor
        if h % f or w % f:
            raise SystemExit(f"gpu.py: error: --image-size sides must be multiples of {f} (the model's factor)")
        g_a, g_s = registry.path(entry, "analysis"), registry.path(entry, "synthesis")
        unit = f"image {w}x{h}"
        specs += [NetSpec(f"{entry.name} analysis", g_a, (3, h, w), unit, 0.0),
                  NetSpec(f"{entry.name} synthesis", g_s, (fixed_dim(g_s, 1), h // f, w // f), unit, 0.0)]
    if registry.names("audio"):
        entry = registry.default("audio")
        f = entry.factor
        if frames % f:
            raise SystemExit(f"gpu.py: error: --audio-frames must be a multiple of {f} (the model's factor)")
        g_a, g_s = registry.path(entry, "analysis"), registry.path(entry, "synthesis")
        seconds = frames * HOP / SAMPLE_RATE
        unit = f"{seconds:.2f} s of sound"
        n_mels = fixed_dim(g_a, 1)
        specs += [NetSpec(f"{entry.name} analysis", g_a, (n_mels, frames), unit, seconds),
                  NetSpec(f"{entry.name} synthesis", g_s, (fixed_dim(g_s, 1), fixed_dim(g_s, 2), frames // f), unit,
                          seconds)]
        if "vocoder" in entry.files:
            specs.append(NetSpec(f"{entry.name} vocoder", registry.path(entry, "vocoder"), (n_mels, frames), unit,
                                 seconds))
    return specs


def conv_gflop(path: Path, item_shape: tuple[int, ...]) -> float:
    """GFLOP (2 × multiply-adds) of the Conv and ConvTranspose nodes of the network at ``path`` for one item of
    ``item_shape``: every convolution's input, weight and output are exposed as graph outputs and their shapes
    read from one CPU run on zeros (weights may reach a Conv through a Cast, so the initializers alone do not
    say)."""
    model = onnx.load(str(path))
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    present = {o.name for o in model.graph.output}
    for name in dict.fromkeys(t for n in convs for t in (n.input[0], n.input[1], n.output[0])):
        if name not in present:
            model.graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(model.SerializeToString(), providers=[CPU])
    outputs = session.run(None, {session.get_inputs()[0].name: np.zeros((1, *item_shape), np.float32)})
    shapes = {o.name: y.shape for o, y in zip(session.get_outputs(), outputs, strict=True)}
    macs = 0
    for n in convs:
        per_position = int(np.prod(shapes[n.input[1]][1:]))  # weight [C_out, C_in/g, k…] or [C_in, C_out/g, k…]
        positions = shapes[n.output[0]] if n.op_type == "Conv" else shapes[n.input[0]]
        macs += int(np.prod(positions)) * per_position
    return 2 * macs / 1e9


def timed(fn: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Calls of ``fn`` in a closed loop for at least ``seconds`` (and at least 3 calls): (calls, elapsed)."""
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and calls >= 3:
            return calls, elapsed


def measure(spec: NetSpec, providers: list[str], batches: list[int], seconds: float, warmup: int,
            threads: int = 0, seed: int = 0) -> list[Cell]:
    """One row per batch size for one network (see the module docstring)."""
    net = OnnxNet.load(spec.path, providers, threads)
    gflop = conv_gflop(spec.path, spec.item_shape)
    bound = BoundNet(net)
    rng = np.random.default_rng(seed)
    cells = []
    first = rng.standard_normal((1, *spec.item_shape)).astype(np.float32)
    reference = bound(first)  # item 0 of every batch is this one: compared with its batch-1 output
    for b in batches:
        x = np.concatenate([first, rng.standard_normal((b - 1, *spec.item_shape)).astype(np.float32)])
        on_device = bound.to_device(x)
        for _ in range(warmup):
            bound.run(on_device)
        y = bound(x)
        diff = float(np.abs(y[:1] - reference).max())
        same = y[:1].tobytes() == reference.tobytes()
        n_dev, t_dev = timed(partial(bound.run, on_device), seconds)
        n_host, t_host = timed(partial(bound, x), seconds)
        device_rate = n_dev * b / t_dev
        cells.append(Cell(spec.label, b, spec.unit, round(device_rate, 2), round(1e3 * t_dev / n_dev, 3),
                          round(n_host * b / t_host, 2), round(1e3 * t_host / n_host, 3),
                          round(device_rate * spec.seconds_per_item, 1) if spec.seconds_per_item else None,
                          round(gflop, 3), round(device_rate * gflop / 1e3, 3), same, diff))
    return cells


def median_ms(fn: Callable[[], object], repeat: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Median milliseconds of ``repeat`` calls of ``fn`` on ``clock``."""
    times = []
    for _ in range(repeat):
        start = clock()
        fn()
        times.append(clock() - start)
    return round(1e3 * float(np.median(times)), 2)


def stages(codec: ImageCodec, size: tuple[int, int], repeat: int,
           clock: Callable[[], float] = time.perf_counter) -> list[Stage]:
    """Median ms of each stage of compress and decompress of one synthetic ``(H, W)`` image, run as the codec
    runs them (one call per network: images up to a megapixel are not tiled), and of the whole calls."""
    h, w = size
    label = f"{w}x{h}"
    png = write_image(synthetic_image(h, w), "png")
    image = read_image(png)
    x = pad_uint8(image, codec.factor).astype(np.float32) / 255.0
    latent = codec.analysis(x)
    codes = codec.quantizer.encode(latent)
    stack = ImageCodes(codes[:, 0], (h, w), codec.name)
    stream = codec.compress_codes(stack)
    summed = codec.quantizer.decode(codes)
    pixels = to_uint8(codec.synthesis(summed))[0, :, :h, :w].transpose(1, 2, 0)
    steps: list[tuple[str, str, Callable[[], object]]] = [
        ("compress", "decode the PNG upload", partial(read_image, png)),
        ("compress", "g_a (network)", partial(codec.analysis, x)),
        ("compress", "code search, nearest codes", partial(codec.quantizer.encode, latent)),
        *([("compress", f"code search, RD-optimised (λ {codec.rdo_lambda:g}: compress uses it)",
            partial(rd_encode, codec.quantizer, codec.prior, latent, None, codec.rdo_lambda))]
          if codec.rdo_lambda > 0 else []),
        ("compress", "entropy coding", partial(codec.compress_codes, stack)),
        ("compress", "whole compress(image)", partial(codec.compress, image)),
        ("decompress", "entropy decoding", partial(codec.decompress_codes, stream)),
        ("decompress", "code sum", partial(codec.quantizer.decode, codes)),
        ("decompress", "g_s (network)", partial(codec.synthesis, summed)),
        ("decompress", "encode the PNG answer", partial(write_image, np.ascontiguousarray(pixels), "png")),
        ("decompress", "whole decompress(stream)", partial(codec.decompress, stream)),
    ]
    return [Stage(label, op, name, median_ms(fn, repeat, clock)) for op, name, fn in steps]


def print_cell(c: Cell) -> None:
    realtime = "–" if c.realtime is None else f"{c.realtime:,.0f}×"
    same = "yes" if c.same_as_batch_1 else f"no ({c.max_abs_diff:.2e})"
    print(f"| {c.network} | {c.item} | {c.batch} | {c.device_items_per_s:,.1f} | {c.device_ms_per_batch:.2f} | "
          f"{c.host_items_per_s:,.1f} | {c.host_ms_per_batch:.2f} | {realtime} | {c.gflop_per_item:.2f} | "
          f"{c.device_tflop_per_s:.3f} | {same} |", flush=True)


def cuda_missing() -> str | None:
    """Why the CUDA provider cannot run here, or None when it can."""
    if CUDA not in ort.get_available_providers():
        return (f"no CUDA: onnxruntime {ort.__version__} has {', '.join(ort.get_available_providers())}; "
                "install the gpu extra on a CUDA machine, or give --provider cpu")
    return None


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("--models", help="models folder (default: the shipped models/)")
    p.add_argument("--provider", choices=["cuda", "cpu"], default="cuda", help="onnxruntime provider (default cuda)")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16], help="items per call")
    p.add_argument("--image-size", type=parse_size, default=(256, 256), help="image WIDTHxHEIGHT (default 256x256)")
    p.add_argument("--audio-frames", type=int, default=512, help="mel frames per sound item (default 512: 5.9 s)")
    p.add_argument("--seconds", type=float, default=3.0, help="measured seconds per loop (default 3)")
    p.add_argument("--warmup", type=int, default=3, help="uncounted calls before each batch size (default 3)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (default 0: all cores)")
    p.add_argument("--stage-sizes", type=parse_size, nargs="*", default=[(256, 256), (512, 768)],
                   help="image sizes WIDTHxHEIGHT for the stage table (default 256x256 768x512; none: skip it)")
    p.add_argument("--repeat", type=int, default=5, help="runs per stage, median (default 5)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="stage timing: wall time (default) or this process's CPU time (see above)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    return p


def main(argv: list[str] | None = None) -> int:
    p = get_parser()
    args = p.parse_args(argv)
    if any(not 1 <= b <= 1024 for b in args.batch_sizes):
        p.error("--batch-sizes must be in 1..1024")
    if not 0 < args.seconds <= 600 or not 0 <= args.warmup <= 100 or not 8 <= args.audio_frames <= 1 << 16:
        p.error("--seconds must be in (0, 600], --warmup in 0..100, --audio-frames in 8..65536")
    if not 0 <= args.threads <= 256 or not 1 <= args.repeat <= 1000:
        p.error("--threads must be in 0..256 and --repeat in 1..1000")
    providers = [CUDA, CPU] if args.provider == "cuda" else [CPU]
    if args.provider == "cuda" and (why := cuda_missing()):
        print(f"gpu.py: {why}; nothing measured")
        return 0
    registry = Registry(Path(args.models) if args.models else ROOT / "models")
    specs = network_specs(registry, args.image_size, args.audio_frames)
    if not specs:
        p.error(f"no image or audio model in {registry.root}")
    probe = OnnxNet.load(specs[0].path, providers, args.threads)
    if args.provider == "cuda" and probe.provider != "cuda":  # listed, but its libraries did not load
        print(f"gpu.py: no CUDA: onnxruntime {ort.__version__} lists the CUDA provider but the session runs on "
              f"{probe.session.get_providers()[0]} (CUDA/cuDNN libraries missing?); nothing measured")
        return 0
    device = ort.get_device() if args.provider == "cuda" else platform.processor() or platform.machine()
    print(f"onnxruntime {ort.__version__}, provider {probe.session.get_providers()[0]} ({device}), IO binding; "
          f"{args.seconds:g} s per loop, batch sizes {' '.join(map(str, args.batch_sizes))}, "
          f"{args.threads or 'all'} intra-op threads\n")
    print("| network | item | batch | device items/s | device ms/batch | host items/s | host ms/batch | "
          "realtime (device) | GFLOP/item | TFLOP/s (device) | same as batch 1 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|", flush=True)
    cells = []
    for spec in specs:
        for cell in measure(spec, providers, sorted(set(args.batch_sizes)), args.seconds, args.warmup,
                            args.threads):
            print_cell(cell)
            cells.append(cell)
    steps: list[Stage] = []
    if args.stage_sizes and registry.names("image"):
        codec = ImageCodec.load(registry, providers=providers, threads=args.threads)
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        print(f"\nstages of one image ({codec.name}, all {codec.layers} layers, g_a/g_s on "
              f"{codec.provider}, {args.clock} time, median of {args.repeat}):\n")
        print("| image | operation | stage | ms |")
        print("|---|---|---|---:|", flush=True)
        for size in args.stage_sizes:
            for st in stages(codec, size, args.repeat, clock):
                print(f"| {st.image} | {st.operation} | {st.stage} | {st.ms:.1f} |", flush=True)
                steps.append(st)
    if args.json:
        Path(args.json).write_text(json.dumps({"onnxruntime": ort.__version__, "provider": args.provider,
                                               "threads": args.threads, "clock": args.clock,
                                               "rows": [asdict(c) for c in cells],
                                               "stages": [asdict(st) for st in steps]}, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
