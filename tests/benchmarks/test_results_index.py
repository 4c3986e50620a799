"""The committed results are indexed (benchmarks.index): every folder of benchmarks/results/ holds its command,
commit and summary (about.json), INDEX.md is what ``python -m benchmarks.index`` writes, and
scripts/run_benchmarks.sh runs (or, for code outside the repository, lists) every folder's command. Each check
is also run on a repository made by hand in tmp_path, where it must fail (the negative controls)."""

from __future__ import annotations

import argparse
import json
import runpy
import shlex
import sys
from pathlib import Path

import pytest
import tyro

from benchmarks import index

ROOT = Path(__file__).resolve().parents[2]


def test_every_results_folder_names_its_command_commit_and_summary():
    assert index.about_problems(ROOT) == []
    folders = index.results_folders(ROOT)
    assert "full" in folders and "archive/full_hybrid" in folders


def test_index_md_is_what_the_generator_writes():
    path = ROOT / index.RESULTS / index.INDEX
    assert path.read_text() == index.render(ROOT), "INDEX.md is stale: run python -m benchmarks.index"


def test_run_benchmarks_runs_every_folders_command():
    assert index.uncovered(ROOT) == []


# --- negative controls: a repository made by hand ---------------------------------------------------------

SCRIPT = """#!/usr/bin/env bash
PY=${PY:-.venv/bin/python}
R=benchmarks/results
$PY -m benchmarks.suite quick \\
    --out $R/alpha > logs/alpha.log 2>&1
at 1234567 $R/old $R/archive/old $PY -m benchmarks.suite full --out benchmarks/results/old > logs/old.log 2>&1
# listed, not rerun:
#   outside (abcdef0): python /tmp/x/run.py REWARD
"""


def write_about(folder: Path, **about) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / index.ABOUT).write_text(json.dumps(about))


@pytest.fixture
def repo(tmp_path) -> Path:
    results = tmp_path / index.RESULTS
    write_about(
        results / "alpha",
        summary="a quick grid",
        command="python -m benchmarks.suite quick --out benchmarks/results/alpha",
        commit="aaaaaaa",
    )
    write_about(
        results / "archive" / "old",
        summary="an older preset",
        command="python -m benchmarks.suite full --out benchmarks/results/old",
        commit="1234567",
        rerun_at="1234567",
        archived="the previous default",
    )
    write_about(
        results / "outside",
        summary="a re-check",
        command="python /tmp/x/run.py REWARD",
        commit="abcdef0",
        outside_repository="rewards kept out of the repository",
    )
    (tmp_path / "scripts").mkdir()
    (tmp_path / index.SCRIPT).write_text(SCRIPT)
    (tmp_path / "docs" / "results").mkdir(parents=True)
    (tmp_path / "README.md").write_text(
        "see `benchmarks/results/{alpha,outside}/summary.md` and `benchmarks/results/`\n"
    )
    (tmp_path / "DEVELOPERS.md").write_text("nothing here\n")
    (tmp_path / "docs" / "results" / "old.md").write_text(
        "![plot](../../benchmarks/results/archive/old/plot.png), `benchmarks/results/alpha.` ends a sentence\n"
    )
    return tmp_path


def test_the_checks_pass_on_a_complete_repository(repo):
    assert index.results_folders(repo) == ["alpha", "outside", "archive/old"]
    assert index.about_problems(repo) == [] and index.uncovered(repo) == []
    assert index.doc_links(repo) == {
        "alpha": ["README.md", "docs/results/old.md"],
        "outside": ["README.md"],
        "archive/old": ["docs/results/old.md"],
    }
    text = index.render(repo)
    assert "| [archive/old](archive/old/) | an older preset | 1234567 | at 1234567: `python -m" in text
    assert "[docs/results/old.md](../../docs/results/old.md)" in text
    assert (
        "2 folders (1 suite runs, 0 studies, 0 performance, 1 code outside the repository) and 1 archived"
        in text
    )


def test_a_folder_without_its_command_or_commit_fails(repo):
    results = repo / index.RESULTS
    about = json.loads((results / "alpha" / index.ABOUT).read_text())
    del about["commit"]
    (results / "alpha" / index.ABOUT).write_text(json.dumps(about))
    (results / "beta").mkdir()  # no about.json at all
    (results / "loose.json").write_text("{}")  # a result outside any folder
    write_about(
        results / "archive" / "older", summary="s", command="python -m x", commit="c"
    )  # no 'archived'
    write_about(results / "gamma", summary="s", command="make all", commit="c")  # not a command we run
    problems = "\n".join(index.about_problems(repo))
    assert "alpha/about.json: missing ['commit']" in problems
    assert "beta: no about.json" in problems and "loose.json: a file outside" in problems
    assert "older/about.json: missing ['archived" in problems and "not a command: ['make all']" in problems
    with pytest.raises(SystemExit, match="incomplete results folders"):
        index.main(index.IndexConfig(), root=repo)


