"""Driving the refine page in headless chromium (Playwright): a server in a thread and mouse strokes.

Shared by the browser test (tests/agents/test_refine_browser.py) and the screenshot in docs/refine.md
(``python -m benchmarks.studies.refine --screenshot``). Debian's chromium is the browser:
``playwright install`` cannot download one on machines without the internet.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Runs a Starlette app with uvicorn on a free localhost port in a thread; yields its URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def stroke(page: Any, column: float, size: int) -> None:
    """A vertical mouse stroke down image column ``column`` (image pixels) of the page's canvas."""
    box = page.locator("#paint").bounding_box()
    cell = box["width"] / size
    x = box["x"] + column * cell
    page.mouse.move(x, box["y"] + 0.5 * cell)
    page.mouse.down()
    for row in np.linspace(0.5, size - 0.5, 31):
        page.mouse.move(x, box["y"] + row * cell)
    page.mouse.up()


def open_image(page: Any, url: str, context: int, seed: int) -> None:
    """Opens the page and draws the (context, seed) image; the brush set to its largest size."""
    ready = "document.getElementById('status').textContent === 'ready'"
    page.goto(url)
    page.wait_for_function(ready, timeout=60_000)
    page.select_option("#context", str(context))
    page.fill("#seed", str(seed))
    page.click("#new-image")
    page.wait_for_function(ready, timeout=60_000)
    page.fill("#brush-size", "8")
    page.dispatch_event("#brush-size", "input")


def dab(page: Any, column: float, row: float, size: int) -> None:
    """One click of the brush at image position (column, row) of the page's canvas."""
    box = page.locator("#paint").bounding_box()
    cell = box["width"] / size
    page.mouse.move(box["x"] + column * cell, box["y"] + row * cell)
    page.mouse.down()
    page.mouse.up()


def paint_colour_and_apply(
    page: Any, url: str, context: int, seed: int, updates: int, colour: str = "#3050ff", size: int = 16
) -> None:
    """Opens the page, draws the (context, seed) image, paints one disc of radius 4 in the image's
    centre with the colour brush in ``colour`` (#rrggbb), applies and waits."""
    open_image(page, url, context, seed)
    page.check("input[name=brush][value=colour]")
    page.eval_on_selector("#colour", "(el, value) => { el.value = value; }", colour)
    dab(page, size / 2, size / 2, size)
    apply_and_wait(page, updates)


def apply_and_wait(page: Any, updates: int) -> None:
    """Sets K, clicks apply and waits until the job is done and the history shows the new version."""
    page.fill("#updates", str(updates))
    page.click("#apply")
    page.wait_for_function(
        "document.getElementById('progress-text').dataset.state === 'done'", timeout=600_000
    )
    page.wait_for_function("document.querySelectorAll('#history li').length >= 2", timeout=30_000)
