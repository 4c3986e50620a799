"""EMA of the policy's trainable weights: by hand, swapped in for evaluation only, resumed exactly."""

from __future__ import annotations

import pytest
import torch

from agents.ema import EMA
from agents.metrics import read_metrics
from agents.runs import train
from tests.agents.test_agents import tiny_config


def test_ema_by_hand():
    layer = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0]]))
    ema = EMA(layer, decay=0.75)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[5.0, -2.0]]))
    ema.update()  # 0.75 * [1, 2] + 0.25 * [5, -2] = [2, 1]
    torch.testing.assert_close(ema.shadow["weight"], torch.tensor([[2.0, 1.0]]))
    ema.update()  # 0.75 * [2, 1] + 0.25 * [5, -2] = [2.75, 0.25]
    torch.testing.assert_close(ema.shadow["weight"], torch.tensor([[2.75, 0.25]]))
    with ema.swapped_in():
        torch.testing.assert_close(layer.weight.detach(), torch.tensor([[2.75, 0.25]]))
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[5.0, -2.0]]))  # restored


def test_only_trainable_parameters_are_averaged():
    layer = torch.nn.Linear(2, 1)
    layer.bias.requires_grad_(False)
    assert set(EMA(layer, 0.9).shadow) == {"weight"}
    with pytest.raises(ValueError, match=r"ema_decay must be in \[0, 1\)"):
        EMA(layer, 1.0)


def test_evaluation_uses_the_average_and_training_does_not(tiny_model_dir, tmp_path):
    base = tiny_config(
        tiny_model_dir, tmp_path, num_epochs=2, eval_every=1, eval_images=4, learning_rate=1e-2
    )
    train(base.replace(out=str(tmp_path / "plain")))
    train(base.replace(out=str(tmp_path / "same"), ema_decay=0.0))  # EMA == the weights
    train(base.replace(out=str(tmp_path / "slow"), ema_decay=0.999999))  # EMA ~ pretrained
    plain, same, slow = (read_metrics(tmp_path / name / "metrics.csv") for name in ("plain", "same", "slow"))
    for a, b, c in zip(plain, same, slow):
        assert a["reward_mean"] == b["reward_mean"] == c["reward_mean"]  # training is untouched
        assert a["eval_reward"] == b["eval_reward"]
    assert slow[-1]["fidelity_distance"] < 1e-3 < plain[-1]["fidelity_distance"]


def test_ema_resumes_exactly(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    base = tiny_config(tiny_model_dir, tmp_path, ema_decay=0.9, save_every=1)
    train(base.replace(num_epochs=3, out=str(tmp_path / "full")))
    train(base.replace(num_epochs=1, out=str(tmp_path / "part")))
    train(base.replace(num_epochs=3, out=str(tmp_path / "part"), resume=str(tmp_path / "part")))
    a = load_file(str(tmp_path / "full" / "checkpoints" / "epoch-000003" / "state.safetensors"))
    b = load_file(str(tmp_path / "part" / "checkpoints" / "epoch-000003" / "state.safetensors"))
    ema_keys = [k for k in a if k.startswith("ema/")]
    assert ema_keys and all(torch.equal(a[k], b[k]) for k in ema_keys)
