"""Noise models: the embedded default, loading diffusers folders, and the eps interface.

Every model the env uses is wrapped in ``NoiseModel``: a ``torch.nn.Module``
callable as ``model(sample, timestep, context) -> eps`` on the env's own
observation tensors. Loading goes through diffusers' ``from_pretrained`` with
``use_safetensors=True``, so no weights file is ever unpickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

DEFAULT_MODEL_NAME = "default"
MODEL_NAMES: tuple[str, ...] = (DEFAULT_MODEL_NAME,)
METADATA_FILE = "pxpo_gym.json"
"""Optional file in a model folder: ``{"context_names": [...], "null_context": k}``."""


def embedded_model_path(name: str = DEFAULT_MODEL_NAME) -> Path:
    """Folder of an embedded model shipped inside the package."""
    return Path(str(resources.files("pxpo_gym") / "assets" / f"{name}-model"))


def default_unet_config(image_size: int = 16, num_classes: int = 4) -> dict[str, Any]:
    """UNet2DModel config of the embedded default (about 1.1M parameters).

    Attention sits at the lowest resolution only: at 16x16 or 32x32 it would
    dominate CPU time. One extra class embedding (index ``num_classes``) is the
    "no context" label used for classifier-free guidance.
    """
    return dict(
        sample_size=image_size,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        attention_head_dim=32,
        num_class_embeds=num_classes + 1,
    )


class NoiseModel(torch.nn.Module):
    """A diffusers UNet2DModel seen as ``eps = model(sample, timestep, context)``.

    Args:
        unet: a ``diffusers.UNet2DModel``; class-conditional if it has class embeddings.
        alphas_cumprod: (num_train_timesteps,) training schedule, used to turn a
            v-prediction into eps.
        prediction_type: "epsilon" or "v_prediction" (the scheduler's setting).
        dtype: compute dtype of the network; inputs are cast to it, eps is returned float32.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
        self.unet = unet
        self.prediction_type = prediction_type
        self.compute_dtype = dtype
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        num_embeds = getattr(unet.config, "num_class_embeds", None)
        self.conditional = num_embeds is not None

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        context: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Predicts the noise in ``sample``.

        Args:
            sample: x_t, (B, C, H, W) float.
            timestep: training-schedule timesteps, int, (B,) or (B, 1) int64.
            context: class ids, (B,) or (B, 1) int64; ignored by unconditional models.

        Returns:
            eps, (B, C, H, W) float32.
        """
        batch = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        labels = None
        if self.conditional:
            if context is None:
                raise ValueError("this model is class-conditional: pass context (B,) int64")
            labels = torch.as_tensor(context, device=sample.device).reshape(-1).expand(batch)
        out = self.unet(sample.to(self.compute_dtype), t, class_labels=labels).sample.float()
        if self.prediction_type == "v_prediction":
            # v = sqrt(abar) eps - sqrt(1 - abar) x0  =>  eps = sqrt(abar) v + sqrt(1 - abar) x_t
            abar = self.alphas_cumprod[t].reshape(batch, 1, 1, 1)
            out = abar.sqrt() * out + (1 - abar).sqrt() * sample.float()
        return out


@dataclass
class LoadedModel:
    """What the env needs from a model.

    Attributes:
        noise_model: the ``NoiseModel`` (eval mode, no grad requirements changed).
        scheduler: the diffusers scheduler from the folder (training schedule).
        sample_shape: (C, h, w) of x_t.
        image_size: (H, W) of the decoded RGB image.
        context_names: one name per context id (a single "none" for unconditional models).
        null_context: class id meaning "no context" (for guidance), or None.
        source: what was loaded (name or path), for messages.
    """

    noise_model: NoiseModel
    scheduler: Any
    sample_shape: tuple[int, int, int]
    image_size: tuple[int, int]
    context_names: tuple[str, ...]
    null_context: int | None
    source: str

    @property
    def num_contexts(self) -> int:
        return len(self.context_names)

    def decode(self, sample: torch.Tensor) -> torch.Tensor:
        """Pixel models: x_0 in [-1, 1] -> RGB image (B, 3, H, W) in [0, 1]."""
        return ((sample.float() + 1) / 2).clamp(0, 1)


def _read_metadata(folder: Path | None, num_class_embeds: int | None) -> tuple[tuple[str, ...], int | None]:
    meta: dict[str, Any] = {}
    if folder is not None and (folder / METADATA_FILE).is_file():
        try:
            meta = json.loads((folder / METADATA_FILE).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(
                f"model folder {str(folder)!r}: {METADATA_FILE} is not valid JSON: {err}"
            ) from err
    if num_class_embeds is None:
        return ("none",), None
    names = meta.get("context_names") or [f"class_{k}" for k in range(num_class_embeds)]
    null = meta.get("null_context")
    if len(names) > num_class_embeds or (null is not None and not 0 <= null < num_class_embeds):
        raise ValueError(
            f"model folder {str(folder)!r}: {METADATA_FILE} names {len(names)} contexts "
            f"(null_context={null}) but the UNet has {num_class_embeds} class embeddings"
        )
    return tuple(names), null


def load_model(
    model: str | Path = DEFAULT_MODEL_NAME,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """Loads a pixel-space diffusers model by embedded name, local folder or hub id.

    The folder layout is diffusers' pipeline layout (``unet/`` with a
    UNet2DModel and ``scheduler/`` with a scheduler config), as written by
    ``DDPMPipeline.save_pretrained``. Weights must be safetensors.

    Args:
        model: ``"default"`` (the embedded model), a folder path, or a hub id.
        device: where the model lives.
        dtype: compute dtype (float32, float16 or bfloat16).

    Raises:
        ValueError: unknown name, missing or corrupt files, unsupported dtype.
    """
    from diffusers import DDPMScheduler, UNet2DModel

    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"dtype must be torch.float32, float16 or bfloat16, got dtype={dtype}")
    source = str(model)
    if source in MODEL_NAMES:
        location: str = str(embedded_model_path(source))
    elif Path(source).exists():
        location = source
        if not Path(source).is_dir():
            raise ValueError(f"model={source!r} is a file; expected a diffusers model folder")
    elif "/" in source and not source.startswith((".", "/")) and source.count("/") == 1:
        location = source  # a hub id: diffusers resolves it (offline mode fails fast)
    else:
        raise ValueError(
            f"model={source!r} is not a known name ({', '.join(MODEL_NAMES)}), "
            "an existing folder, or a hub id of the form 'owner/name'"
        )
    try:
        unet = UNet2DModel.from_pretrained(
            location, subfolder="unet", use_safetensors=True, torch_dtype=dtype
        )
        scheduler = DDPMScheduler.from_pretrained(location, subfolder="scheduler")
    except Exception as err:  # diffusers raises OSError, ValueError, SafetensorError, HF errors
        raise ValueError(
            f"model={source!r}: could not load a UNet2DModel (unet/, safetensors weights) and a "
            f"scheduler (scheduler/) from {location!r}: {type(err).__name__}: {err}"
        ) from err
    folder = Path(location) if Path(location).is_dir() else None
    names, null = _read_metadata(folder, unet.config.num_class_embeds)
    if unet.config.in_channels != 3 or unet.config.out_channels != 3:
        raise ValueError(
            f"model={source!r}: a pixel model must have 3 input and output channels (RGB), got "
            f"{unet.config.in_channels} and {unet.config.out_channels}"
        )
    unet = unet.to(device=device).eval()
    noise_model = NoiseModel(
        unet, scheduler.alphas_cumprod, scheduler.config.prediction_type, dtype=dtype
    ).to(device)
    size = unet.config.sample_size
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    return LoadedModel(
        noise_model=noise_model,
        scheduler=scheduler,
        sample_shape=(unet.config.in_channels, height, width),
        image_size=(height, width),
        context_names=names,
        null_context=null,
        source=source,
    )
