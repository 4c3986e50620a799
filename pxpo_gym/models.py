"""What a model is to the env: the eps interface (``NoiseModel``) and what loading yields (``LoadedModel``).

Every model the env uses is wrapped in ``NoiseModel``: a ``torch.nn.Module``
callable as ``model(sample, timestep, context) -> eps`` on the env's own
observation tensors, where ``context`` is a class id or, for text models, the
index of a prompt whose embedding the model holds. Where models come from
(the embedded default, diffusers folders, hub ids, latent pipelines) is
``pxpo_gym.loading``. The one dtype parser of the package is ``parse_dtype``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

DEFAULT_MODEL_NAME = "default"
FLOW_MODEL_NAME = "default-flow"
"""The embedded rectified-flow twin of the default model (the same data and UNet; predicts velocity)."""
MODEL_NAMES: tuple[str, ...] = (DEFAULT_MODEL_NAME, FLOW_MODEL_NAME)
METADATA_FILE = "pxpo_gym.json"
"""Optional file in a model folder: ``{"context_names": [...], "null_context": k}``."""
BACKBONES = ("unet", "sd3", "flux")
"""Denoising networks ``NoiseModel`` calls: a diffusers UNet, or an SD3 / FLUX pipeline's transformer."""
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
"""The model compute precisions the env supports, by name."""


def parse_dtype(dtype: torch.dtype | str, name: str = "dtype") -> torch.dtype:
    """A dtype name or torch dtype -> one of ``DTYPES``' torch dtypes.

    Raises:
        ValueError: anything else, naming ``name`` and the value.
    """
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    raise ValueError(f"{name} must be one of {sorted(DTYPES)} (or the torch dtypes), got {name}={dtype!r}")


def embedded_model_path(name: str = DEFAULT_MODEL_NAME) -> Path:
    """Folder of an embedded model shipped inside the package."""
    return Path(str(resources.files("pxpo_gym") / "assets" / f"{name}-model"))


PREDICTION_TYPES = ("epsilon", "v_prediction", "velocity")


