"""The demo page (``/``, ``server/static``) in a real browser: Playwright driving Debian's chromium, headless.

The service runs the shipped models. The page compresses a Kodak-sized synthetic image, reads the stream as it
arrives and decodes each complete layer; the test checks every layer's bpp against ``images:compress?layers=k``
(exactly) and its PSNR against ``images:decompress?layers=k`` computed with numpy (within 0.01 dB), the slow
network (the page's own pacing plus Chrome's throttling through CDP), the API's error messages on the page, an
API key, the sound section and a phone-width layout. Screenshots go to ``$STRATA_BROWSER_ARTIFACTS`` (default:
a pytest temporary folder).

Playwright's own browser download is not used: the test needs a ``chromium`` executable on the machine
(``apt-get install chromium``; ``.ci/run`` installs it) and skips, saying so, without one or without playwright.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import flac_bytes, png_bytes, running_server, server_settings, synthetic_image, synthetic_sound

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")

LAYERS = 4  # layers the page codes in the main test: 4 decodes of a 768×512 image keep it quick on 2 CPUs
KEY = "browser-test-key-0123456789"
TIMEOUT_MS = 60_000


def chromium_executable() -> str | None:
    """The chromium binary: ``$STRATA_CHROMIUM``, Debian's real binary behind its ``/usr/bin/chromium`` shell
    wrapper, or the first chromium / chrome on the PATH."""
    candidates = [os.environ.get("STRATA_CHROMIUM"), "/usr/lib/chromium/chromium"]
    candidates += [shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")]
    for path in candidates:
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = os.environ.get("STRATA_BROWSER_ARTIFACTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("browser")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[sync_api.Browser]:
    executable = chromium_executable()
    if executable is None:
        pytest.skip("no chromium executable found (apt-get install chromium, or set STRATA_CHROMIUM)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(shipped_registry) -> Iterator[str]:
    from strata.server.main import create_app

    with running_server(create_app(server_settings(shipped_registry))) as url:
        yield url


@pytest.fixture(scope="module")
def keyed_server(shipped_registry) -> Iterator[str]:
    """API keys on, and a body limit (300 kB) below the test image's PNG."""
    from strata.server.main import create_app

    settings = server_settings(shipped_registry, api_keys=KEY, max_body_bytes=300_000)
    with running_server(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def image():
    return synthetic_image(512, 768)


@pytest.fixture(scope="module")
def image_png(image, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("browser-input") / "kodak-sized.png"
    path.write_bytes(png_bytes(image))
    return path


def new_page(browser, url: str, **kw):
    page = browser.new_page(viewport={"width": 1280, "height": 900}, **kw)
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-models]", state="attached")  # /v1/models answered
    return page, errors


def wait_done(page, section: str) -> None:
    """Wait until ``section`` (image, rd, sound) is done; fail at once, with the page's message, on an error."""
    attr = f"data-{section}-state"
    page.wait_for_selector(f"body[{attr}=done], body[{attr}=error]", state="attached")
    error = page.text_content(f"#{section}-error") if section != "rd" else ""
    assert page.get_attribute("body", attr) == "done", error


def rows(page) -> list[dict]:
    return page.eval_on_selector_all("#layer-table tbody tr", """rows => rows.map(r => ({
        layers: Number(r.dataset.layers), arrived: Number(r.dataset.arrivedMs), shown: Number(r.dataset.shownMs),
        bytes: r.querySelector('.bytes').textContent, bpp: r.querySelector('.bpp').textContent,
        psnr: r.querySelector('.psnr').textContent}))""")


def test_progressive_image(browser, server, image, image_png, artifacts):
    import httpx
    import numpy as np
    from strata.eval.metrics import psnr

    page, errors = new_page(browser, server)
    assert page.title().startswith("Strata")
    # Every form control has a label; status lines are live regions.
    unlabelled = page.evaluate("""[...document.querySelectorAll('input, select')]
        .filter(e => !e.labels || e.labels.length === 0).map(e => e.id)""")
    assert unlabelled == []
    assert page.get_attribute("#image-status", "aria-live") == "polite"
    assert page.is_hidden("#key-section")  # no keys on this server

    page.select_option("#layers", str(LAYERS))
    page.set_input_files("#image-file", str(image_png))
    for k in range(1, LAYERS + 1):  # each layer renders in turn
        page.wait_for_selector(f'#layer-table tr[data-layers="{k}"]', state="attached")
        if k == 1:
            page.screenshot(path=str(artifacts / "1-first-layer.png"), full_page=True)
    wait_done(page, "image")
    wait_done(page, "rd")
    shown = rows(page)
    assert [r["layers"] for r in shown] == list(range(1, LAYERS + 1))
    assert all(a["shown"] <= b["shown"] for a, b in zip(shown, shown[1:], strict=False))
    assert all(r["arrived"] <= r["shown"] for r in shown)

    with httpx.Client(base_url=server, timeout=60) as client:
        full = client.post(f"/v1/images:compress?layers={LAYERS}", content=image_png.read_bytes(),
                           headers={"Content-Type": "image/png"})
        assert full.status_code == 200
        assert shown[-1]["bytes"].replace(",", "") == full.headers["X-Strata-Bytes"]
        for row in shown:
            k = row["layers"]
            if k < LAYERS:
                r = client.post(f"/v1/images:compress?layers={k}", content=image_png.read_bytes(),
                                headers={"Content-Type": "image/png"})
                assert r.status_code == 200
                bpp = r.headers["X-Strata-Bpp"]
            else:
                bpp = full.headers["X-Strata-Bpp"]
            assert row["bpp"] == bpp, f"layer {k}: page {row['bpp']} bpp, API {bpp}"
            decoded = client.post(f"/v1/images:decompress?layers={k}&format=npy", content=full.content,
                                  headers={"Content-Type": "application/octet-stream"})
            assert decoded.status_code == 200
            expected = psnr(image, np.load(io.BytesIO(decoded.content)))
            assert abs(float(row["psnr"]) - expected) <= 0.01, f"layer {k}: page {row['psnr']} dB, numpy {expected}"

    # The rate–distortion plot: a Strata curve with one point per layer count, and JPEG and WebP beside it.
    assert page.locator("#rd-plot svg circle.dot.s-strata").count() == LAYERS + 1  # + the legend's marker
    assert page.locator("#rd-plot svg circle.dot.s-jpeg").count() >= 2
    assert page.locator("#rd-plot svg circle.dot.s-webp").count() >= 2
    # Side by side: the slider sets the left picture's layer count, the right one shows the original.
    page.focus("#layer-slider")
    page.keyboard.press("Home")
    assert page.input_value("#left-select") == "1" and page.input_value("#right-select") == "original"
    assert page.text_content("#left-caption").startswith("1 layer:")
    page.screenshot(path=str(artifacts / "2-all-layers.png"), full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})  # a phone
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(artifacts / "3-phone.png"), full_page=True)
    assert errors == []
    page.close()


