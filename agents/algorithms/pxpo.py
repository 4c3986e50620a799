"""PXPO: pixel-wise policy optimisation (Kordzanganeh et al., arXiv 2404.04356).

DDPO weights a whole step's log-likelihood by one reward. With DDIM's isotropic
Gaussian step the log-likelihood is a sum over elements, and PXPO keeps only
the matching terms: each pixel's reward weights that pixel's log-likelihood,

    grad J = E[ sum_ij r_ij * sum_t grad log p(x_{t-1}^ij | x_t, c) ],

where log p(x^ij) sums the pixel's channels. Our choices, fixed here:

- Reduction (``agents.losses.pxpo_loss``): per step,
  loss = -(1 / (C h w)) * sum_ij A_ij * sum_c log p(x^{c,ij}). With a constant map
  (A_ij = A) this is exactly DDPO-SF's -A * mean-over-elements log p: the "known
  scale" between the two is 1. (The paper's plain sum is C h w times ours; only
  the learning rate absorbs the difference.)
- Advantages: per context and per pixel, (r_ij - mean_ij) / (std + 1e-6) over
  the context's recent reward maps (DDPO's buffer logic: the batch's per-pixel
  statistics until a context has ``stat_min_count`` maps), clipped like DDPO's;
  the std is per pixel, pooled over the map, or per pixel floored at the pooled
  one (``pixel_std``, ``agents.advantages``). A constant map thus gives DDPO's
  scalar advantage at every pixel, whatever ``pixel_std``.
- Credit (``credit``, ``agents.credit``): which reward pixels weight each pixel's
  log-likelihood at each step. 'pixel' is the paper's rule above;
  'footprint' credits pixel kl at step t with the advantages of the pixels its
  noise reaches, weighted by the influence measured on the pretrained model once
  per run (late steps: about the pixel itself; early steps: the whole image, which
  the denoiser spreads each pixel's noise over); 'image' is DDPO's advantage at
  every pixel. 'checked' (the default) is 'pixel' while per-pixel credit agrees with
  the reward on each epoch's own images and 'image' from the first epoch it does not
  (``agents.credit_check``; chosen on the breadth suite's train split, docs/results/credit.md,
  "The credit, chosen on the train split"). 'auto' makes that choice once per run, on noise images, from the
  reward's locality (``agents.credit.reward_locality``): rewards whose pixels interact only
  once the images change pass it and then collapse under per-pixel credit. How well each
  credit agrees with the exact gradient: ``benchmarks.studies.credit_signal``
  (docs/results/credit.md, "Credit that follows the reward").
- Hybrid (``image_advantage_weight`` = lambda > 0): A + lambda * A_image, where A_image
  is DDPO's image-level advantage of the same image (it credits every pixel, scored or
  not, with the image's success).
- Silent pixels: a pixel whose reward never varies over its context's first
  ``stat_min_count`` maps (the pretrained model's samples; ``silent_test``) has
  advantage 0, but the shared weights still move it. ``silent_mode`` says what keeps
  it. The default, 'hold-unscored', splits silent pixels in two. The unscored ones,
  which the reward never looks at (also exactly constant on noise images:
  ``agents.credit.reward_unscored``; a reward that scores part of the image), are
  pinned: they keep the pretrained model's trajectory from the same noise, as
  inpainting keeps the known region (``pxpo_gym.pinning.PinnedPolicy``): exact, at the
  cost of a reference forward pass per step. The other silent pixels (the reward looks
  but did not vary, such as a segmentation net's background) get a per-pixel KL
  penalty to the pretrained model (``silent_kl_coef``), which also restrains the shared
  weights: without it per-pixel credit collapses segmentation. Pinning every silent
  pixel ('hold') or penalising every one ('kl') each fail one task:
  docs/results/unscored.md, "Holding what the reward never looks at".
  ``silent_test='recent'`` re-decides on the recent maps every epoch (it lets converged
  pixels be pulled back, and redrawn background drift: docs/results/silent-pixels.md).
- IS variant: one ratio per pixel, clipped per pixel. Per-pixel log-ratios move
  far more per update than DDPO's mean over all elements, so PXPO's clip range
  is PPO's usual 0.2, not DDPO's 1e-4 (the sweep: docs/results/sample-efficiency.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import torch

from pxpo_gym.files import write_atomic
from pxpo_gym.guidance import guided_output
from pxpo_gym.pinning import MAX_PIN_BAND

from ..advantages import STD_MODES, ContextStats
from ..credit import (
    CREDITS,
    KERNEL_CREDITS,
    LOCAL_SHARE,
    Footprint,
    apply_kernels,
    credit_kernels,
    measure_footprint,
    reward_locality,
    reward_unscored,
)
from ..credit_check import (
    CHECK_PROBES,
    CHECK_SCALES,
    CHECK_THRESHOLD,
    agreement_from_sums,
    reward_dropped,
    scaled_agreement_sums,
)
from ..distributed import all_sum
from ..losses import PolicyGradientConfig, pxpo_loss
from .base import Algorithm

DEFAULT_CREDIT = "checked"
DEFAULT_CREDIT_THRESHOLD = 0.3
DEFAULT_SILENT_KL_COEF = 5.0
SILENT_MODES = ("kl", "freeze", "hold", "hold-unscored")
PIN_OF_MODE = {"freeze": "freeze", "hold": "hold", "hold-unscored": "hold"}
"""How the trainer's sampler pins a silent mode's pinned pixels ('kl' pins none)."""
SILENT_TESTS = ("recent", "first")
DEFAULT_SILENT_TEST = "first"
DEFAULT_SILENT_MODE = "hold-unscored"
SILENT_TOLERANCE = 1e-3
"""A pixel is silent when its reward's std over the context's recent maps is at most this fraction
of the map's pooled std (a reward that scores only part of the image: exactly 0 elsewhere)."""


