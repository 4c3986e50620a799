"""The SD3 backbone: ``StableDiffusion3Pipeline``'s ``SD3Transformer2DModel`` (velocity prediction), its
prompts embedded by the pipeline's own ``encode_prompt`` (a missing T5 encoder is allowed)."""

from __future__ import annotations

from typing import Any

import torch

from pxpo_gym.backbones.transformer import TransformerBackbone
from pxpo_gym.models import NoiseModel


class SD3Transformer(TransformerBackbone):
    """Called as StableDiffusion3Pipeline calls it: on (B, C, h, w) latents, with timestep = sigma x 1000."""

    name = "sd3"
    pipeline_classes = ("StableDiffusion3Pipeline",)
    flow_grid = "sd3"
    default_max_shift = 1.16

    @classmethod
    def pipeline_class(cls) -> Any:
        from diffusers import StableDiffusion3Pipeline

        return StableDiffusion3Pipeline

    @classmethod
    def patch_size(cls, transformer: Any) -> int:
        return int(transformer.config.patch_size)

    @classmethod
    def encode_prompts(
        cls, pipeline: Any, texts: list[str], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        limit = pipeline.tokenizer_3.model_max_length if pipeline.tokenizer_3 is not None else 256
        embeds, _, pooled, _ = pipeline.encode_prompt(
            texts,
            None,
            None,
            device=device,
            do_classifier_free_guidance=False,
            max_sequence_length=min(256, limit),
        )
        return embeds, pooled

    @classmethod
    def call(
        cls, model: NoiseModel, sample: torch.Tensor, timestep: torch.Tensor, text: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        out = model.net(
            hidden_states=sample.to(model.compute_dtype), timestep=timestep.float(), **text
        ).sample
        return out.float()
