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
does on noise), and in a second probe 10% of the cells at once (``CHECK_SCALES``), and
the reward map is scored again; ``own`` is the change of the map over the changed
cells, ``total`` the change of the whole map's sum. The agreement is their cosine
over the probes, the lower of the two scales,

    agreement = sum(own * total) / sqrt(sum(own^2) * sum(total^2)),

1 for a pixel-local reward (total = own), for a smoothed one (total = own x the
blur's area), for a mirror-symmetry reward (total = 2 own) and for one score per
image (a constant map: per-pixel credit is then DDPO's); near 0 or negative where
the rest of the map answers a pixel's change in other directions than the pixel
itself (a gate that binds, a budget that is exceeded, a network's context).

``credit='checked'`` (PXPO's default, ``agents.algorithms.pxpo``) measures it every epoch on
that epoch's own images and trains with per-pixel credit until an epoch's agreement
falls below ``CHECK_THRESHOLD`` or its reward falls far below the best epoch's
(``reward_dropped``); then the weights that drew the best epoch come back
(``BestWeights``) and DDPO's image-level credit is used for the rest of the run (the
switch never goes back, so that a run cannot oscillate between the two).
"""

from __future__ import annotations

import math

import torch

from .credit import _grid_maps, invert_cells

CHECK_PROBES = 4
"""Probes per image of the epoch and per scale (``credit_agreement``)."""
CHECK_SCALES = (0.0, 0.1)
"""The probes' sizes: 0 inverts one cell of the sample grid; a fraction inverts that share of the cells,
drawn at random, at once. Per-pixel credit moves every pixel at once, and some couplings answer only a
joint change (a median of the border flips once many border pixels change colour): the agreement is the
lowest over the scales."""
CHECK_THRESHOLD = 0.5
"""``credit='checked'``: per-pixel credit while the epoch's agreement is at least this."""
DROP_SHARE = 0.5
"""``credit='checked'``'s outcome guard: the check also fails when the epoch's mean reward falls below the
best epoch's by more than this share of the gain made up to the best epoch..."""
DROP_ERRORS = 2.0
"""... and by more than this many standard errors of the epoch's mean reward (noise is no drop)."""


def reward_dropped(
    best_reward: float | None, first_reward: float | None, reward_mean: float, reward_se: float
) -> bool:
    """The outcome guard: whether the epoch's mean reward fell below the best so far by more than DROP_SHARE of
    the gain up to it (best - first epoch) and DROP_ERRORS standard errors, once that gain itself is more
    than DROP_ERRORS standard errors (before, the best epoch is only the luckiest draw of a flat curve). A
    rise of the image-level reward is what per-pixel credit is for; a fall this large says its assumption
    failed, whatever the probes read (a reward can collapse within one epoch, before a probe sees why)."""
    if best_reward is None or first_reward is None:
        return False
    gain, noise = best_reward - first_reward, DROP_ERRORS * reward_se
    return gain > noise and reward_mean < best_reward - max(DROP_SHARE * gain, noise)


def agreement_sums(
    core,
    images: torch.Tensor,
    contexts: torch.Tensor,
    probes: int,
    generator: torch.Generator,
    fraction: float = 0.0,
) -> torch.Tensor:
    """The three sums behind ``credit_agreement`` for these images at one probe scale: (sum own x total,
    sum own^2, sum total^2), float64 (3,) on the CPU, so that ranks can add theirs before the ratio is taken.

    Args:
        core: the vector env's core (its reward and sample grid).
        images: (N, 3, H, W) in [0, 1], any device.
        contexts: (N,) int64.
        probes: probes per image, >= 1.
        generator: CPU generator that picks the cells.
        fraction: 0 inverts one grid cell per probe; in (0, 1) each cell is inverted with this probability
            (``own`` is then the change summed over the inverted cells).
    """
    if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be an int >= 1, got probes={probes!r}")
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got fraction={fraction!r}")
    grid = tuple(core.loaded.sample_shape[1:])
    images = images.detach().float().cpu().repeat_interleave(probes, dim=0)  # (N x probes, 3, H, W)
    contexts = contexts.cpu().repeat_interleave(probes)
    n = len(images)
    if fraction == 0:
        rows = torch.randint(grid[0], (n,), generator=generator)
        cols = torch.randint(grid[1], (n,), generator=generator)
        cells = torch.zeros(n, *grid, dtype=torch.bool)
        cells[torch.arange(n), rows, cols] = True
    else:
        cells = torch.rand(n, *grid, generator=generator) < fraction  # (n, h, w)
    changed = invert_cells(images, cells)
    change = (_grid_maps(core, changed, contexts) - _grid_maps(core, images, contexts)).double()  # (n, h, w)
    own = (change * cells).sum(dim=(1, 2))
    total = change.sum(dim=(1, 2))
    return torch.stack([(own * total).sum(), own.square().sum(), total.square().sum()])


def agreement_from_sums(sums: torch.Tensor) -> float:
    """The cosine of ``agreement_sums`` (one row of three, or several rows: the lowest cosine over them); 1.0
    for a row where the reward did not respond at all (nothing contradicts per-pixel credit), and where only
    the rest of the map responded, 0.0."""
    rows = sums.reshape(-1, 3)
    if len(rows) > 1:
        return min(agreement_from_sums(row) for row in rows)
    cross, own_sq, total_sq = (float(v) for v in rows[0])
    if total_sq <= 0:
        return 1.0
    if own_sq <= 0:
        return 0.0
    return max(-1.0, min(1.0, cross / math.sqrt(own_sq * total_sq)))


def scaled_agreement_sums(
    core,
    images: torch.Tensor,
    contexts: torch.Tensor,
    probes: int,
    generator: torch.Generator,
    scales: tuple[float, ...] = CHECK_SCALES,
) -> torch.Tensor:
    """(len(scales), 3): ``agreement_sums`` at every probe scale."""
    return torch.stack(
        [agreement_sums(core, images, contexts, probes, generator, fraction) for fraction in scales]
    )


def credit_agreement(
    core, images: torch.Tensor, contexts: torch.Tensor, probes: int = CHECK_PROBES, seed: int = 0
) -> float:
    """How far per-pixel credit agrees with the reward on these images: the lowest, over CHECK_SCALES, cosine
    over probes between the change of the probed cells' own reward and the change of the whole map's sum
    (module docstring), in [-1, 1]. Four reward passes over ``probes`` x N images."""
    generator = torch.Generator().manual_seed(seed)
    return agreement_from_sums(scaled_agreement_sums(core, images, contexts, probes, generator))


class BestWeights:
    """``credit='checked'``'s way back: the trainable weights (and optimizer and EMA state) that drew the
    best epoch so far while per-pixel credit held, kept on the CPU. When the check fails, per-pixel credit
    may already have carried the weights over a cliff the check saw too late (a reward that collapses once
    a median or a gate flips); the trainer then restores these weights before it goes on with image credit.

    Attributes:
        reward: the mean training reward of the epoch those weights drew (None before the first offer).
        epoch: that epoch, counted from 0 (its images were sampled with these weights).
        first: the first offered epoch's mean reward (the outcome guard's start).
    """

    PREFIX = "best/"
    """Checkpoint tensor names start with this."""

    def __init__(self) -> None:
        self.reward: float | None = None
        self.epoch: int | None = None
        self.first: float | None = None
        self.tensors: dict[str, torch.Tensor] = {}
        self.optimizer_meta: dict | None = None

    def offer(self, trainer, reward: float, epoch: int, keep_weights: bool = True) -> None:
        """Keeps the trainer's current weights (with ``keep_weights``; else only the reward and epoch) if
        ``reward`` (the epoch they just drew) beats the best so far."""
        if self.first is None:
            self.first = float(reward)
        if self.reward is not None and not reward > self.reward:
            return
        if not keep_weights:
            self.reward, self.epoch = float(reward), int(epoch)
            return
        from .checkpoint import optimizer_to_tensors
        from .policy import trainable_state

        tensors = {
            f"policy/{k}": v.detach().cpu().clone() for k, v in trainable_state(trainer.policy).items()
        }
        optim_tensors, self.optimizer_meta = optimizer_to_tensors(trainer.optimizer)
        tensors.update({k: v.detach().cpu().clone() for k, v in optim_tensors.items()})
        if trainer.ema is not None:
            tensors.update(
                {f"ema/{k}": v.detach().cpu().clone() for k, v in trainer.ema.state_dict().items()}
            )
        self.tensors, self.reward, self.epoch = tensors, float(reward), int(epoch)

    def restore(self, trainer) -> int | None:
        """Puts the kept weights back into the trainer and forgets them; returns their epoch (None if none)."""
        if self.epoch is None or not self.tensors:
            return None
        from .checkpoint import optimizer_from_tensors

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k.removeprefix(prefix): v for k, v in self.tensors.items() if k.startswith(prefix)}

        device = next(trainer.policy.parameters()).device
        trainer.policy.load_state_dict({k: v.to(device) for k, v in part("policy/").items()}, strict=False)
        optimizer_from_tensors(
            trainer.optimizer, {k: v.to(device) for k, v in self.tensors.items()}, self.optimizer_meta
        )
        if trainer.ema is not None:
            trainer.ema.load_state_dict(part("ema/"))
        epoch = self.epoch
        self.__init__()
        return epoch

    def state(self) -> tuple[dict[str, torch.Tensor], dict | None]:
        """(tensors under PREFIX, JSON metadata) for a checkpoint; ({}, None) while nothing is kept."""
        if self.epoch is None:
            return {}, None
        meta = {
            "reward": self.reward,
            "epoch": self.epoch,
            "first": self.first,
            "optimizer": self.optimizer_meta,
        }
        return {self.PREFIX + k: v for k, v in self.tensors.items()}, meta

    def load(self, tensors: dict[str, torch.Tensor], meta: dict | None) -> None:
        """Inverse of ``state``."""
        self.__init__()
        if meta is None:
            return
        self.tensors = {
            k.removeprefix(self.PREFIX): v for k, v in tensors.items() if k.startswith(self.PREFIX)
        }
        self.reward, self.epoch, self.optimizer_meta = (
            float(meta["reward"]),
            int(meta["epoch"]),
            meta["optimizer"],
        )
        self.first = float(meta["first"])
