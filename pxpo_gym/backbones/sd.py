"""The Stable Diffusion 1.x/2.x backbone: a latent ``UNet2DConditionModel`` with an ``AutoencoderKL`` and a
CLIP text encoder (``StableDiffusionPipeline``'s layout; transformers is the ``sd`` extra). Its prompts are
embedded once and the text encoder dropped; context k is prompt k, and the last row the empty prompt."""

from __future__ import annotations

from typing import Any

import torch

from pxpo_gym.backbones.base import PipelineExport, latent_size, require_transformers
from pxpo_gym.backbones.unet import PixelUNet
from pxpo_gym.models import LoadedModel, NoiseModel


class StableDiffusionUNet(PipelineExport, PixelUNet):
    """Called as the pixel UNet is, with the prompt's embedding as ``encoder_hidden_states``."""

    name = "sd"
    pipeline_classes = ("StableDiffusionPipeline",)
    takes_prompts = True
    export_format = "pipeline"

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
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import AutoTokenizer, CLIPTextModel

        assert prompts is not None, "load_model passes prompts to a backbone that takes them"
        try:
            unet = UNet2DConditionModel.from_pretrained(
                location, subfolder="unet", use_safetensors=True, torch_dtype=dtype
            )
            vae = AutoencoderKL.from_pretrained(
                location, subfolder="vae", use_safetensors=True, torch_dtype=dtype
            )
            text_encoder = CLIPTextModel.from_pretrained(
                location, subfolder="text_encoder", use_safetensors=True
            )
            tokenizer = AutoTokenizer.from_pretrained(location, subfolder="tokenizer")
            scheduler = DDPMScheduler.from_pretrained(location, subfolder="scheduler")
        except (
            Exception
        ) as err:  # diffusers/transformers raise OSError, ValueError, SafetensorError, HF errors
            raise ValueError(
                f"model={source!r}: could not load a latent text-to-image pipeline from {location!r} "
                "(unet/ UNet2DConditionModel, vae/ AutoencoderKL, text_encoder/ CLIPTextModel, tokenizer/, "
                f"scheduler/; safetensors weights): {type(err).__name__}: {err}"
            ) from err
        latent_channels = vae.config.latent_channels
        if unet.config.in_channels != latent_channels or unet.config.out_channels != latent_channels:
            raise ValueError(
                f"model={source!r}: the UNet maps {unet.config.in_channels} -> {unet.config.out_channels} "
                f"channels but the VAE's latents have {latent_channels}"
            )
        if unet.config.cross_attention_dim != text_encoder.config.hidden_size:
            raise ValueError(
                f"model={source!r}: the UNet attends to {unet.config.cross_attention_dim}-dim text states "
                f"but the text encoder gives {text_encoder.config.hidden_size}"
            )
        vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
        multiple = vae_factor * 2 ** (len(unet.config.block_out_channels) - 1)
        image_size = latent_size(
            source, resolution, unet.config.sample_size, vae_factor, multiple, "the UNet's"
        )
        text_encoder = text_encoder.to(device).eval()
        embeds = embed_prompts(tokenizer, text_encoder, [*prompts, ""], device)  # last row: the null prompt
        del text_encoder
        unet = unet.to(device=device).eval()
        vae = vae.to(device=device).eval().requires_grad_(False)
        noise_model = NoiseModel(
            unet,
            scheduler.alphas_cumprod,
            scheduler.config.prediction_type,
            dtype=dtype,
            prompt_embeds=embeds,
            backbone=cls.name,
        ).to(device)
        return LoadedModel(
            noise_model=noise_model,
            scheduler=scheduler,
            sample_shape=(latent_channels, image_size[0] // vae_factor, image_size[1] // vae_factor),
            image_size=image_size,
            context_names=prompts,
            null_context=len(prompts),
            source=source,
            location=location,
            vae=vae,
            decode_chunk_size=decode_chunk_size,
        )

    @classmethod
    def pipeline_class(cls) -> Any:
        from diffusers import StableDiffusionPipeline

        return StableDiffusionPipeline

    @classmethod
    def export_components(cls, base: str) -> dict[str, Any]:
        return {"safety_checker": None, "requires_safety_checker": False}


@torch.no_grad()
def embed_prompts(tokenizer: Any, text_encoder: Any, prompts: list[str], device: Any) -> torch.Tensor:
    """(P, L, D) float32 last hidden states of the text encoder, as Stable Diffusion conditions on."""
    length = min(tokenizer.model_max_length, text_encoder.config.max_position_embeddings)
    tokens = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
    return text_encoder(tokens.input_ids.to(device))[0].float()
