"""Service settings: defaults, environment parsing and the unsafe values refused at start."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError
from strata.server.config import Settings
from strata.server.main import create_app

GOOD_KEY = "k" * 16


def test_defaults(monkeypatch) -> None:
    for name in list(os.environ):
        if name.startswith("STRATA_"):
            monkeypatch.delenv(name)
    s = Settings()
    assert s.max_body_bytes == 32 * 1024 * 1024 and s.max_pixels == 4096 * 4096
    assert s.workers == (os.cpu_count() or 1) and s.max_queue == 64
    assert s.api_keys == () and not s.auth_enabled and s.provider == "auto" and s.batching == "auto"
    assert s.session_threads >= 1 and s.host == "127.0.0.1" and s.port == 8000
    assert s.max_audio_seconds == 600 and s.max_audio_channels == 8 and s.max_audio_samples == 600 * 22050


def test_environment(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("STRATA_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("STRATA_API_KEYS", f"{GOOD_KEY}, {'z' * 20}")
    monkeypatch.setenv("STRATA_CORS_ORIGINS", '["https://a.example", "http://b.example:8080"]')
    monkeypatch.setenv("STRATA_WORKERS", "3")
    monkeypatch.setenv("STRATA_MAX_QUEUE", "0")
    monkeypatch.setenv("STRATA_ORT_THREADS", "2")
    monkeypatch.setenv("STRATA_MAX_AUDIO_SECONDS", "2.5")
    monkeypatch.setenv("STRATA_MAX_AUDIO_CHANNELS", "2")
    s = Settings()
    assert s.max_audio_seconds == 2.5 and s.max_audio_channels == 2 and s.max_audio_samples == 55125
    assert s.models_dir == tmp_path and s.workers == 3 and s.max_queue == 0 and s.session_threads == 2
    assert [k.get_secret_value() for k in s.api_keys] == [GOOD_KEY, "z" * 20] and s.auth_enabled
    assert s.cors_origins == ("https://a.example", "http://b.example:8080")
    assert GOOD_KEY not in repr(s) and GOOD_KEY not in str(s)


@pytest.mark.parametrize(
    "values",
    [
        {"max_body_bytes": 0},
        {"max_body_bytes": 2 * 1024**3},
        {"max_pixels": 2**40},
        {"max_audio_seconds": 0},
        {"max_audio_seconds": 4000},  # a v1 stream holds ≈ 50 minutes
        {"max_audio_channels": 0},
        {"workers": 0},
        {"max_queue": -1},
        {"provider": "tpu"},
        {"batching": "sometimes"},
        {"batch_max_wait_ms": 1000},
        {"batch_max_size": 0},
        {"port": 70000},
        {"api_keys": ["short"]},
        {"api_keys": ["changethis"]},
        {"api_keys": ["has a space in the key"]},
        {"cors_origins": ["example.com"]},
        {"models_dir": "/definitely/not/here"},
        {"batching": "on", "workers": 1},
    ],
)
def test_unsafe_values_are_refused(values) -> None:
    with pytest.raises(ValidationError):
        Settings(**values)


def test_a_refused_key_is_not_echoed() -> None:
    with pytest.raises(ValidationError) as e:
        Settings(api_keys=["tooshort-secret"])
    assert "tooshort-secret" not in str(e.value)


def test_two_apps_share_no_state(tiny_registry) -> None:
    a = create_app(Settings(models_dir=tiny_registry.root, workers=1))
    b = create_app(Settings(models_dir=tiny_registry.root, workers=2))
    assert a.state.metrics.registry is not b.state.metrics.registry
    assert a.state.pool is not b.state.pool and a.state.pool.workers == 1 and b.state.pool.workers == 2


@pytest.mark.parametrize("keys", [(), (GOOD_KEY,)])
def test_openapi_declares_the_api_key_only_when_keys_are_configured(keys, tiny_registry) -> None:
    """Without STRATA_API_KEYS no route needs X-API-Key, so the document must not say it does."""
    schema = create_app(Settings(api_keys=keys, models_dir=tiny_registry.root)).openapi()
    v1 = [op for path, ops in schema["paths"].items() if path.startswith("/v1") for op in ops.values()]
    assert v1
    if keys:
        assert all(op.get("security") == [{"APIKeyHeader": []}] for op in v1)
        assert schema["components"]["securitySchemes"]["APIKeyHeader"]["name"] == "X-API-Key"
    else:
        assert not any("security" in op for ops in schema["paths"].values() for op in ops.values())
        assert "securitySchemes" not in schema.get("components", {})
    assert "/healthz" in schema["paths"]


def test_numpy_blas_threads_are_limited_while_the_app_runs(tiny_registry):
    """Each request thread's code search gets ``numpy_threads`` BLAS threads (default: an onnxruntime session's),
    not one per core; the process's own setting comes back when the app stops."""
    from threadpoolctl import threadpool_info

    from tests.conftest import running_server, server_settings

    def blas_threads() -> set[int]:
        return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}

    before = blas_threads()
    if not before:
        pytest.skip("numpy reports no BLAS thread pool on this machine")
    settings = server_settings(tiny_registry, workers=2, blas_threads=1)
    assert settings.numpy_threads == 1
    assert server_settings(tiny_registry, workers=1, ort_threads=3).numpy_threads == 3
    with running_server(create_app(settings)):
        assert blas_threads() == {1}
    assert blas_threads() == before
