"""The algorithm protocol: what the trainer hands an algorithm, and what it expects back.

An algorithm is a class with two required methods and a few optional hooks; the
trainer (``agents.trainer.Trainer``) samples, gathers and steps the optimizer, and
never asks which algorithm it runs. Per epoch:

1. ``pinned_pixels()``: pixels the sampler pins to the pretrained model this epoch
   (default none); ``pin`` says how ('hold' or 'freeze').
2. The trainer samples the epoch's trajectories (``agents.trajectories.Trajectories``:
   every state, each step's per-pixel log-likelihood, the reward maps pooled to the
   sample grid) and gathers every rank's rewards.
3. ``before_update(trainer, traj, rewards)``: a look at the epoch before its
   advantages (default: nothing); it returns metrics, and ``None`` as ``"skip"`` to
   skip the update.
4. ``advantages(rewards, reward_maps, contexts)``: (N,) one per image, (N, h, w) one
   per pixel, or (N, T, h, w) one per pixel and step. Required.
5. For each minibatch and step, ``loss(logp_pixels, old_logp_pixels, advantages,
   num_channels, step_weight)``: the policy-gradient loss from the per-pixel
   (channel-summed) log-likelihoods under the current weights (B, h, w) and at
   sampling time, the rows' advantages and each row's step weight (B,). Returns (loss,
   {"approx_kl", "clipfrac"} detached). Required.
6. ``silent_weights(contexts)``: per-pixel weights of an extra KL penalty to the
   pretrained model on silent pixels (default none; scaled by ``silent_kl_coef``);
   ``train_steps(weights, epoch)``: which steps enter the loss this epoch (default the
   config's step weights).

``state_dict`` / ``load_state_dict`` carry the algorithm's statistics through
checkpoints (tensors only). An algorithm that samples and trains in one pass (the
exact-gradient oracle) overrides ``epoch`` instead.

Any such class runs by import path: ``python -m agents.train plugin --path mypkg.mod:MyAlgo
--option key=value`` and ``python -m benchmarks.suite ... --algos ddpo
mypkg.mod:MyAlgo`` (docs/custom-algorithms.md).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from pxpo_gym.deprecation import warn_renamed

from ..losses import PolicyGradientConfig

EPOCH_METRICS = ("silent_fraction", "credit_agreement", "credit_dropped", "credit_pixel", "credit_restored")
"""Per-epoch columns an algorithm may fill (``epoch_metrics``); NaN where it does not."""
OLD_HOOKS = {"braked_pixels": "silent_weights", "brake_coef": "silent_kl_coef"}
"""Hooks renamed (old -> new): a subclass that defines an old one gets it under the new name, with a warning."""


class Algorithm:
    """Base class of an algorithm: subclass it, set ``name`` and ``config_class``, and write ``advantages``
    and ``loss``; every other hook has a default that does nothing.

    Args:
        config: an instance of ``config_class`` (the trainer builds it from the run's shared options and
            ``--algo-option``s).
        num_contexts: how many context ids the model has (per-context statistics).
        map_shape: (h, w) of the sample grid the reward maps are pooled to.
    """

    name: ClassVar[str] = ""
    """The algorithm's short name (run folders, tables)."""
    config_class: ClassVar[type] = PolicyGradientConfig
    """Its options: a frozen dataclass, usually a ``PolicyGradientConfig`` subclass."""
    samples_with_gradients: ClassVar[bool] = False
    """True for an algorithm that backpropagates through sampling (``epoch`` overridden; the env then
    holds one train batch at a time, on one process)."""
    default_clip_range: ClassVar[str] = "fixed"
    """'fixed': the config's clip_range as given; 'elements': unless the run's options set clip_range, it is
    scaled for the sample's element count as DDPO's (``agents.config.ddpo_clip_range``: a ratio of
    per-element means; DDPO's own config says so by its clip_range None)."""
    default_window: ClassVar[dict[str, Any]] = {}
    """The trained window of steps a run of this algorithm gets when its config leaves ``step_window``,
    ``window_placement`` and ``window_outside`` at None (``TrainConfig.with_window_defaults``); the fields it
    does not name: every step is trained, stochastically."""

    def __init__(self, config: Any, num_contexts: int, map_shape: tuple[int, int]) -> None:
        self.config = config
        self.num_contexts = num_contexts
        self.map_shape = tuple(map_shape)

    # -- required -----------------------------------------------------------

    def advantages(
        self, rewards: torch.Tensor, reward_maps: torch.Tensor, contexts: torch.Tensor
    ) -> torch.Tensor:
        """The epoch's advantages from its (N,) rewards, (N, h, w) reward maps and (N,) contexts (every
        rank's, in the single process's order, on the CPU)."""
        raise NotImplementedError(f"{type(self).__name__} must define advantages()")

    def loss(
        self,
        logp_pixels: torch.Tensor,
        old_logp_pixels: torch.Tensor,
        advantages: torch.Tensor,
        num_channels: int,
        step_weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one minibatch step (module docstring, 5)."""
        raise NotImplementedError(f"{type(self).__name__} must define loss()")

    # -- optional hooks ---------------------------------------------------

    pin: str | None = None
    """How the sampler pins ``pinned_pixels``: 'hold' (their state follows the pretrained model's
    trajectory, ``pxpo_gym.pinning.PinnedPolicy``), 'freeze' (their action is the pretrained model's) or None."""
    pin_band: int = 0
    """The pin's band (``pxpo_gym.pinning.pin_weights``)."""

    def attach(self, trainer: Any) -> None:
        """Called once when the trainer is built (its env, reference and config are ready): measure what
        the algorithm needs from the env."""

    def pinned_pixels(self) -> torch.Tensor | None:
        """(num_contexts, h, w) bool: pixels the sampler pins to the pretrained model this epoch; None."""
        return None

    def before_update(self, trainer: Any, traj: Any, rewards: torch.Tensor) -> dict[str, float]:
        """A look at the epoch (this rank's trajectories, every rank's (N,) rewards) before its advantages;
        returns ``EPOCH_METRICS`` values, and ``skip`` = 1.0 to skip this epoch's update."""
        return {}

    def silent_weights(self, contexts: torch.Tensor) -> torch.Tensor | None:
        """(N, h, w) per-pixel weights of the KL penalty to the pretrained model on silent pixels, for images
        of these contexts (scaled by ``silent_kl_coef``), computed after ``advantages``; None: no penalty."""
        return None

    silent_kl_coef: float = 0.0
    """The coefficient of the penalty on silent pixels (``silent_weights``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass written against the hooks' old names (``braked_pixels``, ``brake_coef``) still gets its
        penalty, with a DeprecationWarning."""
        super().__init_subclass__(**kwargs)
        for old, new in OLD_HOOKS.items():
            if old in cls.__dict__ and new not in cls.__dict__:
                warn_renamed(f"{cls.__qualname__}.{old}", f"{new} (agents.algorithms.base)")
                setattr(cls, new, cls.__dict__[old])

    def train_steps(self, weights: torch.Tensor, epoch: int) -> torch.Tensor:
        """(T,) the loss weight of each denoising step this epoch (0: not trained, not recomputed), from
        the config's (``agents.steps``)."""
        return weights

    def files(self) -> dict[str, str]:
        """Files to write into the run folder when it starts (name -> text), e.g. what the algorithm
        measured in ``attach``."""
        return {}

    def epoch_metrics(self) -> dict[str, float]:
        """``EPOCH_METRICS`` values after the epoch's update."""
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors to checkpoint."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restores ``state_dict``'s tensors."""

    def epoch(self, trainer: Any) -> tuple[dict[str, float], Any]:
        """One epoch: sample, then the policy-gradient update (``Trainer.sample_and_update``). Override for
        an algorithm that samples and trains in one pass."""
        return trainer.sample_and_update()


def nan_metrics(names: tuple[str, ...] = EPOCH_METRICS) -> dict[str, float]:
    return dict.fromkeys(names, math.nan)
