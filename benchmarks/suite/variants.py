"""The suite's named arm variants, as data: one table of TrainConfig overrides per algorithm.

An arm of a grid (``benchmarks.suite.grid.SuiteConfig.arms``) is an algorithm plus the fields it sets; a
name below is what a preset or ``--pxpo-variants`` / ``--option-variants`` / ``--ddpo-option-variants``
picks. The names and values are the ones the committed runs were made with (a name joins the run's
label when a grid compares several), so they never change meaning: a new setting gets a new name.

- ``PXPO_VARIANTS``: PXPO's own settings (credit, advantage normalisation, silent pixels, the pin);
- ``OPTION_VARIANTS``: the training options that DDPO and PXPO share (the same name means the same
  overrides for both; DDPO's arms use ``ddpo_option_variants`` when they differ from PXPO's);
- the exact-gradient oracle and the plug-ins (``benchmarks.suite.peers``) have no named variants.
"""

from __future__ import annotations

PXPO_VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "auto": {"credit": "auto"},  # the default before 'checked': decided once, on noise images
    # The first form of 'checked' tried on the breadth suite's train split: one-cell probes, no restore.
    "checked-cell": {
        "credit": "checked",
        "credit_check_scales": (0.0,),
        "credit_check_restore": False,
        "credit_check_drop": False,
    },
    # The pinned (unscored) pixels distilled into the weights at this KL weight (agents.algorithms.pxpo pinned_kl_coef):
    "distill0.25": {"pinned_kl_coef": 0.25},
    "distill1": {"pinned_kl_coef": 1.0},
    "distill5": {"pinned_kl_coef": 5.0},
    "distill20": {"pinned_kl_coef": 20.0},
    "distill50": {"pinned_kl_coef": 50.0},
    # The pin's edge ramped over this many pixels (pxpo_gym.pinning.pin_weights):
    "band0": {"pin_band": 0},
    "band1": {"pin_band": 1},
    "band2": {"pin_band": 2},
    "band3": {"pin_band": 3},
    "band4": {"pin_band": 4},
    "pixel-std": {"credit": "pixel", "pixel_std": "pixel", "image_advantage_weight": 0.0},
    "pooled-std": {"credit": "pixel", "pixel_std": "pooled", "image_advantage_weight": 0.0},
    "floored-std": {"credit": "pixel", "pixel_std": "floored", "image_advantage_weight": 0.0},
    "hybrid": {"credit": "pixel", "pixel_std": "pooled", "image_advantage_weight": 1.0},
    "hybrid-pixel-std": {"credit": "pixel", "pixel_std": "pixel", "image_advantage_weight": 1.0},
    # Credits (agents.credit), each with and without the penalty on silent pixels:
    "pixel": {"credit": "pixel", "image_advantage_weight": 0.0, "silent_kl_coef": 0.0},
    "image": {"credit": "image", "image_advantage_weight": 0.0, "silent_kl_coef": 0.0},
    "footprint": {"credit": "footprint", "image_advantage_weight": 0.0, "silent_kl_coef": 0.0},
    "support": {"credit": "support", "image_advantage_weight": 0.0, "silent_kl_coef": 0.0},
    "hybrid-nosilent": {"credit": "pixel", "image_advantage_weight": 1.0, "silent_kl_coef": 0.0},
    "pixel-silent": {"credit": "pixel", "image_advantage_weight": 0.0},
    "footprint-silent": {"credit": "footprint", "image_advantage_weight": 0.0},
    "receptive-silent": {"credit": "receptive", "image_advantage_weight": 0.0},
    "receptive": {"credit": "receptive", "image_advantage_weight": 0.0, "silent_kl_coef": 0.0},
    "pixel-silent1": {"credit": "pixel", "image_advantage_weight": 0.0, "silent_kl_coef": 1.0},
    "pixel-freeze": {"credit": "pixel", "image_advantage_weight": 0.0, "silent_mode": "freeze"},
    # Silent modes (agents.algorithms.pxpo): 'kl' (the default before 'hold-unscored'), and 'hold' (every silent
    # pixel pinned) with the penalty at 0 / 1 / 3 / 10; the penalty on silent pixels the reward looks at:
    "pixel-kl": {"credit": "pixel", "image_advantage_weight": 0.0, "silent_mode": "kl"},
    "hold0": {"credit": "pixel", "image_advantage_weight": 0.0, "silent_mode": "hold", "silent_kl_coef": 0.0},
    "hold1": {"credit": "pixel", "image_advantage_weight": 0.0, "silent_mode": "hold", "silent_kl_coef": 1.0},
    "hold3": {"credit": "pixel", "image_advantage_weight": 0.0, "silent_mode": "hold", "silent_kl_coef": 3.0},
    "hold10": {
        "credit": "pixel",
        "image_advantage_weight": 0.0,
        "silent_mode": "hold",
        "silent_kl_coef": 10.0,
    },
    "silent3": {"credit": "pixel", "image_advantage_weight": 0.0, "silent_kl_coef": 3.0},
    "silent1": {"credit": "pixel", "image_advantage_weight": 0.0, "silent_kl_coef": 1.0},
    "pixel-first": {"credit": "pixel", "image_advantage_weight": 0.0, "silent_test": "first"},
    "pixel-recent": {"credit": "pixel", "image_advantage_weight": 0.0, "silent_test": "recent"},
    "footprint-first": {"credit": "footprint", "image_advantage_weight": 0.0, "silent_test": "first"},
    # Segmentation's cross terms at the lighter penalty (pixel + penalty 3 peaked at 0.23, then fell):
    "receptive3": {"credit": "receptive", "image_advantage_weight": 0.0, "silent_kl_coef": 3.0},
    "hybrid3": {"credit": "pixel", "image_advantage_weight": 1.0, "silent_kl_coef": 3.0},
    "silent5": {"credit": "pixel", "image_advantage_weight": 0.0, "silent_kl_coef": 5.0},
    # The arms run at the penalty's earlier default of 10, pinned so that they reproduce at any default:
    "hybrid10": {"credit": "pixel", "image_advantage_weight": 1.0, "silent_kl_coef": 10.0},
    "receptive10": {"credit": "receptive", "image_advantage_weight": 0.0, "silent_kl_coef": 10.0},
    # DDPO's credit, or more of it, under PXPO's loss and the penalty of 5 on silent pixels:
    "image5": {"credit": "image", "image_advantage_weight": 0.0, "silent_kl_coef": 5.0},
    "hybrid-w3": {"credit": "pixel", "image_advantage_weight": 3.0, "silent_kl_coef": 5.0},
}
"""Named PXPO advantage settings a suite can compare ('default': TrainConfig's defaults; '-silent' keeps
the default penalty on silent pixels, the bare credit names turn it off)."""

