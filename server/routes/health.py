"""Probes and metrics, outside ``/v1`` and never behind the API key: ``/healthz`` (liveness),
``/readyz`` (models loaded) and ``/metrics`` (Prometheus text).
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from strata.server.deps import MetricsDep

router = APIRouter(tags=["health"])


class Liveness(BaseModel):
    status: str = "ok"


class Readiness(BaseModel):
    status: str
    provider: str | None = None
    models: list[str] = []


@router.get("/healthz", summary="Liveness: 200 while the process serves requests")
async def healthz() -> Liveness:
    return Liveness()


@router.get(
    "/readyz",
    summary="Readiness: 200 once the models are loaded, 503 before",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "models not loaded"}},
)
async def readyz(request: Request) -> Readiness | JSONResponse:
    codecs = getattr(request.app.state, "codecs", None)
    if codecs is None:
        return JSONResponse(Readiness(status="loading").model_dump(), status_code=503)
    return Readiness(status="ready", provider=codecs.provider, models=codecs.names)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "metrics"}},
)
async def metrics(m: MetricsDep) -> Response:
    return Response(m.render(), media_type=m.content_type)
