"""``strata eval images | audio``: rate-distortion tables and plots against the classical codecs
(needs the ``eval`` extra; audio also ``audio`` and ``audio-eval``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from strata.cli.common import CliError, registry


def _check_out_dir(out: Path) -> None:
    """Before an evaluation runs: its output folder must be one (or not exist yet)."""
    if out.exists() and not out.is_dir():
        raise CliError(f"--out {out} is a file, not a folder")


def _check_numbers(args: argparse.Namespace) -> None:
    if args.limit is not None and args.limit < 1:
        raise CliError(f"--limit must be a positive number, got {args.limit}")
    if args.threads < 0:
        raise CliError(f"--threads must be >= 0 (0: all cores), got {args.threads}")


def cmd_eval_images(args: argparse.Namespace) -> int:
    _check_numbers(args)
    from strata.eval.images import evaluate_images, format_report

    data, out = Path(args.data), Path(args.out)
    _check_out_dir(out)
    report = evaluate_images(registry(args), data, out, model=args.model, limit=args.limit, threads=args.threads)
    print(format_report(report))
    if args.update_manifest:
        from strata.eval.images import record_in_manifest

        print(f"recorded bits per layer in {record_in_manifest(registry(args), report)}")
    return 0


def cmd_eval_audio(args: argparse.Namespace) -> int:
    _check_numbers(args)
    import shlex

    from strata.eval.audio import evaluate_audio, format_report, record_in_manifest
    from strata.vocoder.refine import MAX_ITERATIONS

    data, out = Path(args.data), Path(args.out)
    _check_out_dir(out)
    command = ["strata", *(["--models", args.models] if args.models else []), "eval", "audio",
               "--data", str(data), "--out", str(out)]  # what ran, defaults spelled out, for the report
    for flag, value in (("--model", args.model), ("--limit", args.limit), ("--threads", args.threads or None),
                        ("--refine", args.refine)):
        command += [flag, str(value)] if value is not None else []
    command += ["--codec-griffinlim"] * args.codec_griffinlim + ["--update-manifest"] * args.update_manifest
    refine = args.refine
    if refine is not None and not 0 <= refine <= MAX_ITERATIONS:
        raise CliError(f"--refine must be in 0..{MAX_ITERATIONS}, got {refine}")
    try:
        report = evaluate_audio(registry(args), data, out, model=args.model, limit=args.limit, threads=args.threads,
                                codec_griffinlim=args.codec_griffinlim, refine=refine, command=shlex.join(command))
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    print(format_report(report))
    print(f"wrote {out / 'report.json'}, {out / 'pesq_kbps.png'} and {out / 'mels.png'}")
    if args.update_manifest:
        print(f"recorded kbps per layer in {record_in_manifest(registry(args), report)}")
    return 0


def _common_flags(p: argparse.ArgumentParser, data_help: str) -> None:
    p.add_argument("--data", required=True, help=data_help)
    p.add_argument("--out", required=True, help="output folder for report.json and the plots")
    p.add_argument("--model", help="model name (default: the manifest's default model of the modality)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all cores)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("eval", help="rate-distortion evaluation against the classical codecs")
    kinds = e.add_subparsers(dest="modality", required=True, metavar="{images,audio}")

    im = kinds.add_parser("images", help="bpp, PSNR and MS-SSIM per layer count beside JPEG, WebP, AVIF, JPEG 2000")
    _common_flags(im, "a folder of images (the evaluation set, e.g. Kodak; never a training folder)")
    im.add_argument("--limit", type=int, help="evaluate only the first N images")
    im.add_argument("--update-manifest", action="store_true",
                    help="record the measured bits per layer and bpp in the model's manifest entry")
    im.set_defaults(func=cmd_eval_images, command_name="eval images")

    au = kinds.add_parser("audio", help="kbps, PESQ-WB, STOI and mel distances per layer count beside Opus")
    _common_flags(au, "a folder with speech/test and environment/test")
    au.add_argument("--limit", type=int, help="evaluate only the first N clips of each split")
    au.add_argument("--codec-griffinlim", action="store_true",
                    help="also decode the codec's mels with Griffin-Lim at every layer count")
    au.add_argument("--refine", type=int, metavar="N",
                    help="the network vocoders' mel-consistency iterations in the codec rows and in the refined "
                    "true-mel rows of HiFi-GAN and Vocos (default: the model's, extra.refine, else 8)")
    au.add_argument("--update-manifest", action="store_true",
                    help="record the measured kbps per layer in the model's manifest entry")
    au.set_defaults(func=cmd_eval_audio, command_name="eval audio")
