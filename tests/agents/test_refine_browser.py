"""The refine page in a real headless browser: paint a disc with the colour brush, apply K=2 at the
page's defaults, wait for the progress to finish, and check from the versions' pixels that the painted
disc moved toward the colour more than the rest of the image did. Debian's chromium, driven by
Playwright (.ci/run installs it)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("starlette")
playwright = pytest.importorskip("playwright.sync_api")

from benchmarks.studies.browser import BROWSER_ARGS, CHROMIUM, paint_colour_and_apply, serve  # noqa: E402

if not CHROMIUM.exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium (.ci/run installs it)", allow_module_level=True)

from agents.refine.__main__ import build  # noqa: E402
from agents.refine.config import RefineConfig  # noqa: E402


def version_png(page, base: str, workspace: str, version: int) -> np.ndarray:
    data = page.request.get(f"{base}api/workspaces/{workspace}/versions/{version}.png").body()
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32) / 255


def test_paint_a_colour_then_apply_moves_the_painted_disc_toward_it(tmp_path):
    _, app = build(RefineConfig(threads=1))  # the default model, the page's default settings
    with serve(app) as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        # context 1 ("square"), seed 1; benchmarks.studies.refine covers 10 seeds x every context
        paint_colour_and_apply(page, url, context=1, seed=1, updates=4, colour="#3050ff")
        assert "update 4 of 4" in page.text_content("#progress-text")
        assert page.get_attribute("#after", "src").endswith("/versions/1.png?scale=1")
        page.screenshot(path=str(tmp_path / "refine.png"), full_page=True)
        workspace = page.evaluate("state.ws.id")
        labels = np.array(page.evaluate("Array.from(state.labels)")).reshape(16, 16)  # what was painted
        before = version_png(page, url, workspace, 0)
        after = version_png(page, url, workspace, 1)
        browser.close()
    disc = labels == 3  # COLOURED: the disc of radius 4 around the centre
    yy, xx = np.mgrid[:16, :16]
    assert np.array_equal(disc, (xx + 0.5 - 8) ** 2 + (yy + 0.5 - 8) ** 2 <= 16)
    colour = np.array([0x30, 0x50, 0xFF]) / 255
    closer = np.linalg.norm(before - colour, axis=2) - np.linalg.norm(after - colour, axis=2)  # (16, 16)
    # visibly toward the colour (0.37 of the RGB distance measured), the rest much less (0.16: the
    # background tints a little; benchmarks.studies.refine measures it over 40 workspaces)
    assert closer[disc].mean() > 0.1, closer[disc].mean()
    assert closer[disc].mean() > 1.5 * abs(closer[~disc].mean()), (closer[disc].mean(), closer[~disc].mean())
    assert (tmp_path / "refine.png").stat().st_size > 10_000
