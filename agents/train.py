"""Train DDPO or PXPO from the shell.

    python -m agents.train --algo pxpo --reward color --num-epochs 20
    python -m agents.train --algo ddpo --estimator sf --reward segmentation
    python -m agents.train --reward mypkg.rewards:redness      # your own reward callable
    python -m agents.train --resume runs/pxpo-is-color-seed0 --num-epochs 40
    torchrun --nproc_per_node=2 -m agents.train --algo pxpo --reward color   # one run on 2 processes

Every option is documented by ``--help``. Writes RUN/metrics.csv, TensorBoard
scalars in RUN/tb, image grids in RUN/images and checkpoints in RUN/checkpoints.
"""

from __future__ import annotations

import os
from pathlib import Path

from agents.config import TrainConfig
from agents.distributed import launched
from agents.export import EXPORT_DIR
from agents.metrics import read_metrics
from agents.runs import RESUME_OVERRIDABLE, resolve_config, train
from pxpo_gym.cli import parse


def main() -> None:
    config = parse(TrainConfig)
    if dist_rank() == 0:  # before the seconds of loading (stdout: an error stays one line on stderr)
        print(
            f"agents.train: loading model {config.model!r} and building the env ({config.algo}, reward "
            f"{' + '.join(config.reward)}) ...",
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
                f"epoch {int(last['epoch'])}: reward {last['reward_mean']:.4f}; run folder: {config.resume or config.run_dir}"
            )
        return
    if config.resume:
        resolved = resolve_config(config)
        given = [f"{k}={getattr(resolved, k)!r}" for k in RESUME_OVERRIDABLE[:8]]
        print(
            f"resuming {config.resume}: its settings come from its checkpoint; from the command line: {', '.join(given)}"
        )
    history = train(config)
    if not history and config.resume:
        done = read_metrics(f"{config.resume}/metrics.csv")
        export = Path(config.resume) / EXPORT_DIR
        print(
            f"the run in {config.resume} is already complete: {len(done)} epochs >= --num-epochs "
            f"{resolve_config(config).num_epochs}; nothing to train (pass a larger --num-epochs to continue)"
            + (f"; its export: {export}" if export.is_dir() else "")
        )
    if history:
        last = history[-1]
        print(
            f"epoch {int(last['epoch'])}: {int(last['images'])} images, reward {last['reward_mean']:.4f} "
            f"(first epoch of this run: {history[0]['reward_mean']:.4f}); run folder: {config.resume or config.run_dir}"
        )


def dist_rank() -> int:
    return int(os.environ.get("RANK", "0"))


if __name__ == "__main__":
    from pxpo_gym.cli import run

    run(main, "agents.train")
