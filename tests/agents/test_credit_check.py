"""PXPO's credit='checked': the agreement probe by hand, the switch, and the trainer re-checking every epoch."""

from __future__ import annotations

import importlib
import math

import gymnasium as gym
import pytest
import torch

from agents.algorithms.pxpo import PXPO, PXPOConfig
from agents.credit_check import (
    CHECK_THRESHOLD,
    agreement_from_sums,
    agreement_sums,
    credit_agreement,
    reward_dropped,
)
from agents.metrics import read_metrics
from agents.policy import trainable_state
from agents.runs import train
from agents.trainer import Trainer
from tests.agents.test_agents import tiny_config


def core_with(tiny_model_dir, reward, num_envs=4):
    return gym.make_vec(
        "DiffusionDenoise-v0", num_envs=num_envs, model=str(tiny_model_dir), reward=reward
    ).unwrapped


GATE = {"level": 0.0, "scale": 1.0}
"""``blue_gated_red``'s gate: 0 never binds; the trainer test raises it mid-run."""
REWARD = "tests.agents.test_credit_check:blue_gated_red"


def gate() -> dict:
    """GATE as the reward sees it: the env imports REWARD's module by name, which pytest's own import of
    this file (without a tests/__init__.py) is not."""
    return importlib.import_module("tests.agents.test_credit_check").GATE


def blue_gated_red(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """Redness at every pixel minus 10 x the image's mean blue missing below ``GATE['level']``, the same at
    every pixel: pixel-local while the images hold more blue than the level, coupled through the image's
    mean blue once they hold less (a pixel's own change then moves the map's sum mostly through its blue)."""
    missing = (GATE["level"] - images[:, 2].mean(dim=(1, 2))).clamp(min=0)  # (B,)
    return GATE["scale"] * images[:, 0] - 10 * missing[:, None, None]


def test_agreement_from_sums_by_hand():
    assert agreement_from_sums(torch.tensor([2.0, 1.0, 4.0])) == pytest.approx(1.0)  # total = 2 x own
    assert agreement_from_sums(torch.tensor([-2.0, 1.0, 4.0])) == pytest.approx(-1.0)
    assert agreement_from_sums(torch.tensor([1.0, 1.0, 4.0])) == pytest.approx(0.5)
    assert agreement_from_sums(torch.tensor([0.0, 0.0, 0.0])) == 1.0  # no response: nothing contradicts
    assert agreement_from_sums(torch.tensor([0.0, 0.0, 5.0])) == 0.0  # only the rest of the map moved
    # Several probe scales: the lowest cosine decides, whichever row holds it.
    rows = torch.tensor([[2.0, 1.0, 4.0], [1.0, 1.0, 4.0], [0.0, 0.0, 0.0]])
    assert agreement_from_sums(rows) == pytest.approx(0.5)
    assert agreement_from_sums(rows.flip(0)) == pytest.approx(0.5)


def test_agreement_sums_by_hand_on_a_one_pixel_image(tiny_model_dir):
    # Colour 'red' on the tiny 8 x 8 model: inverting a black pixel makes it white. Own change =
    # closeness(white) - closeness(black) = (1 - sqrt(2 / 3)) - (1 - sqrt(1 / 3)); the map's sum changes by
    # the same amount, so each probe adds own^2 to all three sums.
    core = core_with(tiny_model_dir, "color")
    own = (1 - math.sqrt(2 / 3)) - (1 - math.sqrt(1 / 3))
    sums = agreement_sums(
        core, torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.int64), 3, torch.Generator()
    )
    assert sums.tolist() == pytest.approx([6 * own**2] * 3, rel=1e-5)
    with pytest.raises(ValueError, match="probes must be an int >= 1, got probes=0"):
        agreement_sums(core, torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.int64), 0, torch.Generator())


def test_agreement_is_high_for_local_smoothed_mirror_and_scalar_rewards(tiny_model_dir):
    images = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    contexts = torch.zeros(8, dtype=torch.int64)
    assert credit_agreement(core_with(tiny_model_dir, "color"), images, contexts) == pytest.approx(1.0)
    # One cell: exactly 1 for a mirror reward (total = 2 x own) and one score per image (total = h w x own).
    # Several cells at once: own sums the inverted cells (a number of them that varies), so the two are no
    # longer exactly proportional; they still agree.
    for reward in ("symmetry", "contrast", "jpeg_compressibility", "blurred_color"):
        core = core_with(tiny_model_dir, reward)
        one_cell = agreement_from_sums(
            agreement_sums(core, images, contexts, 4, torch.Generator().manual_seed(0))
        )
        if reward != "blurred_color":  # the box's edges: 0.8 - 1
            assert one_cell == pytest.approx(1.0), reward
        assert credit_agreement(core, images, contexts) > 0.8, reward


