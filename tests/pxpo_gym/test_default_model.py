"""The shipped default model: its samples look like the data it was trained on."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

import pxpo_gym  # noqa: F401
from pxpo_gym.sampling import run_policy
from pxpo_gym.segmentation import load_segmentation_net, shape_match
from pxpo_gym.shapes import SHAPE_CLASSES, generate_shapes


@pytest.mark.parametrize("model", ["default", "default-flow"])
def test_samples_show_the_conditioned_shape(model):
    per_class = 16
    contexts = torch.arange(per_class * len(SHAPE_CLASSES)) % len(SHAPE_CLASSES)
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=len(contexts), model=model)
    samples = run_policy(envs, seed=123, options={"context": contexts}).images
    net = load_segmentation_net()
    rate = shape_match(net, samples, contexts).float().mean().item()
    data = generate_shapes(len(contexts), 16, generator=torch.Generator().manual_seed(1), labels=contexts)
    data_rate = shape_match(net, data.images, contexts).float().mean().item()
    assert data_rate > 0.95, data_rate  # the checker itself works on real data
    assert rate >= 0.7, f"{model}: only {rate:.0%} of samples show one shape of the conditioned class"


def test_unconditioned_samples_are_not_all_one_class():
    """Without a context option the env draws contexts at random: the images themselves (read by the
    segmentation net) show several shape classes, each mostly the one its image was drawn for."""
    envs = gym.make_vec("DiffusionDenoise-v0", num_envs=32)
    episode = run_policy(envs, seed=5)
    net = load_segmentation_net()
    with torch.no_grad():
        pred = net(episode.images).argmax(dim=1)  # (32, 16, 16), 0 = background
    counts = torch.nn.functional.one_hot(pred, net.num_classes).sum(dim=(1, 2))[:, 1:]  # (32, K)
    shown = counts.argmax(dim=1)  # the shape class each image shows most
    assert len(set(shown.tolist())) >= 3, shown.tolist()
    assert shape_match(net, episode.images, episode.contexts).float().mean() >= 0.6
