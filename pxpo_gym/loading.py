"""Where models come from: the embedded default, diffusers folders, hub ids, latent pipelines.

This module finds a model (``load_model``: an embedded name, a folder, a hub id, a LoRA
export), checks that its files name no code to run, and hands it to its backbone plug-in
(``pxpo_gym.backbones``), which loads it: pixel-space class-conditional UNets (like the
embedded default; DDPM or flow-matching scheduler) and latent text-to-image pipelines:
Stable Diffusion's layout (UNet2DConditionModel + AutoencoderKL + CLIP text encoder and
tokenizer) and the flow-matching transformer pipelines SD3 (``StableDiffusion3Pipeline``)
and FLUX (``FluxPipeline``); transformers is the ``sd`` extra. All yield a
``pxpo_gym.models.LoadedModel``. Loading goes through diffusers' and transformers'
``from_pretrained`` with ``use_safetensors=True``, so no weights file is ever unpickled.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pxpo_gym.deprecation import moved_names
from pxpo_gym.models import (
    DEFAULT_MODEL_NAME,
    METADATA_FILE,
    MODEL_NAMES,
    LoadedModel,
    embedded_model_path,
    parse_dtype,
)

LATENT_EXTRA_HINT = 'pip install "pxpo-gym[sd]" (transformers)'
"""How to get what latent text-to-image pipelines need beyond the core install."""


METADATA_FIELDS: dict[str, tuple[str, Any]] = {
    "context_names": ("a list of non-empty strings", lambda v: _strings(v)),
    "prompts": ("a list of non-empty strings", lambda v: _strings(v)),
    "null_context": (
        "an int or null",
        lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
    ),
    "format": (
        "one of 'ddpm_pipeline', 'pipeline', 'lora'",
        lambda v: v in ("ddpm_pipeline", "pipeline", "lora"),
    ),
    "fine_tuned_from": ("a string", lambda v: isinstance(v, str)),
    "base_model": ("a non-empty string", lambda v: isinstance(v, str) and bool(v)),
    "lora_weights": (
        "a file name inside the folder",
        lambda v: isinstance(v, str) and bool(v) and Path(v).name == v and v not in (".", ".."),
    ),
    "run": ("a JSON object", lambda v: isinstance(v, dict)),
    "sampler": ("a sampler's registered name (a string)", lambda v: isinstance(v, str) and bool(v)),
}
"""Each known ``pxpo_gym.json`` field: what it must be, and the check (unknown fields are kept as they are)."""


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def read_metadata(folder: str | Path | None) -> dict[str, Any]:
    """A model folder's ``pxpo_gym.json`` ({} for no folder, a hub id, or a folder without one).

    Raises:
        ValueError: the file is not a valid JSON object, or a known field has the wrong type (the
            message names the file, the field, its value and what it must be).
    """
    path = Path(folder) / METADATA_FILE if folder is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"model folder {str(folder)!r}: {METADATA_FILE} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(meta).__name__}")
    for key, (what, ok) in METADATA_FIELDS.items():
        if key in meta and not ok(meta[key]):
            raise ValueError(f"{str(path)!r}: {key!r} must be {what}, got {str(meta[key])[:80]!r}")
    if meta.get("format") == "lora":
        missing = [k for k in ("base_model", "lora_weights", "prompts") if k not in meta]
        if missing:
            raise ValueError(f"{str(path)!r}: a 'lora' export needs {missing} as well")
    return meta


def size_pair(value: Any) -> tuple[int, int] | None:
    """An int or an (h, w) pair of positive ints -> (h, w); None if it is neither."""
    items = [value, value] if isinstance(value, (int, np.integer)) else value
    try:
        pair = tuple(items)
    except TypeError:
        return None
    if len(pair) != 2 or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in pair
    ):
        return None
    return int(pair[0]), int(pair[1])


def parse_prompts(prompts: Sequence[str] | str | Callable[[], Sequence[str]]) -> tuple[str, ...]:
    """A prompt, a list of prompts, or a function returning the list (called once) -> tuple.

    Raises:
        ValueError: empty, or an item that is not a non-empty string.
    """
    given = prompts
    if callable(prompts):
        prompts = prompts()
    if isinstance(prompts, str):
        prompts = [prompts]
    try:
        items = list(prompts)
    except TypeError:
        items = []
    if not items or any(not isinstance(p, str) or not p.strip() for p in items):
        raise ValueError(
            "prompts must be a non-empty list of non-empty strings (or a function returning one), "
            f"got prompts={given!r}"
        )
    return tuple(items)


def _hub_offline() -> bool:
    """Whether the Hugging Face hub is switched off (HF_HUB_OFFLINE), read at call time."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _locate(model: str | Path) -> tuple[str, str]:
    """(source, location): what the user named and where diffusers should load it from."""
    source = str(model)
    if source in MODEL_NAMES:
        return source, str(embedded_model_path(source))
    if Path(source).exists():
        if not Path(source).is_dir():
            raise ValueError(f"model={source!r} is a file; expected a diffusers model folder")
        if (
            not (Path(source) / "model_index.json").is_file()
            and not (Path(source) / "unet").is_dir()
            and lora_export(source) is None
        ):
            raise ValueError(
                f"model={source!r} is not a diffusers pipeline folder: it has neither model_index.json nor "
                "unet/ (nor is it a LoRA export of agents.export)"
            )
        return source, source
    if "/" in source and not source.startswith((".", "/")) and source.count("/") == 1:
        if _hub_offline():
            raise ValueError(
                f"model={source!r} is not a local folder (no such path), and as a hub id it cannot be "
                "fetched: HF_HUB_OFFLINE is set. Check the path, or unset HF_HUB_OFFLINE to download it"
            )
        return source, source  # a hub id: diffusers resolves it
    raise ValueError(
        f"model={source!r} is not a known name ({', '.join(MODEL_NAMES)}), "
        "an existing folder, or a hub id of the form 'owner/name'"
    )


