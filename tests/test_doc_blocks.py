"""Every code block of the README and docs/ runs in the tests.

- Python blocks run here, in order, one namespace per file, unless a named test runs them already
  (``ELSEWHERE``: the tests that also check what the block produces). A block written for a GPU and a
  hub model runs with the tiny pipeline on the CPU (``ADAPTED``: the only edits, spelled out).
- Shell blocks and inline commands: every ``python -m MODULE ARGS`` (also under ``torchrun``) is parsed by the module's own
  command line, up to the point where it would start working, so a renamed or mistyped option or a bad
  value fails here; the scripts and extras the blocks name must exist. What the commands do is tested
  by the modules' own tests (and ``.ci/run`` runs the README's test command itself).
"""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest
import tyro

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"```(\w+)\n(.*?)```", flags=re.S)

ELSEWHERE = {
    "A short tour": "tests/test_readme.py::test_readme_tour_runs",
    "for iteration in range": "tests/test_readme.py::test_custom_agent_template_runs",
    "make_sb3_env": "tests/test_readme.py::test_sb3_example_runs",
    "ObservationView(": "tests/test_readme.py::test_wrapper_example_builds_the_keyword_env",
    'model="default-flow"': "tests/test_readme.py::test_flow_matching_examples_run",
    "save_tiny_flux_pipeline": "tests/test_readme.py::test_flow_matching_examples_run",
    "class_labels=labels": "tests/agents/test_export.py::test_the_sampling_snippet_of_the_training_docs_runs_on_an_export",
}
"""A marker in a block -> the test that runs that block (and checks its result)."""

ADAPTED = {
    '"stable-diffusion-v1-5/stable-diffusion-v1-5"': "TINY_SD",
    'device="cuda"': 'device="cpu"',
    "num_inference_steps=50": "num_inference_steps=2",
}
"""GPU / hub-model blocks: these substitutions (TINY_SD: a tiny SD-layout pipeline) and nothing else."""


def blocks(language: str) -> list[tuple[Path, int, str]]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for index, (lang, body) in enumerate(FENCE.findall(text)):
            if lang == language:
                found.append((page, index, body))
    return found


def covered_elsewhere(page: Path, body: str) -> str | None:
    if page.name == "README.md" and "import pxpo_gym  # registers" in body:
        return ELSEWHERE["A short tour"]
    return next((test for marker, test in ELSEWHERE.items() if marker in body), None)


def test_the_tests_named_for_other_blocks_exist():
    for test in set(ELSEWHERE.values()):
        path, name = test.split("::")
        assert f"def {name}(" in (ROOT / path).read_text(), test


@pytest.mark.parametrize(
    "page",
    [p for p in PAGES if any(lang == "python" for lang, _ in FENCE.findall(p.read_text()))],
    ids=lambda p: p.name,
)
def test_python_blocks_run(page, tmp_path, monkeypatch, tiny_sd_dir):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for doc, index, body in blocks("python"):
        if doc != page or covered_elsewhere(doc, body):
            continue
        for old, new in ADAPTED.items():
            body = body.replace(old, repr(str(tiny_sd_dir)) if new == "TINY_SD" else new)
        exec(compile(body, f"{page.name} block {index}", "exec"), namespace)


class Parsed(BaseException):
    """Raised in place of running a command once its arguments parsed (a BaseException, so that the
    commands' one-line error handler does not catch it)."""


def commands() -> list[tuple[str, str, list[str]]]:
    """(where, module, args) of every ``python -m`` line of every shell block, and of every inline
    ``python -m ...`` span of the text (the commands that figures name)."""
    found = []
    lines = [
        (f"{page.name} block {index}", line)
        for page, index, body in blocks("bash")
        for line in re.sub(r"\\\n\s*", " ", body).splitlines()  # continued lines joined
    ]
    for page in PAGES:
        prose = FENCE.sub("", page.read_text()).replace("\n", " ")
        lines += [(f"{page.name} inline", span) for span in re.findall(r"`([^`]*python -m [^`]*)`", prose)]
    for where, line in lines:
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)  # a "#" starting a word begins a comment
            if "-m" not in words or "pytest" in words or "..." in words:
                continue
            at = words.index("-m")
            found.append((where, words[at + 1], words[at + 2 :]))
    return found


@pytest.mark.parametrize("where, module, args", commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_shell_commands_parse(where, module, args, monkeypatch):
    def stop(original):
        def parse(*a, **k):
            raise Parsed(original(*a, **k))

        return parse

    monkeypatch.setattr(tyro, "cli", stop(tyro.cli))
    monkeypatch.setattr(tyro.extras, "overridable_config_cli", stop(tyro.extras.overridable_config_cli))
    monkeypatch.setattr(tyro.extras, "subcommand_cli_from_dict", stop(tyro.extras.subcommand_cli_from_dict))
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop(argparse.ArgumentParser.parse_args))
    monkeypatch.setattr(sys, "argv", [module, *args])
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except Parsed:
        return
    except SystemExit as exit:  # --help
        assert exit.code == 0 and "--help" in args, f"{where}: {module} {args} exited {exit.code}"
        return
    raise AssertionError(f"{where}: {module} ran without parsing its arguments")


def test_scripts_and_extras_the_blocks_name_exist():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for _, _, body in blocks("bash"):
        for script in re.findall(r"bash (\S+\.sh)", body):
            assert (ROOT / script).is_file(), script
        for names in re.findall(r"pxpo-gym\[([\w,]+)\]", body):
            assert set(names.split(",")) <= set(extras), names
