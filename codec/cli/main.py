"""The ``strata`` command line: one module per command group.

::

    strata compress IN.png|IN.wav OUT.strata [--layers K] [--model NAME] [--url URL [--api-key KEY]]
    strata decompress IN.strata OUT.png|OUT.wav|OUT.npy [--layers K] [--partial] [--vocoder griffinlim]
                      [--refine N] [--url URL [--api-key KEY]]
    strata info IN.strata [--json]
    strata truncate IN.strata OUT.strata --layers K                      (strata.cli.stream)
    strata eval images|audio --data DIR --out DIR                        (strata.cli.evaluate)
    strata train image|audio|vocoder --data DIR --run DIR [--resume]     (strata.cli.train)
    strata export image|audio|vocoder ...                                (strata.cli.export)
    strata serve [--host H] [--port P] [--workers N] [--ray [--replicas N]] (strata.cli.serve)
    strata tokenize DIR_OR_GLOB --out DIR [--layers K] [--ray [--workers N]] (strata.cli.tokenize)

``main(argv)`` returns the exit status (0 success, 1 error, 2 usage) and is what the tests call.
Errors print one line to stderr, never a traceback; a command whose extra is not installed says
which one to install.
"""

from __future__ import annotations

import argparse
import sys

from strata import __version__
from strata.cli import evaluate, export, serve, stream, tokenize, train
from strata.cli.common import CliError, missing_extra
from strata.errors import StrataError


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="strata", description="Learned image and audio compression with residual VQ.")
    p.add_argument("--version", action="version", version=f"strata {__version__}")
    p.add_argument("--models", help="models folder (default: $STRATA_MODELS or the shipped models)")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (stream, evaluate, train, export, serve, tokenize):
        group.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        return args.func(args)
    except (StrataError, CliError) as e:
        message = str(e)
    except ModuleNotFoundError as e:
        error = missing_extra(e, getattr(args, "command_name", args.command))
        if error is None:
            raise
        message = str(error)
    except OSError as e:  # a file or folder that no check above caught, e.g. one an evaluation writes
        message = f"{e.filename}: {e.strerror}" if e.filename and e.strerror else str(e)
    print(f"strata: error: {' '.join(message.split())}", file=sys.stderr)  # one line, whatever the message
    return 1


if __name__ == "__main__":
    sys.exit(main())