def _pipeline_index(source: str, location: str) -> dict[str, Any]:
    """The pipeline's model_index.json ({} for a local folder without one)."""
    folder = Path(location)
    if folder.is_dir():
        index = folder / "model_index.json"
        if not index.is_file():
            return {}
        try:
            loaded = json.loads(index.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"model={source!r}: model_index.json is not valid JSON: {err}") from err
        if not isinstance(loaded, dict):
            raise ValueError(f"model={source!r}: model_index.json must hold a JSON object")
        return check_index(loaded, source)
    from diffusers import DiffusionPipeline

    try:
        loaded = dict(DiffusionPipeline.load_config(location))
    except Exception as err:  # hub errors, offline mode, missing repo
        raise ValueError(
            f"model={source!r} is not a local folder (no such path); as a hub id, its "
            "model_index.json could not be loaded: "
            f"{type(err).__name__}: {err}"
        ) from err
    return check_index(loaded, source)


INDEX_LIBRARIES = ("diffusers", "transformers")
"""The libraries a model_index.json may name its components' classes from."""


def _known_library(name: Any) -> bool:
    """A library a component may name: diffusers, transformers, or one of diffusers' own pipeline modules
    (SD 1.x names its safety checker ['stable_diffusion', ...]; diffusers resolves such a name inside
    itself, importing nothing else)."""
    if name in INDEX_LIBRARIES:
        return True
    if not (isinstance(name, str) and name.isidentifier()):
        return False
    import types

    import diffusers.pipelines

    module = getattr(diffusers.pipelines, name, None)
    return isinstance(module, types.ModuleType) and module.__name__.startswith("diffusers.pipelines.")


def check_index(index: dict[str, Any], source: str) -> dict[str, Any]:
    """Refuses a model_index.json that would make diffusers import code the folder names.

    diffusers imports each component's library by the name the file gives (``["mypkg", "Cls"]``)
    and loads a custom pipeline named by a list-valued ``_class_name``; a model folder is something
    people download, so only classes of ``INDEX_LIBRARIES`` and a built-in pipeline class pass.

    Raises:
        ValueError: the file names another library, a custom pipeline, or a malformed component.
    """
    kind = index.get("_class_name")
    if kind is not None and not (isinstance(kind, str) and kind.isidentifier()):
        raise ValueError(
            f"model={source!r}: model_index.json's _class_name must be a diffusers pipeline class name, got "
            f"{str(kind)[:80]!r} (custom pipeline code is never loaded from a model folder)"
        )
    for name, value in index.items():
        if name.startswith("_") or not isinstance(value, list):
            continue
        if value == [None, None]:
            continue
        if (
            len(value) != 2
            or not _known_library(value[0])
            or not (isinstance(value[1], str) and value[1].isidentifier())
        ):
            raise ValueError(
                f"model={source!r}: model_index.json's component {name!r} is {str(value)[:80]}; a component "
                f"must be [library, class] with library one of {', '.join(INDEX_LIBRARIES)} or a diffusers "
                "pipeline module such as 'stable_diffusion' (code named in a model folder is never imported)"
            )
    return index


