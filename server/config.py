"""Service settings, read from ``STRATA_*`` environment variables and validated at start.

Unsafe or nonsensical values are refused when :class:`Settings` is built (the server does not
start), e.g. a body limit over 1 GiB, a short API key or a batch wait over 100 ms.

==========================  ===========================  ================================================
variable                    default                      meaning
==========================  ===========================  ================================================
STRATA_MODELS_DIR           $STRATA_MODELS or models/    models folder (``manifest.json``); every image
                                                         and audio model is loaded at start (audio
                                                         routes answer 404 without one)
STRATA_HOST / STRATA_PORT   127.0.0.1 / 8000             where ``strata serve`` / ``python -m strata.server`` listen
STRATA_MAX_BODY_BYTES       33554432 (32 MiB)            request body limit, enforced while reading (413)
STRATA_MAX_PIXELS           16777216 (4096²)             image size limit, checked from the header (413)
STRATA_MAX_AUDIO_SECONDS    600 (10 minutes)             sound length limit, checked from the header (413);
                                                         the body limit applies too (10 min of 44.1 kHz
                                                         stereo 16-bit WAV is 106 MB)
STRATA_MAX_AUDIO_CHANNELS   8                            more channels is refused (415, like the frontend)
STRATA_WORKERS              CPU count                    inference threads (bounded pool)
STRATA_MAX_QUEUE            64                           requests waiting for a worker before 503
STRATA_READ_TIMEOUT         30                           seconds to send the headers, and again the body,
                                                         before 408 and the connection closes
STRATA_MAX_CONNECTIONS      256                          open connections per worker process before 503
STRATA_MAX_WORK_SECONDS     120                          estimated compute (seconds on 2 cores) admitted,
                                                         running and waiting, before 503 + Retry-After;
                                                         one request over it: 413 (server.cost)
STRATA_API_KEYS             (none: no auth)              comma-separated or JSON list; when set, /v1
                                                         routes need ``X-API-Key`` (health and metrics
                                                         stay open)
STRATA_PROVIDER             auto                         onnxruntime provider: auto | cpu | cuda
STRATA_ORT_THREADS          0 (auto)                     threads per onnxruntime session; 0 = CPU count
                                                         divided by workers (at least 1)
STRATA_BLAS_THREADS         0 (auto)                     numpy's BLAS threads (the code search); 0 = as
                                                         many as an onnxruntime session
STRATA_IMAGE_PRECISION      int8                         int8: a model's int8 synthesis network where it
                                                         has one (same streams); float: the float one
STRATA_IMAGE_ENCODER        light                        light: a model's distilled analysis network where
                                                         it has one (streams any decoder of the model
                                                         reads); full: the trained one
STRATA_BATCHING             auto                         GPU micro-batching: auto (on for CUDA) | on | off
STRATA_BATCH_MAX_SIZE       8                            largest batch (images) per onnxruntime call
STRATA_BATCH_MAX_WAIT_MS    2.0                          how long a batch waits for company
STRATA_CORS_ORIGINS         (none)                       comma-separated origins allowed by CORS
STRATA_LOG_LEVEL            info                         debug | info | warning | error
==========================  ===========================  ================================================
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MiB = 1024 * 1024
AUDIO_SAMPLE_RATE = 22050  # the audio codec's rate (codec.audio_pipeline.SAMPLE_RATE; not imported: no numpy here)
MIN_API_KEY_LENGTH = 16
PLACEHOLDER_KEYS = {"changethis", "changeme", "secret", "password"}
MAX_AUDIO_SECONDS = 3000.0  # a v1 audio stream holds at most 65 535 code columns of 1 024 samples (≈ 50 min)


def _split(value: Any) -> Any:
    """Accept ``"a,b"`` as well as a JSON list (``'["a", "b"]'``) or a Python sequence."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Settings of one service instance (immutable once built)."""

    # hide_input_in_errors: a refused API key must not be echoed into logs by the validation error.
    model_config = SettingsConfigDict(env_prefix="STRATA_", extra="ignore", frozen=True, hide_input_in_errors=True)

    models_dir: Path | None = Field(None, description="models folder; None: $STRATA_MODELS or the shipped models/")
    host: str = Field("127.0.0.1", description="listen address of `strata serve`")
    port: int = Field(8000, ge=1, le=65535)
    max_body_bytes: int = Field(32 * MiB, ge=1, le=1024 * MiB, description="request body limit in bytes")
    max_pixels: int = Field(4096 * 4096, ge=1, le=64 * MiB, description="image height × width limit")
    max_audio_seconds: float = Field(
        600.0, gt=0, le=MAX_AUDIO_SECONDS, description="sound length limit in seconds (input files and streams)"
    )
    max_audio_channels: int = Field(8, ge=1, le=256, description="most channels an input sound may have")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1, le=256, description="inference threads")
    max_queue: int = Field(64, ge=0, le=100_000, description="requests waiting for a worker before 503")
    read_timeout: float = Field(30.0, gt=0, le=3600, description="seconds a request may take to send its headers, "
                                "and again its body, before 408 and the connection closes (slow clients)")
    max_connections: int = Field(256, ge=1, le=100_000, description="open connections (and running requests) per "
                                 "worker process before new ones get 503")
    max_work_seconds: float = Field(120.0, gt=0, le=86_400, description="estimated seconds of compute admitted "
                                    "(running + waiting) before 503; one request over it gets 413")
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field((), description="accepted X-API-Key values")
    provider: Literal["auto", "cpu", "cuda"] = "auto"
    ort_threads: int = Field(0, ge=0, le=256, description="onnxruntime threads per session; 0 = auto")
    blas_threads: int = Field(0, ge=0, le=256, description="BLAS threads of numpy's matrix products (the code "
                              "search); 0 = as many as an onnxruntime session")
    image_precision: Literal["float", "int8"] = Field("int8", description="int8: decode images with a model's "
                                                     "int8 synthesis network where it has one (the same streams; "
                                                     "0.02-0.07 dB under float on Kodak, 2.8x faster); float: "
                                                     "the float network, as the library's default")
    audio_precision: Literal["float", "int8"] = Field("int8", description="int8: decode sound with a model's "
                                                     "int8 mel synthesis network where it has one (the same "
                                                     "streams; PESQ-WB within 0.05 of float at every layer count "
                                                     "on held-out speech, no direction; the network 2.2x faster); "
                                                     "float: the float network, as the library's default")
    image_encoder: Literal["full", "light"] = Field("light", description="light: encode images with a model's "
                                                   "distilled analysis network where it has one (faster; the "
                                                   "streams decode with the same model); full: the trained "
                                                   "one, as the library's default")
    batching: Literal["auto", "on", "off"] = "auto"
    batch_max_size: int = Field(8, ge=1, le=256)
    batch_max_wait_ms: float = Field(2.0, ge=0.0, le=100.0)
    cors_origins: Annotated[tuple[str, ...], NoDecode] = ()
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("api_keys", "cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return _split(value)

    @field_validator("api_keys")
    @classmethod
    def _strong_keys(cls, keys: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        for i, key in enumerate(keys):
            value = key.get_secret_value()
            # Never echo a key in an error: name it by position.
            if len(value) < MIN_API_KEY_LENGTH:
                raise ValueError(f"API key #{i + 1} is shorter than {MIN_API_KEY_LENGTH} characters")
            if value.lower() in PLACEHOLDER_KEYS or not value.isascii() or not value.isprintable() or " " in value:
                raise ValueError(f"API key #{i + 1} is a placeholder or has spaces / non-printable characters")
        return keys

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: tuple[str, ...]) -> tuple[str, ...]:
        for origin in origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise ValueError(f"CORS origin {origin!r} must be '*' or start with http:// or https://")
        return origins

    @field_validator("models_dir")
    @classmethod
    def _models_dir(cls, path: Path | None) -> Path | None:
        if path is not None and not path.is_dir():
            raise ValueError(f"models_dir {str(path)!r} is not a directory")
        return path

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.batching == "on" and self.batch_max_size > 1 and self.workers < 2:
            raise ValueError("batching=on needs workers >= 2: one worker thread never has company to batch with")
        return self

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    @property
    def session_threads(self) -> int:
        """onnxruntime intra-op threads per session (``ort_threads``, or CPU count / workers)."""
        return self.ort_threads or max(1, (os.cpu_count() or 1) // self.workers)

    @property
    def numpy_threads(self) -> int:
        """BLAS threads for numpy in the service (``blas_threads``, or :attr:`session_threads`).

        The pool runs ``workers`` requests at once, each in its own thread; left at its default, OpenBLAS gives
        every one of them a thread per core, and on 2 cores with 2 workers the searches fought over the cores:
        the service spent 128 ms of CPU per 256×256 compress, 62 ms with one BLAS thread (``bench/load.py``).
        """
        return self.blas_threads or self.session_threads

    @property
    def max_audio_samples(self) -> int:
        """``max_audio_seconds`` in samples at the codec's 22 050 Hz."""
        return math.ceil(self.max_audio_seconds * AUDIO_SAMPLE_RATE)

    def use_batching(self, provider: str) -> bool:
        """Whether to micro-batch network calls for a codec running on ``provider``."""
        return self.batching == "on" or (self.batching == "auto" and provider == "cuda")
