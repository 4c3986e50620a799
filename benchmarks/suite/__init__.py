"""Sample-efficiency suite: task x algorithm x seed on the embedded default model.

    python -m benchmarks.suite quick          # ~4 min on 2 CPU cores (the README's main job)
    python -m benchmarks.suite full           # 5 seeds, budgets to the plateau; results committed
    python -m benchmarks.suite sweep          # the learning-rate / clip-range sweep every algorithm gets
    python -m benchmarks.suite advantages     # PXPO's advantage normalisation options on all tasks
    python -m benchmarks.suite options        # KL penalty and group advantages vs the defaults
    python -m benchmarks.suite quick --seeds 0 1 --workers 1   # any field can be overridden

Every run gets the same image budget, batch sizes and sampling settings; only
the algorithm (and its own swept learning rate) differs. On differentiable
rewards the exact-gradient oracle (``agents.algorithms.oracle``) runs beside DDPO and PXPO
as the ceiling they are judged against; every run is evaluated on held-out noise
for reward and fidelity to the pretrained model (``agents.heldout``). Each run writes its
metrics CSV under OUT/runs/TASK/LABEL/seedK; a finished run is skipped, a
partial one resumes from its checkpoint. Then the grid is summarised: a plot of
mean reward against images generated (mean over seeds, 95% confidence band, one
panel per task), a samples-to-threshold table, and a markdown summary.

The harness's modules: ``grid`` (the grid, its presets, where runs go), ``variants`` (the named arm
variants, as data), ``tasks`` (the tasks and their split), ``runner`` (training the grid), ``report``,
``analysis`` and ``breadth`` (the summary), ``passes`` (passes to target, a second report),
``reproduce`` (today's code against committed runs) and ``peers`` (other methods as plug-in arms).
"""

from benchmarks.suite.grid import (
    PRESETS,
    RUNS_COMMIT_FILE,
    Arm,
    SuiteConfig,
    record_runs_commit,
    run_dir,
    train_config,
)
from benchmarks.suite.runner import is_complete, main, run_grid, run_one
from benchmarks.suite.variants import OPTION_VARIANTS, PXPO_VARIANTS

__all__ = [
    "OPTION_VARIANTS",
    "PRESETS",
    "PXPO_VARIANTS",
    "RUNS_COMMIT_FILE",
    "Arm",
    "SuiteConfig",
    "is_complete",
    "main",
    "record_runs_commit",
    "run_dir",
    "run_grid",
    "run_one",
    "train_config",
]
