"""The index of the committed results: ``python -m benchmarks.index`` writes benchmarks/results/INDEX.md.

Every study's results live in one folder of benchmarks/results/ (superseded ones, a previous default's or
an older preset's, in benchmarks/results/archive/), and every folder holds an ``about.json``:

- ``summary``: one line, what the folder answers;
- ``command``: the command that remakes its files (today's module paths; ``python ...`` or ``bash ...``),
  as scripts/run_benchmarks.sh runs it;
- ``commit``: the commit of the code that made the committed files, as recorded (several when runs
  were added at different commits); each must be in the repository's history (``unknown_commits``);
- optional: ``writes`` (the files that command writes, when the folder holds more), ``rerun_at`` (the
  script runs the command in a worktree at that commit, not at HEAD: archived results, a 'before'
  measurement), ``outside_repository`` (why the code is not in the repository: the script lists the
  command, it cannot run it), ``more_commands`` (further commands that wrote into the folder, each with
  the same fields), and under archive/ ``archived`` (why it is superseded).

INDEX.md lists every folder with its summary, commit, command and the doc pages that link it (found by
scanning README.md, DEVELOPERS.md and docs/**/*.md for ``benchmarks/results/FOLDER``). The tests
(tests/benchmarks/test_results_index.py) fail when a folder lacks its about.json, when INDEX.md differs from what
this writes, when scripts/run_benchmarks.sh lacks a folder's command, or when a commit named is not in the
repository's history.

    python -m benchmarks.index            # rewrite INDEX.md
    python -m benchmarks.index --check    # exit 1 if INDEX.md is stale or a folder is incomplete
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path("benchmarks/results")
"""The committed results, relative to the repository root."""
ARCHIVE = "archive"
"""The folder of superseded results, inside RESULTS."""
ABOUT = "about.json"
INDEX = "INDEX.md"
SCRIPT = Path("scripts/run_benchmarks.sh")
REQUIRED = ("summary", "command", "commit")
KINDS = (
    (
        "suite",
        "Suite runs",
        "the harness, `python -m benchmarks.suite` (and its `reproduce` and `passes` reports)",
    ),
    ("studies", "Studies", "one question each, `python -m benchmarks.studies.NAME`"),
    ("performance", "Performance", "`python -m benchmarks.performance.NAME`"),
    ("outside", "Code outside the repository", "re-checks on rewards kept out of the repository on purpose"),
)
REFERENCE = re.compile(r"benchmarks/results/([\w.{},/-]+)")


def results_folders(root: Path = ROOT) -> list[str]:
    """Every results folder, relative to RESULTS: the top-level ones, then archive/NAME (sorted)."""
    results = root / RESULTS
    top = sorted(p.name for p in results.iterdir() if p.is_dir() and p.name != ARCHIVE)
    archive = results / ARCHIVE
    archived = (
        sorted(f"{ARCHIVE}/{p.name}" for p in archive.iterdir() if p.is_dir()) if archive.is_dir() else []
    )
    return top + archived


def read_about(root: Path, folder: str) -> dict:
    return json.loads((root / RESULTS / folder / ABOUT).read_text())


def commands(about: dict) -> list[dict]:
    """The folder's commands, the main one first, each a dict with at least command and commit."""
    main = {k: v for k, v in about.items() if k not in ("summary", "more_commands", "archived")}
    return [main, *about.get("more_commands", [])]


def about_problems(root: Path = ROOT) -> list[str]:
    """What is missing: folders without a complete about.json, and files outside any folder."""
    results = root / RESULTS
    problems = [
        f"{p.relative_to(root)}: a file outside any results folder"
        for p in sorted(results.iterdir())
        if p.is_file() and p.name != INDEX
    ]
    for folder in results_folders(root):
        path = results / folder / ABOUT
        if not path.is_file():
            problems.append(f"{RESULTS / folder}: no {ABOUT} (its command, commit and summary)")
            continue
        try:
            about = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            problems.append(f"{RESULTS / folder}/{ABOUT}: not JSON ({error})")
            continue
        missing = [key for key in REQUIRED if not str(about.get(key, "")).strip()]
        for i, command in enumerate(about.get("more_commands", [])):
            missing += [f"more_commands[{i}].{key}" for key in ("command", "commit") if not command.get(key)]
        if folder.startswith(f"{ARCHIVE}/") and not about.get("archived"):
            missing.append("archived (why it is superseded)")
        bad = [c["command"] for c in commands(about) if c.get("command") and not is_command(c["command"])]
        if missing or bad:
            problems.append(f"{RESULTS / folder}/{ABOUT}: missing {missing}, not a command: {bad}")
    return problems


