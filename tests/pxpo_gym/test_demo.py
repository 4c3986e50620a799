"""The README's demo runs end to end and writes its picture, labelled."""

from __future__ import annotations

import pxpo_gym.viz
from pxpo_gym.demo import DemoConfig, main
from pxpo_gym.viz import reward_caption


def test_demo_writes_a_reward_grid(tmp_path, capsys):
    out = main(DemoConfig(num_images=4, num_inference_steps=4, threads=1, out=str(tmp_path / "demo.png")))
    assert out.is_file() and out.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert (
        printed.startswith("pxpo_gym.demo: loading model") and "mean" in printed
    )  # it says what it waits for


def test_the_demo_picture_says_which_panel_is_which_and_what_the_target_is(tmp_path, monkeypatch):
    """Before, the panels carried a class name and 'r=0.42' only: nothing said which was the image, which the
    reward map, or what the reward wanted."""
    drawn = []
    save = pxpo_gym.viz.save_figure

    def spy(fig, path, dpi):
        drawn.append([fig._suptitle.get_text(), *(ax.get_title() for ax in fig.axes)])
        return save(fig, path, dpi)

    monkeypatch.setattr(pxpo_gym.viz, "save_figure", spy)
    options = '{"target": "blue"}'
    config = DemoConfig(
        reward="target_map",
        reward_kwargs=options,
        num_images=2,
        num_inference_steps=4,
        threads=1,
        out=str(tmp_path / "demo.png"),
    )
    main(config)
    (texts,) = drawn
    caption, *titles = texts
    assert "reward 'target_map': target='blue'" in caption and "the image (left)" in caption
    assert "reward map (right" in caption
    assert titles[:4] == ["image: circle", titles[1], "image: square", titles[3]]
    assert titles[1].startswith("reward map, mean ") and titles[3].startswith("reward map, mean ")


def test_the_caption_names_a_default_target():
    assert reward_caption("color", {}) == "reward 'color': target=RGB (1.0, 0.0, 0.0)"
    assert reward_caption("color", {"target": "blue"}) == "reward 'color': target='blue'"
    assert reward_caption("mypkg.rewards:redness", {}) == "reward 'mypkg.rewards:redness'"


def test_the_demo_samples_an_export_with_its_own_sampler_settings(tiny_model_dir, tmp_path, capsys):
    """Before, the demo always passed num_inference_steps=20 and eta=1.0, so an export's run settings
    were ignored (and a flow model's eta refused)."""
    import json
    import shutil

    import pytest

    assert DemoConfig().num_inference_steps is None and DemoConfig().eta is None
    export = tmp_path / "export"
    shutil.copytree(tiny_model_dir, export)
    (export / "pxpo_gym.json").write_text(json.dumps({"run": {"config": {"num_inference_steps": 3}}}))
    main(DemoConfig(model=str(export), num_images=2, threads=1, out=str(tmp_path / "demo.png")))
    assert "(3 steps each)" in capsys.readouterr().out
    main(
        DemoConfig(
            model="default-flow", num_images=2, num_inference_steps=2, threads=1, out=str(tmp_path / "f.png")
        )
    )
    with pytest.raises(
        ValueError, match="num_inference_steps must be an int >= 1, got num_inference_steps=0"
    ):
        DemoConfig(num_inference_steps=0)
    with pytest.raises(ValueError, match="eta must be in"):
        main(DemoConfig(num_images=1, num_inference_steps=2, eta=1.5, threads=1, out=str(tmp_path / "e.png")))
