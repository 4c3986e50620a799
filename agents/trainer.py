"""The shared training loop of DDPO and PXPO: sample -> advantages -> minibatch updates -> log.

``train(config)`` runs a ``TrainConfig`` and returns the per-epoch metrics; the
same loop serves the CLI (``agents.train``), notebooks and the benchmarks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from agents.checkpoint import load_checkpoint, optimizer_from_tensors, optimizer_to_tensors, save_checkpoint
from agents.config import TrainConfig, autocast, check_envs, make_envs, reward_tuple
from agents.credit import Footprint, measure_footprint, reward_has_gradient
from agents.ddpo import DDPO
from agents.distributed import (
    World,
    all_sum,
    barrier,
    gather_epoch,
    gather_objects,
    init_world,
    local_indices,
    rank_device,
    sum_gradients,
)
from agents.ema import EMA
from agents.evaluation import Evaluator
from agents.export import EXPORT_DIR, export_policy
from agents.metrics import MetricsLogger
from agents.oracle import OracleBatch, differentiable_rollout
from agents.policy import guided_eps, make_policy, trainable_state
from agents.pxpo import PXPO
from agents.rollout import Trajectories, coefficients_from, collect
from agents.steps import step_weights
from pxpo_gym.ddim import TransitionCoefficients, step_kl, step_log_prob
from pxpo_gym.viz import save_reward_grid


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
            check_splittable(config, self.world)
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
        if config.guidance_scale != 1 and self.null_context is None:
            raise ValueError(
                f"guidance_scale={config.guidance_scale} needs a model with a null context "
                "(pxpo_gym.json 'null_context'); use guidance_scale=1"
            )
        self.num_channels, *grid = core.loaded.sample_shape
        self.reference = core.model
        """The frozen pretrained model (the env's): the KL penalty's reference."""
        self.policy = make_policy(core.model, config.resolved_lora_rank(core.loaded.is_latent))
        if config.gradient_checkpointing:
            self.policy.unet.enable_gradient_checkpointing()
        if config.group_size is not None:
            contexts = len(core.context_choices)
            if config.images_per_epoch != config.group_size * contexts:
                raise ValueError(
                    f"group_size={config.group_size} needs {config.group_size} x {contexts} contexts = "
                    f"{config.group_size * contexts} images per epoch, got {config.images_per_epoch} "
                    "(sample_batch_size x sample_batches_per_epoch)"
                )
        self.algo: DDPO | PXPO | None = None
        """DDPO's or PXPO's advantages and loss; None for the exact-gradient oracle."""
        if config.algo != "oracle":
            algo_cls = PXPO if config.algo == "pxpo" else DDPO
            algo_config = config.algo_config(self.num_channels * math.prod(grid))
            self.algo = algo_cls(algo_config, core.loaded.num_contexts, tuple(grid))
        else:
            check_differentiable(core, core.reward_fn.name)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.policy.parameters() if p.requires_grad],
            lr=config.learning_rate,
            betas=(config.adam_beta1, config.adam_beta2),
            weight_decay=config.weight_decay,
        )
        self.ema = EMA(self.policy, config.ema_decay) if config.ema_decay is not None else None
        """Moving average of the trainable weights, used for evaluation (``agents.ema``)."""
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
        self.frozen: torch.Tensor | None = None
        """PXPO's silent_mode='freeze': (num_contexts, h, w) pixels where the policy acts as the pretrained model."""
        self.footprint: Footprint | None = None
        """PXPO's kernel credits: the footprint measured at the first epoch (restored on resume)."""
        self.epoch = 0
        self.images = 0

    # -- sampling and updates -------------------------------------------------

    def eps(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The policy's (guided) noise prediction, under the configured autocast; with PXPO's
        ``silent_mode='freeze'``, the pretrained model's at the context's silent pixels."""
        with autocast(self.config, self.device):
            eps = guided_eps(
                self.policy, sample, timestep, context, self.config.guidance_scale, self.null_context
            )
        eps = eps.float()
        if self.frozen is not None:
            mask = self.frozen[context.reshape(-1)]  # (B, h, w)
            if bool(mask.any()):
                with torch.no_grad(), autocast(self.config, self.device):
                    eps_ref = guided_eps(
                        self.reference,
                        sample,
                        timestep,
                        context,
                        self.config.guidance_scale,
                        self.null_context,
                    ).float()
                eps = torch.where(mask[:, None], eps_ref, eps)
        return eps

    def frozen_pixels(self) -> torch.Tensor | None:
        """(num_contexts, h, w) bool on the device: the silent pixels PXPO's 'freeze' mode holds this
        epoch (from the advantage statistics so far, so a resumed run gets the same); None otherwise."""
        if not isinstance(self.algo, PXPO) or self.algo.config.silent_mode != "freeze":
            return None
        silent = self.algo.silent_contexts()
        return silent.to(self.device) if bool(silent.any()) else None

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
            parts.append(collect(self.envs, self.eps, seed=seed, options=options))
        return Trajectories.cat(parts)

    def measure_footprint(self) -> Footprint:
        """PXPO's kernel credits: measures the reward's footprint on the frozen pretrained model (once per
        run; ``agents.credit``), hands it to the algorithm and writes RUN/footprint.json."""
        cfg = self.config
        envs = make_envs(cfg, min(32, cfg.credit_images), str(self.device))

        def reference_eps(
            sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor
        ) -> torch.Tensor:
            return guided_eps(
                self.reference, sample, timestep, context, cfg.guidance_scale, self.null_context
            )

        footprint = measure_footprint(
            envs, reference_eps, cfg.credit_images, seed=cfg.seed, progress=cfg.progress and self.world.main
        )
        envs.close()
        self.algo.set_footprint(footprint)
        self.footprint = footprint
        if self.world.main:
            cfg.run_dir.mkdir(parents=True, exist_ok=True)
            summary = {"credit": cfg.credit, **footprint.summary()}
            (cfg.run_dir / FOOTPRINT_FILE).write_text(json.dumps(summary, indent=1) + "\n")
        return footprint

    def advantages(
        self, rewards: torch.Tensor, reward_maps: torch.Tensor, contexts: torch.Tensor
    ) -> torch.Tensor:
        """The algorithm's advantages of a batch (measuring PXPO's footprint first if its credit needs it)."""
        if getattr(self.algo, "needs_footprint", False):
            self.measure_footprint()
        return self.algo.advantages(rewards.cpu(), reward_maps.cpu(), contexts.cpu())

    def update(
        self, traj: Trajectories, advantages: torch.Tensor, silent: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Minibatch policy-gradient updates on one epoch's trajectories.

        Each image trains on ``timestep_fraction`` of its weighted steps (those with
        ``self.step_weights > 0``) in a random order; each step's loss is scaled by
        its weight. Gradients accumulate over a minibatch's trained steps, then one
        clipped AdamW step is taken (DDPO's reference scheme).

        Args:
            traj: this rank's trajectories.
            advantages: (N,) DDPO; (N, h, w) PXPO with one map for every step, (N, T, h, w) one per step.
            silent: (N, h, w) PXPO's silent pixels (``PXPO.silent_mask``), held by ``silent_kl_coef``.
        """
        cfg = self.config
        num_steps = traj.timesteps.shape[1]
        num_images = cfg.images_per_epoch  # the whole epoch's, over every rank
        # Global image index -> this rank's row in traj (-1: another rank's image).
        owned = local_indices(num_images, cfg.sample_batch_size, self.world)
        local_row = torch.full((num_images,), -1, dtype=torch.int64)
        local_row[owned] = torch.arange(len(owned))
        weights = self.step_weights.to(self.device)  # (T,)
        active = weights.cpu() > 0
        num_train = max(1, int(int(active.sum()) * cfg.timestep_fraction))
        advantages = advantages.to(self.device)
        per_step = advantages.dim() == 4  # PXPO kernel credits: one advantage map per step
        held_by_kl = getattr(self.algo.config, "silent_mode", "kl") == "kl"
        silent_coef = getattr(self.algo.config, "silent_kl_coef", 0.0) if held_by_kl else 0.0
        if silent is not None and silent_coef and bool(silent.any()):
            silent = silent.to(self.device)
        else:
            silent = None
        # Metrics stay on the device until the end: no host sync inside the loop.
        totals = {
            name: torch.zeros((), device=self.device)
            for name in ("loss", "approx_kl", "clipfrac", "grad_norm", "kl", "silent_kl")
        }
        count = updates = 0
        for _ in range(cfg.inner_epochs):
            order = torch.randperm(num_images, generator=self.generator)  # CPU: minibatches split on the host
            keys = torch.rand(num_images, num_steps, generator=self.generator)
            keys = torch.where(active, keys, 2.0)  # steps with weight 0 sort last and are never trained
            step_order = torch.argsort(keys, dim=1)[:, :num_train].to(self.device)  # (N, num_train)
            for start in range(0, num_images, cfg.train_batch_size):
                minibatch = order[start : start + cfg.train_batch_size]  # (b,) global indices
                mine = minibatch[local_row[minibatch] >= 0]
                # This rank's share of the minibatch: the ranks' scaled losses sum to its mean loss.
                share = len(mine) / len(minibatch)
                gidx, idx = mine.to(self.device), local_row[mine].to(self.device)  # global, local rows
                for j in range(num_train):
                    count += 1
                    if not len(idx):
                        continue
                    k = step_order[gidx, j]  # (b,) one step index per image
                    sample, prev_sample = traj.samples[idx, k], traj.samples[idx, k + 1]  # (b, C, h, w)
                    eps = self.eps(sample, traj.timesteps[idx, k], traj.contexts[idx])
                    coeffs = coefficients_from(traj.coeffs[idx, k])
                    logp = step_log_prob(prev_sample, sample, eps, coeffs).sum(dim=1)  # (b, h, w)
                    adv = advantages[idx, k] if per_step else advantages[idx]
                    loss, stats = self.algo.loss(
                        logp, traj.logp_pixels[idx, k], adv, self.num_channels, weights[k]
                    )
                    if cfg.kl_coef or silent is not None:
                        kl_map = self.reference_kl(
                            sample, traj.timesteps[idx, k], traj.contexts[idx], eps, coeffs
                        )  # (b, C, h, w)
                    if cfg.kl_coef:
                        kl = kl_map.flatten(1).mean(dim=1)  # (b,)
                        loss = loss + cfg.kl_coef * (weights[k] * kl).mean()
                        totals["kl"] += share * kl.detach().mean()
                    if silent is not None:
                        # Mean over the sample's elements of the KL at silent pixels only.
                        silent_kl = (kl_map.sum(dim=1) * silent[idx]).flatten(1).sum(dim=1) / kl_map[
                            0
                        ].numel()
                        loss = loss + silent_coef * (weights[k] * silent_kl).mean()
                        totals["silent_kl"] += share * silent_kl.detach().mean()
                    self.scaler.scale(share * loss / num_train).backward()
                    totals["loss"] += share * loss.detach()
                    totals["approx_kl"] += share * stats["approx_kl"]
                    totals["clipfrac"] += share * stats["clipfrac"]
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

    def reference_kl(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        context: torch.Tensor,
        eps: torch.Tensor,
        coeffs: TransitionCoefficients,
    ) -> torch.Tensor:
        """(b, C, h, w) elementwise KL(policy step || frozen pretrained model's step)."""
        with torch.no_grad(), autocast(self.config, self.device):
            eps_ref = guided_eps(
                self.reference, sample, timestep, context, self.config.guidance_scale, self.null_context
            ).float()
        return step_kl(eps, eps_ref, coeffs)

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

    def oracle_update(self) -> tuple[dict[str, float], OracleBatch]:
        """One epoch of the exact-gradient baseline: per train batch, denoise it with gradients
        on, backpropagate the mean reward through the chain, take one clipped AdamW step."""
        cfg = self.config
        batches, grad_norm = [], torch.zeros((), device=self.device)
        num_batches = cfg.images_per_epoch // cfg.train_batch_size
        for batch in range(num_batches):
            seed = cfg.seed if self.epoch == 0 and batch == 0 else None
            rewards, info = differentiable_rollout(self.envs, self.eps, seed, cfg.backprop_steps)
            loss = -rewards.mean()
            self.scaler.scale(loss).backward()
            grad_norm += self.optimizer_step()
            batches.append(
                OracleBatch(
                    info["image"],
                    info["reward_map"],
                    info["context"],
                    rewards.detach(),
                    info["component_rewards"],
                )
            )
        out = OracleBatch(*(torch.cat(parts) for parts in zip(*batches)))
        metrics = {
            "loss": -out.rewards.mean().item(),
            "approx_kl": math.nan,
            "clipfrac": math.nan,
            "grad_norm": (grad_norm / num_batches).item(),
        }
        return metrics, out

    def train_epoch(self) -> tuple[dict[str, float], Trajectories | OracleBatch]:
        """Samples, computes advantages, updates; returns the epoch's metrics and images."""
        start = time.perf_counter()
        core = self.envs.unwrapped
        core.reward_seconds = 0.0
        if self.algo is None:
            self.policy.train()
            metrics, traj = self.oracle_update()  # sampling and training are one pass
            sample_seconds = math.nan
        else:
            self.frozen = self.frozen_pixels()  # fixed for the epoch: sampling and training agree
            self.policy.eval()
            traj = self.sample()
            sample_seconds = time.perf_counter() - start
            self.policy.train()
            # Statistics on the whole epoch (every rank's images, in the single process's order).
            rewards, reward_maps, contexts, components = (
                gather_epoch(x, self.world, self.config.sample_batches_per_epoch)
                for x in (traj.rewards, traj.reward_maps, traj.contexts, traj.component_rewards)
            )
            advantages = self.advantages(rewards, reward_maps, contexts)
            silent = self.algo.silent_mask(contexts.cpu()) if isinstance(self.algo, PXPO) else None
            owned = local_indices(self.config.images_per_epoch, self.config.sample_batch_size, self.world)
            metrics = self.update(traj, advantages[owned], None if silent is None else silent[owned])
            metrics["silent_fraction"] = math.nan if silent is None else float(silent.mean())
            traj = dataclasses.replace(traj, rewards=rewards, component_rewards=components)
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

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything a resumed run needs, as (tensors, JSON metadata)."""
        tensors = {f"policy/{k}": v for k, v in trainable_state(self.policy).items()}
        optim_tensors, optim_meta = optimizer_to_tensors(self.optimizer)
        tensors.update(optim_tensors)
        if self.ema is not None:
            tensors.update({f"ema/{k}": v for k, v in self.ema.state_dict().items()})
        tensors["rng/trainer"] = self.generator.get_state()
        # Every rank's generators (all ranks take part; rank 0 writes): env slots by global index.
        ranks = gather_objects((torch.get_rng_state(), self.envs.unwrapped.get_rng_state()), self.world)
        tensors["rng/torch"] = ranks[0][0]
        for rank, (torch_state, _) in enumerate(ranks[1:], start=1):
            tensors[f"rng/torch/rank{rank}"] = torch_state
        slots = [state for _, env_states in ranks for state in env_states]  # rank-major = slot order
        for i, state in enumerate(slots):
            tensors[f"rng/env/{i}"] = state
        if self.algo is not None:
            tensors.update({f"stats/{k}": v for k, v in self.algo.state_dict().items()})
        meta = {
            "epoch": self.epoch,
            "images": self.images,
            "config": dataclasses.asdict(self.config),
            "optimizer": optim_meta,
            "torch": torch.__version__,
            "world_size": self.world.size,
        }
        return tensors, meta

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restores ``state()``'s output into this trainer."""
        weights = {k.removeprefix("policy/"): v for k, v in tensors.items() if k.startswith("policy/")}
        expected = set(trainable_state(self.policy))
        if set(weights) != expected:
            raise ValueError(
                f"checkpoint weights do not match the policy: {len(set(weights) ^ expected)} names differ"
            )
        self.policy.load_state_dict(weights, strict=False)
        optimizer_from_tensors(self.optimizer, tensors, meta["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(
                {k.removeprefix("ema/"): v for k, v in tensors.items() if k.startswith("ema/")}
            )
        saved_world = int(meta.get("world_size", 1))
        if saved_world != self.world.size:
            raise ValueError(
                f"the checkpoint was written by a run on {saved_world} process(es); resume it on "
                f"{saved_world} (torchrun --nproc_per_node={saved_world}), not {self.world.size}"
            )
        self.generator.set_state(tensors["rng/trainer"])
        rank_key = "rng/torch" if self.world.rank == 0 else f"rng/torch/rank{self.world.rank}"
        torch.set_rng_state(tensors[rank_key])
        local = self.config.env_batch_size // self.world.size
        first = self.world.rank * local
        self.envs.unwrapped.set_rng_state([tensors[f"rng/env/{first + i}"] for i in range(local)])
        if self.algo is not None:
            stats = {k.removeprefix("stats/"): v for k, v in tensors.items() if k.startswith("stats/")}
            self.algo.load_state_dict(stats)
        self.epoch, self.images = int(meta["epoch"]), int(meta["images"])

    def save(self) -> None:
        """Checkpoints (every rank takes part in gathering the RNG states; rank 0 writes)."""
        tensors, meta = self.state()
        if self.world.main:
            save_checkpoint(self.config.run_dir, self.epoch, tensors, meta)

    def export(self) -> Path:
        """Writes the policy (its EMA weights, with ``ema_decay``) as a diffusers model to RUN/model."""
        run = {"config": dataclasses.asdict(self.config), "epoch": self.epoch, "images": self.images}
        run["weights"] = "ema" if self.ema is not None else "trained"
        with self.ema.swapped_in() if self.ema is not None else contextlib.nullcontext():
            return export_policy(
                self.policy, self.envs.unwrapped.loaded, self.config.run_dir / EXPORT_DIR, run
            )


def check_splittable(config: TrainConfig, world: World) -> None:
    """Refuses what a distributed run cannot split exactly."""
    if config.algo == "oracle":
        raise ValueError("algo='oracle' runs on one process; launch it without torchrun")
    if config.sample_batch_size % world.size:
        raise ValueError(
            f"sample_batch_size={config.sample_batch_size} must be a multiple of the {world.size} processes: "
            "each rank samples an equal share of every batch"
        )


def check_differentiable(core: Any, reward_name: str) -> None:
    """Refuses the oracle on a reward whose output has no gradient w.r.t. the image."""
    if not reward_has_gradient(core):
        raise ValueError(
            f"algo='oracle' backpropagates the reward through the sampler, but reward={reward_name!r} "
            "has no gradient with respect to the image (e.g. JPEG size); use 'ddpo' or 'pxpo'"
        )


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
)
"""TrainConfig fields a resumed run may take from the command line; every other comes from the checkpoint."""
LEGACY_SENTINELS = {"clip_range": 0.0, "lora_rank": -1, "resolution": 0, "decode_chunk_size": 0, "threads": 0}
"""Values that meant "default" in checkpoints written before these fields took None."""
FOOTPRINT_FILE = "footprint.json"
"""PXPO's kernel credits: the measured footprint's summary and cost (``agents.credit.Footprint.summary``)."""
RUN_FILES = (
    "metrics.csv",
    "config.json",
    "eval_reference.json",
    FOOTPRINT_FILE,
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
    saved["contexts"] = tuple(saved["contexts"])
    saved["reward"] = reward_tuple(saved["reward"])
    for key in ("prompts", "step_weights"):
        saved[key] = tuple(saved.get(key, ()))
    for key, legacy in LEGACY_SENTINELS.items():  # runs saved before these fields became optional
        if key in saved and saved[key] == legacy:
            saved[key] = None
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
    given.update(out=config.resume, resume=config.resume, overwrite=False)
    saved = {k: v for k, v in saved.items() if k in fields}
    return dataclasses.replace(TrainConfig(**saved), **given)


def prepare_run_dir(config: TrainConfig) -> None:
    """Refuses a new run in a folder that holds one, unless ``overwrite`` (which deletes only RUN_FILES).

    Raises:
        ValueError: the folder holds a run and neither resume nor overwrite was given.
    """
    folder = config.run_dir
    if config.resume or not folder.exists():
        return
    existing = sorted(name for name in RUN_FILES if (folder / name).exists())
    if not existing:
        return
    if not config.overwrite:
        raise ValueError(
            f"run folder {str(folder)!r} already holds a run ({', '.join(existing)}): continue it with "
            f"--resume {folder}, start over with --overwrite (deletes them), or choose another --out"
        )
    for name in existing:
        path = folder / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


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
        return _train(config, trainer)
    except RuntimeError as err:
        if not world.distributed:
            raise
        raise RuntimeError(
            f"rank {world.rank} of {world.size}: training stopped: {err} (if another rank died or hung, "
            f"the collectives fail or time out after dist_timeout={config.dist_timeout} s)"
        ) from err


def _train(config: TrainConfig, trainer: Trainer) -> list[dict[str, float]]:
    main = trainer.world.main
    if main:
        # After every check that can fail: nothing is deleted for a run that cannot start.
        prepare_run_dir(config)
    barrier(trainer.world)
    if config.resume:
        trainer.load_state(*load_checkpoint(config.resume))
    logger = None
    evaluator = None
    if main:
        logger = MetricsLogger(
            config.run_dir,
            resume_epoch=trainer.epoch if config.resume else None,
            tensorboard=config.tensorboard,
            extra_fields=[f"reward_{name}" for name in trainer.reward_components],
        )
        (config.run_dir / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1))
        if config.eval_every:
            core = trainer.envs.unwrapped
            evaluator = Evaluator(
                make_envs(config, config.eval_images, str(trainer.device)), config.seed, core.context_choices
            )
            reference = {"images": 0, **evaluator.reference_metrics}
            (config.run_dir / "eval_reference.json").write_text(json.dumps(reference, indent=1) + "\n")
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
            with trainer.ema.swapped_in() if trainer.ema is not None else contextlib.nullcontext():
                metrics.update(evaluator(trainer.eps))
            metrics["eval_seconds"] = time.perf_counter() - started
        if logger is not None:
            logger.log(metrics)
        history.append(metrics)
        bar.update(1)
        bar.set_postfix(reward=f"{metrics['reward_mean']:.4f}", kl=f"{metrics['approx_kl']:.2g}")
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
        if main and last and config.export:
            trainer.export()
    bar.close()
    if logger is not None:
        logger.close()
    return history
