"""The FLUX backbone: ``FluxPipeline``'s ``FluxTransformer2DModel`` (velocity prediction). The env's
(B, C, h, w) latents are packed into 2 x 2 patches for it and unpacked after, as FluxPipeline does, so the
env and the agents see one latent grid; models with guidance embeddings (FLUX.1-dev) are called with
FluxPipeline's default distilled guidance."""

from __future__ import annotations

from typing import Any

import torch

from pxpo_gym.backbones.transformer import TransformerBackbone
from pxpo_gym.models import NoiseModel

FLUX_GUIDANCE = 3.5
"""The distilled guidance FLUX transformers with guidance embeddings are called with (FluxPipeline's default)."""


class FluxTransformer(TransformerBackbone):
    """Called as FluxPipeline calls it: packed 2 x 2 latents, timestep = sigma, position ids."""

    name = "flux"
    pipeline_classes = ("FluxPipeline",)
    flow_grid = "flux"
    default_max_shift = 1.15

    @classmethod
    def pipeline_class(cls) -> Any:
        from diffusers import FluxPipeline

        return FluxPipeline

    @classmethod
    def packed_channels(cls, latent_channels: int) -> int:
        return latent_channels * 4  # FluxPipeline packs 2 x 2 latents into one token

    @classmethod
    def patch_size(cls, transformer: Any) -> int:
        return 2

    @classmethod
    def encode_prompts(
        cls, pipeline: Any, texts: list[str], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        embeds, pooled, _ = pipeline.encode_prompt(
            texts,
            None,
            device=device,
            max_sequence_length=min(512, pipeline.tokenizer_2.model_max_length),
        )
        return embeds, pooled

    @classmethod
    def guidance(cls, transformer: Any) -> float | None:
        return FLUX_GUIDANCE if transformer.config.guidance_embeds else None

    @classmethod
    def call(
        cls, model: NoiseModel, sample: torch.Tensor, timestep: torch.Tensor, text: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        from diffusers import FluxPipeline

        batch, channels, height, width = sample.shape
        packed = FluxPipeline._pack_latents(sample.to(model.compute_dtype), batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(
            batch, height // 2, width // 2, sample.device, model.compute_dtype
        )
        text_ids = torch.zeros(text["encoder_hidden_states"].shape[1], 3, device=sample.device)
        guidance = (
            None if model.guidance is None else torch.full((batch,), model.guidance, device=sample.device)
        )
        out = model.net(
            hidden_states=packed,
            timestep=timestep.float() / 1000,  # FluxPipeline: the transformer takes sigma itself
            guidance=guidance,
            txt_ids=text_ids.to(model.compute_dtype),
            img_ids=image_ids,
            **text,
        ).sample
        return FluxPipeline._unpack_latents(out, height, width, 1).float()
