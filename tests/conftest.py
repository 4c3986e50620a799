"""Shared fixtures: no network, one torch thread, tiny models built from configs."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def make_tiny_unet(size: int = 8, num_classes: int | None = 3):
    """A randomly initialised tiny UNet2DModel (a few thousand parameters)."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=size,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        num_class_embeds=num_classes,
    )


def make_scheduler(**overrides):
    from diffusers import DDPMScheduler

    config = dict(
        num_train_timesteps=1000,
        beta_schedule="squaredcos_cap_v2",
        clip_sample=False,
        timestep_spacing="leading",
        steps_offset=1,
    )
    config.update(overrides)
    return DDPMScheduler(**config)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny class-conditional pixel model saved the way diffusers saves pipelines."""
    from diffusers import DDPMPipeline

    path = tmp_path_factory.mktemp("tiny-model")
    DDPMPipeline(unet=make_tiny_unet(), scheduler=make_scheduler()).save_pretrained(
        path, safe_serialization=True
    )
    return path


@pytest.fixture(scope="session")
def tiny_flow_dir(tmp_path_factory):
    """A tiny class-conditional pixel flow-matching model (FlowMatchEulerDiscreteScheduler), saved likewise."""
    from diffusers import DDPMPipeline, FlowMatchEulerDiscreteScheduler

    path = tmp_path_factory.mktemp("tiny-flow")
    DDPMPipeline(unet=make_tiny_unet(), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0)).save_pretrained(
        path, safe_serialization=True
    )
    return path


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A tiny latent text-to-image pipeline (Stable Diffusion layout) saved with save_pretrained."""
    pytest.importorskip("transformers")
    from pxpo_gym.tiny_models import save_tiny_text_to_image_pipeline

    return save_tiny_text_to_image_pipeline(tmp_path_factory.mktemp("tiny-sd"))
