"""``strata … --url``: the CLI through the SDK against a live server; and ``strata serve``."""

from __future__ import annotations

import socket
import subprocess
import sys

import numpy as np
import pytest
from strata.cli import main
from strata.frontend.image import read_image
from strata.server.main import create_app

from tests.conftest import png_bytes, running_server, server_settings, synthetic_image

KEY = "cli-test-key-0123456789"


@pytest.fixture
def files(tmp_path):
    img = synthetic_image(40, 56, seed=11)
    (tmp_path / "in.png").write_bytes(png_bytes(img))
    return tmp_path, img


def test_compress_decompress_through_the_server(files, live_server, tiny_codec, capsys) -> None:
    tmp, img = files
    assert main(["compress", str(tmp / "in.png"), str(tmp / "a.strata"), "--layers", "3", "--url", live_server]) == 0
    assert (tmp / "a.strata").read_bytes() == tiny_codec.compress(img, 3)
    out = capsys.readouterr().out
    assert "tiny-image, 3 layers" in out and "bpp" in out
    assert main(["decompress", str(tmp / "a.strata"), str(tmp / "a.png"), "--url", live_server]) == 0
    np.testing.assert_array_equal(read_image((tmp / "a.png").read_bytes()), tiny_codec.decompress(
        (tmp / "a.strata").read_bytes()))
    assert main(["decompress", str(tmp / "a.strata"), str(tmp / "b.npy"), "--layers", "1", "--url", live_server]) == 0
    np.testing.assert_array_equal(np.load(tmp / "b.npy"), tiny_codec.decompress((tmp / "a.strata").read_bytes(), 1))


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compress", "{tmp}/in.png", "{tmp}/x.strata", "--layers", "9"], "invalid_layers"),
        (["compress", "{tmp}/in.png", "{tmp}/x.strata", "--model", "nope"], "unknown model"),
        (["compress", "{tmp}/missing.png", "{tmp}/x.strata"], "cannot read"),
        (["decompress", "{tmp}/in.png", "{tmp}/x.png"], "bad_magic"),
        (["decompress", "{tmp}/in.png", "{tmp}/x.gif"], "must end in"),
    ],
)
def test_remote_errors_exit_1(files, live_server, capsys, argv, message) -> None:
    tmp, _ = files
    assert main([*[a.format(tmp=tmp) for a in argv], "--url", live_server]) == 1
    err = capsys.readouterr().err
    assert err.startswith("strata: error:") and message in err and "Traceback" not in err


def test_unreachable_server_and_bad_url(files, capsys) -> None:
    tmp, _ = files
    assert main(["compress", str(tmp / "in.png"), str(tmp / "x.strata"), "--url", closed_port_url()]) == 1
    assert "connection failed" in capsys.readouterr().err
    assert main(["compress", str(tmp / "in.png"), str(tmp / "x.strata"), "--url", "ftp://nowhere"]) == 1
    assert "http" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://[::1", "base_url 'http://[::1' is not a valid URL: Invalid port"),  # was: an httpx traceback
        ("http://127.0.0.1:8000x", "is not a valid URL"),
        ("http://127.0.0.1:99999", "port must be in 1..65535, got 99999"),  # was: a connection to port 34463
        ("", "--url is empty"),  # was: ran locally
        ("  ", "--url is empty"),
    ],
)
def test_malformed_urls_exit_1_with_one_line(files, capsys, url, message) -> None:
    tmp, _ = files
    for argv in (["compress", str(tmp / "in.png"), str(tmp / "x.strata")],
                 ["decompress", str(tmp / "in.png"), str(tmp / "x.png")]):
        assert main([*argv, "--url", url]) == 1
        err = capsys.readouterr().err
        assert err.startswith("strata: error:") and message in err and err.count("\n") == 1, err
    assert not (tmp / "x.strata").exists() and not (tmp / "x.png").exists()


def test_a_web_server_that_is_not_strata(files, capsys) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(BaseHTTPRequestHandler):  # answers POST with http.server's multi-line HTML 501 page
        def log_message(self, *args) -> None:
            pass

    tmp, _ = files
    with ThreadingHTTPServer(("127.0.0.1", 0), Quiet) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        try:
            url = f"http://127.0.0.1:{httpd.server_address[1]}"
            assert main(["compress", str(tmp / "in.png"), str(tmp / "x.strata"), "--url", url]) == 1
        finally:
            httpd.shutdown()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "<html" not in err, err
    assert err.startswith(f"strata: error: {url}: HTTP 501") and "not a Strata server's answer" in err


def test_api_key_option_and_environment(files, tiny_registry, capsys, monkeypatch) -> None:
    tmp, _ = files
    args = ["compress", str(tmp / "in.png"), str(tmp / "x.strata")]
    monkeypatch.delenv("STRATA_API_KEY", raising=False)
    with running_server(create_app(server_settings(tiny_registry, api_keys=(KEY,)))) as url:
        assert main([*args, "--url", url]) == 1
        err = capsys.readouterr().err
        assert "unauthorized" in err and KEY not in err
        assert main([*args, "--url", url, "--api-key", KEY]) == 0
        monkeypatch.setenv("STRATA_API_KEY", KEY)
        assert main([*args, "--url", url]) == 0


def test_serve_starts_uvicorn_with_the_factory(monkeypatch, tiny_registry) -> None:
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setenv("STRATA_MODELS_DIR", "replaced-by-the-models-option")  # restored after the test
    port = int(closed_port_url().rsplit(":", 1)[1])  # free: serve binds it once before starting
    assert main(["serve", "--models", str(tiny_registry.root), "--port", str(port), "--workers", "2"]) == 0
    (app, kw), = calls
    assert app == "strata.server.main:create_app" and kw["factory"] is True
    assert kw["port"] == port and kw["workers"] == 2 and kw["host"] == "127.0.0.1"
    import os

    assert os.environ["STRATA_MODELS_DIR"] == str(tiny_registry.root.resolve())


def test_serve_refuses_unsafe_settings_without_echoing_them(monkeypatch, capsys) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not start"))
    monkeypatch.setenv("STRATA_API_KEYS", "tiny-secret")
    assert main(["serve"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("strata: error: invalid settings") and "STRATA_API_KEYS" in err and "tiny-secret" not in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "99999"], "--port must be in 1..65535, got 99999"),  # was: listened on 34463, said 99999
        (["--port", "0"], "--port must be in 1..65535, got 0"),  # was: port 8000
        (["--port", "-1"], "--port must be in 1..65535, got -1"),  # was: getaddrinfo error after loading models
        (["--workers", "0"], "--workers must be >= 1, got 0"),  # was: one worker
    ],
)
def test_serve_refuses_bad_port_and_workers(monkeypatch, capsys, argv, message) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not start"))
    assert main(["serve", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("strata: error:") and message in err


def test_serve_says_a_port_in_use_or_a_bad_host_before_loading(monkeypatch, capsys) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn, "run", lambda *a, **k: pytest.fail("must not start"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1  # was: uvicorn's message after the models loaded
        err = capsys.readouterr().err
        assert err.startswith("strata: error: cannot listen on 127.0.0.1:") and "in use" in err, err
    assert main(["serve", "--host", "999.1.1.1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("strata: error: --host '999.1.1.1' is not an address to listen on"), err


def test_python_m_server_help() -> None:
    out = subprocess.run([sys.executable, "-m", "server", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--port" in out.stdout
