"""The refine page's reward: a painting (feedback PNG) parsed and turned into a per-pixel reward.

The page sends an RGBA PNG at the image's resolution: transparent pixels are
unpainted; opaque pure green is "like", opaque pure red "dislike", any other
opaque colour "make this pixel this colour". ``PaintedReward`` turns it into
``target_map``: liked pixels score closeness to what they are now (weight +1:
stay), disliked pixels the same closeness with weight -1 (move away), coloured
pixels closeness to their colour (+1), unpainted pixels closeness to what they
are now with the small weight ``hold``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
import torch

from pxpo_gym.rewards import target_map_reward

LIKE = (0, 255, 0)
"""Feedback PNG colour (opaque) of a liked pixel."""
DISLIKE = (255, 0, 0)
"""Feedback PNG colour (opaque) of a disliked pixel. Any other opaque colour asks for that colour."""
NONE, LIKED, DISLIKED, COLOURED = 0, 1, 2, 3
"""Pixel labels of a parsed feedback."""


class FeedbackError(ValueError):
    """A feedback image the server refuses (the message says why)."""


@dataclass(frozen=True)
class Feedback:
    """A parsed painting at the image's resolution.

    Attributes:
        labels: (H, W) int64: NONE, LIKED, DISLIKED or COLOURED.
        colours: (3, H, W) float32 in [0, 1]: the wanted colour where COLOURED.
    """

    labels: torch.Tensor
    colours: torch.Tensor
    png: bytes = b""
    """The painting as received (kept with the version it made)."""

    def count(self, label: int) -> int:
        return int((self.labels == label).sum())


def parse_feedback(data: bytes, size: tuple[int, int], max_bytes: int) -> Feedback:
    """Decodes a feedback PNG: RGBA at the image's (H, W); alpha 0 unpainted, alpha 255 painted.

    Opaque pure green is "like", opaque pure red is "dislike", any other opaque colour
    is "make this pixel this colour".

    Raises:
        FeedbackError: empty, too large, not a PNG, the wrong size, half-transparent
            pixels, or nothing painted.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise FeedbackError("feedback is empty: send a PNG of the painting")
    if len(data) > max_bytes:
        raise FeedbackError(f"feedback is {len(data)} bytes; the limit is {max_bytes}")
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise FeedbackError("feedback is not a PNG image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            if (image.height, image.width) != tuple(size):
                raise FeedbackError(
                    f"feedback is {image.width}x{image.height} pixels; the image is {size[1]}x{size[0]}"
                )
            rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)  # (H, W, 4)
    except Image.DecompressionBombError as err:  # declared far larger than any image: refused unread
        raise FeedbackError(f"feedback declares too many pixels: {err}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        if isinstance(err, FeedbackError):
            raise
        raise FeedbackError(f"feedback is not a readable PNG: {err}") from err
    alpha = rgba[..., 3]
    if bool(((alpha > 0) & (alpha < 255)).any()):
        raise FeedbackError("feedback pixels must be fully transparent (unpainted) or opaque (painted)")
    rgb = rgba[..., :3]
    painted = alpha == 255
    liked = painted & np.all(rgb == LIKE, axis=-1)
    disliked = painted & np.all(rgb == DISLIKE, axis=-1)
    labels = np.where(painted, COLOURED, NONE)
    labels[liked], labels[disliked] = LIKED, DISLIKED
    if not painted.any():
        raise FeedbackError("feedback has no painted pixel: paint a like, dislike or colour stroke first")
    colours = torch.from_numpy(rgb.astype(np.float32) / 255).permute(2, 0, 1)  # (3, H, W)
    return Feedback(torch.from_numpy(labels).long(), colours, bytes(data))


class PaintedReward:
    """The workspace env's reward: ``target_map`` built from the latest feedback (zero before any)."""

    def __init__(self, size: tuple[int, int], hold: float = 0.0) -> None:
        self.fn = target_map_reward(target=torch.zeros(3, *size), weights=torch.zeros(size))
        self.hold = hold
        """Weight of the unpainted pixels' closeness to the image they start from."""
        self.__name__ = "painted_feedback"

    def set(self, feedback: Feedback, image: torch.Tensor) -> None:
        """Liked, disliked and unpainted pixels target ``image`` (3, H, W) itself, coloured ones their colour."""
        target = torch.where(feedback.labels == COLOURED, feedback.colours, image.cpu())  # (3, H, W)
        weights = torch.full(feedback.labels.shape, float(self.hold))
        weights[(feedback.labels == LIKED) | (feedback.labels == COLOURED)] = 1.0
        weights[feedback.labels == DISLIKED] = -1.0
        self.fn = target_map_reward(target=target, weights=weights)

    def __call__(self, images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        return self.fn(images, contexts)
