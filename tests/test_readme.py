"""The code of the README and of docs/custom-algorithms.md runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def _blocks(section: str, path: Path = DOCS / "custom-algorithms.md") -> list[str]:
    """The python code blocks of one section (a '## ' heading) of a markdown file."""
    text = path.read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.S)


def test_readme_tour_runs():
    (block,) = _blocks("A short tour", README)
    namespace: dict = {}
    exec(compile(block, "README tour", "exec"), namespace)
    obs = namespace["obs"]
    assert obs["sample"].shape == (16, 3, 16, 16) and namespace["envs"].num_envs == 16
    # the tour runs to the end of its episodes and reads a reward: the terminal map, whose mean is the reward
    assert bool(namespace["terminated"].all())
    reward_map, reward = namespace["reward_map"], namespace["reward"]
    assert reward_map.shape == (16, 16, 16) and bool((reward != 0).all())
    torch.testing.assert_close(reward_map.mean(dim=(1, 2)), reward)


def test_custom_agent_template_runs(capsys):
    loop = next(block for block in _blocks("Your own loop, without the trainer") if "step_log_prob" in block)
    exec(compile(loop, "README custom agent loop", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["iteration 0", "iteration 1"]
    assert all(0.0 <= float(line.rsplit(" ", 1)[1]) <= 1.0 for line in lines)


def test_sb3_example_runs():
    pytest.importorskip("stable_baselines3")
    block = next(block for block in _blocks("Your own loop, without the trainer") if "make_sb3_env" in block)
    assert "TOTAL_STEPS = 25_600" in block
    namespace: dict = {}
    exec(
        compile(block.replace("TOTAL_STEPS = 25_600", "TOTAL_STEPS = 640"), "README SB3 example", "exec"),
        namespace,
    )
    assert namespace["model"].num_timesteps == 640


def test_wrapper_example_builds_the_keyword_env():
    import gymnasium as gym

    block = next(
        block for block in _blocks("Your own loop, without the trainer") if "ObservationView(" in block
    )
    namespace: dict = {}
    exec(compile(block, "README wrapper example", "exec"), namespace)
    keywords = gym.make_vec(
        "DiffusionDenoise-v0",
        num_envs=16,
        action_mode="residual",
        action_grid=1,
        obs_keys=("sample", "step_index", "context"),
        obs_downscale=4,
        obs_flatten=True,
        obs_one_hot_context=True,
    )
    assert namespace["envs"].single_observation_space == keywords.single_observation_space
    assert namespace["envs"].single_action_space == keywords.single_action_space


def test_flow_matching_examples_run():
    pixel, flux = _blocks("Flow-matching models", DOCS / "environment.md")
    namespace: dict = {}
    exec(compile(pixel, "docs/environment.md flow example", "exec"), namespace)
    assert bool(namespace["terminated"].all()) and namespace["info"]["image"].shape == (4, 3, 16, 16)
    pytest.importorskip("transformers")
    exec(compile(flux, "docs/environment.md FLUX example", "exec"), namespace)
    assert namespace["envs"].unwrapped.loaded.image_size == (16, 16)
