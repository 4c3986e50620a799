"""The algorithm protocol (agents.algorithms): a plug-in by import path trains, resumes exactly and takes its
options; broken ones are refused in one line; no import circle and no branch on the algorithm's type."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agents.algorithms import resolve_algorithm
from agents.metrics import read_metrics
from agents.runs import train
from agents.trainer import Trainer
from tests.agents.test_agents import tiny_config
from tests.plugin_algorithms import BatchBaseline

PLUGIN = "tests.plugin_algorithms:BatchBaseline"
ROOT = Path(__file__).resolve().parents[2]


def numbers(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in rows]


def test_a_plugin_by_import_path_trains_and_resumes_exactly(tiny_model_dir, tmp_path):
    straight = tiny_config(tiny_model_dir, tmp_path, algo=PLUGIN, num_epochs=3, out=str(tmp_path / "a"))
    trainer = Trainer(straight)
    assert isinstance(trainer.algo, BatchBaseline) and trainer.algo.config.baseline == "batch"
    history = train(straight)
    assert len(history) == 3 and all(row["approx_kl"] == row["approx_kl"] for row in history)
    assert straight.run_dir.name.startswith("a")
    cut = straight.replace(num_epochs=2, out=str(tmp_path / "b"))
    train(cut)
    # code named in the checkpoint is not run on resume: the user names it again
    with pytest.raises(ValueError, match=f"names the algorithm '{PLUGIN}'.*plugin --path {PLUGIN}"):
        train(tiny_config(tiny_model_dir, tmp_path, resume=str(tmp_path / "b"), num_epochs=3, out=""))
    resumed = tiny_config(
        tiny_model_dir, tmp_path, algo=PLUGIN, resume=str(tmp_path / "b"), num_epochs=3, out=""
    )
    train(resumed)
    assert numbers(read_metrics(tmp_path / "b" / "metrics.csv")) == numbers(
        read_metrics(tmp_path / "a" / "metrics.csv")
    )


def test_an_algorithm_with_the_old_penalty_hook_names_still_gets_its_penalty(tiny_model_dir, tmp_path):
    # braked_pixels / brake_coef are now silent_weights / silent_kl_coef: a subclass written against the old
    # names is served under the new ones, with a DeprecationWarning when the class is made.
    with pytest.warns(DeprecationWarning, match=r"OldHooks.braked_pixels is deprecated: use silent_weights"):

        class OldHooks(BatchBaseline):
            brake_coef = 2.0

            def braked_pixels(self, contexts):
                return torch.ones(len(contexts), *self.map_shape)

    assert OldHooks.silent_kl_coef == 2.0 and OldHooks.silent_weights is OldHooks.braked_pixels
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, algo=PLUGIN, kl_coef=0.0))
    plain = trainer.algo
    traj = trainer.sample()
    adv = plain.advantages(traj.rewards, traj.grid_reward_maps, traj.contexts)
    trainer.algo = OldHooks(plain.config, plain.num_contexts, plain.map_shape)
    metrics = trainer.update(traj, adv)
    assert metrics["silent_kl"] == 0.0  # the penalty ran (measured; the policy is still the reference)


def test_a_plugin_takes_its_own_options(tiny_model_dir, tmp_path):
    config = tiny_config(
        tiny_model_dir, tmp_path, algo=PLUGIN, algo_option=("baseline=none", "clip_range=0.01")
    )
    algo = Trainer(config).algo
    assert algo.config.baseline == "none" and algo.config.clip_range == 0.01
    with pytest.raises(ValueError, match=r"\['window'\] are not options of algo="):
        Trainer(tiny_config(tiny_model_dir, tmp_path, algo=PLUGIN, algo_option=("window=2",)))
    with pytest.raises(ValueError, match="baseline must be 'batch' or 'none', got baseline='mean'"):
        Trainer(tiny_config(tiny_model_dir, tmp_path, algo=PLUGIN, algo_option=("baseline=mean",)))
    with pytest.raises(ValueError, match="must be key=value"):
        tiny_config(tiny_model_dir, tmp_path, algo=PLUGIN, algo_option=("baseline",))
    with pytest.raises(ValueError, match="names 'seed' twice"):
        tiny_config(tiny_model_dir, tmp_path, algo=PLUGIN, algo_option=("seed=1", "seed=2"))


@pytest.mark.parametrize(
    "name, message",
    [
        ("tests.plugin_algorithms:NoLoss", "NoLoss does not define loss()"),
        ("tests.plugin_algorithms:NotAnAlgorithm", "must subclass agents.algorithms.base.Algorithm"),
        ("tests.plugin_algorithms:not_a_class", "is not a class"),
        ("tests.plugin_algorithms:Missing", "has no attribute 'Missing'"),
        ("tests.no_such_module:Algo", "cannot import module 'tests.no_such_module'"),
        ("ppo", "algo must be one of ('ddpo', 'pxpo', 'oracle') or an import path"),
        ("mod:Cls; rm -rf", "algo must be one of"),
    ],
)
def test_a_broken_algorithm_is_refused_naming_it(name, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        resolve_algorithm(name)


def test_the_cli_refuses_a_broken_algorithm_in_one_line(tiny_model_dir, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "agents.train",
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "r"),
    ]
    result = subprocess.run(
        [*command, "plugin", "--path", "tests.plugin_algorithms:NoLoss"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NoLoss does not define loss()" in lines[0]


def agents_modules() -> dict[str, Path]:
    mods = {}
    for path in (ROOT / "agents").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = path
    return mods


def test_agents_has_no_import_circle():
    mods = agents_modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):  # every import, in functions too
            if isinstance(node, ast.ImportFrom) and (node.module or node.level):
                base = node.module or ""
                if (
                    node.level
                ):  # relative (inside agents/ every import of agents is): resolved from the package
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in mods and t != name}
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, "import circle: " + " -> ".join([*stack[stack.index(nxt) :], nxt])
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for module in graph:
        if module not in state:
            visit(module, [module])
    assert "agents.runs" in graph["agents.train"] and "agents.trainer" in graph["agents.runs"]  # it looked


def test_no_branch_on_the_algorithm_outside_its_own_files():
    pattern = re.compile(
        r"isinstance\([^)]*\b(DDPO|PXPO|Oracle)\w*\b|\balgo\s*[!=]=\s*['\"]|\balgo is None\b|\balgo in \("
    )
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for name, path in agents_modules().items()
        if not name.startswith("agents.algorithms")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, offenders
