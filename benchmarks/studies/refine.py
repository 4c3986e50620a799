"""What painted feedback does on the default model, measured so that the image's layout cannot fake it.

    python -m benchmarks.studies.refine                   # 10 seeds x every context, gradient and PXPO updates
    python -m benchmarks.studies.refine --screenshot      # also the page's screenshot in docs/refine.md (chromium)
    python -m benchmarks.studies.refine --options.hold 1  # any refine option (RefineConfig) can be overridden
    python -m benchmarks.studies.refine --timing-only     # seconds per update only (run it with nothing else running)

For each seed s and context c, a workspace (context c, noise seed s) gets five
applies, each from version 0, each of max(updates) updates, rendered after every
K in ``updates`` (rendering excluded from the timing):

- colour brush: the central 8x8 box painted one colour (cycling over ``COLOURS``
  by seed); measured: the box's mean RGB distance to the colour before and after
  (reduction = 1 - after / before) and the mean absolute change inside the box
  and outside it (the unpainted rest);
- dislike vs like, paired and mirrored: the left half disliked, the left half liked,
  the right half disliked, the right half liked (the other half unpainted);
  measured: how much the painted half changed when disliked over when liked, on the
  same seed, for each side (a ratio the image's layout cannot produce: the same
  pixels, the same noise, only the sign of the feedback differs).

Both update rules of the page run (``update="gradient"``, the default, on every
workspace; ``update="pxpo"`` on the first ``pxpo_workspaces``). Seconds per update
are measured on ``threads`` torch threads; run nothing else at the same time for
them to mean anything (``--timing-only`` measures just them, ``timing_updates``
updates per rule on one workspace, into OUT/refine_timing.json). Writes
OUT/refine.{json,md} with the commit and command.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agents.refine.config import RefineConfig
from benchmarks.provenance import SCRATCH

COLOURS = ((48, 80, 255), (255, 150, 0), (0, 190, 190))
"""Colour-brush colours (blue, orange, teal), one per seed in turn."""
BOX = slice(4, 12)
"""The colour brush's box: rows and columns 4..11 of the 16x16 image."""


@dataclass(frozen=True)
class RefineBenchConfig:
    """Measure the refine page's apply on the default model."""

    seeds: int = 10
    """Noise seeds per context."""
    updates: tuple[int, ...] = (1, 2, 4, 8)
    """K values rendered (one apply of max(updates) updates per painting)."""
    pxpo_workspaces: int = 4
    """Workspaces (seed s, context s mod contexts, s = 0, 1, ...) that also run update='pxpo'."""
    options: RefineConfig = field(default_factory=lambda: RefineConfig(threads=1))
    """The page's settings (its defaults unless overridden)."""
    threads: int = 1
    """torch threads (1 is steady on a shared machine)."""
    screenshot: bool = False
    """Also drive the page in headless chromium and save OUT/refine_page.png."""
    timing_only: bool = False
    """Only measure seconds per update of each rule (OUT/refine_timing.json)."""
    timing_updates: int = 8
    """Updates timed per rule with --timing-only."""
    out: str = SCRATCH
    """Output folder."""


