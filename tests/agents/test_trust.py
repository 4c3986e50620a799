"""Nothing runs that the user did not name: model folders and checkpoints cannot run code; bad settings are
refused when parsed, with one line on the command line (issue 32's probe cases, each failing before)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from agents.config import TrainConfig
from agents.runs import train
from tests.agents.test_agents import tiny_config

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=ENV, timeout=300, cwd=cwd
    )


def one_line_error(done: subprocess.CompletedProcess, prog: str, *words: str) -> None:
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith(f"{prog}: error: "), done.stderr
    for word in words:
        assert word in done.stderr, (word, done.stderr)


HOSTILE = ["os:system"]
"""A reward spec that, imported and called with options, runs a shell command."""


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("exported")
    train(tiny_config(tiny_model_dir, root, num_epochs=1))
    return root / "run"


def test_an_export_naming_code_as_its_reward_is_refused_and_runs_nothing(exported, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(exported / "model", model)
    marker = tmp_path / "ran"
    meta = json.loads((model / "pxpo_gym.json").read_text())
    meta["run"]["config"].update(reward=HOSTILE, reward_kwargs=json.dumps({"command": f"touch {marker}"}))
    (model / "pxpo_gym.json").write_text(json.dumps(meta))
    base = ["-m", "agents.evaluate", "--model", str(model), "--images", "2", "--num-inference-steps", "4"]
    refused = cli(*base, "--out", str(tmp_path / "eval"), "--threads", "1")
    one_line_error(
        refused, "agents.evaluate", "'os:system'", "never run", "--reward os:system", "--trust-code"
    )
    assert not marker.exists() and not (tmp_path / "eval").exists()
    # naming a reward oneself replaces the file's
    ok = cli(*base, "--reward", "color", "--out", str(tmp_path / "eval"), "--threads", "1")
    assert ok.returncode == 0, ok.stderr
    assert not marker.exists()


def test_a_checkpoint_naming_code_as_its_reward_is_refused_on_resume(exported, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(exported, run)
    root = run / "checkpoints"
    meta_path = root / (root / "latest").read_text().strip() / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["config"]["env"]["reward"] = HOSTILE
    meta_path.write_text(json.dumps(meta))
    refused = cli("-m", "agents.train", "--resume", str(run), "--num-epochs", "2")
    one_line_error(refused, "agents.train", "checkpoint", "'os:system'", "never run", "--trust-code")
    # a checkpoint's built-in reward (with options) is still read from it
    meta["config"]["env"].update(reward=["color"], reward_kwargs=json.dumps({"target": "blue"}))
    meta_path.write_text(json.dumps(meta))
    from agents.runs import resolve_config

    resumed = resolve_config(TrainConfig.of(resume=str(run), num_epochs=2))
    assert resumed.env.reward == ("color",) and json.loads(resumed.env.reward_kwargs) == {"target": "blue"}
    assert not resumed.run.trust_code


@pytest.mark.parametrize(
    "index, message",
    [
        ({"unet": ["os", "system"]}, "component 'unet' is ['os', 'system']"),
        ({"unet": ["evil_module", "UNet2DModel"]}, "library one of diffusers, transformers"),
        ({"_class_name": ["pipeline", "MyPipeline"]}, "custom pipeline code is never loaded"),
        ({"scheduler": ["diffusers", "DDIMScheduler; import os"]}, "component 'scheduler'"),
    ],
)
def test_a_model_index_naming_other_code_is_refused_before_diffusers_reads_it(
    tiny_model_dir, tmp_path, index, message
):
    from pxpo_gym.loading import load_model

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    original = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**original, **index}))
    with pytest.raises(ValueError, match="model_index.json") as err:
        load_model(str(folder))
    assert message in str(err.value)
    load_model(str(tiny_model_dir))  # a real pipeline's index passes
    from pxpo_gym.loading import check_index

    sd15 = {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"]}
    check_index({**sd15, "safety_checker": ["stable_diffusion", "StableDiffusionSafetyChecker"]}, "sd15")
    for module in ("os", "torch", "importlib"):  # diffusers' pipeline modules only, not what they import
        with pytest.raises(ValueError, match="never imported"):
            check_index({**sd15, "safety_checker": [module, "StableDiffusionSafetyChecker"]}, "sd15")


def test_a_lora_export_whose_base_is_itself_is_one_line(tmp_path):
    folder = tmp_path / "lora"
    folder.mkdir()
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"")
    meta = {"format": "lora", "base_model": str(folder), "lora_weights": "pytorch_lora_weights.safetensors"}
    (folder / "pxpo_gym.json").write_text(json.dumps({**meta, "prompts": ["a cat"]}))
    done = cli("-m", "pxpo_gym.demo", "--model", str(folder), "--out", str(tmp_path / "demo.png"))
    one_line_error(done, "pxpo_gym.demo", "is itself a LoRA export")


@pytest.mark.parametrize(
    "field, value",
    [
        ("learning_rate", float("inf")),
        ("learning_rate", float("nan")),
        ("kl_coef", float("inf")),
        ("guidance_scale", float("inf")),
        ("max_grad_norm", float("inf")),
        ("clip_range", float("nan")),
        ("step_weights", (1.0, float("inf"), 1.0, 1.0)),
        ("seed", -1),
    ],
)
def test_non_finite_or_out_of_range_settings_are_refused_when_parsed(tiny_model_dir, tmp_path, field, value):
    with pytest.raises(ValueError, match=field):
        tiny_config(tiny_model_dir, tmp_path, **{field: value})
    assert not (tmp_path / "run").exists()


def test_cli_refuses_inf_and_a_negative_seed_in_one_line(tmp_path):
    out = str(tmp_path / "run")
    one_line_error(
        cli("-m", "agents.train", "--learning-rate", "inf", "--out", out), "agents.train", "learning_rate"
    )
    one_line_error(
        cli("-m", "agents.train", "--guidance-scale", "inf", "--out", out), "agents.train", "guidance_scale"
    )
    one_line_error(cli("-m", "agents.train", "--seed", "-1", "--out", out), "agents.train", "seed must be")
    assert not (tmp_path / "run").exists()


def test_a_full_or_read_only_disk_is_one_line(monkeypatch, capsys):
    from pxpo_gym.cli import run

    monkeypatch.setattr("sys.argv", ["prog"])
    for code in (errno.ENOSPC, errno.EROFS):

        def full(code: int = code) -> None:
            raise OSError(code, os.strerror(code), "runs/x/metrics.csv")

        with pytest.raises(SystemExit) as exit_info:
            run(full, "prog")
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and os.strerror(code) in err and "--resume" in err

    def bug() -> None:
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError):  # not the machine saying no: a bug keeps its traceback
        run(bug, "prog")


def test_a_reward_with_the_wrong_signature_is_named(tiny_model_dir):
    from pxpo_gym.rewards import make_reward

    with pytest.raises(ValueError, match=r"'redness' must be callable as fn\(images, contexts\)"):

        def redness(images):
            return images[:, 0]

        make_reward(redness)
    make_reward(lambda images, contexts=None: images[:, 0])  # defaults are fine


def test_the_suite_checks_estimator_and_model_before_writing_anything(tmp_path):
    from benchmarks.suite.grid import SuiteConfig

    for bad, message in ((dict(estimator="ppo"), "estimator must be"), (dict(model="nope"), "model must be")):
        with pytest.raises(ValueError, match=message):
            SuiteConfig(out=str(tmp_path / "suite"), **bad)
    done = cli("-m", "benchmarks.suite", "quick", "--estimator", "ppo", "--out", str(tmp_path / "suite"))
    # the presets' parser draws its own box around the message (exit 2, no traceback)
    assert done.returncode == 2 and "estimator must be" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "suite").exists()


def test_the_demo_writes_where_it_says_and_refuses_zero_threads(tiny_model_dir, tmp_path):
    out = tmp_path / "picture"  # no .png suffix: matplotlib used to add one, the message did not
    done = cli(
        "-m", "pxpo_gym.demo", "--model", str(tiny_model_dir), "--num-images", "2",
        "--num-inference-steps", "2", "--threads", "1", "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"wrote {out}\n" in done.stdout and out.read_bytes().startswith(b"\x89PNG")
    one_line_error(cli("-m", "pxpo_gym.demo", "--threads", "0"), "pxpo_gym.demo", "threads must be")
    one_line_error(
        cli("-m", "agents.evaluate", "--threads", "0", "--out", str(tmp_path / "e")),
        "agents.evaluate",
        "threads must be",
    )


def test_trust_code_is_not_kept_in_a_run(tiny_model_dir, tmp_path):
    config = tiny_config(tiny_model_dir, tmp_path, num_epochs=1, trust_code=True)
    train(config)
    from agents.runs import resolve_config

    resumed = resolve_config(config.replace(trust_code=False, resume=str(tmp_path / "run")))
    assert not resumed.run.trust_code
    exported = json.loads((tmp_path / "run" / "model" / "pxpo_gym.json").read_text())
    assert exported["run"]["config"]["trust_code"] is False


def test_which_reward_specs_name_code():
    from pxpo_gym.rewards import names_code

    assert (
        not names_code("color")
        and not names_code("color:0.5")
        and not names_code(["color:0.5", "jpeg_compressibility"])
    )
    assert not names_code([["color", 0.5], ["brightness", 0.5]]) and not names_code({"color": 1.0})
    assert (
        names_code("os:system")
        and names_code(["color", "mypkg.mod:fn:0.5"])
        and names_code([["os:system", 1.0]])
    )
    assert names_code({"mypkg.mod:fn": 1.0}) and names_code(7)