def test_a_stale_index_fails(repo, capsys):
    assert index.main(index.IndexConfig(), root=repo) == 0
    assert index.main(index.IndexConfig(check=True), root=repo) == 0
    write_about(
        repo / index.RESULTS / "delta",
        summary="a new study",
        command="python -m benchmarks.studies.delta --out benchmarks/results/delta",
        commit="ddddddd",
    )
    with open(repo / index.SCRIPT, "a") as handle:
        handle.write("$PY -m benchmarks.studies.delta --out $R/delta\n")
    saved = (repo / index.RESULTS / index.INDEX).read_text()
    assert "delta" not in saved and "[delta](delta/)" in index.render(repo)
    assert index.main(index.IndexConfig(check=True), root=repo) == 1
    assert "INDEX.md is stale" in capsys.readouterr().out
    index.main(index.IndexConfig(), root=repo)
    (repo / "docs" / "results" / "delta.md").write_text(
        "`benchmarks/results/delta/delta.json`\n"
    )  # a new link
    assert index.main(index.IndexConfig(check=True), root=repo) == 1


def test_a_command_the_script_does_not_run_fails(repo):
    script = repo / index.SCRIPT
    script.write_text(
        SCRIPT.replace("$PY -m benchmarks.suite quick \\", "# $PY -m benchmarks.suite quick \\")
    )
    assert index.uncovered(repo) == ["alpha: python -m benchmarks.suite quick --out benchmarks/results/alpha"]
    script.write_text(SCRIPT.replace("--out $R/alpha", "--out $R/alpha_auto"))  # another folder's command
    assert [m.split(":")[0] for m in index.uncovered(repo)] == ["alpha"]
    script.write_text(SCRIPT.replace("at 1234567", "at 7654321"))  # rerun at another commit
    assert index.uncovered(repo) == [
        "archive/old: python -m benchmarks.suite full --out benchmarks/results/old (at 1234567)"
    ]
    script.write_text(SCRIPT.replace("at 1234567 $R/old $R/archive/old ", ""))  # at HEAD, not at its commit
    assert [m.split(":")[0] for m in index.uncovered(repo)] == ["archive/old"]
    script.write_text(SCRIPT.replace("#   outside (abcdef0): python /tmp/x/run.py REWARD\n", ""))
    assert index.uncovered(repo) == ["outside: python /tmp/x/run.py REWARD"]


# --- the commands run at HEAD parse with today's modules ---------------------------------------------------


class Parsed(BaseException):
    """Raised in place of running a command once its arguments parsed."""


def head_commands() -> list[tuple[str, str, list[str]]]:
    found = []
    for folder in index.results_folders(ROOT):
        for command in index.commands(index.read_about(ROOT, folder)):
            words = shlex.split(command["command"])
            if words[:2] == ["python", "-m"] and not command.get("rerun_at"):
                found.append((folder, words[2], words[3:]))
    return found


def parse_only(module: str, args: list[str], monkeypatch) -> None:
    """Runs ``python -m module args`` up to the point where its configuration is built (a preset's own
    checks included), then raises Parsed."""

    def stop(original):
        def parse(*a, **k):
            raise Parsed(original(*a, **k))

        return parse

    monkeypatch.setattr(tyro, "cli", stop(tyro.cli))
    monkeypatch.setattr(tyro.extras, "overridable_config_cli", stop(tyro.extras.overridable_config_cli))
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", stop(argparse.ArgumentParser.parse_args))
    monkeypatch.setattr(sys, "argv", [module, *args])
    runpy.run_module(module, run_name="__main__", alter_sys=True)


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # a study imported by another
@pytest.mark.parametrize(
    "folder, module, args", head_commands(), ids=lambda v: v if isinstance(v, str) else None
)
def test_the_commands_run_at_head_parse(folder, module, args, monkeypatch):
    """Each folder's command names a module that exists today, with options and values it accepts."""
    with pytest.raises(Parsed):
        parse_only(module, args, monkeypatch)


def test_a_command_with_an_unknown_module_option_or_variant_does_not_parse(monkeypatch):
    with pytest.raises(ImportError):
        parse_only("benchmarks.studies.no_such_study", [], monkeypatch)
    with pytest.raises(SystemExit):
        parse_only("benchmarks.suite", ["full", "--pxpo-variants", "nope"], monkeypatch)
    with pytest.raises(SystemExit):
        parse_only("benchmarks.studies.locality", ["--no-such-option"], monkeypatch)


def test_every_commit_a_result_names_is_in_the_history():
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    assert index.unknown_commits(ROOT) == []


def test_a_commit_that_never_landed_fails(repo, capsys):
    import subprocess

    def git(*args: str) -> str:
        command = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()

    with pytest.raises(FileNotFoundError, match="not a git checkout"):
        index.unknown_commits(repo)
    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "results")
    real = git("rev-parse", "--short", "HEAD")
    results = repo / index.RESULTS
    write_about(
        results / "alpha",
        summary="a quick grid",
        command="python -m benchmarks.suite quick --out benchmarks/results/alpha",
        commit=f"{real} (color) + 0badc0de (jpeg)",
        more_commands=[{"command": "python -m benchmarks.suite.passes quick", "commit": real}],
    )
    # the fixture's own commits (1234567, abcdef0) were never made here either; the real one passes
    assert index.unknown_commits(repo) == [
        f"benchmarks/results/{folder}/about.json: commit {commit} is not in this repository's history"
        for folder, commit in (("alpha", "0badc0de"), ("outside", "abcdef0"), ("archive/old", "1234567"))
    ]
    assert index.main(index.IndexConfig(), root=repo) == 0
    assert index.main(index.IndexConfig(check=True), root=repo) == 1
    assert "commit 0badc0de is not in this repository's history" in capsys.readouterr().out
