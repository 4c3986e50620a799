"""A small segmentation network for the coloured-shapes data (the paper's
model-based per-pixel feedback).

It predicts, for every pixel, background (class 0) or one of the shape classes
(class k + 1 for ``SHAPE_CLASSES[k]``). It is trained by ``pxpo_gym.pretrain``
on the procedural data and shipped as safetensors with its config in the
file's metadata, so loading never unpickles anything.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from pxpo_gym.models import embedded_model_path

SEGMENTATION_FILE = "segmentation.safetensors"


class SegmentationNet(nn.Module):
    """Dilated fully-convolutional net plus a global-context branch.

    Args:
        num_classes: output classes including background.
        width: channels of the hidden layers.

    Input (B, 3, H, W) RGB in [0, 1]; output (B, num_classes, H, W) logits.
    """

    def __init__(self, num_classes: int = 5, width: int = 32) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.width = width
        layers: list[nn.Module] = []
        channels = 3
        # Dilations 1, 2, 4, 8, 1: a 33-pixel receptive field covers a 16x16 image.
        for dilation in (1, 2, 4, 8, 1):
            layers += [
                nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation),
                nn.GroupNorm(8, width),
                nn.SiLU(),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(2 * width, num_classes, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = self.features(images * 2 - 1)  # (B, w, H, W)
        pooled = feats.mean(dim=(2, 3), keepdim=True).expand_as(feats)  # (B, w, H, W)
        return self.head(torch.cat([feats, pooled], dim=1))  # (B, K+1, H, W)


def save_segmentation_net(net: SegmentationNet, path: str | Path) -> None:
    """Writes weights and config (as safetensors metadata) to ``path``."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path), metadata={"num_classes": str(net.num_classes), "width": str(net.width)})


def load_segmentation_net(
    path: str | Path | None = None, device: torch.device | str = "cpu"
) -> SegmentationNet:
    """Loads a ``SegmentationNet`` from safetensors; the embedded one if ``path`` is None.

    Raises:
        ValueError: missing, corrupt or mismatched file.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    file = Path(path) if path is not None else embedded_model_path() / SEGMENTATION_FILE
    if not file.is_file():
        raise ValueError(f"segmentation weights not found: path={str(file)!r} is not a file")
    try:
        with safe_open(str(file), framework="pt") as handle:
            meta = handle.metadata() or {}
        net = SegmentationNet(int(meta["num_classes"]), int(meta["width"]))
        net.load_state_dict(load_file(str(file)))
    except Exception as err:  # SafetensorError, KeyError, size mismatch
        raise ValueError(
            f"segmentation weights {str(file)!r} are corrupt or not a SegmentationNet: "
            f"{type(err).__name__}: {err}"
        ) from err
    return net.to(device).eval().requires_grad_(False)


def shape_match(
    net: SegmentationNet, images: torch.Tensor, contexts: torch.Tensor, min_area: float = 0.05
) -> torch.Tensor:
    """Whether each image shows one shape of its conditioned class, per the segmentation net.

    An image matches when the net's foreground covers at least ``min_area`` of it and
    most foreground pixels are predicted as class ``context``.

    Args:
        net: a ``SegmentationNet``.
        images: (B, 3, H, W) RGB in [0, 1].
        contexts: (B,) int64 shape classes.
        min_area: minimum foreground fraction.

    Returns:
        (B,) bool.
    """
    with torch.no_grad():
        pred = net(images.float()).argmax(dim=1)  # (B, H, W), 0 = background
    foreground = pred > 0
    counts = torch.nn.functional.one_hot(pred, net.num_classes).sum(dim=(1, 2))  # (B, K+1)
    majority = counts[:, 1:].argmax(dim=1)  # (B,) shape class
    area = foreground.float().mean(dim=(1, 2))
    return (area >= min_area) & (majority == contexts.to(majority.device))
