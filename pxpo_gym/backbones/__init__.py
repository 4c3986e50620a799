"""The backbone registry: which ``Backbone`` plug-in loads, calls and exports a model's network.

Built in (one file each): ``"unet"`` (pixel ``UNet2DModel``, ``DDPMPipeline`` folders: the embedded
models), ``"sd"`` (Stable Diffusion 1.x/2.x's latent ``UNet2DConditionModel``), ``"sd3"`` and ``"flux"``
(the flow-matching transformers of ``StableDiffusion3Pipeline`` and ``FluxPipeline``). A plug-in is a
``pxpo_gym.backbones.base.Backbone`` subclass registered from Python (``register_backbone``).

A model folder selects its backbone by its model_index.json's ``_class_name``, looked up among the
registered backbones' ``pipeline_classes`` (then by its layout, for folders that name no registered
class): a name read from a file only ever selects code already registered, nothing is imported by name.
"""

from __future__ import annotations

from typing import Any

from pxpo_gym.backbones.base import Backbone
from pxpo_gym.backbones.flux import FluxTransformer
from pxpo_gym.backbones.sd import StableDiffusionUNet
from pxpo_gym.backbones.sd3 import SD3Transformer
from pxpo_gym.backbones.unet import PixelUNet
from pxpo_gym.registry import Registry

__all__ = ["BACKBONES", "Backbone", "backbone_for_index", "get_backbone", "register_backbone"]

BACKBONES: Registry[type[Backbone]] = Registry(
    "backbone", Backbone, (PixelUNet, StableDiffusionUNet, SD3Transformer, FluxTransformer)
)
"""The registered backbones by name, built-ins first."""


def register_backbone(backbone: type[Backbone], replace: bool = False) -> type[Backbone]:
    """Adds a backbone plug-in to ``BACKBONES`` under its ``name`` (``Registry.register``; a decorator)."""
    return BACKBONES.register(backbone, replace)


def get_backbone(name: Any) -> type[Backbone]:
    """The registered backbone ``name`` stands for (``Registry.named``: a ValueError listing them if none)."""
    return BACKBONES.named(name)


def backbone_for_index(index: dict[str, Any], source: str) -> type[Backbone]:
    """The backbone a pipeline folder loads with, from its model_index.json (``index``; {} for a folder
    without one): the registered backbone whose ``pipeline_classes`` hold its ``_class_name``; else, by
    layout, Stable Diffusion's ("sd") for a folder with a VAE or a text encoder and the pixel UNet ("unet")
    for the rest.

    Raises:
        ValueError: an unregistered pipeline with a transformer, or an SDXL-style one (two text encoders).
    """
    kind = index.get("_class_name")
    for backbone in BACKBONES.values():
        if kind in backbone.pipeline_classes:
            return backbone
    transformers = [c for b in BACKBONES.values() if b.component == "transformer" for c in b.pipeline_classes]
    if "transformer" in index:
        raise ValueError(
            f"model={source!r} is a {kind or 'pipeline'} with a transformer backbone; the supported "
            f"ones are {', '.join(transformers)}"
        )
    if "text_encoder_2" in index:
        raise ValueError(
            f"model={source!r} is a {kind or 'pipeline'} with a UNet and a second text "
            "encoder (SDXL-style): supported latent pipelines are Stable Diffusion 1.x/2.x "
            f"(one CLIP text encoder, UNet2DConditionModel), {', '.join(transformers)}"
        )
    if "vae" in index or "text_encoder" in index:
        return BACKBONES[StableDiffusionUNet.name]
    return BACKBONES[PixelUNet.name]
