"""Procedural "coloured shapes" dataset behind the embedded default model.

Each image is one filled shape of a random colour on a flat background of
another random colour, with a little pixel noise. The shape's class is the
conditioning label of the default model, and the true per-pixel mask is kept so
that the segmentation reward can be trained and checked against ground truth.

Everything is generated batched in torch from an explicit ``torch.Generator``:
the same seed gives the same dataset on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SHAPE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
"""Class names, indexed by label. Label k is also the segmentation class k + 1
(segmentation class 0 is the background)."""


@dataclass(frozen=True)
class ShapeBatch:
    """A batch of procedural images.

    Attributes:
        images: (B, 3, H, W) float32 in [0, 1].
        labels: (B,) int64 shape class, an index into ``SHAPE_CLASSES``.
        masks: (B, H, W) bool, True where the shape is.
        shape_colors: (B, 3) float32 RGB of the shape.
        background_colors: (B, 3) float32 RGB of the background.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    shape_colors: torch.Tensor
    background_colors: torch.Tensor


def _shape_masks(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Rasterises one shape per label; returns (B, H, W) bool."""
    batch = labels.shape[0]
    # Pixel-centre coordinates in [-1, 1].
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")  # (H, W) each
    u = torch.rand(batch, 3, generator=generator)
    radius = 0.35 + 0.3 * u[:, 0]  # half-extent in [0.35, 0.65]
    # Keep the whole shape inside the image.
    max_shift = (1.0 - radius).clamp(min=0.0)
    cx = (u[:, 1] * 2 - 1) * max_shift
    cy = (u[:, 2] * 2 - 1) * max_shift
    dx = (xs[None] - cx[:, None, None]) / radius[:, None, None]  # (B, H, W)
    dy = (ys[None] - cy[:, None, None]) / radius[:, None, None]

    circle = dx.square() + dy.square() <= 1.0
    square = (dx.abs() <= 0.85) & (dy.abs() <= 0.85)
    # Upward triangle: apex at dy = -1, base at dy = +1.
    triangle = (dy <= 1.0) & (dx.abs() <= (dy + 1.0) / 2.0)
    cross = ((dx.abs() <= 0.3) | (dy.abs() <= 0.3)) & (dx.abs() <= 1.0) & (dy.abs() <= 1.0)
    stacked = torch.stack([circle, square, triangle, cross], dim=1)  # (B, K, H, W)
    return stacked[torch.arange(batch), labels]


def _distinct_colors(batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Shape and background colours at least 0.5 apart (Euclidean RGB)."""
    shape = torch.rand(batch, 3, generator=generator)
    background = torch.rand(batch, 3, generator=generator)
    # Resample the background a fixed number of times rather than looping until
    # done, so the amount of randomness consumed is the same for every seed.
    for _ in range(8):
        close = (shape - background).norm(dim=1) < 0.5
        fresh = torch.rand(batch, 3, generator=generator)
        background = torch.where(close[:, None], fresh, background)
    # Whatever is still too close gets the complementary colour.
    close = (shape - background).norm(dim=1) < 0.5
    background = torch.where(close[:, None], 1.0 - shape, background)
    return shape, background


def generate_shapes(
    num_images: int,
    size: int = 16,
    *,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
    noise_std: float = 0.02,
) -> ShapeBatch:
    """Generates a batch of coloured-shape images on CPU.

    Args:
        num_images: how many images, >= 1.
        size: image height and width in pixels, >= 8.
        generator: CPU torch generator; a fresh unseeded one if None.
        labels: optional (num_images,) int64 classes; drawn uniformly if None.
        noise_std: std of the Gaussian pixel noise added before clamping.

    Returns:
        A ``ShapeBatch`` of float32 images in [0, 1].

    Raises:
        ValueError: on a non-positive count, a size below 8, or bad labels.
    """
    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got num_images={num_images}")
    if size < 8:
        raise ValueError(f"size must be >= 8 pixels, got size={size}")
    gen = generator if generator is not None else torch.Generator().manual_seed(torch.seed())
    num_classes = len(SHAPE_CLASSES)
    if labels is None:
        labels = torch.randint(num_classes, (num_images,), generator=gen)
    else:
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.shape != (num_images,) or labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"labels must have shape ({num_images},) with values in [0, {num_classes}), "
                f"got shape {tuple(labels.shape)}"
            )
    masks = _shape_masks(labels, size, gen)
    shape_colors, background_colors = _distinct_colors(num_images, gen)
    images = torch.where(
        masks[:, None], shape_colors[:, :, None, None], background_colors[:, :, None, None]
    )  # (B, 3, H, W)
    images = images + noise_std * torch.randn(images.shape, generator=gen)
    return ShapeBatch(
        images=images.clamp(0.0, 1.0),
        labels=labels,
        masks=masks,
        shape_colors=shape_colors,
        background_colors=background_colors,
    )
