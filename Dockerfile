# syntax=docker/dockerfile:1
# Strata codec service. GPU image by default (onnxruntime-gpu on the CUDA 12 / cuDNN 9 runtime);
# the CPU variant is the same file with BASE_IMAGE=ubuntu:24.04 and ORT_PACKAGE=onnxruntime
# (docker compose --profile cpu). No torch: the image serves the exported ONNX models baked in below
# (image and audio; audio I/O is soundfile + soxr, whose wheels bundle libsndfile and libsoxr) as the
# strata.models package data of the installed wheel; STRATA_MODELS=/path serves a mounted folder instead.
# Training checkpoints (checkpoints/) are not in the build context (.dockerignore).
ARG BASE_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

ARG ORT_PACKAGE=onnxruntime-gpu==1.22.0
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    STRATA_HOST=0.0.0.0 \
    STRATA_PORT=8000 \
    STRATA_UVICORN_WORKERS=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv

WORKDIR /app
COPY docker/requirements-serve.txt /tmp/requirements-serve.txt
RUN pip install -r /tmp/requirements-serve.txt "${ORT_PACKAGE}"

COPY pyproject.toml README.md /tmp/src/
COPY codec /tmp/src/codec
COPY server /tmp/src/server
COPY client /tmp/src/client
COPY models /tmp/src/models
RUN pip install --no-deps /tmp/src \
    && rm -rf /tmp/src \
    # Bake-time check: every model's files match the manifest's sha256 and load on the CPU provider.
    && python -c "from strata.registry import Registry; from strata.image import ImageCodec; from strata.audio import AudioCodec; r = Registry(); cpu = ['CPUExecutionProvider']; [ImageCodec.load(r, n, providers=cpu) for n in r.names('image')]; [AudioCodec.load(r, n, providers=cpu) for n in r.names('audio')]; print('models verified:', r.names())" \
    && groupadd --system --gid 10001 strata \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin strata

USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STRATA_PORT', '8000') + '/readyz', timeout=4)"]
# Shell form so that the worker count and port come from the environment at run time.
CMD ["sh", "-c", "exec uvicorn --factory strata.server.main:create_app --host \"$STRATA_HOST\" --port \"$STRATA_PORT\" --workers \"$STRATA_UVICORN_WORKERS\" --no-access-log"]
