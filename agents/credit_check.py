"""Re-checking per-pixel credit's assumption on the images the policy draws now.

Per-pixel credit (``credit='pixel'``) moves each pixel by its own reward. That
ascends the image's mean reward only if a change at one pixel moves the whole
map's sum the same way it moves that pixel's own reward. Whether it does can
change during training: a reward whose pixels are coupled through one number of
the image (a gate on how much shape is left, a budget on the total redness) looks
pixel-local on the pretrained model's images, where the gate is open or the
budget not reached, and stops being so once the images change. Read once, at the
start, the check passes and per-pixel credit then drives the images into the
region where it is wrong (a gated reward collapses to 0 where DDPO learns).

``credit_agreement`` probes the reward on the current images: in each image one
cell of the sample grid is inverted (x -> 1 - x, as ``agents.credit.reward_locality``
does on noise) and the reward map scored again; ``own`` is the change of the
map at the changed cell, ``total`` the change of the whole map's sum. The
agreement is their cosine over the probes,

    agreement = sum(own * total) / sqrt(sum(own^2) * sum(total^2)),

1 for a pixel-local reward (total = own), for a smoothed one (total = own x the
blur's area), for a mirror-symmetry reward (total = 2 own) and for one score per
image (a constant map: per-pixel credit is then DDPO's); near 0 or negative where
the rest of the map answers a pixel's change in other directions than the pixel
itself (a gate that binds, a budget that is exceeded, a network's context).

``credit='checked'`` (PXPO's default, ``agents.pxpo``) measures it every epoch on
that epoch's own images and trains with per-pixel credit until an epoch's agreement
falls below ``CHECK_THRESHOLD``; from that epoch on it uses DDPO's image-level credit
for the rest of the run (the switch never goes back, so that a run cannot oscillate
between the two).
"""

from __future__ import annotations

import math

import torch

from agents.credit import _grid_maps, invert_cells

CHECK_PROBES = 4
"""Cells probed per image of the epoch (``credit_agreement``)."""
CHECK_THRESHOLD = 0.5
"""``credit='checked'``: per-pixel credit while the epoch's agreement is at least this."""


def agreement_sums(
    core, images: torch.Tensor, contexts: torch.Tensor, probes: int, generator: torch.Generator
) -> torch.Tensor:
    """The three sums behind ``credit_agreement`` for these images: (sum own x total, sum own^2, sum
    total^2), float64 (3,) on the CPU, so that ranks can add theirs before the ratio is taken.

    Args:
        core: the vector env's core (its reward and sample grid).
        images: (N, 3, H, W) in [0, 1], any device.
        contexts: (N,) int64.
        probes: cells per image, >= 1.
        generator: CPU generator that picks the cells.
    """
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be an int >= 1, got probes={probes!r}")
    grid = tuple(core.loaded.sample_shape[1:])
    images = images.detach().float().cpu().repeat_interleave(probes, dim=0)  # (N x probes, 3, H, W)
    contexts = contexts.cpu().repeat_interleave(probes)
    n = len(images)
    rows = torch.randint(grid[0], (n,), generator=generator)
    cols = torch.randint(grid[1], (n,), generator=generator)
    changed = invert_cells(images, grid, rows, cols)
    change = (_grid_maps(core, changed, contexts) - _grid_maps(core, images, contexts)).double()  # (n, h, w)
    own = change[torch.arange(n), rows, cols]
    total = change.sum(dim=(1, 2))
    return torch.stack([(own * total).sum(), own.square().sum(), total.square().sum()])


def agreement_from_sums(sums: torch.Tensor) -> float:
    """The cosine of ``agreement_sums``; 1.0 when the reward did not respond at all (nothing contradicts
    per-pixel credit), and when only the rest of the map responded, 0.0."""
    cross, own_sq, total_sq = (float(v) for v in sums)
    if total_sq <= 0:
        return 1.0
    if own_sq <= 0:
        return 0.0
    return max(-1.0, min(1.0, cross / math.sqrt(own_sq * total_sq)))


def credit_agreement(
    core, images: torch.Tensor, contexts: torch.Tensor, probes: int = CHECK_PROBES, seed: int = 0
) -> float:
    """How far per-pixel credit agrees with the reward on these images: the cosine over probes between the
    change of a probed cell's own reward and the change of the whole map's sum (module docstring), in
    [-1, 1]. Two reward passes over ``probes`` x N images."""
    generator = torch.Generator().manual_seed(seed)
    return agreement_from_sums(agreement_sums(core, images, contexts, probes, generator))