def painting(size: int, label_rgb: tuple[int, int, int], where: str) -> bytes:
    """A painting PNG as the page sends it: ``where`` ('left', 'right' or 'box') opaque ``label_rgb``."""
    from PIL import Image

    rgba = np.zeros((size, size, 4), np.uint8)
    region = {"left": np.s_[:, : size // 2], "right": np.s_[:, size // 2 :], "box": np.s_[BOX, BOX]}[where]
    rgba[region] = (*label_rgb, 255)
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    return buffer.getvalue()


def apply_and_render(
    workspace, feedback, updates: tuple[int, ...], seconds: list[float]
) -> dict[int, torch.Tensor]:
    """From version 0: one apply of max(updates) updates; the image after each K in ``updates``."""
    workspace.checkout(0)
    images, last = {}, [time.perf_counter()]

    def progress(k: int, reward: float) -> None:
        seconds.append(time.perf_counter() - last[0])
        if k in updates:
            images[k] = workspace.render()
        last[0] = time.perf_counter()

    workspace.apply(feedback, max(updates), progress)
    return images


def measure_workspace(workspace, loaded, seed: int, updates, seconds) -> list[dict]:
    """Every painting on one workspace; one row per K."""
    from agents.refine.feedback import DISLIKE, LIKE, parse_feedback
    from agents.refine.workspace import region_change

    size = loaded.image_size[0]
    start = workspace.versions[0].image
    colour = COLOURS[seed % len(COLOURS)]
    box = torch.zeros(loaded.image_size, dtype=torch.bool)
    box[BOX, BOX] = True
    halves = {"left": torch.zeros_like(box), "right": torch.zeros_like(box)}
    halves["left"][:, : size // 2] = True
    halves["right"][:, size // 2 :] = True

    def feedback(rgb, where):
        return parse_feedback(painting(size, rgb, where), loaded.image_size, 1 << 20)

    target = torch.tensor(colour, dtype=torch.float32)[:, None] / 255

    def distance(image):
        return float((image[:, box] - target).norm(dim=0).mean())

    coloured = apply_and_render(workspace, feedback(colour, "box"), updates, seconds)
    paired = {
        (side, kind): apply_and_render(workspace, feedback(rgb, side), updates, seconds)
        for side in ("left", "right")
        for kind, rgb in (("disliked", DISLIKE), ("liked", LIKE))
    }
    rows = []
    for k in updates:
        row = {
            "updates": k,
            "colour": list(colour),
            "distance_before": distance(start),
            "distance_after": distance(coloured[k]),
            "change_inside": region_change(start, coloured[k], box),
            "change_outside": region_change(start, coloured[k], ~box),
        }
        row["reduction"] = 1 - row["distance_after"] / row["distance_before"]
        for side, mask in halves.items():
            for kind in ("disliked", "liked"):
                row[f"{side}_{kind}_change"] = region_change(start, paired[side, kind][k], mask)
                row[f"{side}_{kind}_change_elsewhere"] = region_change(start, paired[side, kind][k], ~mask)
            row[f"{side}_ratio"] = row[f"{side}_disliked_change"] / max(row[f"{side}_liked_change"], 1e-12)
        rows.append(row)
    return rows


def summarise(rows: list[dict], updates: tuple[int, ...]) -> list[dict]:
    out = []
    for k in updates:
        at = [r for r in rows if r["updates"] == k]
        reduction = np.array([r["reduction"] for r in at])
        inside = np.array([r["change_inside"] for r in at])
        outside = np.array([r["change_outside"] for r in at])
        ratios = np.array([r[f"{side}_ratio"] for r in at for side in ("left", "right")])
        out.append(
            {
                "updates": k,
                "workspaces": len(at),
                "reduction_median": float(np.median(reduction)),
                "reduction_mean": float(reduction.mean()),
                "workspaces_reduction_ge_half": int((reduction >= 0.5).sum()),
                "change_inside_mean": float(inside.mean()),
                "change_outside_mean": float(outside.mean()),
                "workspaces_outside_le_third_inside": int((outside <= inside / 3).sum()),
                "dislike_like_ratio_median": float(np.median(ratios)),
                "pairs": len(ratios),
                "pairs_ratio_ge_2": int((ratios >= 2).sum()),
                "pairs_disliked_changed_more": int((ratios > 1).sum()),
            }
        )
    return out


def measure(cfg: RefineBenchConfig) -> dict:
    from tqdm import tqdm

    from agents.refine.workspace import Workspace, refine_train_config
    from pxpo_gym.loading import load_model

    torch.set_num_threads(cfg.threads)
    loaded = load_model(cfg.options.model)
    contexts = loaded.num_contexts
    cells = [("gradient", seed, c) for seed in range(cfg.seeds) for c in range(contexts)]
    cells += [("pxpo", s, s % contexts) for s in range(min(cfg.pxpo_workspaces, cfg.seeds * contexts))]
    result = {"arms": {}}
    per_arm = {arm: ([], []) for arm in ("gradient", "pxpo")}
    for arm, seed, context in tqdm(cells, desc="refine workspaces", unit="workspace"):
        options = dataclasses.replace(cfg.options, update=arm)
        workspace = Workspace(
            loaded, refine_train_config(options), context, seed, options.refine_steps, options.hold
        )
        rows, seconds = per_arm[arm]
        for row in measure_workspace(workspace, loaded, seed, cfg.updates, seconds):
            rows.append({"seed": seed, "context": context, **row})
    for arm, (rows, seconds) in per_arm.items():
        if rows:
            result["arms"][arm] = {
                "settings": dataclasses.asdict(dataclasses.replace(cfg.options, update=arm)),
                "seconds_per_update_mean": float(np.mean(seconds)),
                "seconds_per_update_std": float(np.std(seconds, ddof=1)),
                "summary": summarise(rows, cfg.updates),
                "runs": rows,
            }
    return result


def timing(cfg: RefineBenchConfig) -> dict:
    """Seconds per update of each update rule: ``timing_updates`` updates on workspace (context 0, seed 0)
    under the colour-box painting; the first update (warm-up) is excluded."""
    from agents.refine.feedback import parse_feedback
    from agents.refine.workspace import Workspace, refine_train_config
    from pxpo_gym.loading import load_model

    torch.set_num_threads(cfg.threads)
    loaded = load_model(cfg.options.model)
    feedback = parse_feedback(painting(loaded.image_size[0], COLOURS[0], "box"), loaded.image_size, 1 << 20)
    out = {}
    for arm in ("gradient", "pxpo"):
        options = dataclasses.replace(cfg.options, update=arm)
        workspace = Workspace(loaded, refine_train_config(options), 0, 0, options.refine_steps, options.hold)
        seconds: list[float] = []
        apply_and_render(workspace, feedback, (cfg.timing_updates + 1,), seconds)
        out[arm] = {
            "seconds_per_update_mean": float(np.mean(seconds[1:])),
            "seconds_per_update_std": float(np.std(seconds[1:], ddof=1)),
            "updates_timed": len(seconds) - 1,
        }
    return out


def markdown(result: dict) -> str:
    lines = [
        f"Commit {result['commit']}, `{result['command']}`, {result['threads']} torch thread(s).",
        "",
        "| update | K | workspaces | colour: distance reduction (median) | reduction >= 50% | change outside / inside"
        " | outside <= inside / 3 | dislike / like change (median, paired) | pairs >= 2x | pairs disliked > liked |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for arm, data in result["arms"].items():
        for row in data["summary"]:
            lines.append(
                f"| {arm} | {row['updates']} | {row['workspaces']} | {row['reduction_median']:.0%} "
                f"| {row['workspaces_reduction_ge_half']} / {row['workspaces']} "
                f"| {row['change_outside_mean']:.3f} / {row['change_inside_mean']:.3f} "
                f"| {row['workspaces_outside_le_third_inside']} / {row['workspaces']} "
                f"| {row['dislike_like_ratio_median']:.1f}x | {row['pairs_ratio_ge_2']} / {row['pairs']} "
                f"| {row['pairs_disliked_changed_more']} / {row['pairs']} |"
            )
    lines.append("")
    for arm, data in result["arms"].items():
        lines.append(
            f"Seconds per update, {arm}: {data['seconds_per_update_mean']:.2f} ± {data['seconds_per_update_std']:.2f}."
        )
    return "\n".join(lines) + "\n"


def screenshot(out: Path) -> Path:
    """The page after a colour-brush disc and one apply of K=4 (context 1, seed 1), as the browser test drives it."""
    from playwright.sync_api import sync_playwright

    from agents.refine.__main__ import build
    from agents.refine.config import RefineConfig
    from benchmarks.studies.browser import BROWSER_ARGS, CHROMIUM, paint_colour_and_apply, serve

    _, app = build(RefineConfig(threads=1, access_log=False))  # the report, not request lines, on stdout
    path = out / "refine_page.png"
    with serve(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        paint_colour_and_apply(page, url, context=1, seed=1, updates=4)
        page.screenshot(path=str(path), full_page=True)
        browser.close()
    return path


def main(cfg: RefineBenchConfig) -> None:
    from benchmarks.provenance import provenance

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    header = {
        **provenance("benchmarks.studies.refine"),
        "threads": cfg.threads,
        "torch": torch.__version__,
    }
    if cfg.timing_only:
        result = {**header, **timing(cfg)}
        (out / "refine_timing.json").write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
        return
    result = {**header, **measure(cfg)}
    (out / "refine.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (out / "refine.md").write_text(table)
    print(table)
    if cfg.screenshot:
        print(f"wrote {screenshot(out)}")


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(RefineBenchConfig)), "benchmarks.studies.refine")
