"""The Gradio demo in a real browser: type a prompt, click Generate, get both videos and the timings.

Needs Debian's Chromium at /usr/bin/chromium (``apt-get install -y chromium``) and ``pip install playwright gradio``;
Playwright's own browser download is not used. The screenshot goes to the test's temporary folder; to regenerate the
README's screenshot, name its path:

    DIT_SPARSE_DEMO_SCREENSHOT=docs/demo.png python -m pytest -q tests/pipelines/test_demo_browser.py
"""

import os
import shutil
import socket
import time
from pathlib import Path

import pytest

from dit_sparse.pipelines.presets import PRESETS

os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Where to copy the screenshot besides the test's temporary folder (e.g. docs/demo.png); unset: nowhere.
SCREENSHOT_ENV = "DIT_SPARSE_DEMO_SCREENSHOT"
GENERATION_TIMEOUT_MS = 150_000


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the Gradio server did not listen on port {port} within {timeout} s")


@pytest.fixture(scope="module")
def demo_url():
    from dit_sparse.pipelines.demo import build_demo, launch

    demo = build_demo("tiny", "cpu", defaults={"steps": 2, "prompt": ""})
    port = _free_port()
    launch(demo, host="127.0.0.1", port=port, block=False)  # serves from a background thread
    try:
        _wait_for_server(port)
        yield f"http://127.0.0.1:{port}/", demo
    finally:
        demo.close()


def test_demo_generates_dense_and_sparse_in_browser(demo_url, tmp_path):
    url, demo = demo_url
    artifact = tmp_path / "demo.png"
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Chromium is missing at {CHROMIUM}: install Debian's package with `apt-get update && apt-get install -y "
            "chromium` (the browser test drives it through Playwright; `playwright install` is not used)"
        )
    from playwright.sync_api import expect, sync_playwright

    prompt_text = "a red square moves left over a striped background"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1200})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            prompt = page.locator("#prompt textarea")
            prompt.wait_for(state="visible", timeout=60_000)
            prompt.fill(prompt_text)
            expect(page.locator("#with_dense input[type=checkbox]")).to_be_checked()
            page.locator("#generate").click()

            timings = page.locator("#timings")
            expect(timings).to_contain_text("speedup", timeout=GENERATION_TIMEOUT_MS)
            expect(timings).to_contain_text("PSNR")
            for elem in ("dense_video", "sparse_video"):
                video = page.locator(f"#{elem} video")
                video.wait_for(state="attached", timeout=30_000)
                src = video.get_attribute("src") or ""
                assert src.endswith(".mp4"), (elem, src)
                # The browser fetched and parsed the file (readyState >= HAVE_METADATA), at the generated size.
                page.wait_for_function(
                    "id => { const v = document.querySelector(`#${id} video`); return v && v.readyState >= 1; }",
                    arg=elem,
                    timeout=30_000,
                )
                size = page.evaluate(
                    "id => { const v = document.querySelector(`#${id} video`); "
                    "return [v.videoWidth, v.videoHeight]; }",
                    elem,
                )
                assert size == [PRESETS["tiny"].height, PRESETS["tiny"].width], (elem, size)
            expect(page.locator("#layout_image img")).to_be_visible(timeout=30_000)
            # The prompt typed in the browser is the one the server generated from.
            assert prompt_text in (demo._dit_sparse_runner.last_settings or {}).get("prompt", "")

            page.screenshot(path=str(artifact), full_page=True)
        finally:
            browser.close()
    assert artifact.stat().st_size > 10_000
    if os.environ.get(SCREENSHOT_ENV):
        copy = Path(os.environ[SCREENSHOT_ENV])
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifact, copy)
