"""Figures: images beside their per-pixel reward maps, and plain image grids."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def save_reward_grid(
    images: torch.Tensor,
    reward_maps: torch.Tensor,
    path: str | Path,
    titles: Sequence[str] | None = None,
    columns: int = 4,
    caption: str | None = None,
) -> Path:
    """Writes a PNG of each image next to its reward heatmap (``reward_grid_figure``).

    Args:
        images: (N, 3, H, W) RGB in [0, 1].
        reward_maps: (N, H, W) per-pixel rewards; one shared colour scale.
        path: output PNG file (folders are created).
        titles: optional N short titles.
        columns: image/heatmap pairs per row.
        caption: a line above the grid, e.g. the reward and its target.

    Returns:
        The path written.
    """
    fig = reward_grid_figure(images, reward_maps, titles, columns, caption)
    return save_figure(fig, path, dpi=100)


def reward_grid_figure(
    images: torch.Tensor,
    reward_maps: torch.Tensor,
    titles: Sequence[str] | None = None,
    columns: int = 4,
    caption: str | None = None,
) -> Figure:
    """The figure of ``save_reward_grid``: every image titled ``image: TITLE``, its map beside it titled
    ``reward map, mean R``, a colour bar of the per-pixel reward and, above them, ``caption`` (the figure's
    suptitle) and a line saying which panel is which."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, 2 * columns, figsize=(2.0 * columns * 2, 2.1 * rows + 0.6), squeeze=False)
    maps = reward_maps.detach().float().cpu()
    vmin, vmax = float(maps.min()), float(maps.max())
    heat = None
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, columns)
        axes[r, 2 * c].imshow(
            images[i].detach().float().cpu().permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest"
        )
        heat = axes[r, 2 * c + 1].imshow(
            maps[i].numpy(), cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest"
        )
        label = titles[i] if titles is not None else f"#{i}"
        axes[r, 2 * c].set_title(f"image: {label}", fontsize=8)
        axes[r, 2 * c + 1].set_title(f"reward map, mean {maps[i].mean():.3f}", fontsize=8)
    if heat is not None:
        fig.colorbar(heat, ax=axes, shrink=0.6, label="per-pixel reward")
    key = "each pair: the image (left), its per-pixel reward map (right; brighter = more reward)"
    fig.suptitle(key if caption is None else f"{caption}\n{key}", fontsize=9)
    return fig


def reward_caption(reward: str, options: dict[str, Any]) -> str:
    """A reward grid's caption (``save_reward_grid``): the reward and the options it scores with, a
    built-in's defaults included (so a colour reward names its target even when none was given)."""
    from pxpo_gym.rewards import REWARDS

    shown = dict(options)
    if reward in REWARDS:
        parameters = inspect.signature(REWARDS[reward]).parameters.values()
        defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
        shown = {**defaults, **options}
    parts = []
    for name, value in shown.items():
        if value is None:
            continue
        if isinstance(value, (tuple, list)) and len(value) == 3 and name == "target":
            parts.append(f"target=RGB {tuple(value)}")
        else:
            text = repr(value)
            parts.append(f"{name}={text if len(text) <= 40 else text[:37] + '...'}")
    return f"reward {reward!r}" + (f": {', '.join(parts)}" if parts else "")


def save_image_grid(
    image_sets: Sequence[torch.Tensor], path: str | Path, labels: Sequence[str], columns: int = 8
) -> Path:
    """Writes side-by-side panels of image grids (e.g. data vs samples) to a PNG.

    Args:
        image_sets: tensors (N_i, 3, H, W) in [0, 1], one panel each.
        path: output PNG.
        labels: one title per panel.
        columns: images per row inside a panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def tile(images: torch.Tensor) -> torch.Tensor:
        n, _, h, w = images.shape
        rows = (n + columns - 1) // columns
        canvas = torch.ones(3, rows * (h + 1) + 1, columns * (w + 1) + 1)
        for i in range(n):
            r, c = divmod(i, columns)
            canvas[:, 1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + c * (w + 1) : 1 + c * (w + 1) + w] = images[
                i
            ]
        return canvas

    fig, axes = plt.subplots(1, len(image_sets), figsize=(4.2 * len(image_sets), 4.6), squeeze=False)
    for ax, images, label in zip(axes[0], image_sets, labels):
        ax.imshow(
            tile(images.detach().float().cpu().clamp(0, 1)).permute(1, 2, 0).numpy(), interpolation="nearest"
        )
        ax.set_title(label)
        ax.axis("off")
    path = save_figure(fig, path, dpi=110)
    return path


def save_figure(fig, path: str | Path, dpi: int) -> Path:
    """Writes a matplotlib figure as a PNG, all or nothing (``pxpo_gym.files.write_atomic``), and closes it."""
    import io

    import matplotlib.pyplot as plt

    from pxpo_gym.files import write_atomic

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return write_atomic(path, buffer.getvalue())
