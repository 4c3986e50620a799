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

from pxpo_gym.files import write_atomic
from pxpo_gym.models import METADATA_FILE
from pxpo_gym.rewards import refuse_code_from_file
from pxpo_gym.viz import save_reward_grid

from .algorithms import BUILTIN, refuse_algorithm_from_file, resolve_algorithm
from .algorithms.pxpo import CREDIT_FILE, FOOTPRINT_FILE
from .checkpoint import load_checkpoint, restore_trainer
from .config import TrainConfig, flat_view, is_sectioned, make_envs, reward_tuple
from .distributed import barrier
from .export import EXPORT_DIR
from .heldout import Evaluator
from .metrics import MetricsLogger
from .progress import RunProgress, ticks_per_epoch
from .trainer import Trainer

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
"""Options (all of the ``run`` section's but seed, device and eval_images) a resumed run may take from the
command line; every other comes from the checkpoint."""
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
    """For ``resume``: the run's saved config, with the overridable options this config sets.

    An option is "set" when it differs from TrainConfig's default; a set option outside
    ``RESUME_OVERRIDABLE`` that disagrees with the run's is refused, so that a flag is
    never silently ignored. A config saved before the sections (flat) is translated here, once.

    Raises:
        ValueError: no readable checkpoint, or conflicting flags.
    """
    run = config.run
    if not run.resume:
        return config
    _, meta = load_checkpoint(run.resume)
    invalid = f"resume={run.resume!r}: the checkpoint's config is not valid"
    stored = meta["config"]
    try:
        saved = flat_view(stored)
        saved_reward = reward_tuple(saved.get("reward", ()))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{invalid}: {err}") from err
    algo = saved.get("algo", "pxpo")
    if not run.trust_code and config.env.reward != saved_reward:
        refuse_code_from_file(saved_reward, f"the checkpoint of resume={run.resume!r}")
    if not run.trust_code and config.algo != algo:
        refuse_algorithm_from_file(str(algo), f"the checkpoint of resume={run.resume!r}")
    try:
        plugin_fields = None  # a flat plug-in config held every algorithm's options: keep its class's
        if not is_sectioned(stored) and algo not in BUILTIN:  # (imported: named again, or trusted, above)
            plugin_fields = {f.name for f in dataclasses.fields(resolve_algorithm(algo).config_class)}
        restored = TrainConfig.from_dict(stored, plugin_fields)
    except (TypeError, ValueError) as err:  # a hand-edited or damaged checkpoint
        raise ValueError(f"{invalid}: {err}") from err
    # An option is set when it differs from the default of the algorithm the command line names (PXPO's
    # when none); a set option the run does not have, or holds at another value, is a conflict.
    mine, defaults, theirs = config.flat(), TrainConfig.of(algo=config.algo).flat(), restored.flat()
    defaults["algo"] = TrainConfig().algo  # the algorithm itself is set when a subcommand names another
    conflicts = [
        f"{name}={value!r} (run: {theirs.get(name, 'not an option of ' + repr(theirs['algo']))!r})"
        for name, value in mine.items()
        if name not in RESUME_OVERRIDABLE
        and (name not in defaults or value != defaults[name])
        and (name not in theirs or value != theirs[name])
    ]
    if conflicts:
        raise ValueError(
            f"resume={run.resume!r} continues a run with its own settings, but these differ from "
            f"it: {', '.join(conflicts)}. Drop them, or start a new run in another --out"
        )
    if run.out and Path(run.out) != Path(run.resume):
        raise ValueError(f"resume={run.resume!r} writes into its own folder; out={run.out!r} differs")
    given = {
        name: getattr(run, name)
        for name in RESUME_OVERRIDABLE
        if getattr(run, name) != defaults[name] or name not in saved
    }
    given.update(out=run.resume, resume=run.resume, overwrite=False, trust_code=run.trust_code)
    return dataclasses.replace(restored, run=dataclasses.replace(restored.run, **given))


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
    return (
        isinstance(saved, dict) and "algo" in saved and ("run" in saved or {"reward", "seed"} <= set(saved))
    )


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
    if config.run.resume:
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
    if existing and _started(folder) and not config.run.overwrite:
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
    if config.run.resume:
        restore_trainer(trainer, *load_checkpoint(config.run.resume))
    logger = None
    evaluator = None
    progress = RunProgress(config.run.progress and main)
    if main:
        logger = MetricsLogger(
            config.run_dir,
            resume_epoch=trainer.epoch if config.run.resume else None,
            tensorboard=config.run.tensorboard,
            extra_fields=[f"reward_{name}" for name in trainer.reward_components],
        )
        write_atomic(config.run_dir / "config.json", json.dumps(config.to_dict(), indent=1))
        for name, text in trainer.algo.files().items():
            write_atomic(config.run_dir / name, text)
        if config.run.eval_every:
            core = trainer.envs.unwrapped
            progress.say(
                f"sampling the pretrained model's {config.run.eval_images} held-out images (the evaluation's reference) ..."
            )
            evaluator = Evaluator(
                make_envs(config, config.run.eval_images, str(trainer.device)),
                config.run.seed,
                core.context_choices,
            )
            reference = {"images": 0, **evaluator.reference_metrics}
            write_atomic(config.run_dir / "eval_reference.json", json.dumps(reference, indent=1) + "\n")
    history = []
    if trainer.epoch < config.run.num_epochs:
        progress.say(
            f"training: epochs {trainer.epoch + 1} to {config.run.num_epochs} of {config.sampling.images_per_epoch} images "
            "(the bar moves with each sampling batch and optimiser step) ..."
        )
    ticks = ticks_per_epoch(config, trainer.algo.samples_with_gradients)
    progress.open(config.run.num_epochs, trainer.epoch, f"{config.algo}-{config.estimator}", ticks)
    trainer.progress = progress.tick
    while trainer.epoch < config.run.num_epochs:
        metrics, traj = trainer.train_epoch()
        last = trainer.epoch == config.run.num_epochs
        if evaluator is not None and (trainer.epoch % config.run.eval_every == 0 or last):
            progress.note(f"evaluating on {config.run.eval_images} held-out images")
            trainer.policy.eval()
            started = time.perf_counter()
            swapped = trainer.ema.swapped_in() if trainer.ema is not None else contextlib.nullcontext()
            with swapped, trainer.passes.paused():  # evaluation measures the run, it does not train it
                metrics.update(evaluator(trainer.rollout_policy()))
                if trainer.pinned is not None:  # the weights alone, as a user without the pin samples them
                    alone = evaluator(trainer.weights_action)  # no pin, 'hold' or 'freeze'
                    metrics.update(alone_reward=alone["eval_reward"], alone_silent=alone["fidelity_silent"])
            metrics["eval_seconds"] = time.perf_counter() - started
        if logger is not None:
            logger.log(metrics)
        history.append(metrics)
        progress.epoch_done(trainer.epoch, metrics)
        if main and config.run.image_every and (trainer.epoch % config.run.image_every == 0 or last):
            names = trainer.envs.unwrapped.loaded.context_names
            save_reward_grid(
                traj.images[:16],
                traj.image_reward_maps[:16],
                config.run_dir / "images" / f"epoch-{trainer.epoch:04d}.png",
                titles=[names[c] for c in traj.contexts[:16].tolist()],
            )
        if last or (config.run.save_every and trainer.epoch % config.run.save_every == 0):
            trainer.save()
    progress.close()
    if (
        main
        and config.run.export
        and trainer.epoch >= config.run.num_epochs
        and not export_done(config.run_dir, trainer.epoch)
    ):
        progress.say(f"exporting the model to {config.run_dir / EXPORT_DIR} ...")
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
            f"the collectives fail or time out after dist_timeout={config.run.dist_timeout} s)"
        ) from err
