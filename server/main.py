"""The Strata HTTP service: ``create_app(settings)`` builds a FastAPI app.

::

    request ─► MetricsMiddleware ─► (CORS) ─► router ─► deps: API key, Content-Type, body ≤ limit
                 (count, time, log)                         │
                                                            ▼
                                     InferencePool (≤ workers threads, ≤ max_queue waiting, else 503)
                                                            │
                         ImageCodec (ONNX ± MicroBatcher, RVQ, ANS) · AudioCodec (ONNX, RVQ, ANS, HiFi-GAN)
    errors anywhere ─► server.errors: one handler ─► status + {"code", "message"}

The models are loaded (sha256-verified) in the app's lifespan, not at import, and live in
``app.state`` with the settings, the metrics (a private Prometheus registry) and the pool: two
apps in one process share nothing. Run it with ``strata serve`` or ``python -m strata.server``
(uvicorn with ``strata.server.main:create_app`` as a factory).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from strata import __version__
from strata.server import docs, errors
from strata.server.codecs import load_codecs
from strata.server.config import Settings
from strata.server.metrics import Metrics, MetricsMiddleware
from strata.server.pool import InferencePool
from strata.server.protocol import READ_TIMEOUT_KEY
from strata.server.routes import audio, health, images, models, web
from threadpoolctl import threadpool_limits

DESCRIPTION = """\
Learned image and audio compression with residual vector quantization.

* `images:compress` / `images:decompress`: image bytes ↔ Strata stream (any prefix of layers decodes).
* `images:encode` / `images:decode`: image ↔ the code stack itself (`.npy` or JSON).
* `audio:compress` / `audio:decompress`: WAV/FLAC/OGG bytes ↔ Strata stream; decoding gives a 16-bit WAV at
  22 050 Hz (HiFi-GAN or Griffin-Lim) or the log-mel spectrogram (`.npy`).
* `audio:encode` / `audio:decode`: sound ↔ its code stack. Without an audio model in the manifest these
  routes answer 404 `unknown_model`.

Errors answer `{"code", "message"}` with a stable `code`. When the server runs with
`STRATA_API_KEYS`, every `/v1` route needs the `X-API-Key` header; `/healthz`, `/readyz` and
`/metrics` stay open.
"""

STRATA_HEADERS = ["X-Strata-Model", "X-Strata-Layers", "X-Strata-Bytes", "X-Strata-Bpp", "X-Strata-Width",
                  "X-Strata-Height", "X-Strata-Stream-Layers", "X-Strata-Kbps", "X-Strata-Seconds",
                  "X-Strata-Samples", "X-Strata-Sample-Rate"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app; ``settings`` default to the ``STRATA_*`` environment."""
    settings = settings if settings is not None else Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict]:
        # numpy's BLAS threads for the process while the app runs (Settings.numpy_threads), restored after
        blas = threadpool_limits(limits=settings.numpy_threads, user_api="blas")
        app.state.codecs = await anyio.to_thread.run_sync(load_codecs, settings)
        try:
            yield {READ_TIMEOUT_KEY: settings.read_timeout}  # the connections' header deadline (server.protocol)
        finally:
            app.state.codecs = None
            blas.restore_original_limits()

    # /docs is served from local assets (strata.server.docs): FastAPI's default pages load a CDN.
    app = FastAPI(title="Strata", version=__version__, description=DESCRIPTION, lifespan=lifespan,
                  docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.pool = InferencePool(settings.workers, settings.max_queue, metrics, settings.max_work_seconds)
    app.state.codecs = None
    errors.install(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key"],
            expose_headers=STRATA_HEADERS,
        )
    app.add_middleware(MetricsMiddleware, metrics=metrics)  # outermost: sees every request, CORS included
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(images.router)
    app.include_router(audio.router)
    app.include_router(web.router)  # the demo page at / (not in the OpenAPI document)
    docs.install(app, keyed=settings.auth_enabled)
    return app
