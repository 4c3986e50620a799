"""RUN/model: the trained policy as a diffusers model that diffusers and our env load, and
``agents.evaluate`` scoring it on held-out seeds."""

from __future__ import annotations

import json
import subprocess
import sys

import gymnasium as gym
import pytest
import torch

import pxpo_gym  # noqa: F401
from agents.config import TrainConfig
from agents.export import LORA_WEIGHTS
from agents.heldout import EVAL_SEED_OFFSET
from agents.runs import train
from agents.trainer import Trainer
from pxpo_gym.sampling import run_policy
from tests.agents.test_agents import tiny_config
from tests.pxpo_gym.test_latent import PROMPTS, STEPS


def trained(config: TrainConfig, epochs: int = 1) -> Trainer:
    trainer = Trainer(config)
    for _ in range(epochs):
        trainer.train_epoch()
    return trainer


def test_pixel_export_loads_in_diffusers_and_the_env_and_samples_like_the_policy(tiny_model_dir, tmp_path):
    from diffusers import DDPMPipeline

    trainer = trained(tiny_config(tiny_model_dir, tmp_path), epochs=2)
    folder = trainer.export()
    assert folder == tmp_path / "run" / "model"
    pipeline = DDPMPipeline.from_pretrained(folder)
    policy_weights = trainer.policy.net.state_dict()
    for name, value in pipeline.unet.state_dict().items():
        assert torch.equal(value, policy_weights[name]), name
    assert (
        pipeline.scheduler.config.num_train_timesteps
        == trainer.envs.unwrapped.loaded.scheduler.config.num_train_timesteps
    )
    meta = json.loads((folder / "pxpo_gym.json").read_text())
    assert meta["fine_tuned_from"] == str(tiny_model_dir) and meta["run"]["epoch"] == 2
    # The env loads it; its own pretrained sampler now draws exactly the policy's images.
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=8, model=str(folder), num_inference_steps=4)
    exported = run_policy(envs, seed=11)
    policy = run_policy(trainer.envs, trainer.action, seed=11)
    assert torch.equal(exported.images, policy.images)
    # ... and they differ from the base model's (the export is not the base model)
    base = gym.make_vec("DiffusionDenoise-v0", num_envs=8, model=str(tiny_model_dir), num_inference_steps=4)
    assert not torch.equal(run_policy(base, seed=11).images, exported.images)


def test_training_exports_at_the_end_with_the_ema_weights(tiny_model_dir, tmp_path):
    from diffusers import UNet2DModel

    config = tiny_config(tiny_model_dir, tmp_path, ema_decay=0.5)
    train(config)
    unet = UNet2DModel.from_pretrained(tmp_path / "run" / "model", subfolder="unet")
    trainer = Trainer(config.replace(resume=str(tmp_path / "run")))
    from agents.checkpoint import load_checkpoint, restore_trainer

    restore_trainer(trainer, *load_checkpoint(tmp_path / "run"))
    shadow = {k.removeprefix("net."): v for k, v in trainer.ema.state_dict().items()}
    exported = unet.state_dict()
    assert all(torch.equal(exported[name], value) for name, value in shadow.items())
    trained_weights = {k.removeprefix("net."): p for k, p in trainer.policy.named_parameters()}
    assert any(not torch.equal(exported[n], trained_weights[n]) for n in shadow)  # EMA, not the last step
    meta = json.loads((tmp_path / "run" / "model" / "pxpo_gym.json").read_text())
    assert meta["run"]["weights"] == "ema"


def test_no_export_when_turned_off(tiny_model_dir, tmp_path):
    train(tiny_config(tiny_model_dir, tmp_path, num_epochs=1, export=False))
    assert not (tmp_path / "run" / "model").exists()


