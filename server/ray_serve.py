"""The Strata HTTP service on Ray Serve: the same FastAPI app (routes, errors, OpenAPI) behind Ray's proxy.

::

    serve run strata.server.ray_serve:app                                   # defaults, local Ray
    serve run strata.server.ray_serve:build_app replicas=4 models_dir=/models max_pixels=4194304
    serve deploy docker/ray-serve.yaml                                      # a running cluster
    strata serve --ray --replicas 2                                         # the same from the CLI

Each replica builds its own app with :func:`strata.server.main.create_app` (``serve.ingress`` with a builder
function, evaluated on the replica), so the models load in the app's lifespan on the replica, as under
uvicorn: Ray Serve runs the ASGI lifespan (startup before the replica takes traffic, shutdown when it
stops). The service settings are the ``STRATA_*`` variables of the replica's environment: those of the
process that builds the application, overridden by the builder's arguments (``models_dir=…`` →
``STRATA_MODELS_DIR``), passed in the deployment's ``runtime_env``.

Builder arguments besides the settings: ``replicas`` (default 1), ``num_cpus`` per replica (default 1),
``num_gpus`` per replica (default 1 when this process's onnxruntime has the CUDA provider, else 0; a fraction
shares a GPU between replicas), ``max_ongoing_requests`` (Ray's default otherwise). A replica's inference
threads (``STRATA_WORKERS``) default to its CPUs and onnxruntime threads per session (``STRATA_ORT_THREADS``)
to 1, so replicas packed on one node do not oversubscribe it.

What differs from uvicorn: Ray's proxy terminates HTTP, so the uvicorn protections of
:mod:`strata.server.protocol` (header deadline, connection cap) do not apply; Ray's own proxy timeouts and
``max_ongoing_requests`` / ``max_queued_requests`` do. The app's body limit, work budget (503 +
Retry-After) and error bodies are the same. Needs Ray >= 2.47 (builder functions in ``serve.ingress``).
"""

from __future__ import annotations

import os
from typing import Any

from ray import serve

DEPLOYMENT_NAME = "strata"
DEPLOYMENT_ARGS = ("replicas", "num_cpus", "num_gpus", "max_ongoing_requests")


def cuda_available() -> bool:
    """Whether this process's onnxruntime has the CUDA provider (the ``gpu`` extra on a CUDA machine)."""
    try:
        import onnxruntime
    except ImportError:
        return False
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def build_fastapi():
    """The replica's app (called on the replica): settings from its ``STRATA_*`` environment."""
    from strata.server.main import create_app

    return create_app()


StrataIngress = serve.ingress(build_fastapi)()


def settings_env(args: dict[str, Any], num_cpus: float) -> dict[str, str]:
    """``STRATA_*`` variables for the replicas: this process's, then per-replica defaults, then ``args``."""
    from strata.server.config import Settings

    env = {k: v for k, v in os.environ.items() if k.startswith("STRATA_")}
    env.setdefault("STRATA_WORKERS", str(max(1, int(num_cpus))))
    env.setdefault("STRATA_ORT_THREADS", "1")
    for key, value in args.items():
        if key not in Settings.model_fields:
            known = ", ".join((*DEPLOYMENT_ARGS, *sorted(Settings.model_fields)))
            raise ValueError(f"unknown argument {key!r}; known: {known}")
        if key == "models_dir" and value:
            value = os.path.abspath(value)
        env[f"STRATA_{key.upper()}"] = ",".join(value) if isinstance(value, list | tuple) else str(value)
    return env


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """The Serve application (``serve run strata.server.ray_serve:build_app key=value …``)."""
    args = dict(args or {})
    replicas = int(args.pop("replicas", 1))
    num_cpus = float(args.pop("num_cpus", 1))
    gpus = args.pop("num_gpus", None)
    num_gpus = float(gpus) if gpus not in (None, "", "auto") else (1.0 if cuda_available() else 0.0)
    options: dict[str, Any] = {}
    if "max_ongoing_requests" in args:
        options["max_ongoing_requests"] = int(args.pop("max_ongoing_requests"))
    if replicas < 1 or num_cpus < 0 or num_gpus < 0:
        raise ValueError(f"replicas must be >= 1 and num_cpus, num_gpus >= 0; got {replicas}, {num_cpus}, {num_gpus}")
    env = settings_env(args, num_cpus)
    deployment = serve.deployment(StrataIngress, name=DEPLOYMENT_NAME).options(
        num_replicas=replicas,
        ray_actor_options={"num_cpus": num_cpus, "num_gpus": num_gpus, "runtime_env": {"env_vars": env}},
        **options,
    )
    return deployment.bind()


app = build_app({})  # ``serve run strata.server.ray_serve:app``: one replica, the environment's settings