def test_throttled_network(browser, server, image_png, artifacts):
    page, errors = new_page(browser, server)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    # Chrome's own throttling: 200 ms latency, 256 KiB/s down (it slows the decoded PNGs, ~0.5 MB each, too).
    cdp.send("Network.emulateNetworkConditions", {
        "offline": False, "latency": 200, "downloadThroughput": 256 * 1024, "uploadThroughput": 64 * 1024 * 1024})
    page.check("#throttle")
    page.select_option("#layers", "2")
    page.set_input_files("#image-file", str(image_png))
    page.wait_for_selector('#layer-table tr[data-layers="1"]', state="attached")
    assert "slow network" in page.text_content("#arrival-text")
    page.screenshot(path=str(artifacts / "4-throttled.png"), full_page=False)
    wait_done(page, "image")
    first, second = rows(page)
    # The second layer's ~10 kB come at most 2 KiB per 150 ms after the first: visibly later.
    assert second["arrived"] - first["arrived"] >= 300
    assert errors == []
    page.close()


def test_errors_and_api_key(browser, keyed_server, image_png, tmp_path, artifacts):
    import httpx

    page, errors = new_page(browser, keyed_server)
    assert page.is_visible("#key-section")  # the server has keys: the page asks for one
    text = tmp_path / "notes.txt"
    text.write_text("this is not an image\n" * 20)
    page.set_input_files("#image-file", str(text))
    page.wait_for_selector("#image-error:not([hidden])")
    assert "X-API-Key" in page.text_content("#image-error") and "401" in page.text_content("#image-error")

    page.fill("#api-key", KEY)
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("body[data-models=loaded]", state="attached")  # /v1/models with the key
    with httpx.Client(base_url=keyed_server, timeout=60, headers={"X-API-Key": KEY}) as client:
        # Not an image: the API's message, on the page.
        expected = client.post("/v1/images:compress", content=text.read_bytes(),
                               headers={"Content-Type": "application/octet-stream"}).json()
        page.click("#image-go")
        page.wait_for_function("m => document.querySelector('#image-error').textContent.includes(m)",
                               arg=expected["message"])
        assert "415" in page.text_content("#image-error")
        # Too big: 413 body_too_large.
        page.set_input_files("#image-file", str(image_png))
        page.wait_for_function("document.querySelector('#image-error').textContent.includes('413')")
        # A bad stream: a .strata file cut inside its first layer.
        small = tmp_path / "small.png"
        small.write_bytes(png_bytes(synthetic_image(64, 96)))
        stream = client.post("/v1/images:compress", content=small.read_bytes(),
                             headers={"Content-Type": "image/png"}).content
        cut = tmp_path / "cut.strata"
        cut.write_bytes(stream[:120])
        expected = client.post("/v1/images:decompress?partial=true", content=cut.read_bytes(),
                               headers={"Content-Type": "application/octet-stream"}).json()
        assert expected["code"] == "truncated_stream"
        page.set_input_files("#image-file", str(cut))
        page.wait_for_function("m => document.querySelector('#image-error').textContent.includes(m)",
                               arg=expected["message"])
    page.screenshot(path=str(artifacts / "5-error.png"), full_page=False)
    assert errors == []
    page.close()