@dataclass(frozen=True)
class PXPOConfig(PolicyGradientConfig):
    """PXPO's knobs: the shared ones, a per-pixel clip range, and the advantage options."""

    clip_range: float = 0.2
    """PPO clip range on the per-pixel ratio (far larger than DDPO's 1e-4: see the module docstring)."""
    pixel_std: str = "pooled"
    """Std of the per-pixel normalisation: 'pixel', 'pooled' or 'floored' (agents.advantages)."""
    image_advantage_weight: float = 0.0
    """Hybrid advantages: lambda in A^t_kl + lambda * A_image (the credit's advantage plus the image's)."""
    credit: str = DEFAULT_CREDIT
    """Which reward pixels credit each noise pixel (agents.credit): 'pixel', 'image', 'footprint', 'support',
    'receptive', 'checked' ('pixel' while the epoch's agreement check passes, 'image' from the first epoch
    it fails: ``record_agreement``, ``agents.credit_check``) or 'auto' ('pixel' for a pixel-local reward,
    else 'image', decided once on noise images: ``set_locality``). Under 'image' (chosen by 'checked' or
    'auto') the silent-pixel penalty is off."""
    check_scales: tuple[float, ...] = CHECK_SCALES
    """credit='checked': the probe scales of the check (``agents.credit_check.CHECK_SCALES``: 0 is one cell, a
    fraction that share of the cells at once); the agreement is the lowest over them."""
    check_restore: bool = True
    """credit='checked': when the check fails, restore the weights that drew the best epoch so far
    (``agents.credit_check.BestWeights``) before going on with image credit."""
    check_drop: bool = True
    """credit='checked': the check also fails when the epoch's mean reward falls far below the best epoch's
    (``agents.credit_check.reward_dropped``)."""
    credit_images: int = 64
    """Kernel credits ('footprint', 'support', 'receptive'): episodes of the pretrained model measured for
    the footprint (once per run)."""
    credit_threshold: float = DEFAULT_CREDIT_THRESHOLD
    """'footprint': kernel entries below this fraction of the step's largest are dropped; 'support': the
    kernel holds 1 - this of the measured influence."""
    silent_kl_coef: float = DEFAULT_SILENT_KL_COEF
    """Per-pixel KL penalty to the pretrained model on silent pixels (whose reward never varies); 0: none.
    With credit='auto' it applies only where 'auto' chose 'pixel' (under 'image' no pixel lacks credit)."""
    pinned_kl_coef: float = 0.0
    """'hold-unscored': the silent_kl_coef-style per-pixel KL penalty on the pinned (unscored) pixels too, on
    the states the pin visits, so that the weights themselves keep what the reward never scored (the pin
    alone keeps it only in sampling); 0: none."""
    pin_band: int = 0
    """A pin's band: the pinned pixels within this many pixels (chessboard) of the edge ramp from the
    policy's prediction to the pretrained model's in sampling (``pxpo_gym.pinning.pin_weights``), so that the
    pinned part meets the repainted one without a hard seam; 0: the hard pin. Training treats the band as
    pinned (no gradient through it)."""
    silent_mode: str = DEFAULT_SILENT_MODE
    """What keeps silent pixels: 'kl' (the penalty above), 'freeze' (every silent pixel pinned: the policy's
    action there is the pretrained model's own on the current state, a hard per-pixel trust region), 'hold'
    (every silent pixel pinned: its state follows the pretrained model's trajectory from the same noise,
    ``pxpo_gym.pinning.PinnedPolicy``, and the penalty still restrains the shared weights) or
    'hold-unscored' (the unscored pixels, whose reward was exactly constant because the reward never looks
    at them, are pinned as in 'hold'; the other silent pixels get the penalty). The trainer's sampler
    applies the pin ('freeze', 'hold', 'hold-unscored')."""
    silent_test: str = DEFAULT_SILENT_TEST
    """Which maps decide silence: 'recent' (the context's recent maps, every epoch) or 'first' (its first
    stat_min_count maps, decided once and kept for the run)."""

    def check(self) -> None:
        super().check()
        if self.credit not in CREDITS:
            raise ValueError(f"credit must be one of {CREDITS}, got credit={self.credit!r}")
        if not (isinstance(self.credit_images, int) and self.credit_images >= 1):
            raise ValueError(f"credit_images must be an int >= 1, got credit_images={self.credit_images!r}")
        if not 0 <= self.credit_threshold < 1:
            raise ValueError(
                f"credit_threshold must be in [0, 1), got credit_threshold={self.credit_threshold}"
            )
        if not self.check_scales or not all(0 <= s < 1 for s in self.check_scales):
            raise ValueError(
                f"check_scales must be one or more fractions in [0, 1) (0: one cell), got check_scales={self.check_scales!r}"
            )
        if self.silent_mode not in SILENT_MODES:
            raise ValueError(
                f"silent_mode must be one of {SILENT_MODES}, got silent_mode={self.silent_mode!r}"
            )
        if self.silent_test not in SILENT_TESTS:
            raise ValueError(
                f"silent_test must be one of {SILENT_TESTS}, got silent_test={self.silent_test!r}"
            )
        if not self.silent_kl_coef >= 0:
            raise ValueError(f"silent_kl_coef must be >= 0, got silent_kl_coef={self.silent_kl_coef}")
        if not self.pinned_kl_coef >= 0:
            raise ValueError(f"pinned_kl_coef must be >= 0, got pinned_kl_coef={self.pinned_kl_coef}")
        if self.pinned_kl_coef and (self.silent_mode != "hold-unscored" or not self.silent_kl_coef):
            raise ValueError(
                f"pinned_kl_coef={self.pinned_kl_coef} distils the pixels 'hold-unscored' pins, beside the "
                f"silent_kl_coef penalty; got silent_mode={self.silent_mode!r}, silent_kl_coef={self.silent_kl_coef}"
            )
        if not (isinstance(self.pin_band, int) and 0 <= self.pin_band <= MAX_PIN_BAND):
            raise ValueError(
                f"pin_band must be an integer in [0, {MAX_PIN_BAND}], got pin_band={self.pin_band!r}"
            )
        if self.pin_band and self.silent_mode not in PIN_OF_MODE:
            raise ValueError(
                f"pin_band={self.pin_band} softens a pin's edge; silent_mode={self.silent_mode!r} pins nothing "
                f"(one of {tuple(PIN_OF_MODE)} does)"
            )
        if self.pixel_std not in STD_MODES:
            raise ValueError(f"pixel_std must be one of {STD_MODES}, got pixel_std={self.pixel_std!r}")
        if not self.image_advantage_weight >= 0:
            raise ValueError(
                f"image_advantage_weight must be >= 0, got image_advantage_weight={self.image_advantage_weight}"
            )


