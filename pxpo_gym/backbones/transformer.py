"""What the flow-matching transformer backbones share (``pxpo_gym.backbones.sd3``, ``.flux``): loading a
whole pipeline with diffusers' own ``from_pretrained``, its prompts embedded once by its own
``encode_prompt`` (the text encoders then dropped), and its LoRA file format. Each subclass says how its
pipeline packs latents, encodes prompts and calls the transformer."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from pxpo_gym.backbones.base import Backbone, PipelineExport, context_ids, latent_size, require_transformers
from pxpo_gym.loading import absent_components, pipeline_index
from pxpo_gym.models import LoadedModel, NoiseModel


class TransformerBackbone(PipelineExport, Backbone):
    """A transformer of a flow-matching text-to-image pipeline (velocity prediction, a
    ``FlowMatchEulerDiscreteScheduler``), called as its diffusers pipeline calls it."""

    component = "transformer"
    takes_prompts = True
    default_max_shift: ClassVar[float]
    """The pipeline's default ``max_shift`` for a scheduler config without one (dynamic shifting)."""

    @classmethod
    def packed_channels(cls, latent_channels: int) -> int:
        """The channels the transformer takes for the VAE's ``latent_channels``."""
        return latent_channels

    @classmethod
    def patch_size(cls, transformer: Any) -> int:
        """The side of the latent patch one token covers."""
        raise NotImplementedError

    @classmethod
    def encode_prompts(
        cls, pipeline: Any, texts: list[str], device: torch.device | str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt embeddings (P, L, D), pooled embeddings (P, D')) by the pipeline's own ``encode_prompt``."""
        raise NotImplementedError

    @classmethod
    def guidance(cls, transformer: Any) -> float | None:
        """The distilled guidance scale the transformer is called with, or None."""
        return None

    @classmethod
    def call(
        cls, model: NoiseModel, sample: torch.Tensor, timestep: torch.Tensor, text: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """The transformer's velocity on (B, C, h, w) latents, float32; ``text`` holds the prompts'
        ``encoder_hidden_states`` and ``pooled_projections`` in the compute dtype."""
        raise NotImplementedError

    @classmethod
    def check(cls, prompt_embeds: torch.Tensor | None, pooled_embeds: torch.Tensor | None) -> None:
        if prompt_embeds is None or pooled_embeds is None:
            raise ValueError(f"backbone={cls.name!r} needs prompt_embeds and pooled_embeds")

    @classmethod
    def forward(
        cls, model: NoiseModel, sample: torch.Tensor, timestep: torch.Tensor, context: Any
    ) -> torch.Tensor:
        ids = context_ids(context, sample)
        text = {
            "encoder_hidden_states": model.prompt_embeds[ids].to(model.compute_dtype),
            "pooled_projections": model.pooled_embeds[ids].to(model.compute_dtype),
        }
        return cls.call(model, sample, timestep, text)

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
        require_transformers(source)
        from diffusers import DiffusionPipeline, FlowMatchEulerDiscreteScheduler

        assert prompts is not None, "load_model passes prompts to a backbone that takes them"
        try:
            pipeline = DiffusionPipeline.from_pretrained(
                location, use_safetensors=True, torch_dtype=dtype, **absent_components(index)
            )
        except (
            Exception
        ) as err:  # diffusers/transformers raise OSError, ValueError, SafetensorError, HF errors
            raise ValueError(
                f"model={source!r}: could not load the pipeline from {location!r} (transformer/, vae/, the text "
                f"encoders and tokenizers, scheduler/; safetensors weights): {type(err).__name__}: {err}"
            ) from err
        if type(pipeline).__name__ not in cls.pipeline_classes or not isinstance(
            pipeline.scheduler, FlowMatchEulerDiscreteScheduler
        ):
            raise ValueError(
                f"model={source!r} loaded as {type(pipeline).__name__} with a "
                f"{type(pipeline.scheduler).__name__}; expected one of {', '.join(cls.pipeline_classes)} with "
                "a FlowMatchEulerDiscreteScheduler"
            )
        transformer, vae, scheduler = pipeline.transformer, pipeline.vae, pipeline.scheduler
        latent_channels = vae.config.latent_channels
        packed = cls.packed_channels(latent_channels)
        patch = cls.patch_size(transformer)
        if transformer.config.in_channels != packed:
            raise ValueError(
                f"model={source!r}: the transformer takes {transformer.config.in_channels} channels but the "
                f"VAE's latents give {packed}"
            )
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        default_latent = getattr(transformer.config, "sample_size", None) or 128  # FLUX: 1,024 px at 8x
        image_size = latent_size(
            source, resolution, default_latent, vae_factor, vae_factor * patch, f"{patch} x {patch} patches"
        )
        latents = (image_size[0] // vae_factor, image_size[1] // vae_factor)
        pipeline.to(device)
        with torch.no_grad():
            embeds, pooled = cls.encode_prompts(pipeline, [*prompts, ""], device)  # last row: the null prompt
        shift_mu = None
        if scheduler.config.get("use_dynamic_shifting", False):
            from diffusers.pipelines.flux.pipeline_flux import calculate_shift

            shift_mu = float(
                calculate_shift(
                    (latents[0] // patch) * (latents[1] // patch),  # tokens: one per patch
                    scheduler.config.get("base_image_seq_len", 256),
                    scheduler.config.get("max_image_seq_len", 4096),
                    scheduler.config.get("base_shift", 0.5),
                    scheduler.config.get("max_shift", cls.default_max_shift),
                )
            )
        guidance = cls.guidance(transformer)
        del pipeline  # the text encoders go with it
        transformer = transformer.eval()
        vae = vae.eval().requires_grad_(False)
        noise_model = NoiseModel(
            transformer,
            torch.zeros(0),
            "velocity",
            dtype=dtype,
            prompt_embeds=embeds.float(),
            backbone=cls.name,
            pooled_embeds=pooled.float(),
            guidance=guidance,
        ).to(device)
        return LoadedModel(
            noise_model=noise_model,
            scheduler=scheduler,
            sample_shape=(latent_channels, *latents),
            image_size=image_size,
            context_names=prompts,
            null_context=len(prompts),
            source=source,
            location=location,
            vae=vae,
            decode_chunk_size=decode_chunk_size,
            schedule_shift_mu=shift_mu,
        )

    @classmethod
    def export_components(cls, base: str) -> dict[str, Any]:
        return absent_components(pipeline_index(base))  # e.g. SD3 without its T5 encoder
