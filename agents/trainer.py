"""The shared training loop of DDPO and PXPO: sample -> advantages -> minibatch updates -> log.

``train(config)`` runs a ``TrainConfig`` and returns the per-epoch metrics; the
same loop serves the CLI (``agents.train``), notebooks and the benchmarks.
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

from agents.checkpoint import save_checkpoint, trainer_state
from agents.config import TrainConfig, autocast, check_envs, make_envs
from agents.credit import Footprint, reward_has_gradient, reward_insensitive, reward_locality
from agents.credit_check import (
    CHECK_PROBES,
    BestWeights,
    agreement_from_sums,
    reward_dropped,
    scaled_agreement_sums,
)
from agents.ddpo import DDPO
from agents.distributed import (
    World,
    all_sum,
    barrier,
    check_splittable,
    gather_epoch,
    init_world,
    local_indices,
    local_rows,
    minibatches,
    rank_device,
    sum_gradients,
)
from agents.ema import EMA
from agents.export import EXPORT_DIR, export_policy
from agents.losses import kl_penalty
from agents.oracle import check_differentiable, trainer_epoch
from agents.policy import guided_eps, make_policy
from agents.pxpo import PIN_OF_MODE, PXPO
from agents.rollout import Trajectories, coefficients_from, collect
from agents.runs import measure_run_footprint, resolve_config, run_epochs
from agents.steps import sample_steps, step_weights
from pxpo_gym.ddim import TransitionCoefficients, step_kl, step_log_prob
from pxpo_gym.pinning import HeldPolicy, blend, pin_weights
from pxpo_gym.sampling import Episode


class Trainer:
    """Owns the env, the trainable policy, the optimizer and the algorithm's statistics.

    Args:
        config: the run's ``TrainConfig``.
        envs: optional prebuilt vector env (must match the config); built from it if None.
    """

    def __init__(self, config: TrainConfig, envs: Any = None, world: World | None = None) -> None:
        self.config = config
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.world = world if world is not None else init_world(config.device, config.dist_timeout)
        """This process's rank and the world size (``agents.distributed``); one process without torchrun."""
        if self.world.distributed:
            check_splittable(config.algo, config.sample_batch_size, self.world)
        local_batch = config.env_batch_size // self.world.size
        self.envs = (
            envs
            if envs is not None
            else make_envs(config, local_batch, rank_device(config.device, self.world))
        )
        check_envs(config, self.envs, self.world.size)
        core = self.envs.unwrapped
        self.device = core.device
        self.null_context = core.loaded.null_context
        self.num_channels, *grid = core.loaded.sample_shape
        self.reference = core.model
        """The frozen pretrained model (the env's): the KL penalty's reference."""
        self.policy = make_policy(core.model, config.resolved_lora_rank(core.loaded.is_latent))
        if config.gradient_checkpointing:
            self.policy.unet.enable_gradient_checkpointing()
        self.algo: DDPO | PXPO | None = None
        """DDPO's or PXPO's advantages and loss; None for the exact-gradient oracle."""
        if config.algo != "oracle":
            algo_cls = PXPO if config.algo == "pxpo" else DDPO
            algo_config = config.algo_config(self.num_channels * math.prod(grid))
            self.algo = algo_cls(algo_config, core.loaded.num_contexts, tuple(grid))
        else:
            check_differentiable(reward_has_gradient(core), core.reward_fn.name)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.policy.parameters() if p.requires_grad],
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.weight_decay,
        )
        self.ema = EMA(self.policy, config.ema_decay) if config.ema_decay is not None else None
        """Moving average of the trainable weights, used for evaluation (``agents.ema``)."""
        self.autocast = autocast(config.mixed_precision, self.device)
        """The policy's forward passes' autocast context, built once."""
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.mixed_precision == "fp16")
        self.generator = torch.Generator().manual_seed(config.seed)
        self.step_weights = step_weights(
            core.schedule.coefficients.std_dev_t.cpu(),
            config.step_weighting,
            config.step_threshold,
            config.step_weights,
        )
        """(T,) weight of each denoising step in the loss (``agents.steps``)."""
        self.reward_components: list[str] = list(getattr(core.reward_fn, "names", []))
        """A weighted reward's component names: each component's mean reward is logged as reward_NAME."""
        self.pinned: torch.Tensor | None = None
        """PXPO's pinned silent pixels (``PXPO.pinned_pixels``): (num_contexts, h, w), fixed for the epoch."""
        self.pin = PIN_OF_MODE.get(config.silent_mode) if isinstance(self.algo, PXPO) else None
        """How the sampler pins them: 'freeze', 'hold' or None."""
        if isinstance(self.algo, PXPO) and config.silent_mode == "hold-unscored":
            self.algo.set_insensitive(reward_insensitive(core, seed=config.seed))
        if isinstance(self.algo, PXPO) and self.algo.needs_locality:
            self.algo.set_locality(reward_locality(core, seed=config.seed))
        self.best = BestWeights()
        """PXPO's credit='checked': the weights of the best epoch while per-pixel credit held (restored when the
        check fails, ``agents.credit_check``)."""
        self.footprint: Footprint | None = None
        """PXPO's kernel credits: the footprint measured at the first epoch (restored on resume)."""
        self.epoch = 0
        self.images = 0

    # -- sampling and updates -------------------------------------------------

    def weights_eps(
        self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """The policy's own (guided) noise prediction, float32, under the configured autocast: no pin."""
        with self.autocast:
            eps = guided_eps(
                self.policy, sample, timestep, context, self.config.guidance_scale, self.null_context
            )
        return eps.float()

    def eps(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """``weights_eps``; with PXPO's ``silent_mode='freeze'``, the pretrained model's at the context's
        silent pixels."""
        eps = self.weights_eps(sample, timestep, context)
        if self.pinned is not None and self.pin == "freeze":
            held = self.held_weights()[context.reshape(-1)]  # (B, h, w)
            if bool(held.any()):
                eps = blend(eps, self.reference_eps(sample, timestep, context), held)
        return eps

    def held_weights(self) -> torch.Tensor:
        """How the sampler pins: ``pinned`` itself, or with ``pin_band`` its float weights
        (``pxpo_gym.pinning.pin_weights``: a ramp over the band of pinned pixels nearest the edge)."""
        assert self.pinned is not None
        band = getattr(self.config, "pin_band", 0)
        return pin_weights(self.pinned, band) if band else self.pinned

    def rollout_policy(self) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
        """The policy for one batch of episodes: ``eps``, or with PXPO's silent pixels held ('hold',
        'hold-unscored') a fresh ``HeldPolicy`` whose held pixels follow the pretrained model's trajectory."""
        if self.pinned is None or self.pin != "hold":
            return self.eps
        return HeldPolicy(self.eps, self.reference_eps, self.held_weights())

    @torch.no_grad()
    def reference_eps(
        self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor
    ) -> torch.Tensor:
        """The frozen pretrained model's (guided) noise prediction, float32, under the configured autocast,
        without gradients."""
        with self.autocast:
            eps = guided_eps(
                self.reference, sample, timestep, context, self.config.guidance_scale, self.null_context
            )
        return eps.float()

    def sample(self) -> Trajectories:
        """One epoch's images from the current policy (the env is seeded once, at epoch 0).

        With ``group_size``, image j of the epoch is conditioned on training context j mod K,
        so every context gets exactly group_size images.
        """
        parts = []
        batch_size = self.config.sample_batch_size
        local = batch_size // self.world.size  # this rank's slots: rank x local ... (rank + 1) x local - 1
        for batch in range(self.config.sample_batches_per_epoch):
            seed = self.config.seed + self.world.rank * local if self.epoch == 0 and batch == 0 else None
            options = None
            if self.config.group_size is not None:
                choices = self.envs.unwrapped.context_choices
                first = batch * batch_size + self.world.rank * local
                index = torch.arange(first, first + local, device=choices.device)
                options = {"context": choices[index % len(choices)]}
            parts.append(collect(self.envs, self.rollout_policy(), seed=seed, options=options))
        return Trajectories.cat(parts)

    def advantages(
        self, rewards: torch.Tensor, reward_maps: torch.Tensor, contexts: torch.Tensor
    ) -> torch.Tensor:
        """The algorithm's advantages of a batch (measuring PXPO's footprint first if its credit needs it)."""
        if getattr(self.algo, "needs_footprint", False):
            self.footprint = measure_run_footprint(self)
        return self.algo.advantages(rewards.cpu(), reward_maps.cpu(), contexts.cpu())

    def check_credit(self, traj: Trajectories, rewards: torch.Tensor) -> tuple[float, float, float]:
        """PXPO's credit='checked': per-pixel credit's agreement with the reward on this epoch's images
        (``agents.credit_check``; every rank probes its own images, the sums are added), handed to the
        algorithm before its advantages. While the check passes, the weights that drew the best epoch are
        kept; when it fails they are restored.

        Args:
            traj: this rank's trajectories of the epoch.
            rewards: (N,) the whole epoch's rewards (every rank's).

        Returns:
            (agreement, 1.0 if the reward dropped else 0.0, the epoch whose weights were restored), each NaN
            when not applicable (other credits, after the switch; no guard; no restore).
        """
        if not getattr(self.algo, "needs_check", False):
            return math.nan, math.nan, math.nan
        config = self.algo.config
        reward_mean = float(rewards.mean())
        reward_se = float(rewards.std()) / math.sqrt(len(rewards)) if len(rewards) > 1 else 0.0
        # One generator per (run seed, epoch, rank): the same cells on resume, other cells on each rank.
        generator = torch.Generator().manual_seed(
            (self.config.seed * 1_000_003 + self.epoch) * 1_009 + self.world.rank
        )
        core = self.envs.unwrapped
        sums = scaled_agreement_sums(
            core, traj.images, traj.contexts, CHECK_PROBES, generator, config.check_scales
        )
        agreement = agreement_from_sums(all_sum(sums.to(self.device), self.world).cpu())
        dropped = math.nan
        if config.check_drop:
            dropped = float(reward_dropped(self.best.reward, self.best.first, reward_mean, reward_se))
        self.algo.record_agreement(agreement, self.epoch, dropped=dropped == 1.0)
        if self.algo.credit == "pixel":
            self.best.offer(self, reward_mean, self.epoch, keep_weights=config.check_restore)
            return agreement, dropped, math.nan
        restored = self.best.restore(self) if config.check_restore else None
        return agreement, dropped, math.nan if restored is None else float(restored)

    def policy_gradient_epoch(
        self, traj: Trajectories, step_weights: torch.Tensor | None = None
    ) -> tuple[dict[str, float], Trajectories]:
        """DDPO's or PXPO's part of an epoch, after sampling: the advantages (statistics on every rank's
        images, in the single process's order) and the minibatch updates of ``update``. Training and the
        refine page's workspace both call it.

        Args:
            traj: this rank's trajectories of the epoch.
            step_weights: (T,) per-step loss weights; None: ``self.step_weights`` (the config's).

        Returns:
            (metrics, ``traj`` with the whole epoch's rewards and component rewards).
        """
        self.policy.train()
        rewards, reward_maps, contexts, components = (
            gather_epoch(x, self.world, self.config.sample_batches_per_epoch)
            for x in (traj.rewards, traj.grid_reward_maps, traj.contexts, traj.component_rewards)
        )
        agreement, dropped, restored = self.check_credit(traj, rewards)
        credit_pixel = math.nan if not isinstance(self.algo, PXPO) else float(self.algo.credit == "pixel")
        advantages = self.advantages(rewards, reward_maps, contexts)
        silent = self.algo.silent_mask(contexts.cpu()) if isinstance(self.algo, PXPO) else None
        owned = local_indices(self.config.images_per_epoch, self.config.sample_batch_size, self.world)
        if math.isnan(restored):
            metrics = self.update(
                traj, advantages[owned], None if silent is None else silent[owned], step_weights
            )
        else:  # this epoch's images came from the weights just put aside: no update from them
            names = ("loss", "approx_kl", "clipfrac", "grad_norm", "kl", "silent_kl")
            metrics = dict.fromkeys(names, math.nan)
        metrics["silent_fraction"] = math.nan if silent is None else float(silent.mean())
        metrics.update(
            credit_agreement=agreement,
            credit_dropped=dropped,
            credit_pixel=credit_pixel,
            credit_restored=restored,
        )
        return metrics, dataclasses.replace(traj, rewards=rewards, component_rewards=components)

    def update(
        self,
        traj: Trajectories,
        advantages: torch.Tensor,
        silent: torch.Tensor | None = None,
        step_weights: torch.Tensor | None = None,
    ) -> dict[str, float]:
        """Minibatch policy-gradient updates on one epoch's trajectories.

        Each image trains on ``timestep_fraction`` of its weighted steps (those with
        ``self.step_weights > 0``) in a random order; each step's loss is scaled by
        its weight. Gradients accumulate over a minibatch's trained steps, then one
        clipped AdamW step is taken (DDPO's reference scheme).

        Args:
            traj: this rank's trajectories.
            advantages: (N,) DDPO; (N, h, w) PXPO with one map for every step, (N, T, h, w) one per step.
            silent: (N, h, w) PXPO's silent pixels (``PXPO.silent_mask``); those ``PXPO.braked_pixels`` picks
                are braked by ``silent_kl_coef``.
            step_weights: (T,) per-step loss weights; None: ``self.step_weights``.
        """
        cfg = self.config
        num_images = cfg.images_per_epoch  # the whole epoch's, over every rank
        local_row = local_rows(num_images, cfg.sample_batch_size, self.world)
        weights = (self.step_weights if step_weights is None else step_weights).to(self.device)  # (T,)
        advantages = advantages.to(self.device)
        per_step = advantages.dim() == 4  # PXPO kernel credits: one advantage map per step
        silent = self.algo.braked_pixels(silent, traj.contexts) if isinstance(self.algo, PXPO) else None
        silent = None if silent is None else silent.to(self.device)
        # Metrics stay on the device until the end: no host sync inside the loop.
        totals = {
            name: torch.zeros((), device=self.device)
            for name in ("loss", "approx_kl", "clipfrac", "grad_norm", "kl", "silent_kl")
        }
        count = updates = 0
        for _ in range(cfg.inner_epochs):
            order = torch.randperm(num_images, generator=self.generator)  # CPU: minibatches split on the host
            steps = sample_steps(weights.cpu() > 0, num_images, cfg.timestep_fraction, self.generator)
            steps = steps.to(self.device)  # (N, num_train)
            for share, mine, rows in minibatches(order, cfg.train_batch_size, local_row):
                gidx, idx = mine.to(self.device), rows.to(self.device)  # global, local rows
                for j in range(steps.shape[1]):
                    count += 1
                    if not len(idx):
                        continue
                    k = steps[gidx, j]  # (b,) one step index per image
                    adv = advantages[idx, k] if per_step else advantages[idx]
                    loss, stats = self.step_loss(traj, idx, k, adv, weights[k], silent)
                    self.scaler.scale(share * loss / steps.shape[1]).backward()
                    for name, value in stats.items():
                        totals[name] += share * value
                totals["grad_norm"] += self.optimizer_step()
                updates += 1
        totals = {k: v if k == "grad_norm" else all_sum(v, self.world) for k, v in totals.items()}
        out = {k: (v / count).item() for k, v in totals.items() if k != "grad_norm"}
        out["grad_norm"] = (totals["grad_norm"] / updates).item()
        if not cfg.kl_coef:
            out["kl"] = math.nan  # not computed without a penalty
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
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of images ``idx`` (local rows) at their steps ``k`` (b,): the algorithm's policy-gradient
        term plus the KL penalties, and its detached parts for the metrics."""
        cfg = self.config
        sample, prev_sample = traj.samples[idx, k], traj.samples[idx, k + 1]  # (b, C, h, w)
        timestep, context = traj.timesteps[idx, k], traj.contexts[idx]
        eps = self.eps(sample, timestep, context)
        coeffs = coefficients_from(traj.coeffs[idx, k])
        density = self.envs.unwrapped.schedule.log_density
        logp = step_log_prob(prev_sample, sample, eps, coeffs, density).sum(dim=1)  # (b, h, w)
        if self.pinned is not None and self.pin == "hold":  # held pixels' steps are not the policy's
            logp = torch.where(self.pinned[context], traj.logp_pixels[idx, k], logp)
        loss, stats = self.algo.loss(logp, traj.logp_pixels[idx, k], advantages, self.num_channels, weight)
        stats = {"approx_kl": stats["approx_kl"], "clipfrac": stats["clipfrac"]}
        if cfg.kl_coef or silent is not None:
            kl_map = self.reference_kl(sample, timestep, context, eps, coeffs)  # (b, C, h, w)
            silent_coef = self.algo.config.silent_kl_coef if silent is not None else 0.0
            penalty, kl_stats = kl_penalty(
                kl_map, weight, cfg.kl_coef, None if silent is None else silent[idx], silent_coef
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
        eps: torch.Tensor,
        coeffs: TransitionCoefficients,
    ) -> torch.Tensor:
        """(b, C, h, w) elementwise KL(policy step || frozen pretrained model's step)."""
        return step_kl(eps, self.reference_eps(sample, timestep, context), coeffs)

    def optimizer_step(self) -> torch.Tensor:
        """Unscales, clips the gradient norm, steps AdamW and zeroes the gradients; returns the norm."""
        params = [p for p in self.policy.parameters() if p.requires_grad]
        sum_gradients(params, self.world)  # every rank now holds the whole minibatch's gradient
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm).detach()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update()
        return norm

    def train_epoch(self) -> tuple[dict[str, float], Trajectories | Episode]:
        """Samples, computes advantages, updates; returns the epoch's metrics and images."""
        start = time.perf_counter()
        core = self.envs.unwrapped
        core.reward_seconds = 0.0
        if self.algo is None:
            self.policy.train()
            metrics, traj = trainer_epoch(self)  # sampling and training are one pass (agents.oracle)
            sample_seconds = math.nan
        else:
            pinned = self.algo.pinned_pixels() if isinstance(self.algo, PXPO) else None
            self.pinned = None if pinned is None else pinned.to(self.device)  # fixed for the epoch
            self.policy.eval()
            traj = self.sample()
            sample_seconds = time.perf_counter() - start
            metrics, traj = self.policy_gradient_epoch(traj)
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
        return metrics, traj

    # -- checkpoints ----------------------------------------------------------

    def save(self) -> None:
        """Checkpoints (every rank takes part in gathering the RNG states; rank 0 writes)."""
        tensors, meta = trainer_state(self)  # every rank: the RNG states are gathered
        if self.world.main:
            save_checkpoint(self.config.run_dir, self.epoch, tensors, meta)

    def export(self) -> Path:
        """Writes the policy (its EMA weights, with ``ema_decay``) as a diffusers model to RUN/model, with PXPO's
        pinned silent pixels ('hold' or 'freeze') beside it."""
        # the run's own settings: how it was started or resumed is not part of what it trained
        settings = dataclasses.replace(self.config, resume="", overwrite=False, trust_code=False)
        run = {"config": dataclasses.asdict(settings), "epoch": self.epoch, "images": self.images}
        run["weights"] = "ema" if self.ema is not None else "trained"
        with self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext():
            held = None if self.pinned is None else (self.pin, self.pinned, self.config.pin_band)
            return export_policy(
                self.policy, self.envs.unwrapped.loaded, self.config.run_dir / EXPORT_DIR, run, held
            )


def train(config: TrainConfig, envs: Any = None) -> list[dict[str, float]]:
    """Runs (or resumes) training; returns one metrics dict per epoch run now.

    Writes ``RUN/metrics.csv``, TensorBoard scalars, image grids and checkpoints
    under ``config.run_dir`` (see ``TrainConfig``). Under torchrun every rank calls
    it; rank 0 writes (``agents.distributed``).

    Raises:
        RuntimeError: under torchrun, a collective failed or timed out (another rank died).
    """
    config = resolve_config(config)
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