def test_sound(browser, server, tmp_path, artifacts):
    import httpx

    clip = tmp_path / "clip.flac"
    clip.write_bytes(flac_bytes(synthetic_sound(2.0)))
    page, errors = new_page(browser, server)
    page.fill("#sound-layers", "1, all")
    page.set_input_files("#sound-file", str(clip))
    wait_done(page, "sound")
    players = page.locator("#sound-players figure")
    assert players.count() == 2
    assert "kbps" in players.nth(0).text_content()
    durations = page.eval_on_selector_all("#sound-players audio", """els => Promise.all(els.map(a =>
        a.readyState >= 1 ? a.duration
                          : new Promise(r => a.addEventListener('loadedmetadata', () => r(a.duration)))))""")
    assert all(abs(d - 2.0) < 0.05 for d in durations)  # the decoded WAVs play in the browser
    kbps = httpx.post(f"{server}/v1/audio:compress", content=clip.read_bytes(), timeout=60,
                      headers={"Content-Type": "application/octet-stream"}).headers["X-Strata-Kbps"]
    caption = players.nth(1).locator("figcaption").text_content()  # "8 of 8 layers · 13.50 kbps"
    assert abs(float(caption.split("·")[1].split()[0]) - float(kbps)) <= 0.005, (caption, kbps)
    # The original's log-mel (audio:mel) is drawn beside the decoded ones: a canvas with content.
    drawn = page.eval_on_selector("#sound-original-mel", """c => c.width > 0 && c.height > 0 &&
        c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 !== 3 && v > 0)""")
    assert drawn
    page.locator("#sound-title").scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts / "6-sound.png"), full_page=True)
    assert errors == []
    page.close()
