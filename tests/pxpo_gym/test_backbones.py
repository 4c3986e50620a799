"""Backbone plug-ins: the registry, a plug-in registered from Python, and what a model folder may select."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_unet

from pxpo_gym.backbones import BACKBONES, backbone_for_index, get_backbone, register_backbone
from pxpo_gym.backbones.base import Backbone
from pxpo_gym.backbones.unet import PixelUNet
from pxpo_gym.loading import load_model
from pxpo_gym.models import NoiseModel, current_parameter_name
from pxpo_gym.vector_env import DiffusionDenoiseVectorEnv


class DoubledUNet(PixelUNet):
    """A plug-in: the pixel UNet's output times two, for the made-up pipeline class 'DoubledPipeline'."""

    name = "test-doubled"
    pipeline_classes = ("DoubledPipeline",)

    @classmethod
    def forward(cls, model, sample, timestep, context):
        return 2 * super().forward(model, sample, timestep, context)


@pytest.fixture
def doubled():
    register_backbone(DoubledUNet)
    yield DoubledUNet
    BACKBONES.pop(DoubledUNet.name)


def test_the_built_ins_are_registered_by_name():
    assert list(BACKBONES) == ["unet", "sd", "sd3", "flux"]
    assert all(get_backbone(name).name == name for name in BACKBONES)


def test_an_unknown_backbone_is_refused_naming_the_value_and_the_allowed_ones():
    with pytest.raises(
        ValueError, match=r"backbone must be one of \['flux', 'sd', 'sd3', 'unet'\], got backbone='dit'"
    ):
        get_backbone("dit")
    with pytest.raises(ValueError, match="got backbone='dit'"):
        NoiseModel(make_tiny_unet(), torch.zeros(1000), backbone="dit")


def test_transformer_backbones_need_text_embeddings():
    with pytest.raises(ValueError, match="backbone='flux' needs prompt_embeds and pooled_embeds"):
        NoiseModel(make_tiny_unet(), torch.zeros(0), "velocity", backbone="flux")


def test_registering_checks_the_class_and_its_name(doubled):
    with pytest.raises(TypeError, match="must subclass pxpo_gym.backbones.base.Backbone"):
        register_backbone(dict)  # type: ignore[arg-type]
    clash = type("Clash", (PixelUNet,), {"name": "unet"})
    with pytest.raises(ValueError, match="'unet' is already registered; pass replace=True"):
        register_backbone(clash)
    assert register_backbone(DoubledUNet) is DoubledUNet  # the same class again: nothing changes
    with pytest.raises(ValueError, match="name must be a non-empty string"):
        register_backbone(type("Nameless", (Backbone,), {}))


def test_a_registered_plug_in_is_called_by_the_noise_model(doubled):
    unet = make_tiny_unet()
    plain = NoiseModel(unet, torch.zeros(1000))
    mine = NoiseModel(unet, torch.zeros(1000), backbone=DoubledUNet.name)
    x, t, c = torch.randn(2, 3, 8, 8), torch.tensor([5, 500]), torch.tensor([0, 2])
    with torch.no_grad():
        torch.testing.assert_close(mine(x, t, c), 2 * plain(x, t, c), rtol=0, atol=0)


def test_a_folder_selects_only_registered_backbones_by_its_pipeline_class(doubled):
    assert backbone_for_index({"_class_name": "DDPMPipeline"}, "m") is PixelUNet
    assert backbone_for_index({"_class_name": "DoubledPipeline"}, "m") is DoubledUNet
    assert backbone_for_index({}, "m") is PixelUNet  # a folder without model_index.json: its layout
    assert backbone_for_index({"_class_name": "X", "vae": ["diffusers", "AutoencoderKL"]}, "m").name == "sd"
    # a class name that is one of our plug-ins' Python names is not a pipeline class: nothing resolves it
    with pytest.raises(ValueError, match="SD3Transformer with a transformer backbone; the supported ones"):
        backbone_for_index({"_class_name": "SD3Transformer", "transformer": ["diffusers", "X"]}, "m")


def test_a_model_folder_loads_with_the_registered_plug_in_its_index_names(tiny_model_dir, tmp_path, doubled):
    import json
    import shutil

    folder = tmp_path / "doubled"
    shutil.copytree(tiny_model_dir, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "DoubledPipeline"}))
    loaded, plain = load_model(str(folder)), load_model(str(tiny_model_dir))
    assert loaded.noise_model.backbone == DoubledUNet.name and plain.noise_model.backbone == "unet"
    env = DiffusionDenoiseVectorEnv(num_envs=1, model=loaded, num_inference_steps=2)
    obs, _ = env.reset(seed=0)
    with torch.no_grad():
        got = env.model(obs["sample"], obs["timestep"], obs["context"])
        want = plain.noise_model(obs["sample"], obs["timestep"], obs["context"])
    torch.testing.assert_close(got, 2 * want, rtol=0, atol=0)


def test_the_old_name_unet_still_works_with_a_deprecation_warning():
    unet = make_tiny_unet()
    with pytest.warns(DeprecationWarning, match=r"NoiseModel.__init__\(unet=...\) is deprecated: use net="):
        model = NoiseModel(unet=unet, alphas_cumprod=torch.zeros(1000))
    assert model.net is unet
    with pytest.warns(DeprecationWarning, match="NoiseModel.unet is deprecated: use NoiseModel.net"):
        assert model.unet is unet
    other = make_tiny_unet()
    with pytest.warns(DeprecationWarning, match="NoiseModel.unet is deprecated"):
        model.unet = other
    assert model.net is other and "unet" not in dict(model.named_children())
    assert next(iter(dict(model.named_parameters()))).startswith("net.")
    with pytest.raises(TypeError, match="got both unet= and its new name net="):
        NoiseModel(net=unet, alphas_cumprod=torch.zeros(1000), unet=unet)


def test_parameter_names_of_old_checkpoints_get_their_new_names():
    assert current_parameter_name("unet.conv_in.weight") == "net.conv_in.weight"
    assert current_parameter_name("net.conv_in.weight") == "net.conv_in.weight"
    assert current_parameter_name("buffer") == "buffer"
    from agents.checkpoint import current_names

    old = {"policy/unet.a": 1, "ema/unet.a": 2, "best/policy/unet.a": 3, "best/ema/unet.a": 4, "optim/0/x": 5}
    assert current_names(old) == {
        "policy/net.a": 1,
        "ema/net.a": 2,
        "best/policy/net.a": 3,
        "best/ema/net.a": 4,
        "optim/0/x": 5,
    }
