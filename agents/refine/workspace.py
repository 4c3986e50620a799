"""One image being refined by painted feedback: its policy copy, its versions and what apply does.

A workspace is a context (class or prompt) and a seed: its image is the policy's
sample from env slot 0 seeded ``seed`` (fixed initial and step noise). Apply:

1. The painting becomes a per-pixel reward through ``target_map``: liked pixels
   score closeness to what they are now (weight +1: stay), disliked pixels the
   same closeness with weight -1 (move away), "this colour" pixels closeness to
   the painted colour (weight +1), unpainted pixels closeness to what they are
   now with the small weight ``hold`` (keep what was not painted).
2. K updates on a group of ``group_size`` samples of the workspace's context, on a
   copy of the model (LoRA on latent pipelines, full on pixel models). The policy
   acts (and is trained) on the last ``steps`` denoising steps only (the apply's
   strength); the steps before are the frozen model's, with the workspace's own
   noise, so every sample of the group starts from the workspace's own intermediate
   image (as SDEdit refines an image) and differs only in the later steps' noise.
   Slot 0 is the workspace's own noise throughout. Each update samples the group
   with the current policy (fresh noise for the other slots), then:

   - ``update="gradient"`` (default): one clipped AdamW step on the exact gradient
     of the group's mean painted reward, backpropagated through the acted steps
     (the painting is a differentiable per-pixel reward by construction);
   - ``update="pxpo"``: ``inner_epochs`` clipped PXPO steps with group advantages
     (``agents.algorithms.pxpo``) and a KL penalty ``kl_coef`` to the starting model. Measured
     (``benchmarks.studies.refine``), 8 samples per update carry too little score-function
     signal for a visible edit within K <= 8; it stays for comparison.
3. The image is re-rendered from its own fixed noise and becomes a new version,
   which keeps the painting, the settings and the rewards (``feedback_archive``).

Every version keeps the policy's trainable weights and its strength, so going back
is exact (the optimizer's moments restart at a checkout).
"""

from __future__ import annotations

import copy
import io
import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Any

import torch

from pxpo_gym.models import LoadedModel
from pxpo_gym.sampling import run_policy
from pxpo_gym.vector_env import DiffusionDenoiseVectorEnv

from ..algorithms.oracle import differentiable_rollout
from ..config import TrainConfig
from ..policy import trainable_state
from ..trainer import Trainer
from ..trajectories import collect
from .config import RefineConfig
from .feedback import Feedback, PaintedReward


