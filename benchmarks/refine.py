"""What painting feedback does on the default model: change where disliked vs where liked, per K.

    python -m benchmarks.refine                  # 10 seeds, K = 1, 2, 4, 8; ~6 min on 1 CPU thread
    python -m benchmarks.refine --screenshot     # also the README's screenshot of the page (chromium)

One fixed painting for every seed: the left half disliked, the right half liked
(``agents.refine``'s default settings otherwise). For seed s the workspace is
context s mod 4 with noise seed s; one apply of 8 updates is rendered after
updates 1, 2, 4 and 8. Reported per K: the mean absolute RGB change (images in
[0, 1]) inside the disliked and inside the liked pixels, and in how many seeds
the disliked half changed more; plus the seconds per update (torch threads fixed
to 1, rendering for the measurement excluded). Writes benchmarks/results/refine.{json,md}.
"""

from __future__ import annotations

import dataclasses
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class RefineBenchConfig:
    """Measure the refine page's apply on the default model."""

    seeds: int = 10
    """Workspaces (seed s: context s mod 4, noise seed s)."""
    updates: tuple[int, ...] = (1, 2, 4, 8)
    """K values rendered (one apply of max(updates) updates per seed)."""
    threads: int = 1
    """torch threads (1 is steady on a shared machine)."""
    screenshot: bool = False
    """Also drive the page in headless chromium and save benchmarks/results/refine_page.png."""
    out: str = "benchmarks/results"
    """Output folder."""


def halves_feedback(size: int = 16) -> bytes:
    """The fixed painting: left half disliked, right half liked, as the page would send it."""
    from PIL import Image

    from agents.refine.workspace import DISLIKE, LIKE

    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[:, : size // 2] = (*DISLIKE, 255)
    rgba[:, size // 2 :] = (*LIKE, 255)
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG")
    return buffer.getvalue()


def measure(cfg: RefineBenchConfig) -> dict:
    from tqdm import tqdm

    from agents.refine.__main__ import RefineConfig
    from agents.refine.workspace import DISLIKED, LIKED, Workspace, parse_feedback, refine_train_config
    from pxpo_gym.loading import load_model

    torch.set_num_threads(cfg.threads)
    options = RefineConfig(threads=cfg.threads)
    loaded = load_model(options.model)
    feedback = parse_feedback(halves_feedback(), loaded.image_size, options.max_feedback_bytes)
    disliked, liked = feedback.labels == DISLIKED, feedback.labels == LIKED
    rows, update_seconds = [], []
    for seed in tqdm(range(cfg.seeds), desc="refine seeds", unit="seed"):
        workspace = Workspace(
            loaded, refine_train_config(options), seed % loaded.num_contexts, seed, options.refine_steps
        )
        seed_rows, seconds = run_seed(
            workspace, feedback, cfg.updates, {"disliked": disliked, "liked": liked}
        )
        rows += [{"seed": seed, **row} for row in seed_rows]
        update_seconds += seconds
    summary = []
    for k in cfg.updates:
        at_k = [r for r in rows if r["updates"] == k]
        dis = np.array([r["disliked_change"] for r in at_k])
        lik = np.array([r["liked_change"] for r in at_k])
        summary.append(
            {
                "updates": k,
                "disliked_change_mean": float(dis.mean()),
                "disliked_change_std": float(dis.std(ddof=1)),
                "liked_change_mean": float(lik.mean()),
                "liked_change_std": float(lik.std(ddof=1)),
                "seeds_disliked_changed_more": int((dis > lik).sum()),
                "seeds": len(at_k),
            }
        )
    return {
        "settings": {
            **dataclasses.asdict(options),
            "threads": cfg.threads,
            "torch": torch.__version__,
            "feedback": "left half disliked, right half liked",
        },
        "seconds_per_update_mean": float(np.mean(update_seconds)),
        "seconds_per_update_std": float(np.std(update_seconds, ddof=1)),
        "summary": summary,
        "runs": rows,
    }


def run_seed(workspace, feedback, updates: tuple[int, ...], masks: dict) -> tuple[list[dict], list[float]]:
    """One apply of max(updates) updates, rendered after each K in ``updates``; (rows, seconds per update)."""
    from agents.refine.workspace import region_change

    start = workspace.versions[0].image
    rows, seconds, last = [], [], [time.perf_counter()]

    def progress(k: int, reward: float) -> None:
        seconds.append(time.perf_counter() - last[0])
        if k in updates:
            image = workspace.render()
            row = {f"{name}_change": region_change(start, image, mask) for name, mask in masks.items()}
            rows.append({"updates": k, **row, "reward": reward})
        last[0] = time.perf_counter()  # rendering for the measurement is not an update's time

    workspace.apply(feedback, max(updates), progress)
    return rows, seconds


def markdown(result: dict) -> str:
    lines = [
        "| K updates | change where disliked | change where liked | seeds where disliked changed more |",
        "|---:|---:|---:|---:|",
    ]
    for row in result["summary"]:
        lines.append(
            f"| {row['updates']} | {row['disliked_change_mean']:.4f} ± {row['disliked_change_std']:.4f} "
            f"| {row['liked_change_mean']:.4f} ± {row['liked_change_std']:.4f} "
            f"| {row['seeds_disliked_changed_more']} / {row['seeds']} |"
        )
    seconds = f"{result['seconds_per_update_mean']:.2f} ± {result['seconds_per_update_std']:.2f}"
    lines.append(f"\nSeconds per update (CPU, {result['settings']['threads']} torch thread): {seconds}.")
    return "\n".join(lines) + "\n"


def screenshot(out: Path) -> Path:
    """The page after painting and one apply of K=2 (context 1, seed 1), as the browser test drives it."""
    from playwright.sync_api import sync_playwright

    from agents.refine.__main__ import RefineConfig, build
    from benchmarks.browser import BROWSER_ARGS, CHROMIUM, paint_halves_and_apply, serve

    _, app = build(RefineConfig(threads=1))
    path = out / "refine_page.png"
    with serve(app) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        paint_halves_and_apply(page, url, context=1, seed=1, updates=2)
        page.screenshot(path=str(path), full_page=True)
        browser.close()
    return path


def main(cfg: RefineBenchConfig) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    result = measure(cfg)
    (out / "refine.json").write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (out / "refine.md").write_text(table)
    print(table)
    if cfg.screenshot:
        print(f"wrote {screenshot(out)}")


if __name__ == "__main__":
    import tyro

    main(tyro.cli(RefineBenchConfig))
