"""Latent text-to-image pipelines (Stable Diffusion layout): loading, the env, both agents, errors."""

from __future__ import annotations

import shutil
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

import pxpo_gym  # noqa: F401  (registers the env)
from pxpo_gym.loading import load_model
from pxpo_gym.rewards import pool_to_grid
from pxpo_gym.sampling import run_policy

pytest.importorskip("transformers")

STEPS = 3
PROMPTS = ["a red circle", "a blue square"]


def _vec(model_dir, num_envs=3, **kwargs):
    kwargs = {"prompts": PROMPTS, "num_inference_steps": STEPS, **kwargs}
    return gym.make_vec("DiffusionDenoise-v0", num_envs=num_envs, model=str(model_dir), **kwargs)


def test_prompt_embeddings_match_the_text_encoder(tiny_sd_dir):
    from transformers import CLIPTextModel, CLIPTokenizer

    loaded = load_model(str(tiny_sd_dir), prompts=PROMPTS)
    tokenizer = CLIPTokenizer.from_pretrained(tiny_sd_dir, subfolder="tokenizer")
    encoder = CLIPTextModel.from_pretrained(tiny_sd_dir, subfolder="text_encoder")
    ids = tokenizer([*PROMPTS, ""], padding="max_length", max_length=16, return_tensors="pt").input_ids
    with torch.no_grad():
        reference = encoder(ids).last_hidden_state
    torch.testing.assert_close(loaded.noise_model.prompt_embeds, reference)
    assert loaded.prompts == tuple(PROMPTS) and loaded.null_context == 2
    assert loaded.sample_shape == (4, 8, 8) and loaded.image_size == (16, 16)


def test_noise_model_is_the_unet_with_the_prompt_states(tiny_sd_dir):
    from diffusers import UNet2DConditionModel

    loaded = load_model(str(tiny_sd_dir), prompts=PROMPTS)
    unet = UNet2DConditionModel.from_pretrained(tiny_sd_dir, subfolder="unet")
    sample = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([901, 501, 1])
    context = torch.tensor([1, 0, 2])  # 2: the empty prompt (guidance's null context)
    states = loaded.noise_model.prompt_embeds[context]
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.noise_model(sample, t, context), unet(sample, t, encoder_hidden_states=states).sample
        )


