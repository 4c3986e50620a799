"""The pixel-space UNet backbone: a diffusers ``UNet2DModel`` in a ``DDPMPipeline`` folder (the embedded
default's layout), class-conditional or not, with a DDPM or flow-matching scheduler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from pxpo_gym.backbones.base import Backbone, context_ids
from pxpo_gym.loading import read_metadata, size_pair
from pxpo_gym.models import METADATA_FILE, LoadedModel, NoiseModel


class PixelUNet(Backbone):
    """``UNet2DModel`` called as ``net(x, t, class_labels=ids)``; also the call of Stable Diffusion's
    ``UNet2DConditionModel`` (``encoder_hidden_states`` = the prompt's embedding) when the ``NoiseModel``
    holds prompt embeddings (``pxpo_gym.backbones.sd``)."""

    name = "unet"
    pipeline_classes = ("DDPMPipeline",)
    export_format = "ddpm_pipeline"

    @classmethod
    def forward(
        cls, model: NoiseModel, sample: torch.Tensor, timestep: torch.Tensor, context: Any
    ) -> torch.Tensor:
        condition: dict[str, torch.Tensor] = {}
        if model.conditional:
            ids = context_ids(context, sample)
            if model.prompt_embeds is None:
                condition["class_labels"] = ids
            else:
                condition["encoder_hidden_states"] = model.prompt_embeds[ids].to(model.compute_dtype)
        return model.net(sample.to(model.compute_dtype), timestep, **condition).sample.float()

    @classmethod
    def load(
        cls,
        source: str,
        location: str,
        device: torch.device | str,
        dtype: torch.dtype,
        prompts: tuple[str, ...] | None,
        resolution: Any,
        decode_chunk_size: int | None,
        index: dict[str, Any],
    ) -> LoadedModel:
        from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler, UNet2DModel

        try:
            unet = UNet2DModel.from_pretrained(
                location, subfolder="unet", use_safetensors=True, torch_dtype=dtype
            )
            config = DDPMScheduler.load_config(location, subfolder="scheduler")
            flow = config.get("_class_name") == FlowMatchEulerDiscreteScheduler.__name__
            scheduler_class = FlowMatchEulerDiscreteScheduler if flow else DDPMScheduler
            scheduler = scheduler_class.from_config(config)
        except Exception as err:  # diffusers raises OSError, ValueError, SafetensorError, HF errors
            raise ValueError(
                f"model={source!r}: could not load a UNet2DModel (unet/, safetensors weights) and a "
                f"scheduler (scheduler/) from {location!r}: {type(err).__name__}: {err}"
            ) from err
        return pixel_model(unet, scheduler, source, location, device, dtype, resolution, backbone=cls.name)

    @classmethod
    def export_pipeline(cls, net: torch.nn.Module, loaded: LoadedModel) -> Any:
        from diffusers import DDPMPipeline

        return DDPMPipeline(unet=net, scheduler=loaded.scheduler)


def class_context_names(
    folder: Path | None, num_class_embeds: int | None
) -> tuple[tuple[str, ...], int | None]:
    """(context names, null context) of a class-conditional UNet: from the folder's ``pxpo_gym.json``, or
    ``class_k``; ("none",) and None for an unconditional one.

    Raises:
        ValueError: the file names more contexts than the UNet has class embeddings, or a null context
            outside them.
    """
    meta = read_metadata(folder)
    if num_class_embeds is None:
        return ("none",), None
    names = meta.get("context_names") or [f"class_{k}" for k in range(num_class_embeds)]
    null = meta.get("null_context")
    if len(names) > num_class_embeds or (null is not None and not 0 <= null < num_class_embeds):
        raise ValueError(
            f"model folder {str(folder)!r}: {METADATA_FILE} names {len(names)} contexts "
            f"(null_context={null}) but the UNet has {num_class_embeds} class embeddings"
        )
    return tuple(names), null


def pixel_model(
    unet: Any,
    scheduler: Any,
    source: str,
    location: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    resolution: Any = None,
    backbone: str = PixelUNet.name,
) -> LoadedModel:
    """A pixel model (``UNet2DModel`` + its DDPM or flow-matching scheduler) as a ``LoadedModel``; its
    context names come from ``location``'s ``pxpo_gym.json`` where there is one. ``backbone``: the plug-in
    that calls it (a subclass of ``PixelUNet`` loading with this function names itself).

    Raises:
        ValueError: not 3 RGB channels in and out, or a resolution other than the UNet's own.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    folder = Path(location) if location is not None and Path(location).is_dir() else None
    names, null = class_context_names(folder, unet.config.num_class_embeds)
    if unet.config.in_channels != 3 or unet.config.out_channels != 3:
        raise ValueError(
            f"model={source!r}: a pixel model must have 3 input and output channels (RGB), got "
            f"{unet.config.in_channels} and {unet.config.out_channels}"
        )
    size = size_pair(unet.config.sample_size)
    if resolution is not None and size_pair(resolution) != size:
        raise ValueError(
            f"resolution={resolution!r} does not match model={source!r}: a pixel model makes "
            f"images of its own sample size {size}"
        )
    unet = unet.to(device=device).eval()
    if isinstance(scheduler, FlowMatchEulerDiscreteScheduler):  # the UNet predicts the velocity
        noise_model = NoiseModel(unet, torch.zeros(0), "velocity", dtype=dtype, backbone=backbone).to(device)
    else:
        noise_model = NoiseModel(
            unet, scheduler.alphas_cumprod, scheduler.config.prediction_type, dtype=dtype, backbone=backbone
        ).to(device)
    return LoadedModel(
        noise_model=noise_model,
        scheduler=scheduler,
        sample_shape=(unet.config.in_channels, *size),
        image_size=size,
        context_names=names,
        null_context=null,
        source=source,
        location=location,
    )
