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
from pxpo_gym.transition import Sampler

SAMPLERS: dict[str, type[Sampler]] = {DDIMSampler.name: DDIMSampler, FlowSampler.name: FlowSampler}
"""The registered samplers by name, built-ins first."""


def register_sampler(sampler: type[Sampler], replace: bool = False) -> type[Sampler]:
    """Adds a sampler plug-in to ``SAMPLERS`` under its ``name`` (returns it, so it works as a decorator).

    Raises:
        TypeError: not a ``Sampler`` subclass.
        ValueError: a name that is not a non-empty string, or one already registered (unless ``replace``).
    """
    if not (isinstance(sampler, type) and issubclass(sampler, Sampler)):
        raise TypeError(f"a sampler must subclass pxpo_gym.transition.Sampler, got {sampler!r}")
    name = getattr(sampler, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{sampler.__name__}.name must be a non-empty string, got {name!r}")
    if name in SAMPLERS and not replace and SAMPLERS[name] is not sampler:
        raise ValueError(f"a sampler named {name!r} is already registered; pass replace=True to replace it")
    SAMPLERS[name] = sampler
    return sampler


def get_sampler(name: Any) -> type[Sampler]:
    """The registered sampler ``name`` stands for.

    Raises:
        ValueError: not a registered name (the message lists them).
    """
    if not isinstance(name, str) or name not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got sampler={name!r}")
    return SAMPLERS[name]


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
