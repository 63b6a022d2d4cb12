"""``strata tokenize DIR_OR_GLOB --out OUT/``: the code stacks of many files as Parquet shards (:mod:`strata.bulk`).

::

    strata tokenize photos/ --out tokens/ --layers 4 --shard-size 256 [--streams]
    strata tokenize 'clips/**/*.flac' --out tokens/ --modality audio
    strata tokenize photos/ --out tokens/ --ray --workers 8              (Ray actors; $RAY_ADDRESS: a cluster)

Needs the ``ray`` extra (pyarrow; Ray itself for ``--ray``). A rerun into the same ``--out`` skips the
shards already written (an interrupted run resumes); bad files are named on stderr, skipped and listed in
``OUT/errors.jsonl``; the exit status is 0 when the run completes, even with bad files.
"""

from __future__ import annotations

import argparse

from strata.cli.common import CliError, positive


def cmd_tokenize(args: argparse.Namespace) -> int:
    positive("--shard-size", args.shard_size)
    positive("--layers", args.layers)
    positive("--workers", args.workers)
    positive("--threads", args.threads)
    if args.workers is not None and not args.ray:
        raise CliError("--workers applies to --ray (one process runs without it)")
    import pyarrow  # noqa: F401  - a missing extra is said before anything is listed or loaded

    if args.ray:
        import ray  # noqa: F401

    from strata.bulk import ERRORS, TokenizeJob, progress_printer, tokenize

    job = TokenizeJob(
        inputs=args.inputs,
        out=args.out,
        modality=args.modality,
        model=args.model,
        layers=args.layers,
        shard_size=args.shard_size,
        streams=args.streams,
        models_dir=args.models,
    )
    summary = tokenize(job, ray=args.ray, workers=args.workers, threads=args.threads, on_shard=progress_printer())
    rate = summary.inputs / summary.seconds if summary.written and summary.seconds > 0 else 0.0
    line = (f"{args.out}: {summary.shards} shards ({summary.written} written, {summary.skipped} already complete), "
            f"{summary.rows}/{summary.inputs} files tokenized in {summary.seconds:.1f} s")
    if summary.written:
        line += f" ({rate:.2f} files/s)"
    if summary.errors:
        line += f"; {summary.errors} could not be read (see {args.out.rstrip('/')}/{ERRORS})"
    print(line)
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("tokenize", help="code stacks of a folder of images or sounds into Parquet shards "
                       "(needs the 'ray' extra)")
    p.add_argument("inputs", metavar="DIR_OR_GLOB", help="a folder (searched recursively) or a quoted glob")
    p.add_argument("--out", required=True, help="output folder: shard-NNNNN.parquet, manifest.json, errors.jsonl")
    p.add_argument("--layers", type=int, help="code layers to keep (default: all the model's)")
    p.add_argument("--model", help="model name (default: the default model of the modality)")
    p.add_argument("--modality", choices=("image", "audio"), default="image", help="input kind (default: image)")
    p.add_argument("--shard-size", type=int, default=256, help="files per shard (default: 256)")
    p.add_argument("--streams", action="store_true", help="also store each file's Strata stream (column 'stream')")
    p.add_argument("--ray", action="store_true", help="run on Ray (a local one, or the cluster of $RAY_ADDRESS)")
    p.add_argument("--workers", type=int, help="Ray workers, each loading the model once (default: one per CPU)")
    p.add_argument("--threads", type=int, help="onnxruntime threads per worker (default: all cores without "
                   "--ray, 1 per Ray worker)")
    p.set_defaults(func=cmd_tokenize, command_name="tokenize")
