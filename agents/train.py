"""Train DDPO or PXPO from the shell.

    python -m agents.train --algo pxpo --reward color --num-epochs 20
    python -m agents.train --algo ddpo --estimator sf --reward segmentation
    python -m agents.train --reward mypkg.rewards:redness      # your own reward callable
    python -m agents.train --resume runs/pxpo-is-color-seed0 --num-epochs 40

Every option is documented by ``--help``. Writes RUN/metrics.csv, TensorBoard
scalars in RUN/tb, image grids in RUN/images and checkpoints in RUN/checkpoints.
"""

from __future__ import annotations

from agents.config import TrainConfig
from agents.trainer import train


def main() -> None:
    import tyro

    config = tyro.cli(TrainConfig)
    history = train(config)
    if history:
        last = history[-1]
        print(
            f"epoch {int(last['epoch'])}: {int(last['images'])} images, reward {last['reward_mean']:.4f} "
            f"(first epoch of this run: {history[0]['reward_mean']:.4f}); run folder: {config.resume or config.run_dir}"
        )


if __name__ == "__main__":
    main()
