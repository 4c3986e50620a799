"""SD3- and FLUX-layout pipelines (tiny, built from configs) in the env and the agents.

The reference is diffusers itself: the env's rollout with the noise level near 0 must
land where the pipeline's own ODE sampler lands from the same starting latents; DDPO
and PXPO train LoRA adapters on them for an epoch; an export's LoRA file is the one the
pipeline's own ``load_lora_weights`` reads and our loader fuses it back exactly.
"""

from __future__ import annotations

import json

import gymnasium as gym
import pytest
import torch

import pxpo_gym  # noqa: F401
from agents.config import TrainConfig
from agents.export import LORA_WEIGHTS
from agents.trainer import Trainer
from pxpo_gym.flow import FlowSchedule
from pxpo_gym.loading import load_model
from tests.agents.test_agents import tiny_config

pytest.importorskip("transformers")

PROMPTS = ["a red square", "a blue circle"]
STEPS = 4
LAYOUTS = ("sd3", "flux")


@pytest.fixture(scope="module")
def pipeline_dirs(tmp_path_factory):
    from pxpo_gym.tiny_models import save_tiny_flux_pipeline, save_tiny_sd3_pipeline

    root = tmp_path_factory.mktemp("transformer-pipelines")
    return {
        "sd3": save_tiny_sd3_pipeline(root / "sd3"),
        "flux": save_tiny_flux_pipeline(root / "flux"),
    }


def pipeline_class(layout: str):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    return StableDiffusion3Pipeline if layout == "sd3" else FluxPipeline


def diffusers_latents(layout: str, folder, start: torch.Tensor, prompt: str) -> torch.Tensor:
    """The pipeline's own sampler (its ODE: Euler on the velocity) from ``start``, as (B, C, h, w)."""
    cls = pipeline_class(layout)
    extra = {"text_encoder_3": None, "tokenizer_3": None} if layout == "sd3" else {}
    pipeline = cls.from_pretrained(folder, **extra)
    pipeline.set_progress_bar_config(disable=True)
    batch, channels, height, width = start.shape
    latents = start if layout == "sd3" else cls._pack_latents(start, batch, channels, height, width)
    # SD3: no CFG, the default 256 text tokens; FLUX: its default guidance 3.5, as many T5 tokens as
    # the tiny tokenizer has (16; the env takes min(512, the tokenizer's length), as FLUX's T5 has 512).
    extra = {"guidance_scale": 1.0} if layout == "sd3" else {"max_sequence_length": 16}
    with torch.no_grad():
        out = pipeline(
            prompt=[prompt] * batch,
            height=2 * height,
            width=2 * width,
            num_inference_steps=STEPS,
            latents=latents,
            output_type="latent",
            **extra,
        ).images
    return out if layout == "sd3" else cls._unpack_latents(out, height, width, 1)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("transition", ["sde", "cps"])
