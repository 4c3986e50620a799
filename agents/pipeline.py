"""``TrainedPipeline``: a pixel model's export (``RUN/model``) as a diffusers pipeline that samples exactly as
training did.

    from .pipeline import TrainedPipeline

    pipeline = TrainedPipeline.from_pretrained("runs/pxpo-is-color-seed0/model")
    images = pipeline(class_labels=[0, 1, 2, 3], seed=1_000_003).images   # (4, 3, H, W) in [0, 1]

diffusers' own ``DDPMPipeline`` loads the same folder, but samples with its DDPM loop (and no class
labels); a hand-written DDIM loop with diffusers' scheduler defaults to eta 0. Training sampled with the
run's sampler (DDIM at the run's eta, or the flow model's SDE/CPS step at its noise level, guided at the
run's guidance scale), image i of a
batch seeded ``seed + i`` (x_T and every step's noise from that one generator, as the env draws them),
and, for a run that pinned pixels (PXPO's), those pixels pinned to the pretrained model's trajectory.
This pipeline is that sampler: it runs the env's own rollout (``pxpo_gym.sampling.rollout``) on its
modules, with the run's settings read from the export's ``pxpo_gym.json`` unless given, and the pin
applied against the model the run was fine-tuned from (``pinned_pixels='off'``: the weights alone). So
``pipeline(class_labels, seed=1_000_003 + s)`` reproduces the held-out images of a run with ``seed=s``
and ``agents.evaluate``'s (tested to 1e-5).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from pxpo_gym.backbones.unet import pixel_model
from pxpo_gym.deprecation import renamed_keywords
from pxpo_gym.loading import read_metadata
from pxpo_gym.sampling import rollout
from pxpo_gym.vector_env import DiffusionDenoiseVectorEnv


class TrainedPipeline(DiffusionPipeline):
    """A pixel export of ``agents.train`` (a ``UNet2DModel`` and its scheduler), sampled as training did."""

    model_cpu_offload_seq = "unet"

    def __init__(self, unet: Any, scheduler: Any) -> None:
        super().__init__()
        self.register_modules(unet=unet, scheduler=scheduler)

    @property
    def folder(self) -> str | None:
        """The export folder this pipeline was loaded from (None if built in memory)."""
        name = getattr(self.config, "_name_or_path", None)
        return name if name and Path(name).is_dir() else None

    def run_settings(self) -> dict[str, Any]:
        """The run's config as the export records it ({} without one)."""
        return read_metadata(self.folder).get("run", {}).get("config", {}) if self.folder else {}

    @torch.no_grad()
    @renamed_keywords(held_pixels="pinned_pixels")
    def __call__(
        self,
        class_labels: list[int] | torch.Tensor | None = None,
        num_images: int | None = None,
        seed: int | list[int] = 0,
        num_inference_steps: int | None = None,
        eta: float | None = None,
        noise_level: float | None = None,
        transition: str | None = None,
        guidance_scale: float | None = None,
        pinned_pixels: Literal["auto", "off"] = "auto",
        output_type: Literal["pt", "pil"] = "pt",
    ) -> ImagePipelineOutput:
        """Draws one image per class label (or ``num_images`` for an unconditional model).

        Args:
            class_labels: the context id of each image.
            num_images: without class labels: how many images.
            seed: image i's generator is seeded ``seed + i`` (or one seed per image), as the env's slot i.
            num_inference_steps, eta, noise_level, transition: the sampler; left out, the run's own
                (``pxpo_gym.vector_env.run_sampler``: eta / noise level / transition whole or not at all).
            guidance_scale: classifier-free guidance (``pxpo_gym.guidance``); left out, the run's own.
            pinned_pixels: 'auto' pins the export's pinned pixels (if it has any) to the model it was
                fine-tuned from, as training did; 'off' samples the weights alone.
            output_type: 'pt' (a (N, 3, H, W) float tensor in [0, 1]) or 'pil'.

        Raises:
            ValueError: neither or both of class_labels and num_images, bad labels or settings.
        """
        if pinned_pixels not in ("auto", "off"):
            raise ValueError(f"pinned_pixels must be 'auto' or 'off', got pinned_pixels={pinned_pixels!r}")
        if output_type not in ("pt", "pil"):
            raise ValueError(f"output_type must be 'pt' or 'pil', got output_type={output_type!r}")
        if (class_labels is None) == (num_images is None):
            raise ValueError("give class_labels (one per image) or, for an unconditional model, num_images")
        labels = None if class_labels is None else torch.as_tensor(class_labels).reshape(-1)
        count = int(labels.numel()) if labels is not None else int(num_images)
        folder = self.folder
        loaded = pixel_model(self.unet, self.scheduler, folder or "TrainedPipeline", folder, self.device)
        # the env's own sampler: the export's settings where none is given (run_sampler) and its pin (if any)
        # applied against its base, as training did
        sampler = dict(num_inference_steps=num_inference_steps, eta=eta, noise_level=noise_level)
        envs = DiffusionDenoiseVectorEnv(
            count,
            loaded,
            device=self.device,
            pinned_pixels=pinned_pixels,
            transition=transition,
            guidance_scale=guidance_scale,
            **sampler,
        )
        options = None if labels is None else {"context": labels.to(self.device)}
        episode = rollout(envs, envs.policy(), seed=seed, options=options)
        images = episode.images.cpu()
        if output_type == "pil":
            return ImagePipelineOutput(images=self.numpy_to_pil(images.permute(0, 2, 3, 1).numpy()))
        return ImagePipelineOutput(images=images)
