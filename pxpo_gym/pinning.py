"""PXPO's pin: pixels pinned to the pretrained model's trajectory while sampling (part of the sampler).

A run whose reward never scores some pixels may pin them to what the pretrained
model draws from the same noise (``agents.algorithms.pxpo``, ``silent_mode``), optionally with
a band at the edge that ramps from the policy's prediction to the pretrained model's
(``pin_weights``). The export writes the pin beside the weights
(``pinned_pixels.safetensors``); the env (``gym.make(model=RUN/model)``),
``agents.evaluate`` and ``agents.pipeline.TrainedPipeline`` apply it against the
model the run was fine-tuned from, so an export samples as training did.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from pxpo_gym.deprecation import moved_names, renamed_keywords, warn_renamed

PINNED_PIXELS = "pinned_pixels.safetensors"
"""A pinned run's pinned pixels in its export: tensors 'pinned' (num_contexts, h, w) uint8 and 'band' (the
pin's band, ``pin_weights``; a scalar integer), metadata 'mode'."""
OLD_PIN_FILE = "held_pixels.safetensors"
"""The pin's file name (tensor 'held' for 'pinned') in exports written before ``PINNED_PIXELS``: read, never
written."""
PIN_MODES = ("hold", "freeze")
MAX_PIN_BAND = 64
"""The widest pin band a run or an export may name."""


def read_pinned_pixels(
    folder: str | Path, num_contexts: int, grid: tuple[int, int]
) -> tuple[str, torch.Tensor] | None:
    """An export's pinned pixels: (mode, (num_contexts, h, w) bool, or float weights when the run pinned
    with a band, ``pin_weights``), or None when it has none. Reads ``PINNED_PIXELS``, or an older export's
    ``OLD_PIN_FILE``.

    A folder holding both files is read from ``PINNED_PIXELS``, with a warning when the old one holds the
    same pin.

    Raises:
        ValueError: the file is not a valid safetensors file, or its mode or shape do not fit the model;
            the folder holds both files and they disagree.
    """
    new, old = Path(folder) / PINNED_PIXELS, Path(folder) / OLD_PIN_FILE
    found = [path for path in (new, old) if path.is_file()]
    if not found:
        return None
    mode, pinned, band = _read_pin_file(found[0], num_contexts, grid)
    if len(found) == 2:
        old_mode, old_pinned, old_band = _read_pin_file(old, num_contexts, grid)
        if (old_mode, old_band) != (mode, band) or not torch.equal(old_pinned, pinned):
            raise ValueError(
                f"{str(folder)!r} holds both {PINNED_PIXELS} and the old {OLD_PIN_FILE}, and they disagree "
                f"(mode {mode!r} band {band} vs mode {old_mode!r} band {old_band}, or the pinned pixels): "
                f"delete the one that is not the run's"
            )
        warnings.warn(
            f"{str(folder)!r} holds both {PINNED_PIXELS} and the old {OLD_PIN_FILE} (the same pin): "
            f"reading {PINNED_PIXELS}; delete {OLD_PIN_FILE}",
            UserWarning,
            stacklevel=2,
        )
    if band:
        return mode, pin_weights(pinned, band)
    return mode, pinned


