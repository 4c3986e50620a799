"""Which denoising steps enter the policy-gradient loss, and with what weight.

Both agents weight step t's loss term by w_t, the same weights for DDPO and PXPO.

Why not every step with weight 1: at the point x_{t-1} actually sampled, the
score of the DDIM Gaussian is d log p / d eps = b_t z / sigma_t (z the step's
unit noise), so a step's policy-gradient term has noise of scale |b_t| / sigma_t.
Its signal, by Stein's lemma E[A z] = sigma_t E[dA/dx_{t-1}], is
b_t E[dA/dx_{t-1} d eps / d theta]: the same as the exact reparameterised
gradient of that step, with no sigma_t in it. So a step's signal-to-noise ratio
scales with sigma_t, and steps whose sigma_t is tiny compared with the rest of
the schedule (the last steps of a schedule whose alpha-bar reaches ~1 early,
e.g. the default model's t = 51 -> 1 with sigma_t = 0.009 against a median of
0.34) add almost pure noise. ``python -m benchmarks.studies.step_signal`` measures it.

Modes, with s = ``threshold`` x median over the schedule's steps of sigma_t:

- ``"all"``: w_t = 1 (DDPO's reference behaviour).
- ``"drop"``: w_t = 1 if sigma_t >= s else 0; dropped steps are not even computed.
- ``"soft"``: w_t = sigma_t^2 / (sigma_t^2 + s^2), the weight that minimises the
  squared error of a sum of per-step estimates whose signal is the same for every
  step and whose noise variance is proportional to 1 / sigma_t^2.

The weights depend only on the schedule (sigma_t), so they are the same for
any model the env loads, pixel or latent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

STEP_WEIGHTINGS = ("all", "drop", "soft")
DEFAULT_STEP_WEIGHTING = "soft"
"""Chosen from ``benchmarks.studies.step_signal`` (docs/results/steps.md, "Which steps carry signal"): of the
weightings measured it agreed best, or tied, with the exact reward gradient for both
agents on the default model's three differentiable tasks and on the latent pipeline."""
DEFAULT_STEP_THRESHOLD = 0.25
"""A step whose sigma_t is a quarter of the median sigma_t gets weight 1/2."""


def step_weights(
    std_dev_t: torch.Tensor,
    mode: str = DEFAULT_STEP_WEIGHTING,
    threshold: float = DEFAULT_STEP_THRESHOLD,
    explicit: Sequence[float] = (),
) -> torch.Tensor:
    """Per-step loss weights of a DDIM schedule.

    Args:
        std_dev_t: (T,) sigma_t of each step, > 0 (``DDIMSchedule.coefficients.std_dev_t``).
        mode: "all", "drop" or "soft" (see the module docstring).
        threshold: s / median(sigma_t), in (0, 1].
        explicit: T weights >= 0 that override ``mode`` when given.

    Returns:
        (T,) float32 weights on ``std_dev_t``'s device, at least one of them > 0.

    Raises:
        ValueError: unknown mode, threshold outside (0, 1], or explicit weights of the
            wrong length, negative, non-finite or all zero.
    """
    std = std_dev_t.detach().float()
    if explicit:
        weights = torch.as_tensor([float(w) for w in explicit], dtype=torch.float32, device=std.device)
        if weights.shape != std.shape:
            raise ValueError(
                f"step_weights must have one weight per step ({std.numel()}), got {len(explicit)}"
            )
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()) or not bool(weights.any()):
            raise ValueError(f"step_weights must be finite, >= 0 and not all 0, got {list(explicit)}")
        return weights
    if mode not in STEP_WEIGHTINGS:
        raise ValueError(f"step_weighting must be one of {STEP_WEIGHTINGS}, got {mode!r}")
    if not 0 < threshold <= 1:
        raise ValueError(f"step_threshold must be in (0, 1], got step_threshold={threshold}")
    if mode == "all":
        return torch.ones_like(std)
    # threshold <= 1 keeps the largest sigma (>= the median) at weight >= 1/2.
    reference = threshold * std.median()
    if mode == "drop":
        return (std >= reference).float()
    return std.square() / (std.square() + reference.square())