def test_agreement_falls_where_a_gate_binds_and_only_there(tiny_model_dir):
    core = core_with(tiny_model_dir, REWARD)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(16, 3, 8, 8, generator=generator)
    contexts = torch.zeros(16, dtype=torch.int64)
    gate()["level"] = 0.3  # random images hold 0.5 blue: the gate is open, the reward pixel-local
    try:
        assert credit_agreement(core, images, contexts) == pytest.approx(1.0)
        dim = images * torch.tensor([1.0, 1.0, 0.2])[None, :, None, None]  # the same images, blue faded
        assert credit_agreement(core, dim, contexts) < CHECK_THRESHOLD
    finally:
        gate()["level"] = 0.0


def test_record_agreement_switches_once_and_for_good():
    algo = PXPO(PXPOConfig(), num_contexts=2, map_shape=(4, 4))
    assert PXPOConfig().credit == "checked" and algo.credit == "pixel" and algo.needs_check
    algo.record_agreement(CHECK_THRESHOLD, epoch=0)  # at the threshold: still per-pixel
    assert algo.credit == "pixel"
    algo.record_agreement(0.2, epoch=3)
    assert algo.credit == "image" and algo.switch_epoch == 3 and not algo.needs_check
    algo.record_agreement(1.0, epoch=4)
    assert algo.credit == "image" and algo.switch_epoch == 3
    restored = PXPO(PXPOConfig(), num_contexts=2, map_shape=(4, 4))
    restored.load_state_dict(algo.state_dict())
    assert restored.switch_epoch == 3 and restored.credit == "image"
    contexts = torch.zeros(2, dtype=torch.int64)
    fresh = PXPO(PXPOConfig(), num_contexts=2, map_shape=(4, 4))
    for each in (algo, fresh):  # every pixel of context 0 silent (decided from its first maps)
        each.first_silent[0], each.silence_decided[0] = True, True
    assert fresh.silent_weights(contexts) is not None  # per-pixel credit: the silent pixels' penalty ...
    assert algo.silent_weights(contexts) is None  # ... image credit: none
    for bad in (1.5, -2.0, float("nan")):
        with pytest.raises(ValueError, match="agreement must be in"):
            algo.record_agreement(bad, epoch=5)


def test_trainer_rechecks_every_epoch_switches_and_restores_the_best_weights(tiny_model_dir, tmp_path):
    # The images a policy draws change; here the reward changes instead, to the same effect: after three
    # epochs its gate binds on the images the policy draws, and from that epoch on the credit is the image's.
    # The weights that drew the best of the first three epochs come back, and that epoch makes no update.
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, reward=(REWARD,), learning_rate=3e-3))
    drew, rows = [], []  # the trainable weights each epoch sampled with, and its metrics
    try:
        for level in (0.0, 0.0, 0.0, 2.0, 0.0):  # 2.0: more blue than any image holds, the gate binds
            gate()["level"] = level
            drew.append({k: v.clone() for k, v in trainable_state(trainer.policy).items()})
            rows.append(trainer.train_epoch()[0])
    finally:
        gate()["level"] = 0.0
    assert [r["credit_pixel"] for r in rows] == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert [r["credit_agreement"] for r in rows[:3]] == pytest.approx([1.0] * 3)
    assert rows[3]["credit_agreement"] < CHECK_THRESHOLD and math.isnan(rows[4]["credit_agreement"])
    assert trainer.algo.switch_epoch == 3
    best = max(range(3), key=lambda k: rows[k]["reward_mean"])
    assert rows[3]["credit_restored"] == best and math.isnan(rows[3]["loss"])
    assert [math.isnan(r["credit_restored"]) for r in rows] == [True, True, True, False, True]
    for name, value in drew[4].items():  # epoch 4 sampled with the restored weights
        assert torch.equal(value, drew[best][name]), name
    name = next(iter(drew[4]))
    assert not torch.equal(drew[3][name], drew[best][name])  # the weights did move before


def test_checked_equals_pixel_credit_bit_for_bit_while_the_check_passes(tiny_model_dir, tmp_path):
    runs = {
        credit: train(
            tiny_config(tiny_model_dir, tmp_path, credit=credit, num_epochs=3, out=str(tmp_path / credit))
        )
        for credit in ("checked", "pixel")
    }
    for name in ("reward_mean", "loss", "grad_norm"):
        assert [m[name] for m in runs["checked"]] == [m[name] for m in runs["pixel"]], name
    logged = read_metrics(tmp_path / "checked" / "metrics.csv")
    assert [row["credit_pixel"] for row in logged] == [1.0, 1.0, 1.0]
    assert [row["credit_agreement"] for row in logged] == pytest.approx([1.0, 1.0, 1.0])
    assert math.isnan(read_metrics(tmp_path / "pixel" / "metrics.csv")[0]["credit_agreement"])


