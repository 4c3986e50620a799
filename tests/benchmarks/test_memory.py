"""Memory at scale: under LoRA the policy shares the frozen base with the env's model (no second copy),
the adapters stay float32 over a half-precision base, and the reference is untouched by training."""

from __future__ import annotations

import pytest
import torch

from agents.config import TrainConfig
from agents.policy import make_policy
from agents.trainer import Trainer
from tests.pxpo_gym.test_latent import PROMPTS, STEPS


def held_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the distinct tensors (by storage) the modules hold: shared tensors count once."""
    seen: dict[int, int] = {}
    for module in modules:
        for tensor in (*module.parameters(), *module.buffers()):
            storage = tensor.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def sd_config(tiny_sd_dir, tmp_path, **overrides) -> TrainConfig:
    base = dict(
        model=str(tiny_sd_dir),
        prompts=tuple(PROMPTS),
        num_epochs=1,
        sample_batch_size=2,
        sample_batches_per_epoch=1,
        train_batch_size=2,
        num_inference_steps=STEPS,
        out=str(tmp_path / "run"),
        progress=False,
        tensorboard=False,
        image_every=0,
        export=False,
    )
    return TrainConfig.of(**{**base, **overrides})


def test_a_lora_policy_costs_its_adapters_not_a_second_model(tiny_sd_dir, tmp_path):
    trainer = Trainer(sd_config(tiny_sd_dir, tmp_path))
    reference = trainer.reference
    model_bytes = held_bytes(reference)
    adapters = sum(p.numel() * p.element_size() for p in trainer.policy.parameters() if p.requires_grad)
    # the policy's base is the reference's own tensors: together they hold the model once, plus the adapters
    assert held_bytes(reference, trainer.policy) == model_bytes + adapters
    full = make_policy(reference, lora_rank=0)  # full fine-tuning: its own float32 copy, as it must
    assert held_bytes(reference, full) >= 2 * model_bytes - 1024


def test_training_the_lora_policy_leaves_the_reference_as_loaded(tiny_sd_dir, tmp_path):
    from pxpo_gym.loading import load_model

    trainer = Trainer(sd_config(tiny_sd_dir, tmp_path, learning_rate=1e-2))
    trainer.train_epoch()
    fresh = load_model(str(tiny_sd_dir), prompts=PROMPTS).noise_model
    x, t, c = (
        torch.randn(2, *trainer.envs.unwrapped.loaded.sample_shape),
        torch.tensor([800, 10]),
        torch.tensor([0, 1]),
    )
    with torch.no_grad():
        torch.testing.assert_close(trainer.reference(x, t, c), fresh(x, t, c), rtol=0, atol=0)
        assert (trainer.policy(x, t, c) - fresh(x, t, c)).abs().max() > 1e-6  # the adapters moved


def test_adapters_stay_float32_over_a_half_precision_base(tiny_sd_dir, tmp_path):
    trainer = Trainer(sd_config(tiny_sd_dir, tmp_path, model_dtype="bfloat16"))
    trained = [p for p in trainer.policy.parameters() if p.requires_grad]
    frozen = [p for p in trainer.policy.net.parameters() if not p.requires_grad]
    assert trained and all(p.dtype == torch.float32 for p in trained)
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    metrics, _ = trainer.train_epoch()  # one epoch runs (the base in bf16, the adapters in fp32)
    assert torch.isfinite(torch.tensor(metrics["loss"]))


@pytest.mark.parametrize("rank", [0, 4])
def test_make_policy_never_changes_the_model_it_copies(tiny_sd_dir, rank):
    from pxpo_gym.loading import load_model

    model = load_model(str(tiny_sd_dir), prompts=PROMPTS).noise_model.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    kinds = {type(m) for m in model.modules()}
    make_policy(model, lora_rank=rank)
    assert {type(m) for m in model.modules()} == kinds  # no adapter layers in the reference
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(p.requires_grad for p in model.parameters())


def test_the_memory_table_counts_the_real_configs_on_the_meta_device():
    from benchmarks.performance.memory_table import MemoryTableConfig, model_rows

    rows = {r["model"]: r for r in model_rows(MemoryTableConfig(rank=32))}
    # FLUX.1-dev's transformer has 11.9 B parameters, SD3.5-Medium's 2.2 B (their published sizes)
    assert 11.8e9 < rows["flux.1-dev"]["parameters"] < 12.0e9
    assert 2.1e9 < rows["sd3.5-medium"]["parameters"] < 2.6e9
    # rank 32 on to_q / to_k / to_v / to_out.0: 32 x (in + out) per projection
    assert rows["flux.1-dev"]["lora_parameters"] == 32 * 4 * (3072 + 3072) * 57 - 32 * 3072 * 2 * 38
