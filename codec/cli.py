"""The ``strata`` command line.

::

    strata compress IN.png OUT.strata [--layers K] [--model NAME]
    strata decompress IN.strata OUT.png [--layers K] [--partial]
    strata info IN.strata
    strata truncate IN.strata OUT.strata --layers K
    strata eval images [--data DIR] [--out DIR]
    strata train image [--data DIR] [--run DIR] [--resume]
    strata export image --checkpoint CKPT --name NAME

``main(argv)`` returns the exit status (0 success, 1 error, 2 usage) and is
what the tests call. Errors print one line to stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from codec import __version__
from codec.errors import StrataError


class CliError(Exception):
    """A user-facing error: printed as ``strata: error: …`` with exit status 1."""


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise CliError(f"cannot read {path}: {e.strerror or e}") from None


def _write(path: str, data: bytes) -> None:
    try:
        Path(path).write_bytes(data)
    except OSError as e:
        raise CliError(f"cannot write {path}: {e.strerror or e}") from None


def _registry(args: argparse.Namespace):
    from codec.registry import Registry

    return Registry(Path(args.models) if args.models else None)


def _codec_for(args: argparse.Namespace, name: str | None):
    from codec.pipeline import ImageCodec

    return ImageCodec.load(_registry(args), name)


def cmd_compress(args: argparse.Namespace) -> int:
    from codec.frontend.image import read_image

    image = read_image(_read(args.input))
    codec = _codec_for(args, args.model)
    data = codec.compress(image, args.layers)
    _write(args.output, data)
    h, w = image.shape[:2]
    print(f"{args.output}: {len(data)} bytes, {codec.name}, {args.layers or codec.layers} layers, "
          f"{8 * len(data) / (h * w):.4f} bpp")
    return 0


def cmd_decompress(args: argparse.Namespace) -> int:
    import numpy as np

    from codec.bitstream import parse
    from codec.frontend.image import write_image

    data = _read(args.input)
    header = parse(data, partial=True).header
    codec = _codec_for(args, header.model)
    image = codec.decompress(data, args.layers, partial=args.partial)
    suffix = Path(args.output).suffix.lower()
    if suffix == ".npy":
        import io

        buf = io.BytesIO()
        np.save(buf, image, allow_pickle=False)
        _write(args.output, buf.getvalue())
    elif suffix in (".png", ".webp"):
        _write(args.output, write_image(image, suffix[1:]))
    else:
        raise CliError(f"output must end in .png, .webp or .npy, got {args.output!r}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from codec.bitstream import Modality, parse

    data = _read(args.input)
    stream = parse(data, partial=True)
    h = stream.header
    info = {
        "model": h.model,
        "weights": h.weights.hex(),
        "modality": h.modality.name.lower(),
        "size": list(h.size),
        "grid": list(h.grid),
        "padding": list(h.padding),
        "layers": h.layers,
        "layers_complete": stream.layers,
        "bytes": len(data),
        "header_bytes": len(data) - h.payload_bytes if stream.layers == h.layers else None,
        "chunk_bytes": [n for n, _ in h.chunks],
    }
    if h.modality is Modality.IMAGE:
        pixels = h.size[0] * h.size[1]
        header_bytes = len(h.to_bytes())
        cumulative, total = [], header_bytes
        for n, _ in h.chunks:
            total += n
            cumulative.append(round(8 * total / pixels, 5))
        info["bpp_by_layers"] = cumulative
    if args.json:
        print(json.dumps(info))
    else:
        for k, v in info.items():
            print(f"{k:16s} {v}")
    return 0


def cmd_truncate(args: argparse.Namespace) -> int:
    from codec.bitstream import truncate

    _write(args.output, truncate(_read(args.input), args.layers))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from codec.evaluate import evaluate_images, format_report

    report = evaluate_images(
        _registry(args), Path(args.data), Path(args.out), model=args.model, limit=args.limit, threads=args.threads
    )
    print(format_report(report))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from codec.train.image import ImageTrainConfig, train

    run = Path(args.run)
    cfg_path = run / "config.json"
    if args.resume and cfg_path.exists():
        cfg = ImageTrainConfig.from_dict(json.loads(cfg_path.read_text()))
    else:
        cfg = ImageTrainConfig()
    cfg.data = args.data or cfg.data
    if args.steps:
        cfg.steps = args.steps
    train(cfg, run, resume=args.resume, max_minutes=args.max_minutes)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from codec.export import export_image_model
    from codec.registry import default_models_dir

    models = Path(args.models) if args.models else default_models_dir()
    entry = export_image_model(Path(args.checkpoint), args.name, Path(args.data), models, args.description)
    print(f"exported {entry.name} ({entry.weights_sha256[:16]}) to {models}")
    return 0


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="strata", description="Learned image compression with residual VQ.")
    p.add_argument("--version", action="version", version=f"strata {__version__}")
    p.add_argument("--models", help="models folder (default: $STRATA_MODELS or the shipped models/)")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compress", help="image → stream")
    c.add_argument("input")
    c.add_argument("output")
    c.add_argument("--layers", type=int, help="residual layers to spend (default: all)")
    c.add_argument("--model", help="model name (default: the manifest's default image model)")
    c.set_defaults(func=cmd_compress)

    d = sub.add_parser("decompress", help="stream → image (.png, .webp or .npy)")
    d.add_argument("input")
    d.add_argument("output")
    d.add_argument("--layers", type=int, help="decode only the first K layers")
    d.add_argument("--partial", action="store_true", help="decode the complete layers of a stream cut short")
    d.set_defaults(func=cmd_decompress)

    i = sub.add_parser("info", help="print a stream's header")
    i.add_argument("input")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    t = sub.add_parser("truncate", help="keep the first K layers of a stream")
    t.add_argument("input")
    t.add_argument("output")
    t.add_argument("--layers", type=int, required=True)
    t.set_defaults(func=cmd_truncate)

    e = sub.add_parser("eval", help="rate-distortion evaluation")
    e.add_argument("modality", choices=["images"])
    e.add_argument("--data", default="../shared/data/images/kodak")
    e.add_argument("--out", default="eval/images")
    e.add_argument("--model")
    e.add_argument("--limit", type=int, help="evaluate only the first N images")
    e.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all cores)")
    e.set_defaults(func=cmd_eval)

    tr = sub.add_parser("train", help="train a model")
    tr.add_argument("modality", choices=["image"])
    tr.add_argument("--data", help="folder with train/ and val/ (default ../shared/data/images)")
    tr.add_argument("--run", default="runs/image-rvq")
    tr.add_argument("--steps", type=int)
    tr.add_argument("--resume", action="store_true")
    tr.add_argument("--max-minutes", type=float)
    tr.set_defaults(func=cmd_train)

    x = sub.add_parser("export", help="export a checkpoint to ONNX + prior + manifest")
    x.add_argument("modality", choices=["image"])
    x.add_argument("--checkpoint", required=True)
    x.add_argument("--name", required=True)
    x.add_argument("--data", default="../shared/data/images")
    x.add_argument("--description", default="")
    x.set_defaults(func=cmd_export)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return args.func(args)
    except (StrataError, CliError) as e:
        print(f"strata: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