def test_vae_decode_matches_diffusers_and_chunking_changes_nothing(tiny_sd_dir):
    from diffusers import AutoencoderKL

    latents = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    whole = load_model(str(tiny_sd_dir), prompts=PROMPTS)
    chunked = load_model(str(tiny_sd_dir), prompts=PROMPTS, decode_chunk_size=2)
    vae = AutoencoderKL.from_pretrained(tiny_sd_dir, subfolder="vae")
    with torch.no_grad():
        reference = ((vae.decode(latents / vae.config.scaling_factor).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(whole.decode(latents), reference)
    torch.testing.assert_close(chunked.decode(latents), reference)
    assert whole.decode(latents).shape == (5, 3, 16, 16)


def test_latent_env_episode(tiny_sd_dir):
    envs = _vec(tiny_sd_dir, reward="color")
    core = envs.unwrapped
    assert core.single_observation_space["sample"].shape == (4, 8, 8)
    assert core.single_observation_space["context"].high.tolist() == [1]  # real prompts only
    obs, _ = envs.reset(seed=0, options={"context": [0, 1, 1]})
    assert [core.prompts[c] for c in obs["context"][:, 0].tolist()] == [PROMPTS[0], PROMPTS[1], PROMPTS[1]]
    episode = run_policy(envs, seed=0, options={"context": "a blue square"})
    assert episode.contexts.tolist() == [1, 1, 1]
    assert episode.images.shape == (3, 3, 16, 16)
    assert episode.images.min() >= 0 and episode.images.max() <= 1
    assert episode.image_reward_maps.shape == (3, 16, 16)
    torch.testing.assert_close(episode.rewards, episode.image_reward_maps.mean(dim=(1, 2)))
    pooled = pool_to_grid(episode.image_reward_maps, (8, 8))  # what PXPO weights the latent grid with
    torch.testing.assert_close(pooled, episode.image_reward_maps.reshape(3, 8, 2, 8, 2).mean(dim=(2, 4)))


def test_prompt_function_and_resolution(tiny_sd_dir):
    envs = _vec(tiny_sd_dir, num_envs=2, prompts=lambda: ["a cat", "a dog", "a cow"], resolution=32)
    core = envs.unwrapped
    assert core.prompts == ("a cat", "a dog", "a cow")
    assert core.loaded.sample_shape == (4, 16, 16) and core.loaded.image_size == (32, 32)
    episode = run_policy(envs, seed=1)
    assert episode.images.shape == (2, 3, 32, 32)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=None), "is a latent text-to-image pipeline: pass prompts"),
        (dict(prompts=[]), "prompts must be a non-empty list"),
        (dict(prompts=["a cat", " "]), "prompts must be a non-empty list"),
        (dict(prompts=[3]), "prompts must be a non-empty list"),
        (dict(resolution=18), "multiples of 4"),
        (dict(resolution=(16, 0)), "resolution must be"),
        (dict(decode_chunk_size=0), "decode_chunk_size must be"),
    ],
)
def test_bad_latent_arguments(tiny_sd_dir, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _vec(tiny_sd_dir, **kwargs)


def test_pixel_model_refuses_latent_options(tiny_model_dir):
    with pytest.raises(ValueError, match="pixel model conditioned on class ids"):
        gym.make_vec("DiffusionDenoise-v0", num_envs=2, model=str(tiny_model_dir), prompts=["a cat"])
    with pytest.raises(ValueError, match="does not match"):
        gym.make_vec("DiffusionDenoise-v0", num_envs=2, model=str(tiny_model_dir), resolution=16)
    with pytest.raises(ValueError, match="decode_chunk_size is for latent pipelines"):
        gym.make_vec("DiffusionDenoise-v0", num_envs=2, model=str(tiny_model_dir), decode_chunk_size=4)


def test_folder_that_is_not_a_pipeline(tmp_path, tiny_sd_dir):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="not a diffusers pipeline folder"):
        load_model(str(tmp_path))
    broken = tmp_path / "sd"
    shutil.copytree(tiny_sd_dir, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(ValueError, match="could not load a latent text-to-image pipeline"):
        load_model(str(broken), prompts=PROMPTS)


def test_mismatched_parts_are_refused(tiny_sd_dir, tmp_path):
    from diffusers import AutoencoderKL

    broken = tmp_path / "sd"
    shutil.copytree(tiny_sd_dir, broken)
    shutil.rmtree(broken / "vae")
    config = dict(AutoencoderKL.load_config(tiny_sd_dir, subfolder="vae"), latent_channels=3)
    AutoencoderKL.from_config(config).save_pretrained(broken / "vae", safe_serialization=True)
    with pytest.raises(ValueError, match="the VAE's latents have 3"):
        load_model(str(broken), prompts=PROMPTS)


def test_sdxl_style_pipelines_are_refused_by_name(tiny_sd_dir, tmp_path):
    import json

    broken = tmp_path / "sdxl"
    shutil.copytree(tiny_sd_dir, broken)
    index = json.loads((broken / "model_index.json").read_text())
    index.update(
        _class_name="StableDiffusionXLPipeline",
        text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
    )
    (broken / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(
        ValueError, match="StableDiffusionXLPipeline with a UNet and a second text encoder.*supported"
    ):
        load_model(str(broken), prompts=PROMPTS)


def test_missing_transformers_names_the_extra(tiny_sd_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(ImportError, match=r"pxpo-gym\[sd\]"):
        load_model(str(tiny_sd_dir), prompts=PROMPTS)


@pytest.mark.parametrize("algo, credit", [("ddpo", "pixel"), ("pxpo", "pixel"), ("pxpo", "footprint")])
def test_one_training_epoch_on_the_latent_pipeline(tiny_sd_dir, tmp_path, algo, credit):
    from agents.config import TrainConfig
    from agents.trainer import Trainer

    config = TrainConfig.of(
        algo=algo,
        model=str(tiny_sd_dir),
        prompts=tuple(PROMPTS),
        reward="color",
        num_epochs=1,
        sample_batch_size=4,
        sample_batches_per_epoch=1,
        train_batch_size=2,
        num_inference_steps=STEPS,
        guidance_scale=5.0,
        decode_chunk_size=2,
        gradient_checkpointing=algo == "pxpo",
        **(dict(credit=credit, credit_images=4) if algo == "pxpo" else {}),
        out=str(tmp_path / algo),
        progress=False,
        tensorboard=False,
        image_every=0,
    )
    trainer = Trainer(config)
    trainable = [name for name, p in trainer.policy.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)  # LoRA by default on latent models
    before = {name: p.detach().clone() for name, p in trainer.policy.named_parameters() if p.requires_grad}
    metrics, traj = trainer.train_epoch()
    assert np.isfinite([metrics["reward_mean"], metrics["loss"]]).all()
    assert traj.grid_reward_maps.shape == (4, 8, 8) and traj.image_reward_maps.shape == (4, 16, 16)
    changed = [
        name
        for name, p in trainer.policy.named_parameters()
        if p.requires_grad and not torch.equal(p, before[name])
    ]
    assert changed  # the adapters moved
    if credit == "footprint":  # measured through the VAE decoder, on the 8 x 8 latent grid
        assert trainer.algo.kernels.shape == (STEPS, 15, 15)
        assert trainer.footprint.method == "autograd"
    trainer.save()
    assert any((tmp_path / algo / "checkpoints").iterdir())


@pytest.mark.parametrize("model", ["tiny-sd", "tiny-sd3", "tiny-flux"])
def test_latent_gpu_benchmark_runs_on_cpu(tmp_path, model):
    """The GPU script's code path, on the CPU (bf16 weights and autocast included), for the SD, SD3
    and FLUX layouts."""
    import json

    from benchmarks.performance.latent_gpu import LatentBenchConfig, main

    out = tmp_path / "latent.json"
    cfg = LatentBenchConfig(
        model=model,
        device="cpu",
        sample_batch_size=2,
        train_batch_size=2,
        num_inference_steps=2,
        out=str(out),
    )
    main(cfg)
    result = json.loads(out.read_text())
    for algo in ("ddpo", "pxpo"):
        numbers = result["agents"][algo]
        assert numbers["images_per_second"] > 0 and numbers["peak_gpu_memory_mib"] is None
        assert np.isfinite(numbers["loss"]) and numbers["trainable_parameters"] > 0


def test_checkers_pass_on_a_latent_single_env(tiny_sd_dir):
    from gymnasium.utils.env_checker import check_env as gym_check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(
        "DiffusionDenoise-v0",
        model=str(tiny_sd_dir),
        prompts=PROMPTS,
        num_inference_steps=STEPS,
        action_mode="residual",
    )
    gym_check_env(env.unwrapped)
    sb3_check_env(env.unwrapped, warn=True)