def test_pixel_lora_is_merged_into_the_exported_weights(tmp_path):
    config = TrainConfig.of(
        lora_rank=2,
        learning_rate=1e-2,
        num_epochs=1,
        sample_batch_size=4,
        sample_batches_per_epoch=1,
        train_batch_size=4,
        num_inference_steps=3,
        out=str(tmp_path / "run"),
        progress=False,
        tensorboard=False,
        image_every=0,
        threads=1,
    )
    trainer = trained(config)
    folder = trainer.export()
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=4, model=str(folder), num_inference_steps=3)
    x, t, c = torch.randn(4, 3, 16, 16), torch.tensor([900, 500, 100, 1]), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        ours, merged = trainer.policy(x, t, c), envs.unwrapped.model(x, t, c)
        base = trainer.reference(x, t, c)
    torch.testing.assert_close(merged, ours, atol=1e-5, rtol=1e-5)
    assert (ours - base).abs().max() > 1e-4  # the adapter changed the model


def test_latent_lora_export_loads_with_load_lora_weights(tiny_sd_dir, tmp_path):
    from diffusers import StableDiffusionPipeline

    config = TrainConfig.of(
        model=str(tiny_sd_dir),
        prompts=tuple(PROMPTS),
        learning_rate=1e-2,
        num_epochs=1,
        sample_batch_size=4,
        sample_batches_per_epoch=1,
        train_batch_size=4,
        num_inference_steps=STEPS,
        out=str(tmp_path / "run"),
        progress=False,
        tensorboard=False,
        image_every=0,
    )
    trainer = trained(config)
    folder = trainer.export()
    assert (folder / LORA_WEIGHTS).is_file()
    meta = json.loads((folder / "pxpo_gym.json").read_text())
    assert meta["format"] == "lora" and meta["base_model"] == str(tiny_sd_dir) and meta["prompts"] == PROMPTS

    pipeline = StableDiffusionPipeline.from_pretrained(tiny_sd_dir, safety_checker=None)
    core = trainer.envs.unwrapped
    x = torch.randn(2, *core.loaded.sample_shape)
    t = torch.tensor([800, 10])
    states = core.model.prompt_embeds[torch.tensor([0, 1])]
    with torch.no_grad():
        before = pipeline.unet(x, t, encoder_hidden_states=states).sample
        pipeline.load_lora_weights(folder)
        after = pipeline.unet(x, t, encoder_hidden_states=states).sample
        ours = trainer.policy(x, t, torch.tensor([0, 1]))
    assert (after - before).abs().max() > 1e-5  # the adapter changes the pipeline's output ...
    torch.testing.assert_close(after, ours, atol=1e-5, rtol=1e-4)  # ... exactly as our policy does

    # Our loader reads the export as the base pipeline with the adapter fused in.
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=2, model=str(folder), num_inference_steps=STEPS)
    assert envs.unwrapped.loaded.context_names == tuple(PROMPTS)
    with torch.no_grad():
        fused = envs.unwrapped.model(x, t, torch.tensor([0, 1]))
    torch.testing.assert_close(fused, ours, atol=1e-5, rtol=1e-4)


def test_evaluate_scores_an_export_on_held_out_seeds(tiny_model_dir, tmp_path):
    train(tiny_config(tiny_model_dir, tmp_path, reward=("color:0.5", "brightness:0.5")))
    model = tmp_path / "run" / "model"
    done = subprocess.run(
        [sys.executable, "-m", "agents.evaluate", "--model", str(model), "--images", "6"]
        + ["--num-inference-steps", "4", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "run" / "evaluation" / "evaluation.json").read_text())
    assert (tmp_path / "run" / "evaluation" / "grid.png").is_file()
    # the run's reward by default, its components, its held-out seeds, fidelity against its base model
    assert result["reward"] == ["color:0.5", "brightness:0.5"]
    assert set(result["components"]) == {"color", "brightness"}
    assert result["reward_mean"] == pytest.approx(
        0.5 * result["components"]["color"] + 0.5 * result["components"]["brightness"], rel=1e-5
    )
    assert result["seeds"] == [EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + 5]
    assert result["reference"] == str(tiny_model_dir) and result["fidelity_distance"] > 0
    assert "reward 0." in done.stdout and "reference" in done.stdout

    # The base model against itself: distance 0, the same reward as its own reference.
    from agents.evaluate import EvaluateConfig, evaluate

    same = evaluate(
        EvaluateConfig(
            model=str(tiny_model_dir),
            reference=str(tiny_model_dir),
            reward=("color",),
            images=4,
            num_inference_steps=4,
            out=str(tmp_path / "base"),
        )
    )
    assert same["fidelity_distance"] == 0.0 and same["reward_mean"] == same["reference_reward_mean"]