OPTION_VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "kl1": {"kl_coef": 1.0},
    "kl10": {"kl_coef": 10.0},
    "kl100": {"kl_coef": 100.0},
    "group": {"group_size": 8},
    # issue 35: fewer passes per image (agents.steps.train_window)
    "every-step": {"step_window": 0},
    "window4": {"step_window": 4, "window_placement": "sliding", "window_outside": "stochastic"},
    "window4-det": {"step_window": 4, "window_placement": "sliding", "window_outside": "deterministic"},
    "window2-random-det": {"step_window": 2, "window_placement": "random", "window_outside": "deterministic"},
    "window2-random-det-split": {
        "step_window": 2,
        "window_placement": "random",
        "window_outside": "deterministic",
        "sample_batch_size": 16,
        "sample_batches_per_epoch": 2,
    },
    "window2-random-det-reuse": {
        "step_window": 2,
        "window_placement": "random",
        "window_outside": "deterministic",
        "sample_batch_size": 16,
        "sample_batches_per_epoch": 2,
        "reuse_sampling_pass": True,
    },
}
"""Named training options (issue 12) a suite can compare for DDPO and PXPO alike: a KL penalty to the
pretrained model (coefficients from a calibration, 6 epochs of PXPO on colour at lr 1e-4: the gradient norm
before clipping is 0.055-0.085 at coefficient 1, 0.24-0.61 at 10 and 2.3-5.2 at 100, where the penalty dominates the
clipped step), or GRPO-style group advantages (8 images of each of the default model's 4 classes per
32-image epoch) in place of the running per-context buffer ('default'); and (issue 35) a window of trained
steps: none ('every-step': the default before; PXPO's default is now 'window2-random-det'), 4 sliding
('window4'), with the steps outside it sampled without noise ('-det'), or Flow-GRPO-Fast's 2 steps drawn in
the first half ('window2-random-det'); '-reuse' takes the first minibatch's gradient from the sampling pass,
which needs the epoch's 32 images sampled as 2 batches of 16 ('-split': the same without it, its control)."""
