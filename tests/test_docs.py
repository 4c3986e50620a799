"""Every relative link and image in the README and docs/ points at a file the repository holds."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def tracked_files() -> set[str]:
    done = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    return set(done.stdout.split())


def documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_relative_link_resolves_to_a_committed_file():
    tracked = tracked_files()
    folders = {str(Path(f).parent) for f in tracked} | {
        str(p) for f in tracked for p in Path(f).parents if str(p) != "."
    }
    broken = []
    for doc in documents():
        for target in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            path = (doc.parent / target).resolve().relative_to(ROOT).as_posix()
            if path not in tracked and path not in folders:
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_the_link_check_catches_a_missing_file(tmp_path):
    """The pattern above finds both kinds of link (a negative control for the test)."""
    text = "![img](benchmarks/results/nope.png) and [doc](docs/x.md#part) and [web](https://x.org)"
    assert LINK.findall(text) == ["benchmarks/results/nope.png", "docs/x.md", "https://x.org"]


RESULTS_PAGE_MAX_LINES = 260
"""docs/results/ holds one page per question; a page longer than this is two questions."""


def results_index_problems(index: str, pages: dict[str, str]) -> list[str]:
    """What is wrong with the results pages (file name -> text) and their index, docs/results.md's text."""
    linked = set(LINK.findall(index))
    problems = [
        f"{name}: {count} lines (at most {RESULTS_PAGE_MAX_LINES})"
        for name, text in pages.items()
        if (count := len(text.splitlines())) > RESULTS_PAGE_MAX_LINES
    ]
    problems += [
        f"{name}: not linked from docs/results.md" for name in pages if f"results/{name}" not in linked
    ]
    return problems


def test_every_results_page_is_short_and_listed_in_the_index():
    pages = {page.name: page.read_text() for page in sorted((ROOT / "docs" / "results").glob("*.md"))}
    assert pages, "no pages under docs/results/"
    problems = results_index_problems((ROOT / "docs" / "results.md").read_text(), pages)
    assert not problems, problems


def test_the_results_page_check_catches_a_long_or_unlisted_page():
    """A negative control: a page one line too long and a page the index does not link."""
    pages = {"a.md": "line\n" * (RESULTS_PAGE_MAX_LINES + 1), "b.md": "line\n"}
    assert results_index_problems("- [A](results/a.md#part): the answer", pages) == [
        f"a.md: {RESULTS_PAGE_MAX_LINES + 1} lines (at most {RESULTS_PAGE_MAX_LINES})",
        "b.md: not linked from docs/results.md",
    ]


def test_every_committed_result_file_names_its_commit_and_command():
    # A figure in the docs is only checkable when its result file says which code made it and how.
    results = sorted(
        f for f in tracked_files() if f.startswith("benchmarks/results/") and f.endswith(".json")
    )
    assert results, "no committed result files found"
    missing = []
    for name in results:
        if (
            "/runs/" in name
        ):  # a run folder's own files: the suite's runs_commit.txt above them says which code
            suite = ROOT / name.split("/runs/")[0]
            if not (suite / "runs_commit.txt").is_file():
                missing.append(name)
            continue
        data = json.loads((ROOT / name).read_text())
        if (
            not isinstance(data, dict)
            or not data.get("commit")
            or not str(data.get("command", "")).startswith("python ")
        ):
            missing.append(name)
    assert not missing, f"result files without a commit and a 'python ...' command: {missing}"