def load_model(
    model: str | Path = DEFAULT_MODEL_NAME,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = torch.float32,
    prompts: Sequence[str] | str | Callable[[], Sequence[str]] | None = None,
    resolution: int | Sequence[int] | None = None,
    decode_chunk_size: int | None = None,
) -> LoadedModel:
    """Loads a diffusers model by embedded name, local folder or hub id.

    Pixel models: diffusers' pipeline layout with ``unet/`` (a UNet2DModel with
    3 channels, class-conditional or not) and ``scheduler/``, as written by
    ``DDPMPipeline.save_pretrained``. Latent text-to-image pipelines (their
    model_index.json names a ``vae`` and a ``text_encoder``): Stable Diffusion
    1.x/2.x's layout, ``unet/`` UNet2DConditionModel, ``vae/`` AutoencoderKL,
    ``text_encoder/`` CLIPTextModel, ``tokenizer/``, ``scheduler/``; or an SD3 /
    FLUX pipeline (``transformer/`` and a FlowMatchEulerDiscreteScheduler, loaded
    with the pipeline's own ``from_pretrained`` and ``encode_prompt``); they need
    ``prompts`` and the ``sd`` extra. Weights must be safetensors.

    Args:
        model: ``"default"`` (the embedded model), a folder path, or a hub id.
        device: where the model lives.
        dtype: compute dtype (float32, float16 or bfloat16).
        prompts: latent pipelines only: the prompts the contexts stand for (a list,
            or a function returning it); their embeddings are computed once, kept
            on ``device``, and the text encoder is then dropped.
        resolution: image size (int or (H, W)); latent pipelines default to the
            UNet's (SD3: transformer's; FLUX: 128 latents, 1,024 px) sample size times the
            VAE's factor and accept any multiple of the VAE's and the backbone's combined
            downsampling; pixel models only their own size.
        decode_chunk_size: latent pipelines: samples per VAE decode call (None: all at once).

    Raises:
        ValueError: unknown name, not a diffusers pipeline, missing or corrupt
            files, prompts given to a pixel model or missing for a latent one, a
            resolution the model cannot produce, unsupported dtype, a ``pxpo_gym.json`` naming a
            sampler that is not registered (``pxpo_gym.samplers.SAMPLERS``; its plug-in is registered
            before loading).
        ImportError: a latent pipeline without transformers installed.
    """
    dtype = parse_dtype(dtype)
    if decode_chunk_size is not None and (
        isinstance(decode_chunk_size, bool) or not isinstance(decode_chunk_size, int) or decode_chunk_size < 1
    ):
        raise ValueError(
            f"decode_chunk_size must be None or an int >= 1, got decode_chunk_size={decode_chunk_size!r}"
        )
    if resolution is not None and size_pair(resolution) is None:
        raise ValueError(
            f"resolution must be None, an int or an (H, W) pair of positive ints, got {resolution!r}"
        )
    source, location = _locate(model)
    lora = lora_export(location)
    if lora is not None:
        loaded = _load_lora_export(source, lora, device, dtype, prompts, resolution, decode_chunk_size)
        return _with_named_sampler(loaded, location)
    return _with_named_sampler(
        _load_pipeline(source, location, device, dtype, prompts, resolution, decode_chunk_size), location
    )


def _with_named_sampler(loaded: LoadedModel, location: str) -> LoadedModel:
    """The model with the sampler plug-in its folder's ``pxpo_gym.json`` names (an export of a model that
    named one), looked up in ``pxpo_gym.samplers.SAMPLERS`` only.

    Raises:
        ValueError: the name is not registered (listing the registered ones).
    """
    name = read_metadata(location).get("sampler") if Path(location).is_dir() else None
    if name is None:
        return loaded
    from pxpo_gym.samplers import SAMPLERS

    if name not in SAMPLERS:
        raise ValueError(
            f"model={loaded.source!r}: its {METADATA_FILE} names sampler {name!r}, which is not registered "
            f"(registered: {sorted(SAMPLERS)}); register the plug-in with pxpo_gym.samplers.register_sampler "
            "before loading"
        )
    loaded.sampler = name
    return loaded