def _read_pin_file(path: Path, num_contexts: int, grid: tuple[int, int]) -> tuple[str, torch.Tensor, int]:
    """One pin file, checked: (mode, (num_contexts, h, w) bool, band)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
            pinned = handle.get_tensor("pinned" if path.name == PINNED_PIXELS else "held")
            band_tensor = handle.get_tensor("band") if "band" in handle.keys() else None
    except (SafetensorError, OSError, KeyError) as err:
        raise ValueError(f"{str(path)!r} is not a valid pinned-pixels file: {err}") from err
    mode = meta.get("mode")
    if mode not in PIN_MODES:
        raise ValueError(f"{str(path)!r}: mode must be one of {PIN_MODES}, got mode={mode!r}")
    band: object = 0  # exports from before bands have none
    if band_tensor is not None:
        ok = (
            band_tensor.numel() == 1
            and not band_tensor.dtype.is_floating_point
            and band_tensor.dtype != torch.bool
        )
        band = int(band_tensor) if ok else band_tensor.tolist()
    if not (isinstance(band, int) and 0 <= band <= MAX_PIN_BAND):
        raise ValueError(f"{str(path)!r}: band must be an integer in [0, {MAX_PIN_BAND}], got band={band!r}")
    if tuple(pinned.shape) != (num_contexts, *grid):
        raise ValueError(
            f"{str(path)!r}: pinned has shape {tuple(pinned.shape)}, the model needs ({num_contexts}, {grid[0]}, {grid[1]})"
        )
    return mode, pinned.bool(), band


class PinnedPolicy:
    """A policy whose pinned pixels follow the pretrained model's trajectory from the same noise (PXPO's
    ``silent_mode='hold'``: an inpainting-style constraint on the state, not on the weights).

    Beside the episode it tracks the reference trajectory x^ref_t that the pretrained model would have
    visited from the same x_T and the same step noise. At a pinned pixel the action is the pretrained
    model's output (its noise prediction, or velocity) on x^ref_t, so the step lands where the
    reference's does; elsewhere it is the policy's. The env's step is x_{t-1} = a x_t + b u + s z
    (u the action, ``pxpo_gym.transition``), so from the step actually taken the reference's next state
    is x^ref_{t-1} = x_{t-1} + a (x^ref_t - x_t) + b (u^ref - u) (no division by s: exact for
    deterministic samplers too). At pinned pixels both differences are 0, so the pinned
    pixels of every state, x_0 included, are the pretrained model's exactly. Use one instance per
    episode batch (``pxpo_gym.sampling.rollout`` calls its ``on_step``).

    A float ``pinned`` (``pin_weights``: a band at the pin's edge) blends the two predictions,
    w u^ref + (1 - w) u: w = 1 is pinned exactly, 0 is the policy's alone, and in between the
    pixel's state moves between the two trajectories, so a pinned part meets a repainted one through a
    ramp instead of a hard edge.

    Args:
        policy: ``policy(sample, timestep, context) -> action`` (the trained model).
        reference: the same signature, the frozen pretrained model (no gradients needed).
        pinned: (num_contexts, h, w) bool, or float weights in [0, 1], each context's pinned pixels on the
            sample grid.
    """

    @renamed_keywords(held="pinned")
    def __init__(self, policy: Callable, reference: Callable, pinned: torch.Tensor) -> None:
        self.policy = policy
        self.reference = reference
        self.pinned = pinned
        self.reference_sample: torch.Tensor | None = None
        self.reference_action: torch.Tensor | None = None
        """The reference's action at the current step, on its own trajectory."""

    @property
    def reference_eps(self) -> torch.Tensor | None:
        """The old name of ``reference_action`` (deprecated)."""
        warn_renamed("PinnedPolicy.reference_eps", "PinnedPolicy.reference_action")
        return self.reference_action

    @property
    def held(self) -> torch.Tensor:
        """The old name of ``pinned`` (deprecated)."""
        warn_renamed("PinnedPolicy.held", "PinnedPolicy.pinned")
        return self.pinned

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        if self.reference_sample is None:  # the episode's first step: both start from x_T
            self.reference_sample = sample.clone()
        self.reference_action = self.reference(self.reference_sample, timestep, context).float()
        action = self.policy(sample, timestep, context).float()
        return blend(action, self.reference_action, self.pinned[context.reshape(-1)])

    def on_step(self, obs: dict, action: torch.Tensor, next_obs: dict, info: dict) -> None:
        # Written out rather than as next + transition_mean(dx, du): (next + a dx) + b du rounds differently
        # from next + (a dx + b du), and the reference trajectory (so every pinned export's samples) would
        # move by an ulp. The step itself lives in pxpo_gym.transition.
        shape = (-1, *([1] * (action.dim() - 1)))
        a, b = info["coef_sample"].reshape(shape), info["coef_model_output"].reshape(shape)
        self.reference_sample = (
            next_obs["sample"]
            + a * (self.reference_sample - obs["sample"])
            + b * (self.reference_action - action.float())
        )


@renamed_keywords(eps="action", reference_eps="reference_action", held="pinned")
def blend(action: torch.Tensor, reference_action: torch.Tensor, pinned: torch.Tensor) -> torch.Tensor:
    """The action with the pinned pixels' weight on the reference's: (B, C, h, w) from pinned (B, h, w),
    bool (the reference's where True) or float in [0, 1] (w reference + (1 - w) action; exact at 0 and 1)."""
    weight = pinned.to(action.device)[:, None]  # (B, 1, h, w)
    if weight.dtype == torch.bool:
        return torch.where(weight, reference_action, action)
    return torch.lerp(action, reference_action, weight.to(action.dtype))


@renamed_keywords(held="pinned")
def pin_weights(pinned: torch.Tensor, band: int) -> torch.Tensor:
    """PXPO's pin with a band at its edge: (num_contexts, h, w) bool -> float weights in [0, 1].

    A pinned pixel at chessboard distance d from the nearest free pixel weighs min(1, d / (band + 1)): the
    ``band`` pinned pixels nearest the edge ramp from the policy's prediction to the reference's, the rest
    are pinned exactly; free pixels weigh 0. band 0 is the hard pin. The image border is not an edge.
    """
    if not 0 <= band <= MAX_PIN_BAND:
        raise ValueError(f"band must be in [0, {MAX_PIN_BAND}], got band={band}")
    weight = pinned.float()
    if band == 0 or not bool(pinned.any()):
        return weight
    reached = (~pinned).float()[:, None]  # (C, 1, h, w): pixels within distance d of a free pixel
    for d in range(1, band + 1):
        reached = F.max_pool2d(reached, kernel_size=3, stride=1, padding=1)  # the border pads with -inf
        ring = pinned & (reached[:, 0] > 0) & (weight == 1)
        weight = torch.where(ring, torch.full_like(weight, d / (band + 1)), weight)
    return weight


@renamed_keywords(held="pinned")
def pinned_policy(mode: str, policy: Callable, reference: Callable, pinned: torch.Tensor) -> Callable:
    """A policy whose pinned pixels (PXPO's) follow the pretrained model, for one batch of episodes.

    Args:
        mode: 'hold' (``PinnedPolicy``: the pinned pixels' state follows the reference's trajectory) or
            'freeze' (the action there is the reference's on the current state).
        policy, reference: ``(sample, timestep, context) -> action``.
        pinned: (num_contexts, h, w) bool, or float weights (``pin_weights``).
    """
    if mode == "hold":
        return PinnedPolicy(policy, reference, pinned)
    if mode != "freeze":
        raise ValueError(f"mode must be 'hold' or 'freeze', got mode={mode!r}")

    def frozen(sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        action = policy(sample, timestep, context).float()
        return blend(action, reference(sample, timestep, context).float(), pinned[context.reshape(-1)])

    return frozen


__getattr__ = moved_names(
    __name__,
    {
        "HeldPolicy": "pxpo_gym.pinning:PinnedPolicy",
        "HELD_PIXELS": "pxpo_gym.pinning:PINNED_PIXELS",
        "read_held_pixels": "pxpo_gym.pinning:read_pinned_pixels",
    },
)
