"""Tiny models built from configs, for tests and smoke runs: no download, seconds on a CPU.

``save_tiny_text_to_image_pipeline`` writes a Stable-Diffusion-layout folder
(UNet2DConditionModel, AutoencoderKL, CLIP text encoder and a CLIP tokenizer
made from a character vocabulary, a scheduler config) with diffusers'
``save_pretrained``, so loading it exercises exactly the code path a real
checkpoint takes. Its weights are random: it checks plumbing, not images.
"""

from __future__ import annotations

import json
import string
import tempfile
from pathlib import Path

import torch

TINY_LATENT_SIZE = 8
"""Latent grid of the tiny pipeline; its VAE upsamples 2x, so images are 16x16."""
TINY_MAX_TOKENS = 16
"""Tokenizer length of the tiny pipeline (CLIP's is 77)."""


def _tiny_tokenizer(folder: Path):
    """A CLIP BPE tokenizer over lower-case letters, digits and punctuation (no merges)."""
    from transformers import CLIPTokenizer

    symbols = list(string.ascii_lowercase + string.digits + string.punctuation)
    tokens = ["<|startoftext|>", "<|endoftext|>"] + symbols + [s + "</w>" for s in symbols]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(folder, model_max_length=TINY_MAX_TOKENS), len(tokens)


def save_tiny_text_to_image_pipeline(path: str | Path, seed: int = 0) -> Path:
    """Writes a tiny latent text-to-image pipeline (diffusers layout, safetensors) to ``path``.

    UNet2DConditionModel on a 4 x 8 x 8 latent grid with cross-attention to a
    2-layer CLIP text encoder (hidden size 32); AutoencoderKL with one 2x
    upsampling, so images are 16 x 16; Stable Diffusion's scheduler settings.

    Needs the ``sd`` extra (transformers).

    Returns:
        ``path``.
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    path = Path(path)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer, vocab_size = _tiny_tokenizer(Path(scratch) / "tokenizer")
    text_encoder = _tiny_clip(vocab_size, with_projection=False)
    unet = UNet2DConditionModel(
        sample_size=TINY_LATENT_SIZE,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=4,
    )
    vae = _tiny_vae()
    scheduler = DDIMScheduler(  # Stable Diffusion 1.x's scheduler settings
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        timestep_spacing="leading",
    )
    pipeline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def _tiny_clip(vocab_size: int, with_projection: bool):
    """A 2-layer CLIP text encoder of hidden size 32 (with a 32-dim projection head if asked)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        projection_dim=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=TINY_MAX_TOKENS,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=1,
    )
    return CLIPTextModelWithProjection(config) if with_projection else CLIPTextModel(config)


def _tiny_vae(**layout):
    """An AutoencoderKL at toy size: 4 latent channels, one 2x upsampling (16 x 16 images from 8 x 8
    latents); ``layout`` adds a pipeline's own settings (SD3 / FLUX: no quant convs, a shift)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=2 * TINY_LATENT_SIZE,
        **layout,
    )


def _tiny_flow_vae():
    """SD3's and FLUX's VAE layout at toy size (their scaling and shift factors)."""
    return _tiny_vae(
        use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035
    )


def save_tiny_sd3_pipeline(path: str | Path, seed: int = 0) -> Path:
    """Writes a tiny ``StableDiffusion3Pipeline`` folder (diffusers layout, safetensors) to ``path``.

    SD3Transformer2DModel (1 joint block, patch 2) on a 4 x 8 x 8 latent grid, two CLIP text
    encoders with projections (hidden size 32), no T5 (SD3 allows ``text_encoder_3=None``: its
    part of the text states is zeros), the VAE layout of SD3 at toy size (16 x 16 images), and
    SD3's flow-matching scheduler (shift 3). Random weights: it checks plumbing, not images.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    path = Path(path)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer, vocab_size = _tiny_tokenizer(Path(scratch) / "tokenizer")
    transformer = SD3Transformer2DModel(
        sample_size=TINY_LATENT_SIZE,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=64,  # the two CLIPs' 32 + 32 hidden states side by side
        caption_projection_dim=16,
        pooled_projection_dim=64,  # their 32 + 32 pooled projections
        pos_embed_max_size=TINY_LATENT_SIZE,
    )
    pipeline = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_tiny_flow_vae(),
        text_encoder=_tiny_clip(vocab_size, with_projection=True),
        tokenizer=tokenizer,
        text_encoder_2=_tiny_clip(vocab_size, with_projection=True),
        tokenizer_2=tokenizer,
        text_encoder_3=None,
        tokenizer_3=None,
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path


def save_tiny_flux_pipeline(path: str | Path, seed: int = 0, guidance_embeds: bool = True) -> Path:
    """Writes a tiny ``FluxPipeline`` folder (diffusers layout, safetensors) to ``path``.

    FluxTransformer2DModel (one double- and one single-stream block) on a 4 x 8 x 8 latent grid
    (packed 2 x 2 into 16 tokens of 16 channels), a CLIP text encoder (pooled, hidden 32) and a
    2-layer T5 encoder (d_model 32; its tokenizer is the character tokenizer, as no T5 vocabulary
    can be downloaded here), FLUX's VAE layout at toy size (16 x 16 images) and FLUX's scheduler
    (resolution-dependent shift). ``guidance_embeds`` as FLUX.1-dev (True) or schnell (False).
    """
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    path = Path(path)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer, vocab_size = _tiny_tokenizer(Path(scratch) / "tokenizer")
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(2, 2, 4),
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=vocab_size, d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4, pad_token_id=1
        )
    )
    scheduler = FlowMatchEulerDiscreteScheduler(  # FLUX.1's settings
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    pipeline = FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=_tiny_flow_vae(),
        text_encoder=_tiny_clip(vocab_size, with_projection=False),
        tokenizer=tokenizer,
        text_encoder_2=t5,
        tokenizer_2=tokenizer,
    )
    pipeline.save_pretrained(path, safe_serialization=True)
    return path
