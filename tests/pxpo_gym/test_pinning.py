"""An export's pin files: the new one, the old one, and a folder holding both."""

from __future__ import annotations

import warnings

import pytest
import torch
from safetensors.torch import save_file

from pxpo_gym.pinning import OLD_PIN_FILE, PINNED_PIXELS, read_pinned_pixels


def write_pin(folder, name, mask, mode="hold", band=0):
    key = "pinned" if name == PINNED_PIXELS else "held"
    save_file({key: mask.to(torch.uint8), "band": torch.tensor(band)}, str(folder / name), {"mode": mode})


def test_a_folder_with_both_pin_files_warns_when_they_agree_and_refuses_when_not(tmp_path):
    mask = torch.zeros(3, 8, 8, dtype=torch.bool)
    mask[..., 4:] = True
    write_pin(tmp_path, PINNED_PIXELS, mask)
    write_pin(tmp_path, OLD_PIN_FILE, mask)
    with pytest.warns(UserWarning, match=f"holds both {PINNED_PIXELS} and the old {OLD_PIN_FILE}"):
        mode, pinned = read_pinned_pixels(tmp_path, 3, (8, 8))
    assert mode == "hold" and torch.equal(pinned, mask)
    for mode, other, band in (("freeze", mask, 0), ("hold", ~mask, 0), ("hold", mask, 2)):
        write_pin(tmp_path, OLD_PIN_FILE, other, mode, band)
        with pytest.raises(ValueError, match="and they disagree"):
            read_pinned_pixels(tmp_path, 3, (8, 8))
    (tmp_path / OLD_PIN_FILE).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one file: no warning
        mode, pinned = read_pinned_pixels(tmp_path, 3, (8, 8))
    assert mode == "hold" and torch.equal(pinned, mask)
