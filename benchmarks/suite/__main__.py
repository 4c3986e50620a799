"""``python -m benchmarks.suite PRESET [--field value ...]``: runs a preset grid and writes its report."""

import tyro

from benchmarks.suite.grid import PRESETS
from benchmarks.suite.runner import main
from pxpo_gym.cli import run

if __name__ == "__main__":
    presets = {name: (fn.__doc__.splitlines()[0], fn()) for name, fn in PRESETS.items()}
    run(lambda: main(tyro.extras.overridable_config_cli(presets)), "benchmarks.suite")
