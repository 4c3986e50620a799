"""What a model is to the env: the model-output interface (``NoiseModel``) and what loading yields
(``LoadedModel``).

Every model the env uses is wrapped in ``NoiseModel``: a ``torch.nn.Module``
callable as ``model(sample, timestep, context) -> model_output`` (a noise prediction
eps, or a flow model's velocity: the env's action) on the env's own observation
tensors, where ``context`` is a class id or, for text models, the index of a prompt
whose embedding the model holds. How each kind of network is called, loaded and
exported is its backbone plug-in (``pxpo_gym.backbones``); where models come from
(the embedded default, diffusers folders, hub ids, latent pipelines) is
``pxpo_gym.loading``. The one dtype parser of the package is ``parse_dtype``.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from pxpo_gym.deprecation import renamed_keywords, warn_renamed

DEFAULT_MODEL_NAME = "default"
FLOW_MODEL_NAME = "default-flow"
"""The embedded rectified-flow twin of the default model (the same data and UNet; predicts velocity)."""
MODEL_NAMES: tuple[str, ...] = (DEFAULT_MODEL_NAME, FLOW_MODEL_NAME)
METADATA_FILE = "pxpo_gym.json"
"""Optional file in a model folder: ``{"context_names": [...], "null_context": k}``."""
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
    """A denoising network seen as ``model_output = model(sample, timestep, context)``.

    Args:
        net: the network: a ``diffusers.UNet2DModel`` (class-conditional if it has class
            embeddings), with ``prompt_embeds`` a ``UNet2DConditionModel``, or an SD3 / FLUX
            pipeline's transformer (``backbone``). ``unet=`` is its old name (deprecated).
        alphas_cumprod: (num_train_timesteps,) training schedule, used to turn a
            v-prediction into eps (empty for flow models).
        prediction_type: "epsilon" or "v_prediction" (a DDPM-family scheduler's setting), or
            "velocity" (a flow-matching model: the output is the velocity noise - x_0, returned as is).
        dtype: compute dtype of the network; inputs are cast to it, the output is returned float32.
        prompt_embeds: (P, L, D) text-encoder states of P prompts, computed once;
            context k selects row k as the network's ``encoder_hidden_states``.
        backbone: the name of the backbone plug-in that calls ``net`` (``pxpo_gym.backbones.BACKBONES``):
            "unet" (a diffusers UNet), "sd" (Stable Diffusion's), "sd3" or "flux" (a flow-matching
            transformer in its pipeline's layout; FLUX's 2 x 2 latent packing is the backbone's, so
            the env and the agents see one latent grid), or a registered plug-in.
        pooled_embeds: (P, D') pooled text states of the same prompts (SD3 and FLUX).
        guidance: FLUX models with guidance embeddings (FLUX.1-dev): the distilled guidance
            scale they are called with (FluxPipeline's default 3.5); None otherwise.

    Raises:
        ValueError: an unknown prediction type or backbone (naming the allowed ones), or conditioning
            the backbone cannot be called with.
    """

    @renamed_keywords(unet="net")
    def __init__(
        self,
        net: torch.nn.Module,
        alphas_cumprod: torch.Tensor,
        prediction_type: str = "epsilon",
        dtype: torch.dtype = torch.float32,
        prompt_embeds: torch.Tensor | None = None,
        backbone: str = "unet",
        pooled_embeds: torch.Tensor | None = None,
        guidance: float | None = None,
    ) -> None:
        from pxpo_gym.backbones import get_backbone

        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        plugin = get_backbone(backbone)
        plugin.check(prompt_embeds, pooled_embeds)
        self.net = net
        """The denoising network (a UNet, or the transformer of an SD3 or FLUX pipeline)."""
        self.backbone = backbone
        """The backbone plug-in's name (``pxpo_gym.backbones``)."""
        self._backbone_plugin = plugin
        """The backbone plug-in class, resolved once here (``forward`` calls it every step)."""
        self.guidance = guidance
        self.prediction_type = prediction_type
        self.compute_dtype = dtype
        self.register_buffer("alphas_cumprod", alphas_cumprod.float(), persistent=False)
        self.register_buffer("prompt_embeds", prompt_embeds, persistent=False)
        self.register_buffer("pooled_embeds", pooled_embeds, persistent=False)
        num_embeds = getattr(net.config, "num_class_embeds", None)
        self.conditional = num_embeds is not None or prompt_embeds is not None

    OLD_PARAMETER_PREFIXES = {"unet.": "net."}
    """Parameter-name prefixes of checkpoints written before ``unet`` became ``net``, and their new ones."""

    @property
    def unet(self) -> torch.nn.Module:
        """The old name of ``net`` (deprecated)."""
        warn_renamed("NoiseModel.unet", "NoiseModel.net")
        return self.net

    def __setattr__(self, name: str, value: object) -> None:
        if name == "unet":  # torch.nn.Module would register a second submodule under the old name
            warn_renamed("NoiseModel.unet", "NoiseModel.net")
            name = "net"
        super().__setattr__(name, value)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | int,
        context: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        """Predicts the noise in ``sample`` (a flow model: the velocity): the model output.

        Args:
            sample: x_t, (B, C, H, W) float.
            timestep: training-schedule timesteps, int, (B,) or (B, 1) int64 (flow models: sigma x
                num_train_timesteps, float).
            context: class or prompt ids, (B,) or (B, 1) int64; ignored by unconditional models.

        Returns:
            The model output (eps, or the velocity), (B, C, H, W) float32.
        """
        batch = sample.shape[0]
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(batch)
        out = self._backbone_plugin.forward(self, sample, t, context)
        if self.prediction_type == "v_prediction":
            # v = sqrt(abar) eps - sqrt(1 - abar) x0  =>  eps = sqrt(abar) v + sqrt(1 - abar) x_t
            abar = self.alphas_cumprod[t].reshape(batch, 1, 1, 1)
            out = abar.sqrt() * out + (1 - abar).sqrt() * sample.float()
        return out


def current_parameter_name(name: str) -> str:
    """A ``NoiseModel`` parameter name as today's ``NoiseModel`` has it: one from a file written before a
    rename (``unet.*``, before ``net``) gets its new name; any other name is returned as it is."""
    for old, new in NoiseModel.OLD_PARAMETER_PREFIXES.items():
        if name.startswith(old):
            return new + name[len(old) :]
    return name


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
        sampler: the name of the sampler plug-in the env steps this model with
            (``pxpo_gym.samplers.SAMPLERS``); None: the first registered one for its prediction
            type (DDIM, or flow matching for a velocity).
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
    sampler: str | None = None

    @property
    def num_contexts(self) -> int:
        return len(self.context_names)

    @property
    def is_flow(self) -> bool:
        """True for flow-matching models: the action is the velocity, the sampler by default ``pxpo_gym.flow``."""
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