COMMIT = re.compile(r"\b[0-9a-f]{7,40}\b")
"""An abbreviated or full commit hash, as about.json's commit fields write them (beside words such as 'working
tree' or task names)."""


def unknown_commits(root: Path = ROOT) -> list[str]:
    """Commits named in about.json files (``commit`` and each ``more_commands[i].commit``) that the repository's
    history does not hold, e.g. one made on a branch that never landed: a result must name code one can check
    out. Needs git and ``root/.git``.

    Raises:
        FileNotFoundError: ``root`` is not a git checkout.
    """
    import subprocess

    if not (root / ".git").exists():
        raise FileNotFoundError(f"{root} is not a git checkout: its results' commits cannot be checked")
    named: dict[str, list[str]] = {}
    for folder in results_folders(root):
        path = root / RESULTS / folder / ABOUT
        if not path.is_file():
            continue
        about = json.loads(path.read_text())
        fields = [about.get("commit", "")] + [c.get("commit", "") for c in about.get("more_commands", [])]
        for commit in COMMIT.findall(" ".join(str(f) for f in fields)):
            named.setdefault(commit, []).append(folder)
    if not named:
        return []
    queries = "".join(f"{commit}^{{commit}}\n" for commit in named)
    answer = subprocess.run(
        ["git", "-C", str(root), "cat-file", "--batch-check"],
        input=queries,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [
        f"{RESULTS / folder}/{ABOUT}: commit {commit} is not in this repository's history"
        for commit, line in zip(named, answer)
        if line.endswith(" missing")
        for folder in named[commit]
    ]


def is_command(text: str) -> bool:
    return text.startswith(("python ", "bash "))


def kind(about: dict) -> str:
    """'suite', 'studies', 'performance' or 'outside', from the main command's module."""
    words = about["command"].split()
    module = words[words.index("-m") + 1] if "-m" in words[:2] else ""
    for name in ("suite", "studies", "performance"):
        if module == f"benchmarks.{name}" or module.startswith(f"benchmarks.{name}."):
            return name
    return "outside"


def doc_pages(root: Path = ROOT) -> list[Path]:
    pages = [root / "README.md", root / "DEVELOPERS.md", *sorted((root / "docs").rglob("*.md"))]
    return [page for page in pages if page.is_file()]


def expand_braces(text: str) -> list[str]:
    """``a.{json,md}`` -> ``a.json``, ``a.md`` (every brace group, left to right)."""
    match = re.search(r"\{([^{}]*)\}", text)
    if not match:
        return [text]
    head, tail = text[: match.start()], text[match.end() :]
    return [out for part in match.group(1).split(",") for out in expand_braces(head + part + tail)]


def folder_of(path: str, folders: set[str]) -> str | None:
    """The results folder a path below benchmarks/results/ is in (None: the root itself, or no folder)."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    key = (
        f"{ARCHIVE}/{parts[1].rstrip('.')}"
        if parts[0] == ARCHIVE and len(parts) > 1
        else parts[0].rstrip(".")
    )
    return key if key in folders else None


def doc_links(root: Path = ROOT, folders: list[str] | None = None) -> dict[str, list[str]]:
    """{folder: the doc pages (relative to the root) that name a path in it}."""
    known = set(results_folders(root) if folders is None else folders)
    found: dict[str, set[str]] = {}
    for page in doc_pages(root):
        for reference in REFERENCE.findall(page.read_text()):
            for path in expand_braces(reference):
                folder = folder_of(path, known)
                if folder:
                    found.setdefault(folder, set()).add(page.relative_to(root).as_posix())
    return {folder: sorted(pages) for folder, pages in found.items()}


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def row(folder: str, about: dict, pages: list[str]) -> str:
    runs = commands(about)
    commits = "<br>".join(cell(c["commit"]) for c in runs)
    shown = "<br>".join(
        ("at " + c["rerun_at"] + ": " if c.get("rerun_at") else "") + f"`{cell(c['command'])}`" for c in runs
    )
    cited = ", ".join(f"[{page}](../../{page})" for page in pages) or "-"
    why = f" {cell(about['archived'])} |" if "archived" in about else ""
    return f"| [{folder}]({folder}/) | {cell(about['summary'])} | {commits} | {shown} |{why} {cited} |"


def render(root: Path = ROOT) -> str:
    """INDEX.md's text (deterministic: the about.json files and the docs only)."""
    folders = results_folders(root)
    abouts = {folder: read_about(root, folder) for folder in folders}
    links = doc_links(root, folders)
    current = [f for f in folders if not f.startswith(f"{ARCHIVE}/")]
    archived = [f for f in folders if f.startswith(f"{ARCHIVE}/")]
    header = "| folder | summary | commit | command | cited in |\n|---|---|---|---|---|"
    counts = {name: sum(kind(abouts[f]) == name for f in current) for name, _, _ in KINDS}
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m benchmarks.index` from each folder's `{ABOUT}` and the links in README.md,",
        "DEVELOPERS.md and docs/; do not edit by hand (`tests/benchmarks/test_results_index.py` fails when this file is",
        "stale). Commit: the code that made the committed files, as recorded. Command: what remakes them;",
        "`scripts/run_benchmarks.sh` runs every one (those marked 'at COMMIT' in a worktree at that commit; the",
        "ones whose code is outside the repository it lists). Cited in: the pages that name a path in the folder.",
        "",
        f"{len(current)} folders ("
        + ", ".join(f"{counts[name]} {title.lower()}" for name, title, _ in KINDS)
        + f") and {len(archived)} archived.",
    ]
    for name, title, what in KINDS:
        chosen = [f for f in current if kind(abouts[f]) == name]
        if chosen:
            lines += ["", f"## {title}", "", f"{what[0].upper()}{what[1:]}.", "", header]
            lines += [row(f, abouts[f], links.get(f, [])) for f in chosen]
    if archived:
        lines += [
            "",
            "## Archive",
            "",
            "Superseded by a later default or preset (the docs call them the previous default or an older",
            "preset), kept because the docs cite them; their commands ran at the commit named.",
            "",
            "| folder | summary | commit | command | why archived | cited in |",
            "|---|---|---|---|---|---|",
        ]
        lines += [row(f, abouts[f], links.get(f, [])) for f in archived]
    return "\n".join(lines) + "\n"


def script_lines(text: str) -> list[tuple[bool, str]]:
    """(is a comment, line) of a shell script, continued lines joined, $PY read as python and $R as
    benchmarks/results, whitespace collapsed."""
    text = re.sub(r"\\\n\s*", " ", text)
    out = []
    for line in text.splitlines():
        line = re.sub(r'"?\$\{?PY\}?"?(?=\s)', "python", line)
        line = re.sub(r"\$\{?R\}?(?=[/\s]|$)", str(RESULTS), line)
        line = " ".join(line.split())
        if line:
            out.append((line.startswith("#"), line))
    return out


def covered(command: dict, lines: list[tuple[bool, str]]) -> bool:
    """Whether the script runs ``command`` (in a line of its own, at HEAD or through ``at COMMIT``), or,
    for code outside the repository, at least names it."""
    wanted = " ".join(command["command"].split())
    pattern = re.compile(re.escape(wanted) + r"(?=$|[\s;&|>)])")
    for comment, line in lines:
        if not pattern.search(line):
            continue
        if command.get("outside_repository"):
            return True
        if comment:
            continue
        at = re.match(r"at (\w+) ", line)
        if (at.group(1) if at else None) == command.get("rerun_at"):
            return True
    return False


def uncovered(root: Path = ROOT) -> list[str]:
    """Each folder's commands that scripts/run_benchmarks.sh does not run (or list)."""
    lines = script_lines((root / SCRIPT).read_text())
    missing = []
    for folder in results_folders(root):
        path = root / RESULTS / folder / ABOUT
        if not path.is_file():
            missing.append(f"{folder}: no {ABOUT}")
            continue
        for command in commands(json.loads(path.read_text())):
            if not covered(command, lines):
                at = f" (at {command['rerun_at']})" if command.get("rerun_at") else ""
                missing.append(f"{folder}: {command['command']}{at}")
    return missing


@dataclass(frozen=True)
class IndexConfig:
    """Write benchmarks/results/INDEX.md from the folders' about.json and the docs' links."""

    check: bool = False
    """Only check: exit 1 if INDEX.md is stale, a folder is incomplete or the script misses a command."""


def main(cfg: IndexConfig, root: Path = ROOT) -> int:
    problems = about_problems(root)
    if problems:
        raise SystemExit("incomplete results folders:\n" + "\n".join(problems))
    text = render(root)
    path = root / RESULTS / INDEX
    if cfg.check:
        stale = not path.is_file() or path.read_text() != text
        missing = uncovered(root)
        unknown = unknown_commits(root) if (root / ".git").exists() else []
        for line in (
            ([f"{path.relative_to(root)} is stale: run python -m benchmarks.index"] if stale else [])
            + [f"{SCRIPT} lacks: {m}" for m in missing]
            + unknown
        ):
            print(line)
        return int(stale or bool(missing) or bool(unknown))
    path.write_text(text)
    print(f"wrote {path.relative_to(root)} ({len(results_folders(root))} folders)")
    return 0


if __name__ == "__main__":
    import sys

    import tyro

    from pxpo_gym.cli import run

    run(lambda: sys.exit(main(tyro.cli(IndexConfig))), "benchmarks.index")
