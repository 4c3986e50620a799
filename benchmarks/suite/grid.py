"""The suite's grid: tasks x arms x seeds, its presets, and where each run's files go.

One home for what both the runner (``benchmarks.suite.runner``) and the report
(``benchmarks.suite.report``) need to know about a grid, so neither imports the other.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from agents.steps import DEFAULT_STEP_WEIGHTING
from benchmarks.provenance import git_commit, scratch
from benchmarks.suite.tasks import TASKS, split_tasks
from benchmarks.suite.variants import OPTION_VARIANTS, PXPO_VARIANTS
from pxpo_gym.models import MODEL_NAMES

RUNS_COMMIT_FILE = "runs_commit.txt"
"""Written by the suite before it trains: the commit whose code made each task's runs (a JSON object
{task: commit}; older files hold one bare hash for every task)."""


def read_runs_commits(out: str | Path, tasks: tuple[str, ...]) -> dict[str, str]:
    """{task: commit that made its runs} from OUT/runs_commit.txt ({} if it is missing)."""
    path = Path(out) / RUNS_COMMIT_FILE
    if not path.is_file():
        return {}
    text = path.read_text().strip()
    if not text.startswith("{"):
        return {task: text for task in tasks}  # one bare hash: every task
    return dict(json.loads(text))


def record_runs_commit(
    out: str | Path, tasks: list[str], all_tasks: tuple[str, ...], added_to: tuple[str, ...] = ()
) -> None:
    """Notes HEAD as the commit of ``tasks``' runs, keeping the other tasks' commits. For the tasks in
    ``added_to`` (runs added to finished ones, e.g. more seeds) HEAD joins the recorded commit ("a + b")."""
    commits = read_runs_commits(out, all_tasks)
    head = git_commit()
    for task in tasks:
        before = commits.get(task)
        if task in added_to and before:
            commits[task] = before if head in before.split(" + ") else f"{before} + {head}"
        else:
            commits[task] = head
    (Path(out) / RUNS_COMMIT_FILE).write_text(json.dumps(commits, indent=1) + "\n")


@dataclass(frozen=True)
class Arm:
    """One curve of the grid: an algorithm and the TrainConfig fields it sets."""

    label: str
    algo: str
    overrides: tuple[tuple[str, object], ...]

    @property
    def learning_rate(self) -> float:
        return float(dict(self.overrides)["learning_rate"])


@dataclass(frozen=True)
class SuiteConfig:
    """A grid of training runs and where its results go."""

    model: str = "default"
    """The model every run fine-tunes: 'default' (DDIM) or 'default-flow' (flow matching, Flow-GRPO's SDE)."""
    tasks: tuple[str, ...] = ("color", "target_map", "segmentation", "region", "jpeg")
    """Task names (benchmarks.suite.tasks.TASKS)."""
    algos: tuple[str, ...] = ("ddpo", "pxpo", "oracle")
    """Algorithms: built-in names or your own as 'package.module:Class' (agents.algorithms.base); 'oracle' (and
    any algorithm that backpropagates through sampling) runs only on differentiable tasks."""
    estimator: str = "is"
    """'is' or 'sf', for DDPO and PXPO."""
    ddpo_learning_rates: tuple[float, ...] = (3e-4,)
    """DDPO learning rates (a sweep if several)."""
    pxpo_learning_rates: tuple[float, ...] = (3e-4,)
    """PXPO learning rates (a sweep if several)."""
    oracle_learning_rates: tuple[float, ...] = (3e-4,)
    """Exact-gradient oracle learning rates (a sweep if several)."""
    plugin_learning_rates: tuple[float, ...] = (3e-4,)
    """Learning rates of the algorithms given by import path (a sweep if several)."""
    plugin_clip_ranges: tuple[float, ...] = ()
    """Clip ranges of the algorithms given by import path (empty: each one's own default; a sweep if several)."""
    plugin_options: tuple[str, ...] = ()
    """key=value options of the algorithms given by import path (``--algo-option`` of agents.train), each
    passed to those whose config has the field."""
    ddpo_clip_ranges: tuple[float, ...] = ()
    """DDPO PPO clip ranges (empty: DDPO's default, 1e-4 x sqrt(16384 / (C h w)) = 4.6e-4 on the default
    model, agents.config.ddpo_clip_range; a sweep if several)."""
    pxpo_clip_ranges: tuple[float, ...] = ()
    """PXPO per-pixel clip ranges (empty: PXPO's default 0.2; a sweep if several)."""
    pxpo_variants: tuple[str, ...] = ("default",)
    """PXPO advantage settings (names in benchmarks.suite.variants.PXPO_VARIANTS; a comparison if several)."""
    option_variants: tuple[str, ...] = ("default",)
    """PXPO's (and, unless ddpo_option_variants is set, DDPO's) training options (names in
    benchmarks.suite.variants.OPTION_VARIANTS; a comparison if several)."""
    ddpo_option_variants: tuple[str, ...] = ()
    """DDPO's training options, when they differ from option_variants."""
    step_weighting: str = DEFAULT_STEP_WEIGHTING
    """Which steps enter DDPO's and PXPO's losses (agents.steps), the same for both."""
    seeds: tuple[int, ...] = (0,)
    """Seeds; each seeds the env noise, the contexts and the training shuffles."""
    num_epochs: int = 12
    """Epochs per run on per-pixel tasks (the image budget is num_epochs x sample_batch_size)."""
    global_num_epochs: int = 0
    """Epochs per run on tasks without per-pixel structure (jpeg); 0: num_epochs."""
    sample_batch_size: int = 32
    """Images per epoch."""
    train_batch_size: int = 16
    """Images per optimizer step."""
    num_inference_steps: int = 20
    """DDIM steps."""
    stat_buffer_size: int = 32
    """Per-context advantage buffer."""
    stat_min_count: int = 8
    """Per-context count before its own statistics are used (32 images per epoch, 4 classes: 8 per class)."""
    eval_every: int = 4
    """Held-out reward and fidelity every N epochs (agents.heldout); 0: never."""
    eval_images: int = 32
    """Held-out images per evaluation."""
    workers: int = 2
    """Runs in parallel, one torch thread each (never more torch threads than cores)."""
    out: str = scratch("quick")
    """Output folder."""

    def __post_init__(self) -> None:
        unknown = [t for t in self.tasks if t not in TASKS]
        if unknown:
            raise ValueError(f"tasks {unknown} are not in {sorted(TASKS)}")
        from agents.algorithms import check_name

        for algo in self.algos:
            check_name(algo)  # imported when the grid is laid out (arms), never from a file
        bad = [v for v in self.pxpo_variants if v not in PXPO_VARIANTS]
        if bad:
            raise ValueError(f"pxpo_variants {bad} are not in {sorted(PXPO_VARIANTS)}")
        bad = [v for v in self.option_variants + self.ddpo_option_variants if v not in OPTION_VARIANTS]
        if bad:
            raise ValueError(f"option_variants {bad} are not in {sorted(OPTION_VARIANTS)}")
        if self.estimator not in ("is", "sf"):
            raise ValueError(f"estimator must be 'is' or 'sf', got estimator={self.estimator!r}")
        if self.model not in MODEL_NAMES:
            raise ValueError(
                f"model must be one of the embedded models {', '.join(MODEL_NAMES)} (the suite's tasks are made "
                f"for them), got model={self.model!r}"
            )
        if self.workers < 1 or not self.seeds or self.num_epochs < 1 or self.global_num_epochs < 0:
            raise ValueError(
                "need workers >= 1, at least one seed, num_epochs >= 1 and global_num_epochs >= 0"
            )

    def epochs(self, task: str) -> int:
        """Epochs of a run on ``task``."""
        return self.num_epochs if TASKS[task].per_pixel else (self.global_num_epochs or self.num_epochs)

    def learning_rates(self, algo: str) -> tuple[float, ...]:
        return {
            "ddpo": self.ddpo_learning_rates,
            "pxpo": self.pxpo_learning_rates,
            "oracle": self.oracle_learning_rates,
        }.get(algo, self.plugin_learning_rates)

    def arms(self, task: str | None = None) -> list[Arm]:
        """The grid's curves (those that run on ``task`` if given). A swept setting joins the label."""
        from agents.algorithms import is_builtin, resolve_algorithm
        from agents.algorithms import label as short_label

        out = []
        for algo in self.algos:
            cls = resolve_algorithm(algo)
            if cls.samples_with_gradients and task is not None and not TASKS[task].differentiable:
                continue
            rates = self.learning_rates(algo)
            clips = {"ddpo": self.ddpo_clip_ranges, "pxpo": self.pxpo_clip_ranges}.get(
                algo, () if is_builtin(algo) else self.plugin_clip_ranges
            ) or (None,)
            variants = self.pxpo_variants if algo == "pxpo" else ("default",)
            options = {"oracle": ("default",), "ddpo": self.ddpo_option_variants}.get(
                algo
            ) or self.option_variants
            fields = {f.name for f in dataclasses.fields(cls.config_class)}
            plugin = {} if is_builtin(algo) else {"algo_option": self.options_for(fields)}
            for lr, clip, variant, option in itertools.product(rates, clips, variants, options):
                label = short_label(algo)
                label += f"-lr{lr:g}" if len(rates) > 1 else ""
                label += f"-clip{clip:g}" if len(clips) > 1 else ""  # several: none is None
                label += f"-{variant}" if len(variants) > 1 else ""
                label += f"-{option}" if len(options) > 1 else ""
                overrides = {
                    "learning_rate": lr,
                    "clip_range": clip,
                    **PXPO_VARIANTS[variant],
                    **OPTION_VARIANTS[option],
                    **plugin,
                }
                out.append(Arm(label, algo, tuple(overrides.items())))
        return out

    def options_for(self, fields: set[str]) -> tuple[str, ...]:
        """The ``plugin_options`` whose key is one of ``fields``."""
        return tuple(item for item in self.plugin_options if item.partition("=")[0] in fields)

    def labels(self) -> list[tuple[str, str, float]]:
        """(label, algo, lr) per curve over all tasks."""
        return [(arm.label, arm.algo, arm.learning_rate) for arm in self.arms()]


def quick() -> SuiteConfig:
    """The README's main job: 4 tasks x DDPO, PXPO (+ the oracle) x 1 seed x 10 epochs of 32 images at the
    settings the sweep picked (DDPO lr 3e-4 clip 5e-4, PXPO lr 1e-4 clip 0.2, oracle lr 3e-4, as the full
    preset), held-out evaluations at epochs 5 and 10; a reference output is in benchmarks/results/quick/."""
    return dataclasses.replace(
        SuiteConfig(),
        tasks=("color", "target_map", "segmentation", "jpeg"),
        ddpo_learning_rates=(3e-4,),
        ddpo_clip_ranges=(5e-4,),
        pxpo_learning_rates=(1e-4,),
        pxpo_clip_ranges=(0.2,),
        oracle_learning_rates=(3e-4,),
        num_epochs=10,
        eval_every=5,
    )


def full() -> SuiteConfig:
    """5 seeds, 48 epochs of 32 images (1,536 images) per-pixel, 15 (480) on JPEG, at the settings the sweep
    picked (the quick preset's: DDPO lr 3e-4 clip 5e-4, PXPO lr 1e-4 clip 0.2, oracle lr 3e-4)."""
    return dataclasses.replace(
        quick(),
        # Painted feedback and segmentation first: the tasks PXPO exists for run first.
        tasks=("target_map", "segmentation", "color", "region", "jpeg"),
        seeds=(0, 1, 2, 3, 4),
        num_epochs=48,
        global_num_epochs=15,
        eval_every=4,
        out=scratch("full"),
    )


def region() -> SuiteConfig:
    """The region task (a reward that scores the left half and is silent on the right): DDPO, PXPO (pixel
    credit with the penalty on silent pixels at 10, the default), with it at 1 and without it, footprint credit
    with it, and the oracle, at full's settings, 3 seeds x 15 epochs (480 images)."""
    return dataclasses.replace(
        full(),
        tasks=("region",),
        pxpo_variants=("default", "pixel-silent1", "pixel", "footprint-silent", "pixel-freeze"),
        seeds=(0, 1, 2),
        num_epochs=15,
        eval_every=5,
        out=scratch("region"),
    )


def sweep() -> SuiteConfig:
    """The same sweep for every algorithm: 3 learning rates (x 2 clip ranges for DDPO and PXPO),
    2 tasks x 2 seeds x 10 epochs.

    DDPO's clip ranges: its reference 1e-4 was set for SD's 16,384 latent elements; the
    mean log-ratio over our 768 fluctuates sqrt(16384 / 768) = 4.6x more, hence 5e-4 beside
    it. PXPO's: PPO's usual 0.2 and half of it.
    """
    rates = (1e-4, 3e-4, 1e-3)
    return dataclasses.replace(
        quick(),
        tasks=("color", "target_map"),
        ddpo_learning_rates=rates,
        pxpo_learning_rates=rates,
        oracle_learning_rates=rates,
        ddpo_clip_ranges=(1e-4, 5e-4),
        pxpo_clip_ranges=(0.1, 0.2),
        seeds=(0, 1),
        num_epochs=10,
        eval_every=0,
        out=scratch("sweep"),
    )


def advantages() -> SuiteConfig:
    """PXPO's advantage options side by side on all 4 tasks: 2 seeds x 10 epochs each."""
    return dataclasses.replace(
        quick(),
        algos=("pxpo",),
        pxpo_variants=("pixel-std", "pooled-std", "floored-std", "hybrid"),
        seeds=(0, 1),
        num_epochs=10,
        eval_every=4,
        out=scratch("advantages"),
    )


def options() -> SuiteConfig:
    """PXPO with a KL penalty (3 coefficients) and with group advantages, DDPO with group advantages, each
    beside its defaults: colour and target map, 5 seeds x 15 epochs (480 images), the sweep's settings."""
    return dataclasses.replace(
        quick(),
        tasks=("color", "target_map"),
        algos=("ddpo", "pxpo"),
        ddpo_learning_rates=(3e-4,),
        ddpo_clip_ranges=(5e-4,),
        pxpo_learning_rates=(1e-4,),
        pxpo_clip_ranges=(0.2,),
        option_variants=("default", "kl1", "kl10", "kl100", "group"),
        ddpo_option_variants=("default", "group"),
        seeds=(0, 1, 2, 3, 4),
        num_epochs=15,
        eval_every=5,
        out=scratch("options"),
    )


def credit() -> SuiteConfig:
    """PXPO's credits side by side (agents.credit) at the sweep's PXPO settings: the default (today 'checked';
    the committed runs were made at 'auto', the default then: per-pixel credit where the reward is pixel-local,
    DDPO's image credit where it is not), per-pixel credit with the
    penalty on silent pixels everywhere (the default before), DDPO's image credit everywhere, and the measured
    footprint with the penalty; segmentation, target map and region, 2 seeds x 10 epochs."""
    return dataclasses.replace(
        quick(),
        tasks=("segmentation", "target_map", "region"),
        algos=("pxpo",),
        pxpo_learning_rates=(1e-4,),
        pxpo_clip_ranges=(0.2,),
        pxpo_variants=("default", "pixel-silent", "image", "footprint-silent"),
        seeds=(0, 1),
        num_epochs=10,
        eval_every=5,
        out=scratch("credit"),
    )


def flow() -> SuiteConfig:
    """The quick preset on the flow-matching default (``model='default-flow'``, Flow-GRPO's SDE at noise level
    0.7) at the DDIM default's swept settings, 5 seeds: PXPO vs DDPO vs the oracle on a flow model."""
    return dataclasses.replace(
        full(),
        model="default-flow",
        tasks=("color", "target_map", "segmentation", "jpeg"),
        seeds=(0, 1, 2, 3, 4),
        num_epochs=10,
        global_num_epochs=10,
        eval_every=5,
        out=scratch("flow"),
    )


def breadth() -> SuiteConfig:
    """The breadth suite: every task (benchmarks.suite.tasks, 17 in 8 families, train and test split) x DDPO, PXPO
    and the oracle (on differentiable rewards), 3 seeds x 15 epochs of 32 images (480), at the sweep's
    settings (DDPO lr 3e-4 clip 5e-4, PXPO lr 1e-4 clip 0.2, oracle lr 3e-4); per-family and per-task tables."""
    return dataclasses.replace(
        quick(),
        tasks=tuple(TASKS),
        seeds=(0, 1, 2),
        num_epochs=15,
        global_num_epochs=15,
        eval_every=5,
        out=scratch("breadth"),
    )


def breadth_train() -> SuiteConfig:
    """The breadth suite's train split only (where defaults are chosen), into the same folder as breadth."""
    return dataclasses.replace(breadth(), tasks=split_tasks("train"))


def breadth_candidates() -> SuiteConfig:
    """How PXPO's default credit was chosen: on the breadth suite's train split, DDPO beside PXPO at today's
    default ('checked': probes at two scales, the best weights restored when the check fails), at the first
    form of the check ('checked-cell': one-cell probes, no restore) and at the default before ('auto')."""
    return dataclasses.replace(
        breadth_train(),
        algos=("ddpo", "pxpo"),
        pxpo_variants=("default", "checked-cell", "auto"),
        out=scratch("breadth_candidates"),
    )


def passes_train() -> SuiteConfig:
    """Issue 35's choice of a window of trained steps, on the breadth suite's pixel-local and partial train
    tasks (colour, target map, region): PXPO at the default before (every step, 'soft' weights) beside the
    windows of OPTION_VARIANTS, 3 seeds x 480 images, passes and seconds to target in the tables. Held out
    every epoch: a '-det' arm's training images come from another sampler (no noise outside its window), so
    its progress is read on the held-out images, which every arm samples alike (benchmarks.suite.passes)."""
    return dataclasses.replace(
        breadth_train(),
        eval_every=1,
        tasks=tuple(t for t in split_tasks("train") if TASKS[t].family in ("pixel-local", "partial")),
        algos=("pxpo",),
        option_variants=("every-step", "window4", "window4-det", "window2-random-det"),
        out=scratch("passes_train"),
    )


DDPO_BEST_WINDOW = "default"
"""DDPO's best on passes-ddpo (the train split), by PXPO's rule (of the arms whose final held-out reward is
within one std of every step's on every task, the fewest passes to 90% of the own gain on the worst task): no
window kept DDPO's final reward on all three tasks (each lost it on colour, two on region), so every step."""


def passes_ddpo() -> SuiteConfig:
    """The same windows for DDPO on the same train tasks, so that it is compared at its best (its default is
    every step)."""
    return dataclasses.replace(
        passes_train(),
        algos=("ddpo",),
        option_variants=("default", "window4", "window4-det", "window2-random-det"),
        out=scratch("passes_ddpo"),
    )


def passes_reuse() -> SuiteConfig:
    """The sampling pass's gradient for the first minibatch ('-reuse') against its control ('-split': the same
    32 images sampled as 2 batches of 16, recomputed), PXPO with the window chosen on passes-train, on the
    same train tasks."""
    return dataclasses.replace(
        passes_train(),
        option_variants=("window2-random-det-split", "window2-random-det-reuse"),
        out=scratch("passes_reuse"),
    )


def passes_test() -> SuiteConfig:
    """Issue 35's test split, run once: the pixel-local and partial test tasks (ramp, frame), PXPO at the
    default before (every step) and today's (the window chosen on the train split), DDPO at its best on the
    train split (every step, its default) and, for comparison, with PXPO's window, 3 seeds x 480 images, held
    out every epoch."""
    return dataclasses.replace(
        passes_train(),
        tasks=tuple(t for t in split_tasks("test") if TASKS[t].family in ("pixel-local", "partial")),
        algos=("ddpo", "pxpo"),
        option_variants=("every-step", "default"),
        ddpo_option_variants=tuple(
            dict.fromkeys((DDPO_BEST_WINDOW, "window2-random-det"))
        ),  # + PXPO's window
        out=scratch("passes_test"),
    )


def breadth_test() -> SuiteConfig:
    """The breadth suite's test split only (run once, at the end), into the same folder as breadth."""
    return dataclasses.replace(breadth(), tasks=split_tasks("test"))


def distill() -> SuiteConfig:
    """Whether the weights themselves can keep what the reward never scored: PXPO on the breadth suite's
    partial tasks (region: train, where the weight is chosen; frame: test) with the pinned pixels distilled
    into the weights at KL weight 0 (the default: the pin alone), 0.25, 1, 5, 20 and 50, 3 seeds x 480 images;
    the report's silent distance gives the pinned and the weights-alone figure side by side."""
    return dataclasses.replace(
        breadth(),
        tasks=tuple(t for t in TASKS if TASKS[t].family == "partial"),
        algos=("pxpo",),
        pxpo_variants=("default", "distill0.25", "distill1", "distill5", "distill20", "distill50"),
        out=scratch("distill"),
    )


def seam() -> SuiteConfig:
    """Whether a band at the pin's edge removes its seam: PXPO on the breadth suite's partial tasks (region:
    train, where the band is chosen; frame: test, run once) with the pin's edge ramped over 0 (the hard pin)
    to 4 pixels, 3 seeds x 480 images; the report's silent distance gives the seam beside it."""
    return dataclasses.replace(
        distill(), pxpo_variants=("band0", "band1", "band2", "band3", "band4"), out=scratch("seam")
    )


PEERS = (
    "benchmarks.suite.peers.flow_grpo:FlowGRPO",
    "benchmarks.suite.peers.flow_grpo:FlowGRPOFast",
    "benchmarks.suite.peers.dense_flow_grpo:DenseFlowGRPO",
)
"""The closest public methods, as plug-ins (benchmarks/suite/peers). The committed peers runs were made while
they lived in ``benchmarks.peers`` (their config.json names that path); a run's label is the class name, so
today's grid finds them under the same labels."""


def peers() -> SuiteConfig:
    """The peers (Flow-GRPO, Flow-GRPO-Fast, DenseFlow-GRPO; plug-ins by import path) beside DDPO and PXPO on
    the breadth suite's test split, at the breadth suite's settings (the peers at DDPO's lr 3e-4 and its
    element-scaled clip range), 3 seeds x 480 images."""
    return dataclasses.replace(
        breadth_test(), algos=("ddpo", "pxpo", *PEERS), plugin_learning_rates=(3e-4,), out=scratch("peers")
    )


def peers_flow() -> SuiteConfig:
    """The same arms on the flow-matching default (Flow-GRPO's SDE at noise level 0.7), on the pixel-local
    colour and target-map tasks, 3 seeds x 320 images (the flow preset's budget)."""
    return dataclasses.replace(
        flow(),
        algos=("ddpo", "pxpo", *PEERS),
        tasks=("color", "target_map"),
        seeds=(0, 1, 2),
        plugin_learning_rates=(3e-4,),
        out=scratch("peers_flow"),
    )


PRESETS = {
    "quick": quick,
    "full": full,
    "sweep": sweep,
    "advantages": advantages,
    "options": options,
    "credit": credit,
    "region": region,
    "flow": flow,
    "breadth": breadth,
    "breadth-train": breadth_train,
    "breadth-test": breadth_test,
    "breadth-candidates": breadth_candidates,
    "distill": distill,
    "seam": seam,
    "peers": peers,
    "peers-flow": peers_flow,
    "passes-train": passes_train,
    "passes-ddpo": passes_ddpo,
    "passes-reuse": passes_reuse,
    "passes-test": passes_test,
}


def run_dir(cfg: SuiteConfig, task: str, label: str, seed: int) -> Path:
    return Path(cfg.out) / "runs" / task / label / f"seed{seed}"


def train_config(cfg: SuiteConfig, task: str, arm: Arm, seed: int, out: Path):
    """The one TrainConfig of a grid cell: everything but the arm's own fields is shared."""
    from agents.algorithms import resolve_algorithm
    from agents.config import TrainConfig

    spec = TASKS[task]
    epochs = cfg.epochs(task)
    shared_algo = dict(  # the algorithm's own options the grid shares, where the algorithm has them
        estimator=cfg.estimator, stat_buffer_size=cfg.stat_buffer_size, stat_min_count=cfg.stat_min_count
    )
    fields = {f.name for f in dataclasses.fields(resolve_algorithm(arm.algo).config_class)}
    settings = dict(
        algo=arm.algo,
        model=cfg.model,
        **{k: v for k, v in shared_algo.items() if k in fields},
        reward=spec.reward,
        reward_kwargs=spec.reward_kwargs_json,
        num_epochs=epochs,
        sample_batch_size=cfg.sample_batch_size,
        sample_batches_per_epoch=1,
        train_batch_size=cfg.train_batch_size,
        num_inference_steps=cfg.num_inference_steps,
        step_weighting=cfg.step_weighting,
        seed=seed,
        threads=1,
        out=str(out),
        save_every=4,
        image_every=epochs,
        eval_every=cfg.eval_every,
        eval_images=cfg.eval_images,
        tensorboard=False,
        export=False,
        progress=False,
    )
    settings.update(arm.overrides)  # an arm may also set the shared fields (e.g. its sampling batches)
    return TrainConfig.of(**settings)
