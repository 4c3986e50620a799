"""The README's demo runs end to end and writes its picture."""

from __future__ import annotations

from pxpo_gym.demo import DemoConfig, main


def test_demo_writes_a_reward_grid(tmp_path, capsys):
    out = main(DemoConfig(num_images=4, num_inference_steps=4, threads=1, out=str(tmp_path / "demo.png")))
    assert out.is_file() and out.stat().st_size > 1000
    printed = capsys.readouterr().out
    assert (
        printed.startswith("pxpo_gym.demo: loading model") and "mean" in printed
    )  # it says what it waits for
