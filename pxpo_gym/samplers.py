"""The sampler registry: which ``pxpo_gym.transition.Sampler`` plug-in builds an env's step table.

Built in: ``"ddim"`` (``pxpo_gym.ddim.DDIMSampler``, DDPM-family models) and ``"flow"``
(``pxpo_gym.flow.FlowSampler``, flow-matching models). A plug-in is a ``Sampler`` subclass registered from
Python (``register_sampler``); a model picks it by name (``LoadedModel.sampler``) or, with none named, by
its prediction type. Names are looked up in this registry only: nothing is imported by name.
"""

from __future__ import annotations

from typing import Any

from pxpo_gym.ddim import DDIMSampler
from pxpo_gym.flow import FlowSampler
from pxpo_gym.registry import Registry
from pxpo_gym.transition import Sampler

SAMPLERS: Registry[type[Sampler]] = Registry("sampler", Sampler, (DDIMSampler, FlowSampler))
"""The registered samplers by name, built-ins first."""


def register_sampler(sampler: type[Sampler], replace: bool = False) -> type[Sampler]:
    """Adds a sampler plug-in to ``SAMPLERS`` under its ``name`` (``Registry.register``; a decorator)."""
    return SAMPLERS.register(sampler, replace)


def get_sampler(name: Any) -> type[Sampler]:
    """The registered sampler ``name`` stands for (``Registry.named``: a ValueError listing them if none)."""
    return SAMPLERS.named(name)


def sampler_for(loaded: Any) -> type[Sampler]:
    """The sampler of a ``LoadedModel``: the one its ``sampler`` names, else the first registered one that
    steps with its model's prediction type.

    Raises:
        ValueError: an unknown name, or no sampler for the prediction type.
    """
    if loaded.sampler is not None:
        return get_sampler(loaded.sampler)
    prediction_type = loaded.noise_model.prediction_type
    for sampler in SAMPLERS.values():
        if prediction_type in sampler.prediction_types:
            return sampler
    raise ValueError(
        f"no registered sampler steps with prediction_type={prediction_type!r} (samplers: {sorted(SAMPLERS)})"
    )
