"""Loading models by name or folder, and refusing what cannot be loaded."""

from __future__ import annotations

import shutil

import pytest
import torch

from pxpo_gym.loading import load_model
from pxpo_gym.vector_env import DiffusionDenoiseVectorEnv


def test_load_local_folder(tiny_model_dir):
    loaded = load_model(str(tiny_model_dir))
    assert loaded.sample_shape == (3, 8, 8) and loaded.image_size == (8, 8)
    assert loaded.num_contexts == 3 and loaded.null_context is None
    eps = loaded.noise_model(torch.zeros(2, 3, 8, 8), torch.tensor([[10], [20]]), torch.tensor([[0], [2]]))
    assert eps.shape == (2, 3, 8, 8) and eps.dtype == torch.float32


def test_load_default_by_name():
    loaded = load_model("default")
    assert loaded.sample_shape == (3, 16, 16)
    assert loaded.context_names == ("circle", "square", "triangle", "cross")
    assert loaded.null_context == 4


def test_unknown_name_and_missing_folder():
    with pytest.raises(ValueError, match="not a known name"):
        load_model("stable-diffusion")
    with pytest.raises(ValueError, match="not a known name"):
        load_model("./no/such/folder")


def test_offline_hub_id_fails_fast():
    # conftest sets HF_HUB_OFFLINE=1: said at once, without a network attempt
    with pytest.raises(ValueError, match="not a local folder.*HF_HUB_OFFLINE is set"):
        load_model("someone/some-model")


def test_missing_weights_file(tiny_model_dir, tmp_path):
    broken = tmp_path / "m"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ValueError, match="could not load"):
        load_model(str(broken))


def test_corrupt_weights_file(tiny_model_dir, tmp_path):
    broken = tmp_path / "m"
    shutil.copytree(tiny_model_dir, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="could not load"):
        DiffusionDenoiseVectorEnv(model=str(broken))


def test_pickle_weights_are_never_loaded(tiny_model_dir, tmp_path):
    # A folder with only a .bin (pickle) file must be refused, not unpickled.
    broken = tmp_path / "m"
    shutil.copytree(tiny_model_dir, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    torch.save({"x": torch.zeros(1)}, broken / "unet" / "diffusion_pytorch_model.bin")
    weights.unlink()
    with pytest.raises(ValueError, match="could not load"):
        load_model(str(broken))


def test_bad_dtype():
    with pytest.raises(ValueError, match="dtype"):
        load_model("default", dtype=torch.float64)


def test_v_prediction_is_converted_to_eps(tiny_model_dir, tmp_path):
    from diffusers import DDPMScheduler

    folder = tmp_path / "v"
    shutil.copytree(tiny_model_dir, folder)
    sched = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", prediction_type="v_prediction")
    sched.save_pretrained(folder / "scheduler")
    eps_model = load_model(str(tiny_model_dir)).noise_model
    v_model = load_model(str(folder)).noise_model
    x, t, c = torch.randn(1, 3, 8, 8), torch.tensor([500]), torch.tensor([1])
    with torch.no_grad():
        v = eps_model(x, t, c)  # the network's raw output, read as v by v_model
        abar = sched.alphas_cumprod[500]
        expected = abar.sqrt() * v + (1 - abar).sqrt() * x
        torch.testing.assert_close(v_model(x, t, c), expected)


def test_the_backbone_plug_in_is_resolved_once_not_on_every_call(tiny_model_dir, monkeypatch):
    import pxpo_gym.backbones

    model = load_model(str(tiny_model_dir)).noise_model
    x, t, c = torch.zeros(2, 3, 8, 8), torch.tensor([10, 20]), torch.tensor([0, 2])
    before = model(x, t, c)

    def no_lookup(name):
        raise AssertionError(f"get_backbone({name!r}) called by forward")

    monkeypatch.setattr(pxpo_gym.backbones, "get_backbone", no_lookup)
    assert torch.equal(model(x, t, c), before)
