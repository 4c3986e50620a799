"""Held-out evaluation: reward and fidelity of the current policy on fixed noise.

A reward can be won by erasing the image's content (a solid red square scores
1.0 on the colour task). So every evaluation reports, beside the reward, how
much of the pretrained model's content survives, on a fixed set of episodes
that training never sees:

- ``eval_reward``: the mean reward of the policy's images;
- ``fidelity_distance``: root-mean-square RGB distance (images in [0, 1])
  between each policy image and the pretrained model's image from the same
  initial and step noise (0: unchanged);
- ``fidelity_shape``: for the embedded shapes model (and models fine-tuned from
  it: the same classes at 16 x 16), the fraction of policy images in which the
  shipped segmentation network finds one shape of the conditioned class (as
  ``benchmarks.studies.sample_quality``); NaN for other models;
- ``fidelity_silent`` / ``fidelity_scored``: for a reward that scores only part of
  the image, the same RMS distance over the silent pixels (those whose reward is the
  same in every pretrained held-out image: the reward does not look at them) and
  over the others; NaN when no pixel is silent. The silent part should stay as the
  pretrained model drew it: a change there is not asked for by the reward;
- ``fidelity_seam``: where some pixels are silent, the mean squared difference between
  neighbouring pixels across the edge between silent and scored pixels, over the same
  in the pretrained images from the same noise, and the same for each of the next
  rings of pairs inside the silent part (``SEAM_RINGS`` in all), the largest ratio: 1
  when the edge looks as the pretrained model draws it, above 1 for a seam (a pinned part
  meeting a repainted one with a hard edge, or a pin's band too narrow to bridge
  them); NaN without such an edge.

The episodes are env slots seeded ``EVAL_SEED_OFFSET + seed + i`` (training's are
``seed + i``, continuing from there), with contexts spread evenly over the
training contexts. The evaluation env is separate, so evaluating changes no
training state (runs stay bitwise resumable).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from pxpo_gym.sampling import Episode, run_policy
from pxpo_gym.shapes import SHAPE_CLASSES

DEFAULT_IMAGE_SIZE = (16, 16)
"""The embedded model's image size, the one the shipped segmentation network reads."""

SILENT_SPREAD = 1e-6
"""A pixel is silent when its reward's range over the reference images is at most this fraction of the
largest pixel's range."""

EVAL_SEED_OFFSET = 1_000_003
"""Evaluation seeds start here (plus the run's seed): far from any training env's seed."""


