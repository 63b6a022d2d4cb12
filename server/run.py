"""Start the HTTP service under uvicorn: ``python -m strata.server`` and ``strata serve``.

Settings come from ``STRATA_*`` variables (:mod:`strata.server.config`); ``--host``, ``--port``,
``--workers`` and ``--models`` override them. Problems that would stop the service (bad
settings, an address that cannot be listened on) are found before the models load and raised
as :class:`ServeError`, a one-line message.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from strata.server.config import Settings


class ServeError(Exception):
    """The service cannot start; the message says why in one line."""


def check_listen(host: str, port: int) -> None:
    """Bind ``host:port`` once and let go, so that an unknown host or a port in use is said before the models
    load (uvicorn binds only after its startup, and then exits with its own message)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as e:
        reason = getattr(e, "strerror", None) or e
        raise ServeError(f"--host {host!r} is not an address to listen on: {reason}") from None
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a port in TIME_WAIT is free
        try:
            s.bind(address)
        except OSError as e:
            raise ServeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", help="listen address (default: $STRATA_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: $STRATA_PORT or 8000)")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (each loads the models)")
    p.add_argument("--ray", action="store_true", help="run on Ray Serve (strata.server.ray_serve; the 'ray' extra)")
    p.add_argument("--replicas", type=int, help="Ray Serve replicas, each loading the models (with --ray; default 1)")
    p.add_argument("--models", default=argparse.SUPPRESS, help="models folder (default: $STRATA_MODELS_DIR, "
                   "$STRATA_MODELS or the shipped models)")


def serve(host: str | None = None, port: int | None = None, workers: int = 1, models: str | None = None,
          ray: bool = False, replicas: int | None = None) -> None:
    """Run the service until it is stopped (blocks): uvicorn, or Ray Serve with ``ray=True``."""
    if port is not None and not 1 <= port <= 65535:
        raise ServeError(f"--port must be in 1..65535, got {port}")
    if workers < 1:
        raise ServeError(f"--workers must be >= 1, got {workers}")
    if replicas is not None and (not ray or replicas < 1):
        raise ServeError(f"--replicas must be >= 1, got {replicas}" if ray else "--replicas applies to --ray")
    if ray and workers != 1:
        raise ServeError("--workers sets uvicorn processes; with --ray give --replicas")
    import uvicorn
    from pydantic import ValidationError
    from strata.server.config import Settings

    if models:  # the app factory reads its settings from the environment (one per uvicorn worker)
        os.environ["STRATA_MODELS_DIR"] = str(Path(models).resolve())
    try:
        settings = Settings()
    except ValidationError as e:
        problems = "; ".join(f"STRATA_{'.'.join(map(str, err['loc'])).upper()}: {err['msg']}" for err in e.errors())
        raise ServeError(f"invalid settings: {problems}") from None
    host, port = host or settings.host, port if port is not None else settings.port
    if not (ray and os.environ.get("RAY_ADDRESS")):  # on a Ray cluster its proxy listens, not this machine
        check_listen(host, port)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if ray:
        return serve_ray(host, port, replicas or 1)
    uvicorn.run(
        "strata.server.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level,
        access_log=False,  # the app logs one line per request itself
        **uvicorn_options(settings),
    )


def serve_ray(host: str, port: int, replicas: int) -> None:
    """Deploy :mod:`strata.server.ray_serve` on Ray (a local one, or the cluster of ``$RAY_ADDRESS``), its proxy on
    ``host:port``, and block until interrupted; the ``STRATA_*`` settings travel to the replicas."""
    import time

    try:
        import ray
        from ray import serve as ray_serve
    except ModuleNotFoundError as e:
        raise ServeError(f"--ray needs the 'ray' extra (no module {e.name!r}): "
                         "pip install 'strata-codec[ray]'") from None
    from strata.server.ray_serve import build_app

    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(include_dashboard=False)
    try:
        ray_serve.start(http_options={"host": host, "port": port})
        ray_serve.run(build_app({"replicas": replicas}), name="strata", route_prefix="/")
        print(f"strata: serving on Ray Serve at http://{host}:{port} ({replicas} replicas); Ctrl-C stops",
              file=sys.stderr)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        ray_serve.shutdown()
        ray.shutdown()


def uvicorn_options(settings: Settings) -> dict:
    """The uvicorn settings that protect the service from slow and numerous clients (tests use them too): the
    header deadline of :mod:`strata.server.protocol` and a cap on open connections (503 beyond it)."""
    return {
        "http": "strata.server.protocol:GuardedHTTPProtocol",
        "limit_concurrency": settings.max_connections,
        "timeout_keep_alive": 5,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m strata.server", description="Run the Strata HTTP service.")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        serve(args.host, args.port, args.workers, getattr(args, "models", None), args.ray, args.replicas)
    except ServeError as e:
        print(f"strata: error: {e}", file=sys.stderr)
        return 1
    return 0