def test_the_env_samples_as_the_pipeline_does(pipeline_dirs, layout, transition):
    folder = pipeline_dirs[layout]
    envs = gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=2,
        model=str(folder),
        prompts=PROMPTS,
        resolution=16,  # FLUX's transformer has no sample size: its pipeline's default is 1,024 px
        context=1,
        num_inference_steps=STEPS,
        noise_level=1e-7,  # Flow-GRPO's SDE, or CPS, at a vanishing noise level is the pipeline's Euler step
        transition=transition,
        reward="color",
    )
    core = envs.unwrapped
    assert core.schedule.transition == transition
    assert core.prediction == "velocity" and core.loaded.is_flow and core.loaded.is_latent
    assert core.model.backbone == layout and isinstance(core.schedule, FlowSchedule)
    assert core.loaded.sample_shape == (4, 8, 8) and core.loaded.image_size == (16, 16)
    if layout == "flux":  # FLUX's resolution-dependent shift, from its 16 packed tokens
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift

        assert core.loaded.schedule_shift_mu == pytest.approx(calculate_shift(16, 256, 4096, 0.5, 1.15))
        assert core.model.guidance == 3.5
    obs, _ = envs.reset(seed=3)
    start = obs["sample"].clone()
    for _ in range(STEPS):
        with torch.no_grad():
            velocity = core.model(obs["sample"], obs["timestep"], obs["context"])
        obs, _, terminated, _, info = envs.step(velocity)
    assert bool(terminated.all())
    ours = obs["sample"]  # x_0: the terminal observation
    expected = diffusers_latents(layout, folder, start, PROMPTS[1])
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("algo", ["ddpo", "pxpo"])
def test_ddpo_and_pxpo_train_lora_on_the_pipeline(pipeline_dirs, tmp_path, layout, algo):
    trainer = Trainer(config(pipeline_dirs[layout], tmp_path, algo))
    assert trainer.policy.backbone == layout
    trained = {k: v.clone() for k, v in trainer.policy.named_parameters() if v.requires_grad}
    assert trained and all("lora_" in k for k in trained)  # LoRA by default on latent pipelines
    metrics, _ = trainer.train_epoch()
    assert all(torch.isfinite(torch.tensor(metrics[k])) for k in ("loss", "reward_mean"))
    after = dict(trainer.policy.named_parameters())
    assert any(not torch.equal(v, after[k]) for k, v in trained.items()), "an epoch must move the adapter"


