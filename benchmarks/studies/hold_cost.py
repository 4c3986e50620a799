"""What holding the unscored pixels costs: one epoch's sampling and update with and without the pin.

PXPO's default ``silent_mode='hold-unscored'`` runs the pretrained model beside the
policy while any pixel is pinned (``pxpo_gym.pinning.PinnedPolicy``). On the region task
(the right half never scored), one trainer samples an epoch with the pin and without
it, alternating, in one process, and times the update on each one's trajectories;
the ratios (``*_held_to_free``: pinned / free) are what to read.

    python -m benchmarks.studies.hold_cost --out benchmarks/results/hold_cost/hold_cost.json
"""

from __future__ import annotations

import functools
import statistics
from dataclasses import asdict, dataclass

import torch

from benchmarks.performance.timing import device_name, timed
from benchmarks.provenance import provenance, scratch, write_result
from benchmarks.suite.tasks import TASKS


@dataclass(frozen=True)
class HoldCostConfig:
    """Seconds per epoch of sampling and of the update, with the unscored half pinned and without."""

    batch_size: int = 32
    """Images per epoch."""
    train_batch_size: int = 16
    """Images per optimizer step."""
    num_inference_steps: int = 20
    """DDIM steps."""
    repeats: int = 5
    """Timed repetitions of each, alternating pinned and free (after one untimed epoch each); medians are
    reported."""
    threads: int = 1
    """torch CPU threads."""
    device: str = "cpu"
    """torch device."""
    out: str = scratch("hold_cost.json")
    """Output JSON file."""


def measure(cfg: HoldCostConfig) -> dict:
    from agents.config import TrainConfig
    from agents.trainer import Trainer

    torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)
    task = TASKS["region"]
    trainer = Trainer(
        TrainConfig.of(
            algo="pxpo",
            reward=(task.reward,),
            reward_kwargs=task.reward_kwargs_json,
            sample_batch_size=cfg.batch_size,
            sample_batches_per_epoch=1,
            train_batch_size=cfg.train_batch_size,
            num_inference_steps=cfg.num_inference_steps,
            device=cfg.device,
            progress=False,
            tensorboard=False,
        )
    )
    pinned = trainer.algo.unscored  # the right half of every context: what training pins once decided
    if pinned is None or not bool(pinned.any()):
        raise RuntimeError("the region task pinned no pixel: nothing to measure")
    pinned = pinned.to(device)
    epochs = {}
    for name, mask in (("free", None), ("held", pinned)):
        trainer.pinned = mask
        with torch.no_grad():
            epoch = trainer.sample()
        adv = trainer.algo.advantages(epoch.rewards.cpu(), epoch.grid_reward_maps.cpu(), epoch.contexts.cpu())
        epochs[name] = (epoch, adv)  # the update penalises the algorithm's own silent_weights
    times: dict[str, list[float]] = {}
    for _ in range(cfg.repeats):  # alternating, so that drift in the machine's speed hits both alike
        for name, mask in (("free", None), ("held", pinned)):
            trainer.pinned = mask
            update = functools.partial(trainer.update, *epochs[name])
            with torch.no_grad():
                times.setdefault(f"sample_{name}", []).append(timed(trainer.sample, device))
            times.setdefault(f"update_{name}", []).append(timed(update, device))
    seconds = {name: statistics.median(values) for name, values in times.items()}
    return {
        **provenance("benchmarks.studies.hold_cost"),
        "config": asdict(cfg),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "pinned_fraction": float(pinned.float().mean()),
        "seconds": seconds,
        "sample_ratio_held_to_free": seconds["sample_held"] / seconds["sample_free"],
        "update_ratio_held_to_free": seconds["update_held"] / seconds["update_free"],
        "epoch_ratio_held_to_free": (seconds["sample_held"] + seconds["update_held"])
        / (seconds["sample_free"] + seconds["update_free"]),
    }


def main(cfg: HoldCostConfig) -> dict:
    result = measure(cfg)
    out = write_result(cfg.out, result)
    print(
        f"{result['device_name']}, {cfg.threads} thread(s), batch {cfg.batch_size}: held / free = "
        f"{result['sample_ratio_held_to_free']:.2f} sampling, {result['update_ratio_held_to_free']:.2f} update, "
        f"{result['epoch_ratio_held_to_free']:.2f} epoch; wrote {out}"
    )
    return result


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(HoldCostConfig)), "benchmarks.studies.hold_cost")
