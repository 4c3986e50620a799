"""A run's life around the trainer: what a run writes, when a folder may be reused, which settings a resumed
run takes from its checkpoint and which from the command line, and the epoch loop that logs, evaluates,
checkpoints and exports (``agents.runs.train`` is the entry point)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from agents.algorithms import refuse_algorithm_from_file
from agents.algorithms.pxpo import CREDIT_FILE, FOOTPRINT_FILE
from agents.checkpoint import load_checkpoint, restore_trainer
from agents.config import WINDOW_NONE, TrainConfig, make_envs, reward_tuple
from agents.distributed import barrier
from agents.export import EXPORT_DIR
from agents.heldout import Evaluator
from agents.metrics import MetricsLogger
from agents.trainer import Trainer
from pxpo_gym.files import write_atomic
from pxpo_gym.models import METADATA_FILE
from pxpo_gym.rewards import refuse_code_from_file
from pxpo_gym.viz import save_reward_grid

RESUME_OVERRIDABLE = (
    "num_epochs",
    "save_every",
    "image_every",
    "eval_every",
    "threads",
    "progress",
    "tensorboard",
    "export",
    "dist_timeout",
    "resume",
    "out",
    "overwrite",
    "trust_code",
)
"""TrainConfig fields a resumed run may take from the command line; every other comes from the checkpoint."""
LEGACY_SENTINELS = {"clip_range": 0.0, "lora_rank": -1, "resolution": 0, "decode_chunk_size": 0, "threads": 0}
"""Values that meant "default" in checkpoints written before these fields took None."""
ADDED_FIELDS = {**WINDOW_NONE, "window_start": 0, "reuse_sampling_pass": False}
"""Fields a checkpoint written before they existed does not hold, at the value that trained it (whatever the
default is now)."""
RUN_FILES = (
    "metrics.csv",
    "config.json",
    "eval_reference.json",
    FOOTPRINT_FILE,
    CREDIT_FILE,
    "checkpoints",
    "images",
    "tb",
    EXPORT_DIR,
)
"""What a run writes into its folder (``overwrite`` deletes these and nothing else)."""


def resolve_config(config: TrainConfig) -> TrainConfig:
    """For ``resume``: the run's saved config, with the overridable fields this config sets.

    A field is "set" when it differs from TrainConfig's default; a set field outside
    ``RESUME_OVERRIDABLE`` that disagrees with the run's is refused, so that a flag is
    never silently ignored.

    Raises:
        ValueError: no readable checkpoint, or conflicting flags.
    """
    if not config.resume:
        return config
    _, meta = load_checkpoint(config.resume)
    saved = dict(meta["config"])
    try:
        saved["contexts"] = tuple(saved.get("contexts", ()))
        saved["reward"] = reward_tuple(saved.get("reward", ()))
        for key in ("prompts", "step_weights", "credit_check_scales", "algo_option"):
            saved[key] = tuple(saved.get(key, ()))
    except TypeError as err:
        raise ValueError(f"resume={config.resume!r}: the checkpoint's config is not valid: {err}") from err
    if not config.trust_code and config.reward != saved["reward"]:
        refuse_code_from_file(saved["reward"], f"the checkpoint of resume={config.resume!r}")
    if not config.trust_code and config.algo != saved.get("algo"):
        refuse_algorithm_from_file(str(saved.get("algo")), f"the checkpoint of resume={config.resume!r}")
    for key, legacy in LEGACY_SENTINELS.items():  # runs saved before these fields became optional
        if key in saved and saved[key] == legacy:
            saved[key] = None
    for key, before in ADDED_FIELDS.items():  # runs saved before these fields existed
        saved.setdefault(key, before)
    defaults = TrainConfig()
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    conflicts = [
        f"{name}={getattr(config, name)!r} (run: {saved[name]!r})"
        for name in fields
        if name not in RESUME_OVERRIDABLE
        and name in saved
        and getattr(config, name) != getattr(defaults, name)
        and getattr(config, name) != saved[name]
    ]
    if conflicts:
        raise ValueError(
            f"resume={config.resume!r} continues a run with its own settings, but these differ from "
            f"it: {', '.join(conflicts)}. Drop them, or start a new run in another --out"
        )
    if config.out and Path(config.out) != Path(config.resume):
        raise ValueError(f"resume={config.resume!r} writes into its own folder; out={config.out!r} differs")
    given = {
        name: getattr(config, name)
        for name in RESUME_OVERRIDABLE
        if getattr(config, name) != getattr(defaults, name) or name not in saved
    }
    given.update(out=config.resume, resume=config.resume, overwrite=False, trust_code=config.trust_code)
    saved = {k: v for k, v in saved.items() if k in fields}
    try:
        restored = TrainConfig(**saved)
    except (TypeError, ValueError) as err:  # a hand-edited or damaged checkpoint
        raise ValueError(f"resume={config.resume!r}: the checkpoint's config is not valid: {err}") from err
    return dataclasses.replace(restored, **given)


MANIFEST = "pxpo_run.json"
"""The run's claim on its folder: the names in it that the run writes (``RUN_FILES``). ``overwrite``, and a
retry after a start that failed, delete these names (and their ``.NAME.tmp`` / ``NAME.partial``
leftovers) and nothing else; a folder whose names no run claimed is never written into."""


def _leftovers(folder: Path, name: str) -> list[Path]:
    return [folder / name, folder / f".{name}.tmp", folder / f"{name}.partial"]


def _legacy_run(folder: Path) -> bool:
    """A run written before manifests: its config.json is a run's config, or it has a checkpoint."""
    if (folder / "checkpoints" / "latest").is_file():
        return True
    try:
        saved = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(saved, dict) and {"algo", "reward", "seed"} <= set(saved)


