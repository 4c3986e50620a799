"""What the wheel installs: one top-level package, ``pxpo_gym``, with the repository's agents/ folder as
``pxpo_gym.agents`` and benchmarks/ left out, so that nothing it installs can collide with another
project's ``agents`` or ``benchmarks``. Checked from pyproject.toml's own mapping (no build, no network):
every package folder is listed, and the installed layout imports and runs with the repository out of
reach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def setuptools_table() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]


def installed_layout(table: dict) -> dict[str, Path]:
    """Each listed package's folder in the repository, as setuptools maps it (package-dir)."""
    mapping = table.get("package-dir", {})
    folders = {}
    for package in table["packages"]:
        prefix = max(
            (p for p in mapping if package == p or package.startswith(p + ".")), key=len, default=None
        )
        if prefix is None:
            folders[package] = ROOT / package.replace(".", "/")
        else:
            rest = package[len(prefix) :].lstrip(".").replace(".", "/")
            folders[package] = ROOT / mapping[prefix] / rest
    return folders


def package_folders(top: str) -> set[Path]:
    return {p.parent for p in (ROOT / top).rglob("__init__.py")}


def test_one_top_level_package_and_every_package_folder_listed():
    table = setuptools_table()
    folders = installed_layout(table)
    assert {package.split(".")[0] for package in folders} == {"pxpo_gym"}
    assert set(folders.values()) == package_folders("pxpo_gym") | package_folders("agents")
    assert not any("benchmarks" in str(folder.relative_to(ROOT)) for folder in folders.values())


def test_the_layout_check_catches_a_package_left_out():
    table = setuptools_table()
    table = {**table, "packages": [p for p in table["packages"] if p != "pxpo_gym.agents.refine"]}
    assert set(installed_layout(table).values()) != package_folders("pxpo_gym") | package_folders("agents")


def test_the_installed_layout_imports_and_runs_without_the_repository(tmp_path):
    # Copy what the wheel holds where setuptools puts it, then import from there alone: a leftover absolute
    # 'from agents.x import' (there is no top-level agents once installed) fails here.
    site = tmp_path / "site"
    for package, folder in installed_layout(setuptools_table()).items():
        target = site / package.replace(".", "/")
        target.mkdir(parents=True, exist_ok=True)
        for path in folder.iterdir():
            if path.is_file():
                shutil.copy2(path, target / path.name)
            elif path.name in ("static", "assets"):  # package data
                shutil.copytree(path, target / path.name)
    code = (
        "import sys; sys.path[:] = [p for p in sys.path if p != " + repr(str(ROOT)) + "];"
        "import pxpo_gym.agents.config as c, pxpo_gym.agents.algorithms as a, pxpo_gym.agents.refine.app;"
        "assert c.__file__.startswith(" + repr(str(site)) + "), c.__file__;"
        "print(a.resolve_algorithm('pxpo').__module__)"
    )
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "pxpo_gym.agents.algorithms.pxpo"
    cli = subprocess.run(
        [sys.executable, "-m", "pxpo_gym.agents.train", "ddpo", "--help"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert cli.returncode == 0 and "--estimator" in cli.stdout, cli.stderr


def absolute_self_imports(folder: Path) -> list[str]:
    """Imports of ``agents`` by its top-level name inside agents/ (installed, there is no such package)."""
    import ast

    found = []
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            found += [f"{path.name}:{node.lineno}" for name in names if name.split(".")[0] == "agents"]
    return found


def test_agents_imports_itself_relatively(tmp_path):
    assert absolute_self_imports(ROOT / "agents") == []
    (tmp_path / "bad.py").write_text("def f():\n    from agents.config import TrainConfig\n")
    assert absolute_self_imports(tmp_path) == ["bad.py:2"]  # the check sees one, in a function too
