"""The refine page in a real headless browser: paint a dislike and a like stroke with the mouse,
apply K=2, wait for the progress to finish, and check that the image changed more where it was
disliked than where it was liked. Debian's chromium, driven by Playwright (.ci/run installs it)."""

from __future__ import annotations

import io
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)", allow_module_level=True)

import uvicorn  # noqa: E402

from agents.refine.__main__ import RefineConfig, build  # noqa: E402

BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def page_url():
    """The default model's refine server (its default settings) on a free localhost port, in a thread."""
    _, app = build(RefineConfig(threads=1))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    server.should_exit = True
    thread.join(timeout=10)


def stroke(page, box, column: float, size: int = 16) -> None:
    """A vertical mouse stroke down image column ``column`` (in image pixels) of the canvas."""
    cell = box["width"] / size
    x = box["x"] + column * cell
    page.mouse.move(x, box["y"] + 0.5 * cell)
    page.mouse.down()
    for row in np.linspace(0.5, size - 0.5, 31):
        page.mouse.move(x, box["y"] + row * cell)
    page.mouse.up()


def version_png(page, base: str, workspace: str, version: int) -> np.ndarray:
    data = page.request.get(f"{base}api/workspaces/{workspace}/versions/{version}.png").body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255


def test_paint_dislike_and_like_then_apply(page_url, tmp_path):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(page_url)
        page.wait_for_function("document.getElementById('status').textContent === 'ready'", timeout=60_000)
        # context "square", seed 1 (the README's measurement covers 10 seeds)
        page.select_option("#context", "1")
        page.fill("#seed", "1")
        page.click("#new-image")
        page.wait_for_function("document.getElementById('status').textContent === 'ready'", timeout=60_000)
        page.fill("#brush-size", "8")
        page.dispatch_event("#brush-size", "input")
        box = page.locator("#paint").bounding_box()
        page.check("input[name=brush][value=dislike]")
        stroke(page, box, 3.5)  # radius 4 covers columns 0-7: the left half
        page.check("input[name=brush][value=like]")
        stroke(page, box, 11.5)  # columns 8-15: the right half
        page.fill("#updates", "2")
        page.click("#apply")
        page.wait_for_function(
            "document.getElementById('progress-text').dataset.state === 'done'", timeout=300_000
        )
        assert "update 2 of 2" in page.text_content("#progress-text")
        page.wait_for_function("document.querySelectorAll('#history li').length === 2", timeout=30_000)
        assert page.get_attribute("#after", "src").endswith("/versions/1.png?scale=1")
        page.screenshot(path=str(tmp_path / "refine.png"), full_page=True)
        workspace = page.evaluate("state.ws.id")
        labels = np.array(page.evaluate("Array.from(state.labels)")).reshape(16, 16)  # what was painted
        before = version_png(page, page_url, workspace, 0)
        after = version_png(page, page_url, workspace, 1)
        browser.close()
    assert (labels[:, :7] == 2).all() and (labels[:, 9:15] == 1).all()  # the strokes landed where aimed
    change = np.abs(after - before).mean(axis=2)  # (16, 16)
    disliked, liked = change[labels == 2].mean(), change[labels == 1].mean()
    assert disliked > liked, (disliked, liked)
    assert (tmp_path / "refine.png").stat().st_size > 10_000