def sample_steps(
    active: torch.Tensor, num_images: int, fraction: float, generator: torch.Generator
) -> torch.Tensor:
    """Which steps each image trains on in one inner epoch: ``fraction`` of the active steps (at least one), in
    a random order per image; inactive steps (weight 0) never.

    Args:
        active: (T,) bool, steps whose weight is > 0 (on the CPU, as ``generator``).
        num_images: N; fraction: ``TrainConfig.timestep_fraction`` in (0, 1].

    Returns:
        (N, max(1, int(active.sum() * fraction))) int64 step indices.
    """
    num_train = max(1, int(int(active.sum()) * fraction))
    keys = torch.rand(num_images, active.numel(), generator=generator)
    keys = torch.where(active, keys, 2.0)  # inactive steps sort last and are never picked
    return torch.argsort(keys, dim=1)[:, :num_train]


WINDOW_PLACEMENTS = ("sliding", "random", "fixed")


def train_window(
    weights: torch.Tensor, size: int, placement: str, start: int, epoch: int, seed: int
) -> range:
    """The consecutive steps an epoch trains (``TrainConfig.step_window``), among the steps up to the last
    one with a weight.

    Args:
        weights: (T,) per-step loss weights (``step_weights``, then the algorithm's ``train_steps``).
        size: K >= 1 steps (more than the weighted span: the whole span).
        placement: 'sliding' (the span tiled by windows at steps 0, K, 2K, ..., the last one ending at the span's
            end; epoch e takes the tile e after the one holding ``start``, wrapping round; MixGRPO), 'random' (a start drawn for this epoch from the first half of
            the steps, as Flow-GRPO-Fast; the same for a given seed and epoch, so resume needs no state) or
            'fixed' (``start``).
        start: 'fixed': the window's first step, clamped to fit the span; 'sliding': a step of epoch 0's tile.
        epoch: the epoch about to be trained (0 first).
        seed: the run's seed ('random').

    Returns:
        ``range(first, first + K')``, K' = min(K, span), where the span is the steps up to the last weighted one;
        a window always holds a weighted step ('sliding' skips tiles without one, 'random' draws among starts
        whose window has one, in the first half where there are any).

    Raises:
        ValueError: unknown placement, K < 1, no step with a weight, or a 'fixed' window without one.
    """
    if placement not in WINDOW_PLACEMENTS:
        raise ValueError(f"window_placement must be one of {WINDOW_PLACEMENTS}, got {placement!r}")
    if size < 1:
        raise ValueError(f"step_window must be >= 1 to place a window, got {size}")
    weighted = weights > 0
    if not bool(weighted.any()):
        raise ValueError("no step has a weight > 0: there is nothing to train")
    span = int(weighted.nonzero()[-1]) + 1  # steps 0 ... the last weighted one
    size = min(size, span)
    last = span - size  # the last first step that fits

    def has_weight(first: int) -> bool:
        return bool(weighted[first : first + size].any())

    if placement == "fixed":
        first = min(start, last)
        if not has_weight(first):
            raise ValueError(
                f"window_start={start} places the {size}-step window on steps {first}-{first + size - 1}, none of "
                "which has a loss weight: move it onto weighted steps (agents.steps.step_weights)"
            )
    elif placement == "sliding":
        tiles = -(-span // size)  # ceil: the last tile is moved back to end at the span's end
        first_tile = min(start, span - 1) // size
        order = [min(size * ((first_tile + i) % tiles), last) for i in range(tiles)]
        usable = [f for f in order if has_weight(f)]  # tiles without a weighted step are skipped
        first = usable[epoch % len(usable)]
    else:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        high = max(0, min(last, weights.numel() // 2 - size))  # Flow-GRPO-Fast: within the first half
        usable = [f for f in range(high + 1) if has_weight(f)] or [
            f for f in range(last + 1) if has_weight(f)
        ]
        first = usable[int(torch.randint(len(usable), (1,), generator=generator))]
    return range(first, first + size)
