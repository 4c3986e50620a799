"""A trained policy as a diffusers model that other tools load: ``RUN/model``.

- Pixel models: a ``DDPMPipeline`` folder (``unet/``, ``scheduler/``,
  ``model_index.json``) plus our ``pxpo_gym.json`` (context names, the null
  context, the base model and the run's settings). ``DDPMPipeline.from_pretrained``
  and ``gym.make("DiffusionDenoise-v0", model="RUN/model")`` load it. A LoRA
  policy on a pixel model is merged into the weights (W + B A).
- Latent text-to-image pipelines with LoRA (their default): the adapter as
  diffusers' LoRA file ``pytorch_lora_weights.safetensors``, which
  ``StableDiffusionPipeline.load_lora_weights("RUN/model")`` accepts (SD3 and FLUX
  pipelines: their own ``load_lora_weights``), beside
  ``pxpo_gym.json`` naming the base model and the prompts. ``load_model`` (and
  so ``gym.make`` and ``agents.evaluate``) loads such a folder as the base
  pipeline with the adapter fused in.
- Latent pipelines fully fine-tuned: the whole pipeline folder with the new UNet (or transformer).

What each kind of network writes is its backbone plug-in's (``pxpo_gym.backbones``:
``export_pipeline``, ``save_lora``).

A run that pinned pixels (PXPO's ``silent_mode`` 'hold-unscored', 'hold' or 'freeze') also
writes ``pinned_pixels.safetensors``: each context's pinned pixels on the sample
grid and the mode. The weights alone sample without the pin; ``agents.evaluate``
(``pxpo_gym.pinning``) applies it with the
base model, as training's evaluations did.

Weights are safetensors; the folder is written next to its final place and
renamed into it, so a crash never leaves half a model.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from pxpo_gym.backbones import get_backbone
from pxpo_gym.files import fault_point, write_atomic
from pxpo_gym.models import METADATA_FILE, LoadedModel, NoiseModel
from pxpo_gym.pinning import PINNED_PIXELS

EXPORT_DIR = "model"
"""The export's folder inside a run folder."""
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
"""diffusers' default LoRA file name (what ``load_lora_weights`` looks for)."""


def has_lora(policy: torch.nn.Module) -> bool:
    return any("lora_" in name for name, _ in policy.named_parameters())


def merged_net(policy: NoiseModel, reference: NoiseModel) -> torch.nn.Module:
    """The policy's network as a plain diffusers model: a copy of its weights, LoRA merged in."""
    if not has_lora(policy):
        return copy.deepcopy(policy.net).float().requires_grad_(False)
    from peft.tuners.lora import LoraLayer

    net = copy.deepcopy(reference.net).float().requires_grad_(False)
    with torch.no_grad():
        for name, module in policy.net.named_modules():
            if isinstance(module, LoraLayer):
                for adapter in module.active_adapters:
                    target = net.get_submodule(name)
                    target.weight += module.get_delta_weight(adapter).to(target.weight.dtype)
    return net


def anywhere(model: str) -> str:
    """A model name as an export records it: a local folder as its absolute path (so the export loads from
    any working directory), an embedded name or a hub id as it is."""
    from pxpo_gym.models import MODEL_NAMES

    if model in MODEL_NAMES or not Path(model).exists():
        return model
    return str(Path(model).resolve())


def export_policy(
    policy: NoiseModel,
    loaded: LoadedModel,
    folder: str | Path,
    run: dict[str, Any] | None = None,
    pin: tuple[str, torch.Tensor, int] | None = None,
) -> Path:
    """Writes ``policy`` (trained from ``loaded``) as a diffusers model into ``folder`` (replaced).

    Args:
        policy: the trained ``NoiseModel`` (full or LoRA; swap EMA weights in before calling).
        loaded: the env's ``LoadedModel`` the policy was trained from (scheduler, contexts, base).
        folder: where the export goes (typically ``RUN/model``).
        run: the run's settings, recorded in ``pxpo_gym.json``.
        pin: (mode, (num_contexts, h, w) bool, band) the run's pinned pixels and the pin's band, written as
            ``PINNED_PIXELS``.

    Returns:
        The folder.
    """
    folder = Path(folder)
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    meta: dict[str, Any] = {
        "context_names": list(loaded.context_names),
        "null_context": loaded.null_context,
        "fine_tuned_from": anywhere(loaded.source),
        "run": run or {},
    }
    if loaded.sampler is not None:  # a sampler plug-in named by the model (pxpo_gym.samplers)
        meta["sampler"] = loaded.sampler
    backbone = get_backbone(policy.backbone)
    if loaded.is_latent and has_lora(policy):
        from peft.utils import get_peft_model_state_dict

        layers = get_peft_model_state_dict(policy.net)
        fault_point(staging)
        backbone.save_lora(staging, layers, LORA_WEIGHTS)
        meta.update(
            format="lora",
            base_model=anywhere(loaded.location or loaded.source),
            lora_weights=LORA_WEIGHTS,
            prompts=list(loaded.context_names),
        )
        del meta["context_names"], meta["null_context"]  # the prompts are the contexts
    else:  # the whole pipeline (a pixel model's LoRA merged into its weights)
        pipeline = backbone.export_pipeline(merged_net(policy, loaded.noise_model), loaded)
        fault_point(staging)
        pipeline.save_pretrained(staging, safe_serialization=True)
        meta["format"] = backbone.export_format
        if loaded.is_latent:
            meta["prompts"] = list(loaded.context_names)
            del meta["context_names"], meta["null_context"]
    if pin is not None:
        from safetensors.torch import save_file

        mode, mask, band = pin
        fault_point(staging / PINNED_PIXELS)
        # one metadata key: safetensors writes several in no fixed order (an export must be the same bytes)
        tensors = {"pinned": mask.to(torch.uint8).cpu().contiguous(), "band": torch.tensor(int(band))}
        save_file(tensors, str(staging / PINNED_PIXELS), {"mode": mode})
        meta["pinned_pixels"] = {"file": PINNED_PIXELS, "mode": mode, "band": band}
    write_atomic(staging / METADATA_FILE, json.dumps(meta, indent=1) + "\n")
    fault_point(folder)
    shutil.rmtree(folder, ignore_errors=True)
    fault_point(folder)  # a crash here leaves no export: resume writes it again (agents.runs)
    staging.rename(folder)
    return folder
