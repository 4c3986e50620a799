"""Train PXPO, DDPO, the oracle or your own algorithm from the shell: the algorithm is a subcommand (PXPO
when none is given), its options follow it; every other flag may stand anywhere.

    python -m agents.train pxpo --reward color --num-epochs 20
    python -m agents.train ddpo --estimator sf --reward segmentation
    python -m agents.train --reward mypkg.rewards:redness      # your own reward callable
    python -m agents.train plugin --path mypkg.algos:MyAlgo --option clip_range=0.01
    python -m agents.train --resume runs/pxpo-is-color-seed0 --num-epochs 40
    torchrun --nproc_per_node=2 -m agents.train pxpo --reward color   # one run on 2 processes

Every option is documented by ``--help`` (an algorithm's: ``python -m agents.train ddpo --help``). Writes RUN/metrics.csv, TensorBoard
scalars in RUN/tb, image grids in RUN/images and checkpoints in RUN/checkpoints.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pxpo_gym.cli import parse

from .algorithms import BUILTIN
from .config import TrainConfig
from .distributed import launched
from .export import EXPORT_DIR
from .metrics import read_metrics
from .runs import RESUME_OVERRIDABLE, resolve_config, train


def refuse_old_flags(args: list[str]) -> None:
    """Refuses the flat command line's ``--algo NAME`` / ``--algo-option``, saying what to write instead."""
    for i, arg in enumerate(args):
        flag = arg.split("=", 1)[0]
        if flag == "--algo":
            value = arg.partition("=")[2] or (args[i + 1] if i + 1 < len(args) else "NAME")
            instead = value if value in BUILTIN else f"plugin --path {value}"
            raise ValueError(f"--algo is a subcommand now: write '{instead}' instead of '--algo {value}'")
        if flag == "--algo-option":
            raise ValueError(
                "--algo-option is now the algorithm's own flags (e.g. 'ddpo --clip-range 1e-3'), "
                "or 'plugin --path PKG.MOD:CLASS --option key=value'"
            )


def main() -> None:
    refuse_old_flags(sys.argv[1:])
    config = parse(TrainConfig, sections=True)
    if dist_rank() == 0:  # before the seconds of loading (stdout: an error stays one line on stderr)
        print(
            f"agents.train: loading model {config.env.model!r} and building the env ({config.algo}, reward "
            f"{' + '.join(config.env.reward)}) ...",
            flush=True,
        )
    if launched():  # torchrun: every rank trains, rank 0 reports
        import torch.distributed as dist

        try:
            history = train(config)
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
        if history and dist_rank() == 0:
            last = history[-1]
            print(
                f"epoch {int(last['epoch'])}: reward {last['reward_mean']:.4f}; run folder: {config.run.resume or config.run_dir}"
            )
        return
    if config.run.resume:
        resolved = resolve_config(config)
        given = [f"{k}={getattr(resolved.run, k)!r}" for k in RESUME_OVERRIDABLE[:8]]
        print(
            f"resuming {config.run.resume}: its settings come from its checkpoint; from the command line: {', '.join(given)}"
        )
    history = train(config)
    if not history and config.run.resume:
        done = read_metrics(f"{config.run.resume}/metrics.csv")
        export = Path(config.run.resume) / EXPORT_DIR
        print(
            f"the run in {config.run.resume} is already complete: {len(done)} epochs >= --num-epochs "
            f"{resolve_config(config).run.num_epochs}; nothing to train (pass a larger --num-epochs to continue)"
            + (f"; its export: {export}" if export.is_dir() else "")
        )
    if history:
        last = history[-1]
        print(
            f"epoch {int(last['epoch'])}: {int(last['images'])} images, reward {last['reward_mean']:.4f} "
            f"(first epoch of this run: {history[0]['reward_mean']:.4f}); run folder: {config.run.resume or config.run_dir}"
        )


def dist_rank() -> int:
    return int(os.environ.get("RANK", "0"))


if __name__ == "__main__":
    from pxpo_gym.cli import run

    run(main, "agents.train")