class Evaluator:
    """Scores a policy on fixed held-out episodes against the pretrained model's images.

    Args:
        envs: a vector env built like the training env (same model, reward, schedule),
            whose ``num_envs`` is the number of evaluation images.
        seed: the run's seed.
        context_ids: the contexts to spread the images over (cycled).
    """

    def __init__(self, envs: Any, seed: int, context_ids: torch.Tensor) -> None:
        self.envs = envs
        core = envs.unwrapped
        n = core.num_envs
        self.seed = EVAL_SEED_OFFSET + seed
        self.contexts = context_ids.to(core.device)[torch.arange(n, device=core.device) % len(context_ids)]
        self.reference = run_policy(envs, seed=self.seed, options={"context": self.contexts})
        self.segmentation_net = None
        if tuple(core.loaded.context_names) == SHAPE_CLASSES and core.loaded.image_size == DEFAULT_IMAGE_SIZE:
            from pxpo_gym.segmentation import load_segmentation_net

            self.segmentation_net = load_segmentation_net().to(core.device)
        maps = self.reference.image_reward_maps  # (n, H, W)
        spread = maps.amax(dim=0) - maps.amin(dim=0)  # (H, W)
        self.silent = (
            spread <= SILENT_SPREAD * float(spread.max()) if n > 1 else torch.zeros_like(spread).bool()
        )
        """(H, W) bool: pixels whose reward is the same in every pretrained held-out image."""
        self.reference_seam = seam_energy(self.reference.images, self.silent)
        self.reference_metrics = self.score(self.reference.images, self.reference.rewards)

    def score(self, images: torch.Tensor, rewards: torch.Tensor) -> dict[str, float]:
        distance = (images - self.reference.images).square().mean(dim=(1, 2, 3)).sqrt().mean()
        shape = math.nan
        if self.segmentation_net is not None:
            from pxpo_gym.segmentation import shape_match

            shape = float(shape_match(self.segmentation_net, images, self.contexts).float().mean())
        squared = (images - self.reference.images).square().mean(dim=1)  # (n, H, W)
        parts = {"fidelity_silent": math.nan, "fidelity_scored": math.nan}
        if bool(self.silent.any()) and not bool(self.silent.all()):
            for name, mask in (("fidelity_silent", self.silent), ("fidelity_scored", ~self.silent)):
                parts[name] = float(squared[:, mask].mean(dim=1).sqrt().mean())
        return {
            "eval_reward": float(rewards.mean()),
            "fidelity_distance": float(distance),
            "fidelity_shape": shape,
            **parts,
            "fidelity_seam": seam_ratio(seam_energy(images, self.silent), self.reference_seam),
        }

    @torch.no_grad()
    def episode(self, policy: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> Episode:
        """The policy's held-out images, reward maps and rewards."""
        return run_policy(self.envs, policy, seed=self.seed, options={"context": self.contexts})

    def __call__(self, policy: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> dict:
        """The policy's held-out metrics (see the module docstring)."""
        episode = self.episode(policy)
        return self.score(episode.images, episode.rewards)


SEAM_RINGS = 4
"""The seam is measured on this many rings of neighbouring pairs from the silent pixels' edge inwards: a
pin's band (``pxpo_gym.pinning.pin_weights``) spreads the step over its rings instead of removing it."""


def seam_rings(silent: torch.Tensor, rings: int = SEAM_RINGS) -> list[list[torch.Tensor]]:
    """For each ring k < rings, the neighbouring pairs (right, down) whose pixels lie at chessboard distance
    k and k + 1 from the scored (not silent) pixels: two (H, W - 1) / (H - 1, W) bool masks per ring. Ring 0
    is the pairs that straddle the edge."""
    distance = torch.where(silent, rings + 1, 0)  # (H, W); beyond the last ring: rings + 1
    reached = (~silent).float()[None, None]
    for d in range(1, rings + 1):
        reached = torch.nn.functional.max_pool2d(reached, kernel_size=3, stride=1, padding=1)
        distance = torch.where(silent & (reached[0, 0] > 0) & (distance == rings + 1), d, distance)
    out = []
    for k in range(rings):
        masks = []
        for dim in (-1, -2):
            first = distance.narrow(dim, 0, distance.shape[dim] - 1)
            second = distance.narrow(dim, 1, distance.shape[dim] - 1)
            masks.append(torch.minimum(first, second).eq(k) & torch.maximum(first, second).eq(k + 1))
        out.append(masks)
    return out


def seam_energy(images: torch.Tensor, silent: torch.Tensor, rings: int = SEAM_RINGS) -> list[float]:
    """Per ring (``seam_rings``), the mean squared difference between its neighbouring pixels over images
    (N, 3, H, W) and channels; NaN for a ring without pairs (ring 0: no edge)."""
    energies = []
    for masks in seam_rings(silent, rings):
        pairs = []
        for dim, mask in zip((-1, -2), masks):
            if bool(mask.any()):
                step = images.narrow(dim, 1, images.shape[dim] - 1) - images.narrow(
                    dim, 0, images.shape[dim] - 1
                )
                pairs.append(step.square()[..., mask])  # (N, 3, pairs)
        energies.append(float(torch.cat(pairs, dim=-1).mean()) if pairs else math.nan)
    return energies


def seam_ratio(energies: list[float], reference: list[float]) -> float:
    """The largest ring's energy over the pretrained images' same ring: 1 when the edge and the rings inside
    it look as the pretrained model draws them; NaN without an edge."""
    ratios = [e / r for e, r in zip(energies, reference) if r > 0 and not math.isnan(e)]
    return max(ratios) if ratios else math.nan