def _started(folder: Path) -> bool:
    """Whether the run in ``folder`` got anywhere: a checkpoint, or an epoch logged in metrics.csv."""
    if (folder / "checkpoints" / "latest").is_file():
        return True
    try:
        lines = (folder / "metrics.csv").read_text().splitlines()
    except OSError:
        return False
    return len(lines) > 1


def claim_run_dir(config: TrainConfig) -> None:
    """Makes the run folder this run's: refuses a folder that holds a run (unless ``overwrite``) or names the
    run would write but no run wrote; clears what a start that failed before its first epoch left; then
    writes ``MANIFEST``.

    Raises:
        ValueError: the folder holds a run (give --resume or --overwrite), or holds the user's own files
            under a name a run writes (choose another --out).
    """
    folder = config.run_dir
    if config.resume:
        if not (folder / MANIFEST).is_file():  # a run from before manifests
            write_atomic(folder / MANIFEST, json.dumps({"files": list(RUN_FILES)}, indent=1) + "\n")
        return
    present = sorted(name for name in RUN_FILES if (folder / name).exists())
    if (folder / MANIFEST).is_file():
        try:
            claimed = json.loads((folder / MANIFEST).read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"run folder {str(folder)!r}: {MANIFEST} is unreadable ({err}); move the folder aside or choose "
                "another --out"
            ) from err
        owned = [name for name in RUN_FILES if name in claimed]
    elif present and _legacy_run(folder):
        owned = list(RUN_FILES)
    else:
        owned = []
    foreign = [name for name in present if name not in owned]
    if foreign:
        raise ValueError(
            f"run folder {str(folder)!r} holds {', '.join(foreign)}, which no run wrote: a run would write into "
            "them (and --overwrite would delete them). Move them, or choose another --out"
        )
    existing = [name for name in owned if (folder / name).exists()]
    if existing and _started(folder) and not config.overwrite:
        if not (folder / "checkpoints" / "latest").is_file():
            raise ValueError(
                f"run folder {str(folder)!r} holds a run that stopped before its first checkpoint (nothing to "
                f"resume): start over with --overwrite (deletes {', '.join(existing)}), or choose another --out"
            )
        raise ValueError(
            f"run folder {str(folder)!r} already holds a run ({', '.join(existing)}): continue it with "
            f"--resume {folder}, start over with --overwrite (deletes them), or choose another --out"
        )
    if owned and not (folder / MANIFEST).is_file():  # a run from before manifests: claim it before deleting
        write_atomic(folder / MANIFEST, json.dumps({"files": list(RUN_FILES)}, indent=1) + "\n")
    for name in owned:  # a run that failed before its first epoch, or --overwrite
        for path in _leftovers(folder, name):
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    write_atomic(folder / MANIFEST, json.dumps({"files": list(RUN_FILES)}, indent=1) + "\n")


