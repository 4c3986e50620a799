"""What a backbone plug-in is: how the env loads a kind of denoising network, calls it and exports it.

A backbone is a ``Backbone`` subclass (its hooks are classmethods: a backbone holds no state; the
network itself lives in ``NoiseModel.net``). ``pxpo_gym.backbones`` registers the built-ins and yours.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from pxpo_gym.loading import LATENT_EXTRA_HINT, size_pair

if TYPE_CHECKING:
    from pxpo_gym.models import LoadedModel, NoiseModel


class Backbone:
    """A kind of denoising network: the hooks ``NoiseModel``, ``load_model`` and ``agents.export`` call.

    Subclass it, set the class attributes and define ``forward`` and ``load`` (and the export hooks if
    runs on it are exported), then ``pxpo_gym.backbones.register_backbone`` it.
    """

    name: ClassVar[str]
    """The registry key, kept as ``NoiseModel.backbone``."""
    component: ClassVar[str] = "unet"
    """The pipeline component (and subfolder) holding the network; LoRA files key its adapters under it."""
    pipeline_classes: ClassVar[tuple[str, ...]] = ()
    """The diffusers pipeline classes (a model_index.json's ``_class_name``) that load with this backbone."""
    takes_prompts: ClassVar[bool] = False
    """True for text-to-image pipelines: ``load_model`` then requires ``prompts``."""
    flow_grid: ClassVar[str] = "flux"
    """A flow-matching scheduler with dynamic shifting: whose sigma grid the flow sampler uses, 'flux'
    (FluxPipeline's) or 'sd3' (StableDiffusion3Pipeline's; ``pxpo_gym.flow.FlowSchedule``)."""
    export_format: ClassVar[str] = "pipeline"
    """The ``format`` an export of the whole pipeline records in its ``pxpo_gym.json``."""

    @classmethod
    def check(cls, prompt_embeds: torch.Tensor | None, pooled_embeds: torch.Tensor | None) -> None:
        """Refuses conditioning a ``NoiseModel`` of this backbone cannot be called with (ValueError)."""

    @classmethod
    def forward(
        cls, model: NoiseModel, sample: torch.Tensor, timestep: torch.Tensor, context: Any
    ) -> torch.Tensor:
        """The network's raw output on ``model``'s inputs, float32 (``NoiseModel.forward`` then turns a
        v-prediction into eps).

        Args:
            model: the ``NoiseModel`` (its ``net``, ``compute_dtype``, ``prompt_embeds``, ...).
            sample: x_t, (B, C, h, w).
            timestep: (B,) what the model is called with.
            context: class or prompt ids, (B,) or (B, 1) int64, or None.
        """
        raise NotImplementedError

    @classmethod
    def load(
        cls,
        source: str,
        location: str,
        device: torch.device | str,
        dtype: torch.dtype,
        prompts: tuple[str, ...] | None,
        resolution: Any,
        decode_chunk_size: int | None,
        index: dict[str, Any],
    ) -> LoadedModel:
        """Loads the model at ``location`` (a folder or hub id; ``source`` is what the user named, for
        messages; ``index`` its model_index.json, {} without one). ``prompts`` is given exactly when
        ``takes_prompts``.

        Raises:
            ValueError: files that cannot be loaded, or a resolution the model cannot make.
        """
        raise NotImplementedError

    @classmethod
    def export_pipeline(cls, net: torch.nn.Module, loaded: LoadedModel) -> Any:
        """The diffusers pipeline to save as an export: ``loaded``'s with ``net`` (a plain diffusers
        module, LoRA merged) as its network; ``agents.export`` calls its ``save_pretrained``."""
        raise NotImplementedError(f"backbone {cls.name!r} does not export")

    @classmethod
    def save_lora(cls, folder: Path, layers: dict[str, torch.Tensor], weight_name: str) -> None:
        """Writes LoRA adapter ``layers`` (peft's state dict of the network) as the diffusers LoRA file
        ``folder / weight_name`` that the pipeline's own ``load_lora_weights`` reads."""
        raise NotImplementedError(
            f"backbone {cls.name!r} has no LoRA file format: merge the adapters instead"
        )


class PipelineExport:
    """The export hooks of a latent text-to-image backbone (a mixin, listed before the ``Backbone`` it
    extends): the base pipeline reloaded with the trained network as its ``component``, and the
    pipeline's own LoRA file format (adapters keyed under ``component``)."""

    component: ClassVar[str]

    @classmethod
    def pipeline_class(cls) -> Any:
        """The diffusers pipeline class (its ``save_lora_weights`` writes the LoRA file)."""
        raise NotImplementedError

    @classmethod
    def export_components(cls, base: str) -> dict[str, Any]:
        """Further keyword arguments of the base pipeline's ``from_pretrained`` in ``export_pipeline``."""
        return {}

    @classmethod
    def export_pipeline(cls, net: torch.nn.Module, loaded: LoadedModel) -> Any:
        from diffusers import DiffusionPipeline

        base = loaded.location or loaded.source
        return DiffusionPipeline.from_pretrained(base, **{cls.component: net}, **cls.export_components(base))

    @classmethod
    def save_lora(cls, folder: Path, layers: dict[str, torch.Tensor], weight_name: str) -> None:
        cls.pipeline_class().save_lora_weights(
            folder,
            **{f"{cls.component}_lora_layers": layers},
            weight_name=weight_name,
            safe_serialization=True,
        )


def context_ids(context: Any, sample: torch.Tensor) -> torch.Tensor:
    """A conditional model's context ids, (B,) on ``sample``'s device (one id broadcast to the batch).

    Raises:
        ValueError: no context.
    """
    if context is None:
        raise ValueError("this model is conditional: pass context (B,) int64")
    return torch.as_tensor(context, device=sample.device).reshape(-1).expand(sample.shape[0])


def latent_size(
    source: str, resolution: Any, latent_size: Any, vae_factor: int, multiple: int, what: str
) -> tuple[int, int]:
    """The image size a latent pipeline makes: ``resolution`` or its own, checked against ``multiple``.

    Raises:
        ValueError: a height or width that is not a multiple of ``multiple``.
    """
    base = size_pair(latent_size)
    image_size = (
        size_pair(resolution) if resolution is not None else (base[0] * vae_factor, base[1] * vae_factor)
    )
    if image_size[0] % multiple or image_size[1] % multiple:
        raise ValueError(
            f"resolution={resolution!r} does not fit model={source!r}: height and width must be "
            f"multiples of {multiple} (VAE downsampling {vae_factor}x, then {what})"
        )
    return image_size


def require_transformers(source: str) -> None:
    """Refuses a latent pipeline without transformers, naming the extra that brings it."""
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise ImportError(
            f"model={source!r} is a latent text-to-image pipeline; loading it needs transformers: "
            f"{LATENT_EXTRA_HINT}"
        ) from err