FOOTPRINT_FILE = "footprint.json"
"""Kernel credits: the measured footprint's summary and cost (``agents.credit.Footprint.summary``)."""
CREDIT_FILE = "credit.json"
"""credit='auto': the reward's measured locality and the credit it chose."""


class PXPO(Algorithm):
    """PXPO's advantages (one per pixel) and loss.

    Args:
        config: ``PXPOConfig``.
        num_contexts: number of context ids for the per-context statistics.
        map_shape: (h, w) of the sample grid the reward maps are pooled to.
    """

    name = "pxpo"
    config_class = PXPOConfig
    default_window = {"step_window": 2, "window_placement": "random", "window_outside": "deterministic"}
    """Chosen on the breadth suite's train split (issue 35; docs/results/steps.md, "Fewer passes"): of the windows
    measured it needed the fewest passes to 90% of its own held-out gain on the pixel-local and partial train
    tasks (2.2-3.1x fewer than every step), at a final held-out reward within one std of every step's."""

    def __init__(self, config: PXPOConfig, num_contexts: int, map_shape: tuple[int, int]) -> None:
        super().__init__(config, num_contexts, map_shape)
        self.pin = PIN_OF_MODE.get(config.silent_mode)
        self.pin_band = config.pin_band
        self.silent_fraction = math.nan
        """The share of the last epoch's images' pixels that were silent."""
        buffer, min_count = config.stat_buffer_size, config.stat_min_count
        self.stats = ContextStats(num_contexts, buffer, min_count, tuple(map_shape), config.pixel_std)
        self.image_stats = ContextStats(num_contexts, buffer, min_count)
        self.influence: torch.Tensor | None = None
        """(T, 2h - 1, 2w - 1) the measured footprint (``agents.credit``), for kernel credits."""
        self.kernels: torch.Tensor | None = None
        """(T, 2h - 1, 2w - 1) the credit's per-step kernels, set from the footprint."""
        self.first_silent = torch.zeros(num_contexts, *map_shape, dtype=torch.bool)
        """silent_test='first': each context's silent pixels, decided from its first stat_min_count maps."""
        self.silence_decided = torch.zeros(num_contexts, dtype=torch.bool)
        """silent_test='first': which contexts have had their silent pixels decided."""
        self.unscored: torch.Tensor | None = None
        """(num_contexts, h, w) bool: pixels whose reward was the same for random images of the context
        (``agents.credit.reward_unscored``), set by the trainer in 'hold-unscored' mode; the silent ones among
        them are the unscored pixels (``unscored_contexts``)."""
        self.locality: float | None = None
        """credit='auto': the reward's measured locality (``agents.credit.reward_locality``)."""
        self.switch_epoch: int | None = None
        """credit='checked': the epoch (counted from 0) whose agreement check failed, from which on the credit
        is 'image'; None while per-pixel credit holds."""

    @property
    def credit(self) -> str:
        """The credit in use: the config's, or what 'auto' chose from the reward's locality.

        Raises:
            RuntimeError: credit='auto' before ``set_locality``.
        """
        if self.config.credit == "checked":
            return "pixel" if self.switch_epoch is None else "image"
        if self.config.credit != "auto":
            return self.config.credit
        if self.locality is None:
            raise RuntimeError("credit='auto' needs the reward's locality: call set_locality() first")
        return "pixel" if self.locality >= LOCAL_SHARE else "image"

    @property
    def needs_locality(self) -> bool:
        """True while credit='auto' has not been told the reward's locality (``set_locality``)."""
        return self.config.credit == "auto" and self.locality is None

    def set_locality(self, locality: float) -> None:
        """credit='auto': sets the reward's locality (``agents.credit.reward_locality``), which picks the credit."""
        if not 0 <= locality <= 1:
            raise ValueError(f"locality must be in [0, 1], got locality={locality!r}")
        self.locality = float(locality)

    @property
    def needs_check(self) -> bool:
        """True while credit='checked' still trains with per-pixel credit: the trainer measures the epoch's
        agreement (``agents.credit_check.credit_agreement``) and hands it to ``record_agreement``."""
        return self.config.credit == "checked" and self.switch_epoch is None

    def record_agreement(self, agreement: float, epoch: int, dropped: bool = False) -> None:
        """credit='checked': the agreement measured on epoch ``epoch``'s images; below CHECK_THRESHOLD, or when
        the epoch's reward ``dropped`` (``agents.credit_check.reward_dropped``), the credit becomes 'image'
        from this epoch on, for the rest of the run.

        Raises:
            ValueError: agreement is not a number in [-1, 1].
        """
        if not -1 <= agreement <= 1:
            raise ValueError(f"agreement must be in [-1, 1], got agreement={agreement!r}")
        if self.needs_check and (agreement < CHECK_THRESHOLD or dropped):
            self.switch_epoch = int(epoch)

    @property
    def needs_footprint(self) -> bool:
        """True until a kernel credit has its measured footprint (``set_footprint``)."""
        return self.config.credit in KERNEL_CREDITS and self.kernels is None

    def set_footprint(self, footprint: Footprint | torch.Tensor) -> None:
        """Builds the credit's kernels from a measured footprint (or its influence tensor)."""
        influence = footprint.influence if isinstance(footprint, Footprint) else footprint
        self.kernels = credit_kernels(influence, self.config.credit, self.config.credit_threshold)
        self.influence = influence.clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The per-pixel and the image-level advantage statistics (and the footprint), for checkpoints."""
        state = self.stats.state_dict()
        state.update({f"image_{k}": v for k, v in self.image_stats.state_dict().items()})
        if self.influence is not None:
            state["credit_influence"] = self.influence.clone()
        if self.config.silent_test == "first":
            state.update(first_silent=self.first_silent.clone(), silence_decided=self.silence_decided.clone())
        if self.unscored is not None:
            state["unscored"] = self.unscored.clone()
        if self.locality is not None:
            state["locality"] = torch.tensor(self.locality, dtype=torch.float64)
        if self.switch_epoch is not None:
            state["credit_switch_epoch"] = torch.tensor(self.switch_epoch, dtype=torch.int64)
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats.load_state_dict({k: state[k] for k in ("buffer", "count")})
        self.image_stats.load_state_dict({k: state[f"image_{k}"] for k in ("buffer", "count")})
        if "credit_influence" in state and self.config.credit in KERNEL_CREDITS:
            self.set_footprint(state["credit_influence"])
        if self.config.silent_test == "first":
            self.first_silent = state["first_silent"].clone()
            self.silence_decided = state["silence_decided"].clone()
        for key in ("unscored", "insensitive"):  # a checkpoint from before the rename has 'insensitive'
            if key in state:
                self.unscored = state[key].clone()
                break
        if "locality" in state:
            self.set_locality(float(state["locality"]))
        if "credit_switch_epoch" in state:
            self.switch_epoch = int(state["credit_switch_epoch"])

    def silent_contexts(self) -> torch.Tensor:
        """(num_contexts, h, w) bool: each context's silent pixels (module docstring); with
        silent_test='first', those decided from its first maps (none until it has stat_min_count)."""
        if self.config.silent_test == "recent":
            return self.stats.silent(SILENT_TOLERANCE)
        return self.first_silent & self.silence_decided[:, None, None]

    def set_unscored(self, unscored: torch.Tensor) -> None:
        """Sets the pixels whose reward does not change with the image (``agents.credit.reward_unscored``)."""
        if unscored.shape != self.first_silent.shape:
            raise ValueError(
                f"unscored must have shape {tuple(self.first_silent.shape)}, got {tuple(unscored.shape)}"
            )
        self.unscored = unscored.bool().cpu().clone()

    def unscored_contexts(self) -> torch.Tensor:
        """(num_contexts, h, w) bool: the silent pixels (``silent_contexts``) whose reward was also the same
        for random images (``set_unscored``): the reward never looks at them. None are unscored before
        ``set_unscored``."""
        if self.unscored is None:
            return torch.zeros_like(self.first_silent)
        return self.silent_contexts() & self.unscored

    def pinned_pixels(self) -> torch.Tensor | None:
        """(num_contexts, h, w) bool: the pixels the sampler pins to the pretrained model this epoch (from
        the statistics so far, so a resumed run gets the same): the silent ones in the 'freeze' and 'hold'
        modes, the unscored ones in 'hold-unscored'; None in 'kl' mode or while none qualifies."""
        mode = self.config.silent_mode
        if mode == "kl":
            return None
        pinned = self.unscored_contexts() if mode == "hold-unscored" else self.silent_contexts()
        return pinned if bool(pinned.any()) else None

    def silent_weights(self, contexts: torch.Tensor) -> torch.Tensor | None:
        """(N, h, w) per-pixel weights of the KL penalty on silent pixels, for images with these contexts: 1
        at the silent ones (``silent_mask``) in the 'kl' and 'hold' modes, less the unscored ones in
        'hold-unscored' (there ``pinned_kl_coef / silent_kl_coef`` with ``pinned_kl_coef``); None without a
        coefficient, in 'freeze' mode, or when none qualifies. (Where the state is pinned, the penalty only
        keeps the shared weights from drifting. Pixels found unscored in this epoch's statistics are neither
        under the penalty in its update nor pinned in its sampling: the pin starts with the next epoch's
        sampling.)"""
        config = self.config
        if config.silent_mode == "freeze" or not config.silent_kl_coef:
            return None
        silent = self.silent_mask(contexts)
        unscored = None
        if config.silent_mode == "hold-unscored":
            unscored = self.unscored_contexts()[contexts.cpu()].to(silent.device)
            silent = silent * ~unscored
        if (
            config.credit in ("auto", "checked") and self.credit == "image"
        ):  # every pixel has the image's credit
            silent = torch.zeros_like(silent)
        if (
            config.pinned_kl_coef and unscored is not None
        ):  # distil the pinned pixels (weights as silent_kl_coef's)
            silent = silent + unscored.float() * (config.pinned_kl_coef / config.silent_kl_coef)
        return silent if bool(silent.any()) else None

    def _decide_silence(self) -> None:
        """silent_test='first': fixes the silent pixels of each context that just reached stat_min_count."""
        # at least 2 maps: a pixel's spread over one map says nothing (it would be decided never silent)
        ready = (self.stats.count >= max(self.config.stat_min_count, 2)) & ~self.silence_decided
        if bool(ready.any()):
            self.first_silent[ready] = self.stats.silent(SILENT_TOLERANCE)[ready]
            self.silence_decided |= ready

    def silent_mask(self, contexts: torch.Tensor) -> torch.Tensor:
        """(N, h, w) float: 1 where the image's context has a silent pixel (module docstring), else 0."""
        return self.silent_contexts()[contexts.cpu()].float()

    def advantages(
        self, rewards: torch.Tensor, reward_maps: torch.Tensor, contexts: torch.Tensor
    ) -> torch.Tensor:
        """Advantage maps: per-pixel normalised maps through the credit (+ lambda x image advantages), clipped.

        Args:
            rewards: (N,) aggregated rewards (the image credit's and the hybrid's term).
            reward_maps: (N, h, w) reward maps on the sample grid.
            contexts: (N,) int64 context ids.

        Returns:
            (N, h, w) for the 'pixel' and 'image' credits (the same map at every step), or
            (N, T, h, w) for kernel credits (one map per denoising step).

        Raises:
            RuntimeError: a kernel credit before ``set_footprint``, or credit='auto' before ``set_locality``.
        """
        adv = self.stats.update(contexts, reward_maps)
        if self.config.silent_test == "first":
            self._decide_silence()
        image_adv = self.image_stats.update(contexts, rewards)  # kept in step whatever the credit
        credit = self.credit
        if credit == "image":
            adv = image_adv[:, None, None].expand_as(adv)  # DDPO's advantage at every pixel
        elif credit in KERNEL_CREDITS:
            if self.kernels is None:
                raise RuntimeError(f"credit={credit!r} needs its footprint: call set_footprint() first")
            adv = apply_kernels(adv, self.kernels)  # (N, T, h, w)
        if self.config.image_advantage_weight:
            image = image_adv.view(-1, *([1] * (adv.dim() - 1)))
            adv = adv + self.config.image_advantage_weight * image
        self.silent_fraction = float(self.silent_mask(contexts).mean())
        return adv.clamp(-self.config.adv_clip_max, self.config.adv_clip_max)

    def loss(
        self,
        logp_pixels: torch.Tensor,
        old_logp_pixels: torch.Tensor,
        advantages: torch.Tensor,
        num_channels: int,
        step_weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss from per-pixel log-likelihoods (B, h, w), advantage maps (B, h, w) and
        optional per-sample step weights (B,)."""
        return pxpo_loss(
            logp_pixels,
            old_logp_pixels,
            advantages,
            num_channels,
            self.config.estimator,
            self.config.clip_range,
            step_weight,
        )

    # -- the trainer's hooks (agents.algorithms.base) ---------------------------

    @property
    def silent_kl_coef(self) -> float:  # type: ignore[override]
        return self.config.silent_kl_coef

    def attach(self, trainer: Any) -> None:
        """Measures what the config needs from the env: the unscored pixels ('hold-unscored') and the reward's
        locality (credit='auto')."""
        core = trainer.envs.unwrapped
        if self.config.silent_mode == "hold-unscored":
            self.set_unscored(reward_unscored(core, seed=trainer.config.run.seed))
        if self.needs_locality:
            self.set_locality(reward_locality(core, seed=trainer.config.run.seed))

    def files(self) -> dict[str, str]:
        if self.locality is None:
            return {}
        chosen = {"credit": self.config.credit, "locality": self.locality, "chosen": self.credit}
        return {CREDIT_FILE: json.dumps(chosen, indent=1) + "\n"}

    def before_update(self, trainer: Any, traj: Any, rewards: torch.Tensor) -> dict[str, float]:
        """credit='checked': per-pixel credit's agreement with the reward on this epoch's images
        (``agents.credit_check``; every rank probes its own images, the sums are added), recorded before the
        advantages. While the check passes, the weights that drew the best epoch are kept (``trainer.best``);
        when it fails they are restored and the update skipped. Kernel credits: the footprint, measured at
        the first epoch."""
        out = {"credit_pixel": float(self.credit == "pixel")}
        if self.needs_footprint:
            self.measure_footprint(trainer)
        if not self.needs_check:
            return out
        config = self.config
        reward_mean = float(rewards.mean())
        reward_se = float(rewards.std()) / math.sqrt(len(rewards)) if len(rewards) > 1 else 0.0
        # One generator per (run seed, epoch, rank): the same cells on resume, other cells on each rank.
        generator = torch.Generator().manual_seed(
            (trainer.config.run.seed * 1_000_003 + trainer.epoch) * 1_009 + trainer.world.rank
        )
        core = trainer.envs.unwrapped
        sums = scaled_agreement_sums(
            core, traj.images, traj.contexts, CHECK_PROBES, generator, config.check_scales
        )
        agreement = agreement_from_sums(all_sum(sums.to(trainer.device), trainer.world).cpu())
        dropped = math.nan
        if config.check_drop:
            dropped = float(reward_dropped(trainer.best.reward, trainer.best.first, reward_mean, reward_se))
        self.record_agreement(agreement, trainer.epoch, dropped=dropped == 1.0)
        out.update(
            credit_agreement=agreement, credit_dropped=dropped, credit_pixel=float(self.credit == "pixel")
        )
        if self.credit == "pixel":
            trainer.best.offer(trainer, reward_mean, trainer.epoch, keep_weights=config.check_restore)
            return out
        restored = trainer.best.restore(trainer) if config.check_restore else None
        if restored is not None:  # this epoch's images came from the weights just put aside: no update
            out.update(credit_restored=float(restored), skip=1.0)
        return out

    def measure_footprint(self, trainer: Any) -> Footprint:
        """Kernel credits: measures the reward's footprint on the frozen pretrained model (once per run;
        ``agents.credit``) and writes RUN/footprint.json (rank 0)."""
        cfg = trainer.config
        envs = trainer.make_envs(min(32, self.config.credit_images))

        def reference(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            output = guided_output(
                trainer.reference, x, t, c, cfg.sampling.guidance_scale, trainer.null_context
            )
            trainer.passes.add(trainer.forwards(x), backward=output.requires_grad)  # the run's cost too
            return output

        footprint = measure_footprint(  # autograd probes differentiate through the frozen model: no no_grad
            envs,
            reference,
            self.config.credit_images,
            seed=cfg.run.seed,
            progress=cfg.run.progress and trainer.world.main,
        )
        envs.close()
        self.set_footprint(footprint)
        trainer.footprint = footprint
        if trainer.world.main:
            summary = {"credit": self.config.credit, **footprint.summary()}
            write_atomic(cfg.run_dir / FOOTPRINT_FILE, json.dumps(summary, indent=1) + "\n")
        return footprint

    def epoch_metrics(self) -> dict[str, float]:
        return {"silent_fraction": self.silent_fraction}
