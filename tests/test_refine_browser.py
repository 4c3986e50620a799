"""The refine page in a real headless browser: paint a dislike and a like stroke with the mouse,
apply K=2, wait for the progress to finish, and check that the image changed more where it was
disliked than where it was liked. Debian's chromium, driven by Playwright (.ci/run installs it)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
playwright = pytest.importorskip("playwright.sync_api")

from benchmarks.browser import BROWSER_ARGS, CHROMIUM, paint_halves_and_apply, serve  # noqa: E402

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)", allow_module_level=True)

from agents.refine.__main__ import RefineConfig, build  # noqa: E402


def version_png(page, base: str, workspace: str, version: int) -> np.ndarray:
    data = page.request.get(f"{base}api/workspaces/{workspace}/versions/{version}.png").body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255


def test_paint_dislike_and_like_then_apply(tmp_path):
    _, app = build(RefineConfig(threads=1))  # the default model, the page's default settings
    with serve(app) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # context 1 ("square"), seed 1; the README's measurement covers 10 seeds
        paint_halves_and_apply(page, url, context=1, seed=1, updates=2)
        assert "update 2 of 2" in page.text_content("#progress-text")
        assert page.get_attribute("#after", "src").endswith("/versions/1.png?scale=1")
        page.screenshot(path=str(tmp_path / "refine.png"), full_page=True)
        workspace = page.evaluate("state.ws.id")
        labels = np.array(page.evaluate("Array.from(state.labels)")).reshape(16, 16)  # what was painted
        before = version_png(page, url, workspace, 0)
        after = version_png(page, url, workspace, 1)
        browser.close()
    assert (labels[:, :8] == 2).all() and (labels[:, 8:] == 1).all()  # the strokes painted the two halves
    change = np.abs(after - before).mean(axis=2)  # (16, 16)
    disliked, liked = change[labels == 2].mean(), change[labels == 1].mean()
    assert disliked > liked, (disliked, liked)
    assert (tmp_path / "refine.png").stat().st_size > 10_000