def test_a_run_that_switched_resumes_with_image_credit(tiny_model_dir, tmp_path):

    reward = (REWARD,)
    gate()["level"] = 2.0
    try:
        config = tiny_config(tiny_model_dir, tmp_path, reward=reward, num_epochs=3, save_every=1)
        whole = train(config)
        part = config.replace(out=str(tmp_path / "part"), num_epochs=1)
        train(part)
        resumed = train(config.replace(out="", resume=str(tmp_path / "part")))
    finally:
        gate()["level"] = 0.0
    assert [m["credit_pixel"] for m in whole] == [0.0, 0.0, 0.0]
    assert [m["loss"] for m in resumed] == [m["loss"] for m in whole[1:]]
    assert all(math.isnan(m["credit_agreement"]) for m in resumed)  # decided before the checkpoint


def test_the_kept_weights_survive_a_checkpoint_and_the_resumed_run_restores_the_same(
    tiny_model_dir, tmp_path
):

    from agents.checkpoint import load_checkpoint, restore_trainer

    config = tiny_config(tiny_model_dir, tmp_path, reward=(REWARD,), learning_rate=3e-3, num_epochs=4)
    first = Trainer(config)
    for _ in range(2):
        first.train_epoch()
    first.save()
    second = Trainer(config.replace(resume=str(config.run_dir)))
    restore_trainer(second, *load_checkpoint(config.run_dir))
    assert (second.best.epoch, second.best.reward) == (first.best.epoch, first.best.reward)
    assert second.best.tensors.keys() == first.best.tensors.keys()
    assert all(torch.equal(second.best.tensors[k], v) for k, v in first.best.tensors.items())
    gate()["level"] = 2.0
    try:
        rows = [trainer.train_epoch()[0] for trainer in (first, second)]
    finally:
        gate()["level"] = 0.0
    assert (
        not math.isnan(rows[0]["credit_restored"])
        and rows[0]["credit_restored"] == rows[1]["credit_restored"]
    )
    for (k, a), b in zip(trainable_state(first.policy).items(), trainable_state(second.policy).values()):
        assert torch.equal(a, b), k
    assert first.best.epoch is None and first.best.state() == ({}, None)  # forgotten once restored


def test_the_first_form_of_the_check_one_cell_no_restore_is_an_option(tiny_model_dir, tmp_path):
    config = tiny_config(
        tiny_model_dir,
        tmp_path,
        reward=(REWARD,),
        credit_check_scales=(0.0,),
        credit_check_restore=False,
        credit_check_drop=False,
    )
    trainer = Trainer(config)
    assert trainer.algo.config.check_scales == (0.0,) and not trainer.algo.config.check_restore
    trainer.train_epoch()
    gate()["level"] = 2.0
    try:
        row = trainer.train_epoch()[0]
    finally:
        gate()["level"] = 0.0
    assert row["credit_pixel"] == 0.0 and math.isnan(row["credit_restored"]) and not math.isnan(row["loss"])
    assert math.isnan(row["credit_dropped"]) and trainer.best.tensors == {}  # no guard, no weights kept
    for bad in ((), (1.0,), (-0.1,)):
        with pytest.raises(ValueError, match="check_scales must be one or more fractions"):
            PXPOConfig(check_scales=bad)


def test_reward_dropped_by_hand():
    assert not reward_dropped(None, None, 0.0, 0.0)  # nothing to compare with yet
    # Best 0.3 after a first 0.1: half the gain is 0.1, two standard errors 0.02: a drop below 0.2.
    assert reward_dropped(0.3, 0.1, 0.19, 0.01) and not reward_dropped(0.3, 0.1, 0.21, 0.01)
    assert not reward_dropped(0.3, 0.1, 0.19, 0.1)  # within 2 standard errors of 0.1: noise
    # A flat curve's best epoch is its luckiest draw: no guard until the gain exceeds 2 standard errors.
    assert not reward_dropped(0.3, 0.29, 0.2, 0.01) and reward_dropped(0.3, 0.27, 0.2, 0.01)


def test_a_reward_that_falls_fails_the_check_even_where_the_probes_pass(tiny_model_dir, tmp_path):
    # A pixel-local reward (the probes read 1) whose value falls by 90% at epoch 3, as a reward collapses
    # within one epoch when a coupling binds between two probes: the guard switches and restores.
    trainer = Trainer(tiny_config(tiny_model_dir, tmp_path, reward=(REWARD,)))
    rows = []
    try:
        for scale in (1.0, 1.0, 1.0, 0.1):
            gate()["scale"] = scale
            rows.append(trainer.train_epoch()[0])
    finally:
        gate()["scale"] = 1.0
    assert [r["credit_dropped"] for r in rows] == [0.0, 0.0, 0.0, 1.0]
    assert rows[3]["credit_agreement"] == pytest.approx(1.0) and rows[3]["credit_pixel"] == 0.0
    assert rows[3]["credit_restored"] == max(range(3), key=lambda k: rows[k]["reward_mean"])
