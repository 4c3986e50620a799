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
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer, vocab_size = _tiny_tokenizer(Path(scratch) / "tokenizer")
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TINY_MAX_TOKENS,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
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
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=2 * TINY_LATENT_SIZE,
    )
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