def config(folder, tmp_path, algo: str) -> TrainConfig:
    """The agents' tiny run (tests.agents.test_agents.tiny_config) on a 16 x 16 text-to-image pipeline."""
    return tiny_config(
        folder, tmp_path, prompts=tuple(PROMPTS), resolution=16, algo=algo, reward=("color",),
        learning_rate=1e-2, num_epochs=1, sample_batch_size=4, train_batch_size=4, stat_buffer_size=4,
        stat_min_count=2,
    )  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_lora_export_loads_in_the_pipeline_and_back_in_the_env(pipeline_dirs, tmp_path, layout):
    folder = pipeline_dirs[layout]
    trainer = Trainer(config(folder, tmp_path, "pxpo"))
    trainer.train_epoch()
    export = trainer.export()
    assert (export / LORA_WEIGHTS).is_file()
    meta = json.loads((export / "pxpo_gym.json").read_text())
    assert meta["format"] == "lora" and meta["base_model"] == str(folder) and meta["prompts"] == PROMPTS

    x = torch.randn(2, 4, 8, 8)
    t = torch.tensor([800.0, 10.0])
    contexts = torch.tensor([0, 1])
    cls = pipeline_class(layout)
    extra = {"text_encoder_3": None, "tokenizer_3": None} if layout == "sd3" else {}
    pipeline = cls.from_pretrained(folder, **extra)
    with torch.no_grad():
        ours = trainer.policy(x, t, contexts)
        base = trainer.reference(x, t, contexts)
        core = trainer.envs.unwrapped
        # The pipeline's own loader reads the file (keys under "transformer.") into its transformer.
        pipeline.load_lora_weights(export)
        core.model.net, original = pipeline.transformer, core.model.net
        theirs = core.model(x, t, contexts)
        core.model.net = original
    assert (ours - base).abs().max() > 1e-5  # the adapter changed the model ...
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)  # ... as diffusers applies it

    # Our loader reads the export as the base pipeline with the adapter fused in.
    loaded = load_model(export, resolution=16)
    assert loaded.context_names == tuple(PROMPTS) and loaded.noise_model.backbone == layout
    with torch.no_grad():
        fused = loaded.noise_model(x, t, contexts)
    torch.testing.assert_close(fused, ours, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_whole_pipeline_export_loads_back_with_the_same_network(pipeline_dirs, tmp_path, layout):
    """The backbone's export hook (``PipelineExport``): the base pipeline with the network swapped in."""
    from agents.export import export_policy

    loaded = load_model(pipeline_dirs[layout], prompts=PROMPTS, resolution=16)
    export = export_policy(loaded.noise_model, loaded, tmp_path / "export")
    meta = json.loads((export / "pxpo_gym.json").read_text())
    assert meta["format"] == "pipeline" and meta["prompts"] == PROMPTS
    again = load_model(export, prompts=PROMPTS, resolution=16)
    x, t, contexts = torch.randn(2, 4, 8, 8), torch.tensor([800.0, 10.0]), torch.tensor([0, 1])
    with torch.no_grad():
        assert torch.equal(again.noise_model(x, t, contexts), loaded.noise_model(x, t, contexts))


def test_unsupported_transformer_pipelines_and_shift_settings_are_refused(pipeline_dirs, tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "model_index.json").write_text(
        json.dumps(
            {"_class_name": "PixArtAlphaPipeline", "transformer": ["diffusers", "PixArtTransformer2DModel"]}
        )
    )
    with pytest.raises(
        ValueError, match="PixArtAlphaPipeline with a transformer backbone; the supported ones"
    ):
        load_model(folder, prompts=PROMPTS)
    with pytest.raises(ValueError, match="pass prompts"):
        load_model(pipeline_dirs["sd3"])
    with pytest.raises(ValueError, match="multiples of 4"):
        load_model(pipeline_dirs["flux"], prompts=PROMPTS, resolution=18)
    dynamic = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    with pytest.raises(ValueError, match="use_dynamic_shifting needs shift_mu"):
        FlowSchedule.from_scheduler(dynamic, 4)
    with pytest.raises(ValueError, match="use_dynamic_shifting=False, shift_mu=0.5"):
        FlowSchedule.from_scheduler(FlowMatchEulerDiscreteScheduler(), 4, shift_mu=0.5)


def test_an_sd3_checkpoint_with_dynamic_shifting_gets_sd3s_grid(pipeline_dirs, tmp_path):
    # StableDiffusion3Pipeline shifts its scheduler's own grid by mu (FLUX's pipeline starts from 1 ... 1/T):
    # the env's sampler, at a vanishing noise level, lands where the pipeline's Euler steps do.
    import json
    import shutil

    folder = tmp_path / "sd3-dynamic"
    shutil.copytree(pipeline_dirs["sd3"], folder)
    config_path = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(config_path.read_text())
    config.update(use_dynamic_shifting=True, base_image_seq_len=4, max_image_seq_len=64)
    config_path.write_text(json.dumps(config))
    envs = gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=2,
        model=str(folder),
        prompts=PROMPTS,
        context=1,
        num_inference_steps=STEPS,
        noise_level=1e-7,
        reward="color",
    )
    core = envs.unwrapped
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    assert core.loaded.schedule_shift_mu == pytest.approx(
        calculate_shift(16, 4, 64, 0.5, config["max_shift"])
    )
    obs, _ = envs.reset(seed=5)
    start = obs["sample"].clone()
    for _ in range(STEPS):
        with torch.no_grad():
            velocity = core.model(obs["sample"], obs["timestep"], obs["context"])
        obs, *_ = envs.step(velocity)
    torch.testing.assert_close(
        obs["sample"], diffusers_latents("sd3", folder, start, PROMPTS[1]), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("layout", LAYOUTS)
def test_the_env_on_a_lora_export_draws_the_runs_own_images(pipeline_dirs, tmp_path, layout):
    # The run trains with CPS at noise 0.9 (not the defaults); gym.make on the export, given no sampler,
    # takes the run's own and draws what the trained policy draws from the same noise.
    from pxpo_gym.sampling import run_policy

    run = config(pipeline_dirs[layout], tmp_path, "pxpo").replace(transition="cps", noise_level=0.9)
    trainer = Trainer(run)
    trainer.train_epoch()
    export = trainer.export()
    labels = {"context": torch.tensor([0, 1, 1, 0])}
    expected = run_policy(trainer.envs, trainer.rollout_policy(), seed=11, options=labels).images
    envs = gym.make_vec(
        "DiffusionDenoise-v0", num_envs=4, model=str(export), resolution=16, num_inference_steps=4
    )
    assert envs.unwrapped.schedule.transition == "cps" and envs.unwrapped.schedule.noise_level == 0.9
    torch.testing.assert_close(run_policy(envs, seed=11, options=labels).images, expected, atol=1e-4, rtol=0)