class NoiseModel(torch.nn.Module):
    """A diffusers UNet (or an SD3 / FLUX transformer) seen as ``eps = model(sample, timestep, context)``.

    Args:
        unet: a ``diffusers.UNet2DModel`` (class-conditional if it has class
            embeddings) or, with ``prompt_embeds``, a ``UNet2DConditionModel``.
        alphas_cumprod: (num_train_timesteps,) training schedule, used to turn a
            v-prediction into eps (empty for flow models).
        prediction_type: "epsilon" or "v_prediction" (a DDPM-family scheduler's setting), or
            "velocity" (a flow-matching model: the output is the velocity noise - x_0, returned as is).
        dtype: compute dtype of the network; inputs are cast to it, eps is returned float32.
        prompt_embeds: (P, L, D) text-encoder states of P prompts, computed once;
            context k selects row k as the UNet's ``encoder_hidden_states``.
        backbone: ``"unet"`` (a diffusers UNet), or a flow-matching transformer in its
            pipeline's layout: ``"sd3"`` (SD3Transformer2DModel) or ``"flux"``
            (FluxTransformer2DModel: the env's (B, C, h, w) latents are packed into 2 x 2 patches
            for it and unpacked after, so the env and the agents see one latent grid).
        pooled_embeds: (P, D') pooled text states of the same prompts (SD3 and FLUX).
        guidance: FLUX models with guidance embeddings (FLUX.1-dev): the distilled guidance
            scale they are called with (FluxPipeline's default 3.5); None otherwise.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        dtype: torch.dtype = torch.float32,
        prompt_embeds: torch.Tensor | None = None,
        backbone: str = "unet",
        pooled_embeds: torch.Tensor | None = None,
        guidance: float | None = None,
    ) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got backbone={backbone!r}")
        if backbone != "unet" and (prompt_embeds is None or pooled_embeds is None):
            raise ValueError(f"backbone={backbone!r} needs prompt_embeds and pooled_embeds")
        self.unet = unet
        """The denoising network (a UNet, or the transformer of an SD3 or FLUX pipeline)."""
        self.backbone = backbone
        self.guidance = guidance
        self.prediction_type = prediction_type
        self.compute_dtype = dtype
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.register_buffer("prompt_embeds", prompt_embeds, persistent=False)
        self.register_buffer("pooled_embeds", pooled_embeds, persistent=False)
        num_embeds = getattr(unet.config, "num_class_embeds", None)
        self.conditional = num_embeds is not None or prompt_embeds is not None

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        context: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Predicts the noise in ``sample`` (a flow model: the velocity).

        Args:
            sample: x_t, (B, C, H, W) float.
            timestep: training-schedule timesteps, int, (B,) or (B, 1) int64 (flow models: sigma x
                num_train_timesteps, float).
            context: class or prompt ids, (B,) or (B, 1) int64; ignored by unconditional models.

        Returns:
            eps, (B, C, H, W) float32.
        """
        batch = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        if self.backbone != "unet":
            if context is None:
                raise ValueError("this model is conditional: pass context (B,) int64")
            ids = torch.as_tensor(context, device=sample.device).reshape(-1).expand(batch)
            return self._transformer(sample, t, ids)
        condition: dict[str, torch.Tensor] = {}
        if self.conditional:
            if context is None:
                raise ValueError("this model is conditional: pass context (B,) int64")
            ids = torch.as_tensor(context, device=sample.device).reshape(-1).expand(batch)
            if self.prompt_embeds is None:
                condition["class_labels"] = ids
            else:
                condition["encoder_hidden_states"] = self.prompt_embeds[ids].to(self.compute_dtype)
        out = self.unet(sample.to(self.compute_dtype), t, **condition).sample.float()
        if self.prediction_type == "v_prediction":
            # v = sqrt(abar) eps - sqrt(1 - abar) x0  =>  eps = sqrt(abar) v + sqrt(1 - abar) x_t
            abar = self.alphas_cumprod[t].reshape(batch, 1, 1, 1)
            out = abar.sqrt() * out + (1 - abar).sqrt() * sample.float()
        return out

    def _transformer(self, sample: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """The velocity of an SD3 or FLUX transformer, called as its diffusers pipeline calls it."""
        text = {
            "encoder_hidden_states": self.prompt_embeds[ids].to(self.compute_dtype),
            "pooled_projections": self.pooled_embeds[ids].to(self.compute_dtype),
        }
        if self.backbone == "sd3":  # StableDiffusion3Pipeline: timestep = sigma x 1000
            out = self.unet(hidden_states=sample.to(self.compute_dtype), timestep=t.float(), **text).sample
            return out.float()
        from diffusers import FluxPipeline

        batch, channels, height, width = sample.shape
        packed = FluxPipeline._pack_latents(sample.to(self.compute_dtype), batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(
            batch, height // 2, width // 2, sample.device, self.compute_dtype
        )
        text_ids = torch.zeros(text["encoder_hidden_states"].shape[1], 3, device=sample.device)
        guidance = (
            None if self.guidance is None else torch.full((batch,), self.guidance, device=sample.device)
        )
        out = self.unet(
            hidden_states=packed,
            timestep=t.float() / 1000,  # FluxPipeline: the transformer takes sigma itself
            guidance=guidance,
            txt_ids=text_ids.to(self.compute_dtype),
            img_ids=image_ids,
            **text,
        ).sample
        return FluxPipeline._unpack_latents(out, height, width, 1).float()


@dataclass
class LoadedModel:
    """What the env needs from a model.

    Attributes:
        noise_model: the ``NoiseModel`` (eval mode, no grad requirements changed).
        scheduler: the diffusers scheduler from the folder (training schedule).
        sample_shape: (C, h, w) of x_t.
        image_size: (H, W) of the decoded RGB image.
        context_names: one name per context id (a single "none" for unconditional models).
            For text-to-image pipelines these are the prompts themselves.
        null_context: class id meaning "no context" (for guidance), or None. For
            text-to-image pipelines, the index of the empty prompt's embedding
            (one past the last real prompt).
        source: what was loaded (name or path), for messages.
        location: where diffusers loaded it from (a folder or hub id); exports point back to it.
        vae: the AutoencoderKL of a latent pipeline; None for pixel models.
        decode_chunk_size: latent models decode at most this many samples per VAE
            call (memory); None decodes a batch at once.
        schedule_shift_mu: flow-matching schedulers with resolution-dependent shifting
            (FLUX's ``use_dynamic_shifting``): the shift ``mu`` for this model's image size,
            as FluxPipeline computes it; None otherwise.
    """

    noise_model: NoiseModel
    scheduler: Any
    sample_shape: tuple[int, int, int]
    image_size: tuple[int, int]
    context_names: tuple[str, ...]
    null_context: int | None
    source: str
    location: str | None = None
    vae: Any = None
    decode_chunk_size: int | None = None
    schedule_shift_mu: float | None = None

    @property
    def num_contexts(self) -> int:
        return len(self.context_names)

    @property
    def is_flow(self) -> bool:
        """True for flow-matching models: the action is the velocity, the sampler ``pxpo_gym.flow``."""
        return self.noise_model.prediction_type == "velocity"

    @property
    def is_latent(self) -> bool:
        """True for latent text-to-image pipelines (decoded by a VAE, prompts as contexts)."""
        return self.vae is not None

    @property
    def prompts(self) -> tuple[str, ...] | None:
        """The prompt of each context id (text-to-image pipelines), else None."""
        return self.context_names if self.is_latent else None

    def decode(self, sample: torch.Tensor) -> torch.Tensor:
        """x_0 -> RGB images (B, 3, H, W) float32 in [0, 1].

        Differentiable in ``sample`` (the VAE's weights are frozen): the exact-gradient
        baseline backpropagates through it.

        Pixel models: x_0 in [-1, 1] is the image. Latent models: the VAE decodes
        x_0 / scaling_factor, ``decode_chunk_size`` samples per call.
        """
        if self.vae is None:
            return ((sample.float() + 1) / 2).clamp(0, 1)
        config = self.vae.config
        latents = sample / config.scaling_factor + (getattr(config, "shift_factor", None) or 0.0)
        chunk = self.decode_chunk_size or max(1, latents.shape[0])
        images = [self.vae.decode(part.to(self.vae.dtype)).sample.float() for part in latents.split(chunk)]
        return ((torch.cat(images) + 1) / 2).clamp(0, 1)
