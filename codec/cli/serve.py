"""``strata serve``: the HTTP service (needs the ``serve`` extra); the same as ``python -m strata.server``."""

from __future__ import annotations

import argparse

from strata.cli.common import CliError


def cmd_serve(args: argparse.Namespace) -> int:
    from strata.server.run import ServeError, serve

    try:
        serve(args.host, args.port, args.workers, getattr(args, "models", None), args.ray, args.replicas)
    except ServeError as e:
        raise CliError(str(e)) from None
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from strata.server.run import add_arguments

    s = sub.add_parser("serve", help="run the HTTP service (uvicorn; settings from STRATA_* variables)")
    add_arguments(s)
    s.set_defaults(func=cmd_serve, command_name="serve")