@dataclass
class Version:
    """One image of a workspace's history and the policy weights that drew it."""

    index: int
    parent: int | None
    image: torch.Tensor
    """(3, H, W) float32 in [0, 1], on the CPU."""
    weights: dict[str, torch.Tensor]
    """The policy's trainable weights (CPU copies)."""
    updates: int = 0
    rewards: list[float] = field(default_factory=list)
    """The workspace image's reward under the painted feedback, before the apply and after it."""
    steps: int = 0
    """The last denoising steps the policy acted on when it drew this image (its strength)."""
    feedback: Feedback | None = None
    """The painting the apply that made this version used (None for version 0)."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The apply's settings (updates, steps, group size, learning rate, penalties, ...)."""

    def png(self, scale: int = 1) -> bytes:
        """The image as PNG bytes, upscaled ``scale`` times with nearest neighbours (pixelated)."""
        from PIL import Image

        pixels = (self.image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        image = Image.fromarray(pixels)
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()


class Cancelled(Exception):
    """An apply stopped by its caller; the workspace is as it was before it."""


class Workspace:
    """A context and seed, the policy being refined, and its versions.

    Args:
        loaded: the server's model, shared by every workspace (frozen: the KL reference).
        train: the TrainConfig fields every workspace's updates use (``refine_train_config``).
        context: context id; seed: the workspace's noise seed.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        train: TrainConfig,
        context: int,
        seed: int,
        refine_steps: int,
        hold: float = 0.0,
    ) -> None:
        self.context, self.seed = context, seed
        self.reward = PaintedReward(loaded.image_size, hold)
        common = dict(
            model=loaded,
            reward=self.reward,
            num_inference_steps=train.env.num_inference_steps,
            eta=train.env.eta,
            noise_level=train.env.noise_level,
            transition=train.env.transition,
            device=train.run.device,
            context=context,
            pinned_pixels="off",  # fine-tuning starts from the weights
            guidance_scale=train.sampling.guidance_scale,
        )
        self.envs = DiffusionDenoiseVectorEnv(num_envs=train.sampling.sample_batch_size, **common)
        self.render_env = DiffusionDenoiseVectorEnv(num_envs=1, **common)
        self.trainer = Trainer(train, self.envs)
        schedule = self.envs.schedule
        self.num_steps = schedule.num_steps
        self.set_steps(refine_steps)
        self.noise = torch.randn(
            (schedule.num_steps + 1, *loaded.sample_shape), generator=torch.Generator().manual_seed(seed)
        )  # (T + 1, C, h, w): x_T, then each step's noise
        self.generator = torch.Generator().manual_seed(seed + 1)
        """Draws the other group slots' later-step noise."""
        self.fresh_optimizer = copy.deepcopy(self.trainer.optimizer.state_dict())
        self.versions = [Version(0, None, self.render(), self.weights(), steps=self.steps)]
        self.current = 0

    def set_steps(self, steps: int) -> None:
        """The policy acts on (and is trained on) the last ``steps`` denoising steps, each weighted 1."""
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= self.num_steps:
            raise ValueError(f"steps must be an int in [1, {self.num_steps}], got steps={steps!r}")
        self.steps = steps
        self.first_policy_step = self.num_steps - steps
        self.policy_timestep = float(self.envs.schedule.timesteps[self.first_policy_step])
        """Steps at training timesteps <= this one are the policy's; earlier ones the frozen model's."""
        self.step_weights = torch.zeros(self.num_steps)
        """(T,) the loss weight of each step: 1 on the acted steps, 0 before (passed to the trainer's update)."""
        self.step_weights[self.first_policy_step :] = 1.0

    def weights(self) -> dict[str, torch.Tensor]:
        return {
            name: value.detach().cpu().clone() for name, value in trainable_state(self.trainer.policy).items()
        }

    def load(self, weights: dict[str, torch.Tensor]) -> None:
        """Puts saved trainable weights back into the policy and restarts the optimizer's moments."""
        params = dict(self.trainer.policy.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        self.trainer.optimizer.load_state_dict(copy.deepcopy(self.fresh_optimizer))

    def action(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The frozen model before ``first_policy_step``, the policy from there on (lock-step batches)."""
        if float(timestep.reshape(-1)[0]) > self.policy_timestep:
            return self.trainer.reference_action(sample, timestep, context)
        return self.trainer.action(sample, timestep, context)

    def group_noise(self) -> torch.Tensor:
        """(G, T + 1, C, h, w): slot 0 the workspace's noise; the others share it up to the policy's
        first step and draw their own after."""
        noise = self.noise.expand(self.envs.num_envs, *self.noise.shape).clone()
        tail = noise[1:, self.first_policy_step + 1 :]
        tail.copy_(torch.randn(tail.shape, generator=self.generator))
        return noise

    @torch.no_grad()
    def render(self) -> torch.Tensor:
        """The image from the workspace's own noise, (3, H, W) on the CPU."""
        self.trainer.policy.eval()
        context = torch.tensor([self.context], device=self.render_env.device)
        options = {"context": context, "noise": self.noise[None]}
        return run_policy(self.render_env, self.action, options=options).images[0].cpu()

    def feedback_reward(self, image: torch.Tensor) -> float:
        """The painted reward of one (3, H, W) image (the workspace's), a float."""
        device = self.render_env.device
        reward = self.reward(image[None].to(device), torch.tensor([self.context], device=device))
        return float(reward.mean())

    def update(self, options: dict) -> float:
        """One update of the policy on a group drawn with ``options``; returns slot 0's painted reward."""
        trainer = self.trainer
        if (
            trainer.algo.samples_with_gradients
        ):  # the exact gradient of the painted reward through the acted steps
            trainer.policy.train()
            rewards = differentiable_rollout(
                self.envs, self.action, backprop_steps=self.steps, options=options
            ).rewards
            (-rewards.mean()).backward()
            trainer.optimizer_step()
            return float(rewards[0].detach())
        trainer.policy.eval()
        traj = collect(self.envs, self.action, options=options)
        trainer.policy_gradient_epoch(traj, self.step_weights)
        return float(traj.rewards[0])

    def settings(self) -> dict[str, Any]:
        """The training settings every apply of this workspace uses (recorded with each version)."""
        cfg = self.trainer.config
        common = {
            "update": "gradient" if self.trainer.algo.samples_with_gradients else self.trainer.algo.name,
            "group_size": cfg.sampling.sample_batch_size,
            "learning_rate": cfg.optimiser.learning_rate,
            "hold": self.reward.hold,
        }
        if self.trainer.algo.samples_with_gradients:
            return common
        return {**common, "inner_epochs": cfg.optimiser.inner_epochs, "kl_coef": self.trainer.kl_coef}

    def apply(
        self,
        feedback: Feedback,
        updates: int,
        progress: Callable[[int, float], None] = lambda k, reward: None,
        cancelled: Callable[[], bool] = lambda: False,
        steps: int | None = None,
    ) -> Version:
        """Runs ``updates`` updates (``update``) under ``feedback`` from the current version; returns the new
        version.

        ``steps``: the last denoising steps the policy may change (the apply's strength; None: the
        current version's).

        ``progress(k, reward)`` is called after update k with the workspace image's painted reward
        as sampled in that update. If ``cancelled()`` turns true between updates, the policy is
        restored and ``Cancelled`` raised.

        Raises:
            Cancelled: see above.
        """
        start = self.versions[self.current]
        steps = start.steps if steps is None else steps
        self.set_steps(steps)  # checks steps before anything changes
        self.reward.set(feedback, start.image)
        rewards = [self.feedback_reward(start.image)]
        contexts = torch.full((self.envs.num_envs,), self.context, device=self.envs.device)
        try:
            for k in range(1, updates + 1):
                if cancelled():
                    raise Cancelled()
                options = {"context": contexts, "noise": self.group_noise()}
                progress(k, self.update(options))
            image = self.render()
        except BaseException:
            self.load(start.weights)  # nothing half-changed
            self.set_steps(start.steps)
            raise
        rewards.append(self.feedback_reward(image))
        settings = {
            "updates": updates,
            "steps": steps,
            "num_inference_steps": self.num_steps,
            **self.settings(),
        }
        version = Version(
            len(self.versions),
            self.current,
            image,
            self.weights(),
            updates,
            rewards,
            steps,
            feedback,
            settings,
        )
        self.versions.append(version)
        self.current = version.index
        return version

    def checkout(self, index: int) -> Version:
        """Makes version ``index`` current: its weights and strength go back into the policy."""
        self.load(self.versions[index].weights)
        self.set_steps(self.versions[index].steps)
        self.current = index
        return self.versions[index]

    def reset(self) -> Version:
        """Back to the start: version 0's weights, every later version dropped."""
        self.checkout(0)
        del self.versions[1:]
        return self.versions[0]


FEEDBACK_FORMAT = """pxpo-gym refine feedback archive (format 1)

One folder per apply, apply-NNN (NNN = the version the apply made):

- painting.png: the painting as the page sent it, RGBA at the image's resolution. Alpha 0: unpainted;
  opaque (0, 255, 0): liked; opaque (255, 0, 0): disliked; any other opaque colour: "make this pixel
  this colour".
- before.png, after.png: the workspace's image (RGB, the image's resolution) before the apply (the
  version it started from) and after it (the new version), both from the workspace's own noise.
- apply.json: version, parent, context (id), context_name, seed, model, rewards (the painted reward of
  the image before and after), and settings (updates, steps: the last denoising steps the edit could
  change, num_inference_steps, update: "gradient" or "pxpo", group_size, learning_rate, hold: the
  weight that keeps unpainted pixels; with pxpo also inner_epochs and kl_coef).

Pairs (painting, before) -> after are the raw material of a per-pixel reward model.
"""


def feedback_archive(
    workspace: Workspace, context_names: list[str] | tuple[str, ...], model: str = ""
) -> bytes:
    """A zip (bytes) of every apply in ``workspace``'s history, laid out as ``FEEDBACK_FORMAT`` says."""
    buffer = io.BytesIO()
    write_feedback_archive(buffer, workspace, context_names, model)
    return buffer.getvalue()


def write_feedback_archive(
    file: IO[bytes], workspace: Workspace, context_names: list[str] | tuple[str, ...], model: str = ""
) -> None:
    """Writes ``feedback_archive``'s zip into the binary ``file`` from its current position (the server's
    temporary file, so an archive of many applies is never held whole in memory)."""
    with zipfile.ZipFile(file, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("FORMAT.txt", FEEDBACK_FORMAT)
        for version in workspace.versions:
            if version.feedback is None:
                continue
            folder = f"apply-{version.index:03d}"
            parent = workspace.versions[version.parent]
            archive.writestr(f"{folder}/painting.png", version.feedback.png)
            archive.writestr(f"{folder}/before.png", parent.png())
            archive.writestr(f"{folder}/after.png", version.png())
            record = {
                "version": version.index,
                "parent": version.parent,
                "context": workspace.context,
                "context_name": context_names[workspace.context],
                "seed": workspace.seed,
                "model": model,
                "rewards": version.rewards,
                "settings": version.settings,
            }
            archive.writestr(f"{folder}/apply.json", json.dumps(record, indent=1))


def region_change(before: torch.Tensor, after: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean absolute RGB change, (3, H, W) images in [0, 1], over the pixels where ``mask`` (H, W) is true."""
    if not bool(mask.any()):
        return math.nan
    return float((after - before).abs().mean(dim=0)[mask].mean())


def refine_train_config(options: RefineConfig) -> TrainConfig:
    """The TrainConfig of a workspace's updates from the server's options (``RefineConfig``)."""
    pxpo = options.update == "pxpo"
    algorithm = (
        dict(
            kl_coef=options.kl_coef,
            group_size=options.group_size,
            # per-pixel credit with the image term, no penalty on silent pixels and no pin (the hold term
            # keeps them; the page samples with the workspace's own policy, not the trainer's epoch loop)
            credit="pixel",
            image_advantage_weight=1.0,
            silent_kl_coef=0.0,
            silent_mode="kl",
        )
        if pxpo
        else {}  # the gradient update is held by the reward's hold term
    )
    return TrainConfig.of(
        algo="pxpo" if pxpo else "oracle",
        **algorithm,
        model=options.model,
        prompts=tuple(options.prompts),
        sample_batch_size=options.group_size,
        sample_batches_per_epoch=1,
        train_batch_size=options.group_size,
        inner_epochs=options.inner_epochs,
        learning_rate=options.learning_rate,
        lora_rank=options.lora_rank,
        num_inference_steps=options.num_inference_steps,
        noise_level=options.noise_level,
        transition=options.transition,
        device=options.device,
        seed=0,
        progress=False,
        tensorboard=False,
        export=False,
    )
