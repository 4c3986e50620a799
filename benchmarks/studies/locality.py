"""How pixel-local each suite task's reward is, and so which credit PXPO's ``--credit auto`` picks.

``--credit auto`` (the default before ``checked``, ``agents.credit``) measures once per run the share of
the reward map's response to a change at one grid cell that lands on that cell
(``agents.credit.reward_locality``) and uses per-pixel credit at a share of at least
``LOCAL_SHARE``, DDPO's image credit below. This measures that share for every task
of the suite on the model the suite trains, for several measurement seeds.

    python -m benchmarks.studies.locality --out outputs/benchmarks/locality.json
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmarks.provenance import provenance, scratch, write_result
from benchmarks.suite.tasks import TASKS


@dataclass(frozen=True)
class LocalityConfig:
    """Tasks, model and measurement seeds."""

    tasks: tuple[str, ...] = tuple(TASKS)
    """Suite tasks (benchmarks.suite.tasks)."""
    model: str = "default"
    """The model the env loads ('default' or 'default-flow')."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Measurement seeds (a run uses its own seed)."""
    out: str = scratch("locality.json")
    """Output JSON file."""


def measure(cfg: LocalityConfig) -> dict:
    import gymnasium as gym

    import pxpo_gym  # noqa: F401  (registers the env)
    from agents.credit import LOCAL_SHARE, LOCALITY_PROBES, reward_locality

    result: dict = {
        **provenance("benchmarks.studies.locality"),
        "model": cfg.model,
        "local_share": LOCAL_SHARE,
        "images_per_context": LOCALITY_PROBES,
        "tasks": {},
    }
    for task in cfg.tasks:
        if task not in TASKS:
            raise ValueError(f"tasks must be among {sorted(TASKS)}, got {task!r}")
        spec = TASKS[task]
        envs = gym.make_vec(
            "DiffusionDenoise-v0",
            num_envs=32,  # the suite's batch: the reward is scored 32 images at a time
            model=cfg.model,
            reward=spec.reward,
            reward_kwargs=spec.reward_kwargs,
        )
        shares = [reward_locality(envs.unwrapped, seed=seed) for seed in cfg.seeds]
        envs.close()
        chosen = sorted({"pixel" if share >= LOCAL_SHARE else "image" for share in shares})
        result["tasks"][task] = {"locality": [round(s, 4) for s in shares], "chosen": chosen}
    return result


def main(cfg: LocalityConfig) -> dict:
    result = measure(cfg)
    out = write_result(cfg.out, result)
    for task, row in result["tasks"].items():
        print(f"{task}: locality {row['locality']} -> credit {'/'.join(row['chosen'])}")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(LocalityConfig)), "benchmarks.studies.locality")
