"""The training loop every algorithm shares: sample -> the algorithm's advantages -> minibatch updates.

``Trainer`` owns the env, the trainable policy, the optimizer and the algorithm
(``agents.algorithms``), and calls only the algorithm protocol's hooks
(``agents.algorithms.base``): it never asks which algorithm it runs.
``agents.runs.train(config)`` runs a ``TrainConfig`` around it (folder, resume,
logging, evaluation, export) for the CLI (``agents.train``), notebooks and the
benchmarks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from pxpo_gym.deprecation import warn_renamed
from pxpo_gym.guidance import guided_output
from pxpo_gym.pinning import PinnedPolicy, blend, pin_weights
from pxpo_gym.sampling import Episode
from pxpo_gym.transition import TransitionCoefficients, step_kl, step_log_prob

from .algorithms import resolve_algorithm
from .algorithms.base import EPOCH_METRICS, Algorithm, nan_metrics
from .checkpoint import save_checkpoint, trainer_state
from .config import TrainConfig, autocast, check_envs, make_envs
from .credit import Footprint
from .credit_check import BestWeights
from .distributed import (
    World,
    all_sum,
    check_splittable,
    gather_epoch,
    init_world,
    local_indices,
    local_rows,
    minibatches,
    rank_device,
    sum_gradients,
)
from .ema import EMA
from .export import EXPORT_DIR, export_policy
from .losses import kl_penalty
from .passes import BACKWARD_PASSES, PassCounter
from .policy import make_policy
from .steps import sample_steps, step_weights, train_window
from .trajectories import Trajectories, coefficients_from, collect


class GraphKeeper:
    """A policy that keeps its predictions' autograd graphs at the given steps of a lock-step episode
    (``reuse_sampling_pass``) and hands the env detached copies, so no graph runs through the chain.

    Args:
        action_fn: the policy (``Trainer.action``).
        steps: the step indices whose predictions are kept, with their graph, in ``kept`` (step -> (B, C, h, w)).
    """

    def __init__(self, action_fn: Callable[..., torch.Tensor], steps: list[int]) -> None:
        self.action_fn, self.steps = action_fn, set(steps)
        self.kept: dict[int, torch.Tensor] = {}
        self._step = 0

    def __call__(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        step, self._step = self._step, self._step + 1
        if step not in self.steps:
            return self.action_fn(sample, timestep, context)
        with torch.enable_grad():
            action = self.action_fn(sample, timestep, context)
        self.kept[step] = action
        return action.detach()


class Trainer:
    """Owns the env, the trainable policy, the optimizer and the algorithm's statistics.

    Args:
        config: the run's ``TrainConfig``.
        envs: optional prebuilt vector env (must match the config); built from it if None.
    """

    def __init__(self, config: TrainConfig, envs: Any = None, world: World | None = None) -> None:
        algo_cls = resolve_algorithm(config.algo)
        config = config.with_window_defaults(algo_cls)
        self.config = config
        if config.run.threads is not None:
            torch.set_num_threads(config.run.threads)
        torch.manual_seed(config.run.seed)
        self.world = world if world is not None else init_world(config.run.device, config.run.dist_timeout)
        """This process's rank and the world size (``agents.distributed``); one process without torchrun."""
        if self.world.distributed:
            check_splittable(algo_cls, config.sampling.sample_batch_size, self.world)
        local_batch = config.env_batch_size // self.world.size
        self.envs = (
            envs
            if envs is not None
            else make_envs(config, local_batch, rank_device(config.run.device, self.world))
        )
        check_envs(config, self.envs, self.world.size)
        core = self.envs.unwrapped
        self.device = core.device
        self.null_context = core.loaded.null_context
        self.num_channels, *grid = core.loaded.sample_shape
        self.reference = core.model
        """The frozen pretrained model (the env's): the KL penalty's reference."""
        self.policy = make_policy(core.model, config.optimiser.resolved_lora_rank(core.loaded.is_latent))
        self.passes = PassCounter([self.policy])
        """Network passes of the run so far (``agents.passes``: backward counted as 2, evaluation paused): the
        policy's by a hook (it is the trainer's own), the reference's, which is the env's and shared, where
        the trainer calls it (``reference_action``)."""
        if config.optimiser.gradient_checkpointing:
            self.policy.net.enable_gradient_checkpointing()
        algo_config = config.algo_config(self.num_channels * math.prod(grid), algo_cls)
        config.check_for(algo_cls, algo_config)  # a plug-in's class is known only here
        self.algo: Algorithm = algo_cls(algo_config, core.loaded.num_contexts, tuple(grid))
        """The algorithm (``agents.algorithms``): its advantages, loss and hooks."""
        self.kl_coef = getattr(algo_config, "kl_coef", 0.0)
        """The KL penalty's weight to the pretrained model (a policy-gradient algorithm's option)."""
        self.group_size = getattr(algo_config, "group_size", None)
        """Group advantages: images per training context per epoch (None: the running buffer)."""
        self.optimizer = torch.optim.AdamW(
            [p for p in self.policy.parameters() if p.requires_grad],
            lr=config.optimiser.learning_rate,
            betas=(config.optimiser.adam_beta1, config.optimiser.adam_beta2),
            weight_decay=config.optimiser.weight_decay,
        )
        self.ema = (
            EMA(self.policy, config.optimiser.ema_decay) if config.optimiser.ema_decay is not None else None
        )
        """Moving average of the trainable weights, used for evaluation (``agents.ema``)."""
        self.autocast = autocast(config.optimiser.mixed_precision, self.device)
        """The policy's forward passes' autocast context, built once."""
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=config.optimiser.mixed_precision == "fp16"
        )
        self.generator = torch.Generator().manual_seed(config.run.seed)
        self.step_weights = step_weights(
            core.schedule.coefficients.std_dev_t.cpu(),
            config.optimiser.step_weighting,
            config.optimiser.step_threshold,
            config.optimiser.step_weights,
        )
        """(T,) weight of each denoising step in the loss (``agents.steps``)."""
        self.reward_components: list[str] = list(getattr(core.reward_fn, "names", []))
        """A weighted reward's component names: each component's mean reward is logged as reward_NAME."""
        self.pinned: torch.Tensor | None = None
        """The algorithm's pinned pixels (``Algorithm.pinned_pixels``): (num_contexts, h, w), fixed for the epoch."""
        self.pin = self.algo.pin
        """How the sampler pins them: 'freeze', 'hold' or None."""
        self._pinned_weights: tuple[torch.Tensor, torch.Tensor] | None = None
        """(pinned, its band's weights), computed once per pin (``pinned_weights``)."""
        self.best = BestWeights()
        """The weights of the best epoch so far, for an algorithm that may restore them (PXPO's
        credit='checked', ``agents.credit_check``)."""
        self.window: range | None = None
        """The steps this epoch trains and stores (``TrainConfig.step_window``); None: every step."""
        self.sampled_actions: dict[int, torch.Tensor] = {}
        """With ``reuse_sampling_pass``: the sampling pass's predictions, with their graph, of the first
        minibatch's images at each trained step (step -> (n, C, h, w)), until that minibatch's update."""
        self._sampled_versions: list[int] = []
        self.footprint: Footprint | None = None
        """PXPO's kernel credits: the footprint measured at the first epoch (restored on resume)."""
        self.epoch = 0
        self.images = 0
        self.progress: Callable[[str], None] = lambda what: None
        """Called after each sampling batch ('sample') and each optimiser step ('update'), so a run's bar moves
        within an epoch (``agents.progress``); does nothing by default."""
        self.algo.attach(self)

    # -- sampling and updates -------------------------------------------------

    def weights_action(
        self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """The policy's own (guided) noise prediction, float32, under the configured autocast: no pin."""
        with self.autocast:
            action = guided_output(
                self.policy, sample, timestep, context, self.config.sampling.guidance_scale, self.null_context
            )
        return action.float()

    def action(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``weights_action``; with a 'freeze' pin (the algorithm's ``pin``), the pretrained model's at the
        pinned pixels."""
        action = self.weights_action(sample, timestep, context)
        if self.pinned is not None and self.pin == "freeze":
            pinned = self.pinned_weights()[context.reshape(-1)]  # (B, h, w)
            if bool(pinned.any()):
                action = blend(action, self.reference_action(sample, timestep, context), pinned)
        return action

    def eps(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Deprecated name of ``action`` (on flow models the action is a velocity, not a noise)."""
        warn_renamed("Trainer.eps", "Trainer.action")
        return self.action(sample, timestep, context)

    def pinned_weights(self) -> torch.Tensor:
        """How the sampler pins: ``pinned`` itself, or with ``pin_band`` its float weights
        (``pxpo_gym.pinning.pin_weights``: a ramp over the band of pinned pixels nearest the edge)."""
        assert self.pinned is not None
        band = self.algo.pin_band
        if not band:
            return self.pinned
        if self._pinned_weights is None or self._pinned_weights[0] is not self.pinned:  # once per pin
            self._pinned_weights = (self.pinned, pin_weights(self.pinned, band))
        return self._pinned_weights[1]

    def rollout_policy(
        self, action_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
    ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The policy for one batch of episodes: ``action`` (or ``action_fn``, e.g. a ``GraphKeeper`` of it), or with
        the algorithm's pixels pinned ('hold', 'hold-unscored') a fresh ``PinnedPolicy`` of it whose pinned
        pixels follow the pretrained model's trajectory."""
        action_fn = action_fn or self.action
        if self.pinned is None or self.pin != "hold":
            return action_fn
        return PinnedPolicy(action_fn, self.reference_action, self.pinned_weights())

    @torch.no_grad()
    def reference_action(
        self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """The frozen pretrained model's (guided) noise prediction, float32, under the configured autocast,
        without gradients."""
        with self.autocast:
            action = guided_output(
                self.reference,
                sample,
                timestep,
                context,
                self.config.sampling.guidance_scale,
                self.null_context,
            )
        self.passes.add(self.forwards(sample))
        return action.float()

    def forwards(self, sample: torch.Tensor) -> int:
        """Network passes of one guided prediction for a batch: one per image, two under guidance."""
        return int(sample.shape[0]) * (1 if self.config.sampling.guidance_scale == 1 else 2)

    def sample(self) -> Trajectories:
        """One epoch's images from the current policy (the env is seeded once, at epoch 0).

        With ``group_size``, image j of the epoch is conditioned on training context j mod K,
        so every context gets exactly group_size images.
        """
        parts = []
        cfg = self.config
        batch_size = cfg.sampling.sample_batch_size
        local = batch_size // self.world.size  # this rank's slots: rank x local ... (rank + 1) x local - 1
        num_steps = self.envs.unwrapped.num_steps
        stochastic = None
        if self.window is not None and cfg.sampling.window_outside == "deterministic":
            stochastic = torch.zeros(num_steps, dtype=torch.bool, device=self.device)
            stochastic[self.window.start : self.window.stop] = True
        self.sampled_actions = {}
        kept: list[dict[int, torch.Tensor]] = []
        for batch in range(cfg.sampling.sample_batches_per_epoch):
            seed = cfg.run.seed + self.world.rank * local if self.epoch == 0 and batch == 0 else None
            options: dict[str, Any] = {}
            if self.group_size is not None:
                choices = self.envs.unwrapped.context_choices
                first = batch * batch_size + self.world.rank * local
                index = torch.arange(first, first + local, device=choices.device)
                options["context"] = choices[index % len(choices)]
            if stochastic is not None:
                options["stochastic_steps"] = stochastic
            action_fn: Callable[..., torch.Tensor] = self.action
            if (
                cfg.sampling.reuse_sampling_pass and batch < cfg.optimiser.train_batch_size // batch_size
            ):  # the first minibatch's
                action_fn = GraphKeeper(self.action, self.trained_steps(num_steps))
                kept.append(action_fn.kept)
            parts.append(
                collect(
                    self.envs,
                    self.rollout_policy(action_fn),
                    seed=seed,
                    options=options or None,
                    keep=self.window,
                )
            )
            self.progress("sample")
        if kept:
            self.sampled_actions = {k: torch.cat([part[k] for part in kept]) for k in kept[0]}
            self._sampled_versions = self.weight_versions()
        return Trajectories.cat(parts)

    def weight_versions(self) -> list[int]:
        """The trainable weights' in-place version counters: they move when anything writes the weights."""
        return [p._version for p in self.policy.parameters() if p.requires_grad]

    def trained_steps(self, num_steps: int) -> list[int]:
        """The steps this epoch's update trains: those with a weight (``Algorithm.train_steps``) in the window."""
        weights = self.algo.train_steps(self.step_weights, self.epoch)
        steps = self.window if self.window is not None else range(num_steps)
        return [k for k in steps if float(weights[k]) > 0]

    def epoch_window(self) -> range | None:
        """The window of steps this epoch trains (``agents.steps.train_window``), or None without one."""
        cfg = self.config
        if not cfg.sampling.step_window:
            return None
        weights = self.algo.train_steps(self.step_weights, self.epoch)
        return train_window(
            weights,
            cfg.sampling.step_window,
            cfg.sampling.window_placement,
            cfg.sampling.window_start,
            self.epoch,
            cfg.run.seed,
        )

    def make_envs(self, num_envs: int) -> Any:
        """Another vector env like the training env (the config's), with ``num_envs`` slots, on this rank's
        device: for probes and measurements."""
        return make_envs(self.config, num_envs, str(self.device))

    def policy_gradient_epoch(
        self, traj: Trajectories, step_weights: torch.Tensor | None = None
    ) -> tuple[dict[str, float], Trajectories]:
        """The policy-gradient part of an epoch, after sampling: the algorithm's look at the epoch
        (``before_update``), its advantages (statistics on every rank's images, in the single process's
        order) and the minibatch updates of ``update``. Training and the refine page's workspace both call it.

        Args:
            traj: this rank's trajectories of the epoch.
            step_weights: (T,) per-step loss weights; None: the algorithm's (``Algorithm.train_steps``) of
                the config's.

        Returns:
            (metrics, ``traj`` with the whole epoch's rewards and component rewards).
        """
        self.policy.train()
        rewards, reward_maps, contexts, components = (
            gather_epoch(x, self.world, self.config.sampling.sample_batches_per_epoch)
            for x in (traj.rewards, traj.grid_reward_maps, traj.contexts, traj.component_rewards)
        )
        looked = self.algo.before_update(self, traj, rewards)
        if self.sampled_actions and (looked.get("skip") or self.weight_versions() != self._sampled_versions):
            # the weights moved since sampling (e.g. restored): the graph is not theirs, and its backward (counted
            # with its forward) never runs
            self.passes.total -= BACKWARD_PASSES * sum(
                self.forwards(action) for action in self.sampled_actions.values()
            )
            self.sampled_actions = {}
        advantages = self.algo.advantages(rewards.cpu(), reward_maps.cpu(), contexts.cpu())
        owned = local_indices(
            self.config.sampling.images_per_epoch, self.config.sampling.sample_batch_size, self.world
        )
        if not looked.get("skip"):
            metrics = self.update(traj, advantages[owned], step_weights)
        else:  # e.g. this epoch's images came from weights the algorithm just put aside: no update from them
            metrics = dict.fromkeys(
                ("loss", "approx_kl", "clipfrac", "grad_norm", "kl", "silent_kl"), math.nan
            )
        metrics.update(nan_metrics())
        metrics.update(self.algo.epoch_metrics())
        metrics.update({k: v for k, v in looked.items() if k in EPOCH_METRICS})
        return metrics, dataclasses.replace(traj, rewards=rewards, component_rewards=components)

    def update(
        self,
        traj: Trajectories,
        advantages: torch.Tensor,
        step_weights: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Minibatch policy-gradient updates on one epoch's trajectories.

        Each image trains on ``timestep_fraction`` of its weighted steps (those with
        ``self.step_weights > 0``) in a random order; each step's loss is scaled by
        its weight. Gradients accumulate over a minibatch's trained steps, then one
        clipped AdamW step is taken (DDPO's reference scheme).

        Args:
            traj: this rank's trajectories.
            advantages: (N,) one per image; (N, h, w) one map for every step, (N, T, h, w) one per step.
            step_weights: (T,) per-step loss weights; None: the algorithm's (``Algorithm.train_steps``) of
                ``self.step_weights``.

        The algorithm's ``silent_weights`` of these images weigh a KL penalty towards the pretrained model,
        scaled by its ``silent_kl_coef``.
        """
        cfg = self.config
        num_images = cfg.sampling.images_per_epoch  # the whole epoch's, over every rank
        local_row = local_rows(num_images, cfg.sampling.sample_batch_size, self.world)
        if step_weights is None:
            step_weights = self.algo.train_steps(self.step_weights, self.epoch)
        kept = torch.zeros_like(step_weights, dtype=torch.bool)
        kept[traj.first_step : traj.first_step + traj.timesteps.shape[1]] = True  # the window's steps, if any
        weights = torch.where(kept, step_weights, 0.0).to(self.device)  # (T,)
        advantages = advantages.to(self.device)
        per_step = advantages.dim() == 4  # e.g. PXPO's kernel credits: one advantage map per step
        silent = self.algo.silent_weights(traj.contexts)
        silent = None if silent is None else silent.to(self.device)
        # Metrics stay on the device until the end: no host sync inside the loop.
        totals = {
            name: torch.zeros((), device=self.device)
            for name in ("loss", "approx_kl", "clipfrac", "grad_norm", "kl", "silent_kl")
        }
        count = updates = 0
        for inner in range(cfg.optimiser.inner_epochs):
            order = torch.randperm(num_images, generator=self.generator)  # CPU: minibatches split on the host
            if (
                cfg.sampling.reuse_sampling_pass and inner == 0
            ):  # the first minibatch: the images sampled first
                first = cfg.optimiser.train_batch_size
                order = torch.cat([torch.arange(first), first + order[order < num_images - first]])
            steps = sample_steps(
                weights.cpu() > 0, num_images, cfg.optimiser.timestep_fraction, self.generator
            )
            if (
                int(steps.min()) < traj.first_step
                or int(steps.max()) >= traj.first_step + traj.timesteps.shape[1]
            ):
                raise RuntimeError(
                    f"steps {sorted(set(steps.flatten().tolist()))} are not all in {traj.kept_steps}"
                )
            steps = steps.to(self.device)  # (N, num_train)
            for share, mine, rows in minibatches(order, cfg.optimiser.train_batch_size, local_row):
                gidx, idx = mine.to(self.device), rows.to(self.device)  # global, local rows
                sampled, self.sampled_actions = (
                    self.sampled_actions,
                    {},
                )  # only the first minibatch takes them
                if sampled:  # (A, n, C, h, w) the kept steps' predictions, and each step's position in it
                    kept_steps = sorted(sampled)
                    stacked = torch.stack([sampled[kk] for kk in kept_steps])
                    position = torch.full((len(weights),), -1, dtype=torch.long, device=self.device)
                    position[kept_steps] = torch.arange(len(kept_steps), device=self.device)
                reused = []
                for j in range(steps.shape[1]):
                    count += 1
                    if not len(idx):
                        continue
                    k = steps[gidx, j]  # (b,) one step index per image
                    adv = advantages[idx, k] if per_step else advantages[idx]
                    action = None
                    if sampled:  # the sampling pass's predictions at each image's step k, with their graph
                        action = stacked[position[k], idx]
                    loss, stats = self.step_loss(traj, idx, k, adv, weights[k], silent, action)
                    if sampled:  # one backward through the sampling graphs, after every step's loss
                        reused.append(share * loss / steps.shape[1])
                    else:
                        self.scaler.scale(share * loss / steps.shape[1]).backward()
                    for name, value in stats.items():
                        totals[name] += share * value
                if reused:
                    self.scaler.scale(torch.stack(reused).sum()).backward()
                del sampled, reused
                stacked = None
                totals["grad_norm"] += self.optimizer_step()
                updates += 1
        totals = {k: v if k == "grad_norm" else all_sum(v, self.world) for k, v in totals.items()}
        out = {k: (v / count).item() for k, v in totals.items() if k != "grad_norm"}
        out["grad_norm"] = (totals["grad_norm"] / updates).item()
        if not self.kl_coef and silent is None:
            out["kl"] = math.nan  # not measured: no reference pass ran (metrics.csv leaves the cell empty)
        if silent is None:
            out["silent_kl"] = math.nan
        return out

    def step_loss(
        self,
        traj: Trajectories,
        idx: torch.Tensor,
        k: torch.Tensor,
        advantages: torch.Tensor,
        weight: torch.Tensor,
        silent: torch.Tensor | None,
        action: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of images ``idx`` (local rows) at their steps ``k`` (b,): the algorithm's policy-gradient
        term plus the KL penalties, and its detached parts for the metrics. ``action``: the policy's prediction
        there, when the sampling pass kept it (``reuse_sampling_pass``); None: computed now."""
        row = k - traj.first_step  # the step's row in the kept window
        sample, prev_sample = traj.samples[idx, row], traj.samples[idx, row + 1]  # (b, C, h, w)
        timestep, context = traj.timesteps[idx, row], traj.contexts[idx]
        if action is None:
            action = self.action(sample, timestep, context)
        coeffs = coefficients_from(traj.coeffs[idx, row])
        density = self.envs.unwrapped.schedule.log_density
        logp = step_log_prob(prev_sample, sample, action, coeffs, density).sum(dim=1)  # (b, h, w)
        old_logp = traj.logp_pixels[idx, row]
        if self.pinned is not None and self.pin == "hold":  # pinned pixels' steps are not the policy's
            logp = torch.where(self.pinned[context], old_logp, logp)
        loss, stats = self.algo.loss(logp, old_logp, advantages, self.num_channels, weight)
        stats = {"approx_kl": stats["approx_kl"], "clipfrac": stats["clipfrac"]}
        if self.kl_coef or silent is not None:
            kl_map = self.reference_kl(sample, timestep, context, action, coeffs)  # (b, C, h, w)
            silent_coef = self.algo.silent_kl_coef if silent is not None else 0.0
            penalty, kl_stats = kl_penalty(
                kl_map, weight, self.kl_coef, None if silent is None else silent[idx], silent_coef
            )
            loss = loss + penalty
            stats.update(kl_stats)
        stats["loss"] = loss.detach()
        return loss, stats

    def reference_kl(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        action: torch.Tensor,
        coeffs: TransitionCoefficients,
    ) -> torch.Tensor:
        """(b, C, h, w) elementwise KL(policy step || frozen pretrained model's step)."""
        return step_kl(action, self.reference_action(sample, timestep, context), coeffs)

    def optimizer_step(self) -> torch.Tensor:
        """Unscales, clips the gradient norm, steps AdamW and zeroes the gradients; returns the norm."""
        params = [p for p in self.policy.parameters() if p.requires_grad]
        sum_gradients(params, self.world)  # every rank now holds the whole minibatch's gradient
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, self.config.optimiser.max_grad_norm).detach()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        self.progress("update")
        return norm

    def sample_and_update(self) -> tuple[dict[str, float], Trajectories]:
        """A sampling algorithm's epoch: its pinned pixels fixed for the epoch, the epoch's trajectories
        (``sample``), then ``policy_gradient_epoch``; ``sample_seconds`` among the metrics."""
        start = time.perf_counter()
        pinned = self.algo.pinned_pixels()
        self.pinned = None if pinned is None else pinned.to(self.device)  # fixed for the epoch
        self.window = self.epoch_window()
        self.policy.eval()
        traj = self.sample()
        sample_seconds = time.perf_counter() - start
        metrics, traj = self.policy_gradient_epoch(traj)
        metrics["sample_seconds"] = sample_seconds
        return metrics, traj

    def train_epoch(self) -> tuple[dict[str, float], Trajectories | Episode]:
        """One epoch of the algorithm (``Algorithm.epoch``: sample, advantages, update); returns the epoch's
        metrics and images."""
        start = time.perf_counter()
        core = self.envs.unwrapped
        core.reward_seconds = 0.0
        metrics, traj = self.algo.epoch(self)
        sample_seconds = metrics.pop("sample_seconds", math.nan)
        self.epoch += 1
        self.images += len(traj.rewards)
        metrics.update(
            epoch=self.epoch,
            images=self.images,
            reward_mean=traj.rewards.mean().item(),
            reward_std=traj.rewards.std().item(),
            seconds=time.perf_counter() - start,
            sample_seconds=sample_seconds,
            reward_seconds=core.reward_seconds,
        )
        metrics["train_seconds"] = metrics["seconds"] - (
            0.0 if math.isnan(sample_seconds) else sample_seconds
        )
        for name, column in zip(self.reward_components, traj.component_rewards.T):
            metrics[f"reward_{name}"] = column.mean().item()
        # every rank's passes (equal shares: on resume each rank takes the checkpoint's count back)
        metrics["passes"] = self.passes.total * self.world.size
        return metrics, traj

    # -- checkpoints ----------------------------------------------------------

    def save(self) -> None:
        """Checkpoints (every rank takes part in gathering the RNG states; rank 0 writes)."""
        tensors, meta = trainer_state(self)  # every rank: the RNG states are gathered
        if self.world.main:
            save_checkpoint(self.config.run_dir, self.epoch, tensors, meta)

    def export(self) -> Path:
        """Writes the policy (its EMA weights, with ``ema_decay``) as a diffusers model to RUN/model, with the
        pinned pixels ('hold' or 'freeze') beside it."""
        # the run's own settings, flat (pxpo_gym reads the sampler's from them without knowing the sections):
        # how it was started or resumed is not part of what it trained
        settings = self.config.replace(resume="", overwrite=False, trust_code=False)
        run = {"config": settings.flat(), "epoch": self.epoch, "images": self.images}
        run["weights"] = "ema" if self.ema is not None else "trained"
        with self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext():
            pin = None if self.pinned is None else (self.pin, self.pinned, self.algo.pin_band)
            return export_policy(
                self.policy, self.envs.unwrapped.loaded, self.config.run_dir / EXPORT_DIR, run, pin
            )