def export_done(folder: Path, epoch: int) -> bool:
    """Whether ``folder/model`` is a complete export of epoch ``epoch`` (the metadata is written last)."""
    try:
        meta = json.loads((folder / EXPORT_DIR / METADATA_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("run", {}).get("epoch") == epoch


def run_epochs(config: TrainConfig, trainer: Trainer) -> list[dict[str, float]]:
    """The epoch loop of ``agents.runs.train``: prepares the run folder (rank 0), restores a resumed run,
    then per epoch trains, evaluates on held-out noise every ``eval_every`` epochs, logs, saves image grids
    and checkpoints, and exports the model at the end; returns one metrics dict per epoch run now."""
    main = trainer.world.main
    if main:
        # After every check that can fail: nothing is deleted for a run that cannot start.
        claim_run_dir(config)
    barrier(trainer.world)
    if config.resume:
        restore_trainer(trainer, *load_checkpoint(config.resume))
    logger = None
    evaluator = None
    if main:
        logger = MetricsLogger(
            config.run_dir,
            resume_epoch=trainer.epoch if config.resume else None,
            tensorboard=config.tensorboard,
            extra_fields=[f"reward_{name}" for name in trainer.reward_components],
        )
        write_atomic(config.run_dir / "config.json", json.dumps(dataclasses.asdict(config), indent=1))
        for name, text in trainer.algo.files().items():
            write_atomic(config.run_dir / name, text)
        if config.eval_every:
            core = trainer.envs.unwrapped
            evaluator = Evaluator(
                make_envs(config, config.eval_images, str(trainer.device)), config.seed, core.context_choices
            )
            reference = {"images": 0, **evaluator.reference_metrics}
            write_atomic(config.run_dir / "eval_reference.json", json.dumps(reference, indent=1) + "\n")
    history = []
    bar = tqdm(
        total=config.num_epochs,
        initial=trainer.epoch,
        desc=f"{config.algo}-{config.estimator}",
        unit="epoch",
        disable=not (config.progress and main),
    )
    while trainer.epoch < config.num_epochs:
        metrics, traj = trainer.train_epoch()
        last = trainer.epoch == config.num_epochs
        if evaluator is not None and (trainer.epoch % config.eval_every == 0 or last):
            trainer.policy.eval()
            started = time.perf_counter()
            swapped = trainer.ema.swapped_in() if trainer.ema is not None else contextlib.nullcontext()
            with swapped, trainer.passes.paused():  # evaluation measures the run, it does not train it
                metrics.update(evaluator(trainer.rollout_policy()))
                if trainer.pinned is not None:  # the weights alone, as a user without the pin samples them
                    alone = evaluator(trainer.weights_eps)  # no pin, 'hold' or 'freeze'
                    metrics.update(alone_reward=alone["eval_reward"], alone_silent=alone["fidelity_silent"])
            metrics["eval_seconds"] = time.perf_counter() - started
        if logger is not None:
            logger.log(metrics)
        history.append(metrics)
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward_mean']:.4f}", approx_kl=f"{metrics['approx_kl']:.2g}")
        if main and config.image_every and (trainer.epoch % config.image_every == 0 or last):
            names = trainer.envs.unwrapped.loaded.context_names
            save_reward_grid(
                traj.images[:16],
                traj.image_reward_maps[:16],
                config.run_dir / "images" / f"epoch-{trainer.epoch:04d}.png",
                titles=[names[c] for c in traj.contexts[:16].tolist()],
            )
        if last or (config.save_every and trainer.epoch % config.save_every == 0):
            trainer.save()
    bar.close()
    if (
        main
        and config.export
        and trainer.epoch >= config.num_epochs
        and not export_done(config.run_dir, trainer.epoch)
    ):
        trainer.export()  # at the end, or on resume after a crash cut the export off
    if logger is not None:
        logger.close()
    return history


def train(config: TrainConfig, envs: Any = None) -> list[dict[str, float]]:
    """Runs (or resumes) training; returns one metrics dict per epoch run now.

    Writes ``RUN/metrics.csv``, TensorBoard scalars, image grids and checkpoints
    under ``config.run_dir`` (see ``TrainConfig``). Under torchrun every rank calls
    it; rank 0 writes (``agents.distributed``).

    Raises:
        RuntimeError: under torchrun, a collective failed or timed out (another rank died).
    """
    config = resolve_config(config).with_window_defaults()  # the saved config holds what the run does
    trainer = Trainer(config, envs)
    world = trainer.world
    try:
        history = run_epochs(config, trainer)
        # Every rank done (rank 0 exports last) before any tears the group down: a rank that destroys it
        # while another still talks to it can abort that one in gloo's teardown.
        barrier(world)
        return history
    except RuntimeError as err:
        if not world.distributed:
            raise
        raise RuntimeError(
            f"rank {world.rank} of {world.size}: training stopped: {err} (if another rank died or hung, "
            f"the collectives fail or time out after dist_timeout={config.dist_timeout} s)"
        ) from err