def _load_pipeline(
    source: str,
    location: str,
    device: torch.device | str,
    dtype: torch.dtype,
    prompts: Any,
    resolution: Any,
    decode_chunk_size: int | None,
) -> LoadedModel:
    """A pipeline (not a LoRA export) through its backbone plug-in."""
    from pxpo_gym.backbones import backbone_for_index

    index = _pipeline_index(source, location)
    backbone = backbone_for_index(index, source)
    if backbone.takes_prompts:
        if prompts is None:
            raise ValueError(
                f"model={source!r} is a latent text-to-image pipeline: pass prompts=[...] "
                "(the texts the context ids stand for)"
            )
        return backbone.load(
            source, location, device, dtype, parse_prompts(prompts), resolution, decode_chunk_size, index
        )
    if prompts is not None:
        raise ValueError(
            f"model={source!r} is a pixel model conditioned on class ids, not text: drop prompts "
            "(choose classes with context=...)"
        )
    if decode_chunk_size is not None:
        raise ValueError(f"decode_chunk_size is for latent pipelines; model={source!r} is a pixel model")
    return backbone.load(source, location, device, dtype, None, resolution, None, index)


def lora_export(location: str) -> dict[str, Any] | None:
    """The metadata of a LoRA export folder (``agents.export``), or None for anything else."""
    if (Path(location) / "model_index.json").is_file():
        return None
    meta = read_metadata(location)
    if meta.get("format") != "lora":
        return None
    missing = [key for key in ("base_model", "lora_weights", "prompts") if key not in meta]
    if missing:
        raise ValueError(f"model folder {location!r}: its LoRA export metadata lacks {missing}")
    return meta


def _load_lora_export(
    source: str,
    meta: dict[str, Any],
    device: torch.device | str,
    dtype: torch.dtype,
    prompts: Any,
    resolution: Any,
    decode_chunk_size: int | None,
) -> LoadedModel:
    """A LoRA export: its base pipeline with the adapter fused into the network's weights."""
    weights = Path(source) / meta["lora_weights"]
    if not weights.is_file():
        raise ValueError(f"model={source!r}: the LoRA file {meta['lora_weights']!r} is missing")
    base = meta["base_model"]
    if Path(base).is_dir() and lora_export(base) is not None:
        raise ValueError(
            f"model={source!r}: its base_model {base!r} is itself a LoRA export; a LoRA export's base must be "
            "a full pipeline (an embedded name, a diffusers folder or a hub id)"
        )
    loaded = load_model(
        meta["base_model"],
        device,
        dtype,
        prompts if prompts is not None else meta["prompts"],
        resolution,
        decode_chunk_size,
    )
    from pxpo_gym.backbones import get_backbone

    net = loaded.noise_model.net
    prefix = get_backbone(loaded.noise_model.backbone).component  # the LoRA file's key prefix
    try:
        net.load_lora_adapter(source, weight_name=meta["lora_weights"], prefix=prefix, adapter_name="export")
    except Exception as err:  # diffusers/peft raise ValueError, KeyError, SafetensorError
        raise ValueError(
            f"model={source!r}: could not load its LoRA file into {meta['base_model']!r}: "
            f"{type(err).__name__}: {err}"
        ) from err
    net.fuse_lora(lora_scale=1.0)
    net.unload_lora()  # the fused weights stay; the adapter layers go
    loaded.source = source
    return loaded


def absent_components(index: dict[str, Any]) -> dict[str, None]:
    """The components a model_index.json lists as absent (``[null, null]``, e.g. SD3 without its T5
    encoder), as the ``None`` keyword arguments ``from_pretrained`` must be given for them."""
    return {name: None for name, value in index.items() if value == [None, None]}


def pipeline_index(location: str) -> dict[str, Any]:
    """The model_index.json of a pipeline folder or hub id ({} for a folder without one)."""
    return _pipeline_index(location, location)


__getattr__ = moved_names(
    __name__,
    {
        "pixel_model": "pxpo_gym.backbones.unet:pixel_model",
        "FLUX_GUIDANCE": "pxpo_gym.backbones.flux:FLUX_GUIDANCE",
    },
)