def test_evaluate_refuses_an_incomparable_reference(tiny_model_dir, tmp_path):
    from agents.evaluate import EvaluateConfig, evaluate

    with pytest.raises(ValueError, match="cannot be compared"):
        evaluate(EvaluateConfig(model=str(tiny_model_dir), reference="default", images=2, out=str(tmp_path)))
    with pytest.raises(ValueError, match="images must be >= 1"):
        evaluate(EvaluateConfig(model=str(tiny_model_dir), images=0, out=str(tmp_path)))


@pytest.mark.parametrize(
    "meta, message",
    [
        ({"context_names": 7}, "'context_names' must be a list of non-empty strings, got '7'"),
        ({"null_context": "0"}, "'null_context' must be an int or null"),
        ({"format": "zip"}, "'format' must be one of"),
        (
            {"format": "lora", "base_model": "x", "lora_weights": "../../etc/passwd", "prompts": ["a"]},
            "a file name",
        ),
        ({"format": "lora", "prompts": ["a"]}, "needs ['base_model', 'lora_weights']"),
        ([1, 2], "must hold a JSON object, got list"),
    ],
)
def test_a_malformed_metadata_file_is_named_with_the_field(tmp_path, meta, message):
    from pxpo_gym.loading import read_metadata

    (tmp_path / "pxpo_gym.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError) as err:
        read_metadata(tmp_path)
    assert message in str(err.value) and str(tmp_path / "pxpo_gym.json") in str(err.value)


def test_the_sampling_snippet_of_the_training_docs_runs_on_an_export(tiny_model_dir, tmp_path):
    """docs/training.md's snippet, with MODEL pointed at a real export of a tiny run."""
    import re
    from pathlib import Path

    trained(tiny_config(tiny_model_dir, tmp_path), epochs=1).export()
    text = (Path(__file__).resolve().parents[2] / "docs" / "training.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "class_labels" in b]
    folder = str(tmp_path / "run" / "model")
    block = block.replace('MODEL = "runs/pxpo-is-color-seed0/model"', f"MODEL = {folder!r}")
    namespace: dict = {}
    exec(compile(block, "docs/training.md sampling snippet", "exec"), namespace)
    assert namespace["images"].shape == (8, 3, 8, 8) and namespace["diffusers_images"].shape == (8, 3, 8, 8)
    assert namespace["episode"].contexts.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]
    torch.testing.assert_close(namespace["diffusers_images"], namespace["images"], atol=1e-5, rtol=0)


def pinned_run_config(tiny_model_dir, tmp_path, **overrides) -> TrainConfig:
    """A tiny run whose reward scores the left half only, with the silent pixels pinned ('hold'): from its
    third epoch on it pins the right half."""
    settings = dict(
        reward=("tests.agents.toy_rewards:region_reward",),
        silent_mode="hold",
        num_epochs=3,
        learning_rate=3e-3,
    )
    return tiny_config(tiny_model_dir, tmp_path, **{**settings, **overrides})


def test_a_pinning_run_exports_its_pinned_pixels_and_evaluate_applies_them(
    tiny_model_dir, tmp_path, monkeypatch
):
    from agents.evaluate import EvaluateConfig, evaluate, main
    from pxpo_gym.pinning import OLD_PIN_FILE, PINNED_PIXELS, read_pinned_pixels

    config = pinned_run_config(tiny_model_dir, tmp_path, eval_every=3, eval_images=8)
    history = train(config)
    model = tmp_path / "run" / "model"
    mode, mask = read_pinned_pixels(model, 3, (8, 8))
    assert mode == "hold" and bool(mask[..., 4:].all()) and float(mask[..., :4].float().mean()) < 0.5
    assert json.loads((model / "pxpo_gym.json").read_text())["pinned_pixels"]["mode"] == "hold"
    common = dict(model=str(model), images=8, num_inference_steps=4, trust_code=True)  # our own reward
    pinned = evaluate(EvaluateConfig(**common, out=str(tmp_path / "pinned")))
    alone = evaluate(EvaluateConfig(**common, pinned_pixels="off", out=str(tmp_path / "alone")))
    # With the pin, the export's held-out images are the run's own last evaluation's.
    assert pinned["pinned_pixels"] == "hold" and alone["pinned_pixels"] == "none"
    assert pinned["reward_mean"] == pytest.approx(history[-1]["eval_reward"], abs=1e-6)
    assert pinned["fidelity_distance"] == pytest.approx(history[-1]["fidelity_distance"], abs=1e-6)
    assert alone["fidelity_distance"] > pinned["fidelity_distance"]
    # The command line's old flag, --held-pixels, still works, with a DeprecationWarning naming the new one.
    flag = ["--model", str(model), "--images", "8", "--num-inference-steps", "4", "--trust-code"]
    for old, out in ((["--held-pixels", "off"], "flag"), (["--held-pixels=off"], "flag-equals")):
        monkeypatch.setattr(sys, "argv", ["agents.evaluate", *flag, *old, "--out", str(tmp_path / out)])
        with pytest.warns(DeprecationWarning, match="--held-pixels is deprecated: use --pinned-pixels"):
            main()
        result = json.loads((tmp_path / out / "evaluation.json").read_text())
        assert result["pinned_pixels"] == "none" and result["reward_mean"] == alone["reward_mean"]
    # An export written before the rename (held_pixels.safetensors, tensor 'held') still loads, and samples
    # with its pin exactly as the new file does.
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(model / PINNED_PIXELS))
    (model / PINNED_PIXELS).unlink()
    save_file(
        {"held": tensors["pinned"], "band": tensors["band"]}, str(model / OLD_PIN_FILE), {"mode": "hold"}
    )
    old_mode, old_mask = read_pinned_pixels(model, 3, (8, 8))
    assert old_mode == "hold" and torch.equal(old_mask, mask)
    old = evaluate(EvaluateConfig(**common, out=str(tmp_path / "old")))
    assert old["pinned_pixels"] == "hold" and old["reward_mean"] == pinned["reward_mean"]
    assert old["fidelity_distance"] == pinned["fidelity_distance"]
    (model / OLD_PIN_FILE).unlink()
    save_file(tensors, str(model / PINNED_PIXELS), {"mode": "hold"})
    # A corrupt or mismatched file is refused, naming it.
    with pytest.raises(ValueError, match="pinned has shape"):
        read_pinned_pixels(model, 4, (8, 8))
    save_file(
        {"pinned": mask.to(torch.uint8), "band": torch.tensor(2)},
        str(model / PINNED_PIXELS),
        {"mode": "hold"},
    )
    _, weights = read_pinned_pixels(model, 3, (8, 8))  # a band: the ramp's weights
    assert weights.dtype == torch.float32 and bool((weights[..., 7] == 1).all())
    assert weights[..., 4].max() == pytest.approx(1 / 3)
    for band, shown in ((torch.tensor(-1), "-1"), (torch.tensor(0.5), "0.5"), (torch.tensor(65), "65")):
        save_file(
            {"pinned": mask.to(torch.uint8), "band": band}, str(model / PINNED_PIXELS), {"mode": "hold"}
        )
        with pytest.raises(ValueError, match=f"band must be an integer in \\[0, 64\\], got band={shown}"):
            read_pinned_pixels(model, 3, (8, 8))
    (model / PINNED_PIXELS).write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="not a valid pinned-pixels file"):
        read_pinned_pixels(model, 3, (8, 8))
