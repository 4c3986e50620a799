"""Trains the embedded default model and its segmentation network.

    python -m pxpo_gym.pretrain diffusion --image-size 16 --steps 5000
    python -m pxpo_gym.pretrain segmentation --steps 1500

Both train on freshly generated procedural data (``pxpo_gym.shapes``), so there
is nothing to download, and write safetensors into the default model's folder
(``pxpo_gym/assets/default-model``) unless ``--out`` says otherwise. The shipped
weights were made with the defaults below on a 2-core CPU.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from pxpo_gym.models import (
    DEFAULT_MODEL_NAME,
    FLOW_MODEL_NAME,
    METADATA_FILE,
    embedded_model_path,
)
from pxpo_gym.segmentation import SEGMENTATION_FILE, SegmentationNet, save_segmentation_net
from pxpo_gym.shapes import SHAPE_CLASSES, generate_shapes


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


OBJECTIVES = ("epsilon", "flow")


@dataclass(frozen=True)
class DiffusionConfig:
    """Train the class-conditional pixel DDPM (diffusers UNet2DModel), or with ``objective='flow'`` the
    rectified-flow twin (``model='default-flow'``)."""

    objective: str = "epsilon"
    """'epsilon' (DDPM: predict the noise; the default model) or 'flow' (rectified flow: predict the velocity
    v = noise - x_0 at x_sigma = (1 - sigma) x_0 + sigma noise, sigma logit-normal as SD3 trains; a
    FlowMatchEulerDiscreteScheduler folder)."""
    image_size: int = 16
    """Image height and width in pixels (16 is the CPU default; 32 costs ~4x per step)."""
    steps: int = 2400
    """Optimizer steps."""
    batch_size: int = 64
    """Images per step, generated fresh each step."""
    learning_rate: float = 1e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 0)."""
    uncond_prob: float = 0.1
    """Probability of replacing the label by the null class (enables classifier-free guidance)."""
    ema_decay: float = 0.999
    """Decay of the weight EMA that is saved."""
    seed: int = 0
    """Seed of the data generator and the initial weights."""
    threads: int = 2
    """torch CPU threads."""
    out: str = ""
    """Output folder; the embedded default (or default-flow) model's folder if empty."""


@dataclass(frozen=True)
class SegmentationConfig:
    """Train the per-pixel shape classifier used by the segmentation reward."""

    image_size: int = 16
    """Image height and width in pixels."""
    steps: int = 1500
    """Optimizer steps."""
    batch_size: int = 64
    """Images per step, generated fresh each step."""
    learning_rate: float = 2e-3
    """AdamW learning rate (cosine decay to 0)."""
    seed: int = 1
    """Seed of the data generator and the initial weights."""
    threads: int = 2
    """torch CPU threads."""
    out: str = ""
    """Output file; ``segmentation.safetensors`` in the default model's folder if empty."""


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _cosine_lr(step: int, total: int, warmup: int = 0) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + torch.cos(torch.tensor(progress * torch.pi)).item())


def train_diffusion(cfg: DiffusionConfig) -> Path:
    """Trains the UNet (the epsilon or the rectified-flow objective) and saves a DDPMPipeline-layout folder."""
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    if cfg.objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got objective={cfg.objective!r}")
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = _device()
    gen = torch.Generator().manual_seed(cfg.seed)
    num_classes = len(SHAPE_CLASSES)
    unet = UNet2DModel(**default_unet_config(cfg.image_size, num_classes)).to(device)
    if cfg.objective == "flow":
        # Unshifted: at 16x16 pixels there is little to gain from SD3's resolution shift.
        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0)
    else:
        scheduler = DDPMScheduler(
            num_train_timesteps=1000,
            beta_schedule="squaredcos_cap_v2",
            prediction_type="epsilon",
            clip_sample=False,
            # Stable Diffusion's sampling grid (t = 951, 901, ..., 1 for 20 steps). 'trailing'
            # would start at t = 999, where abar ~ 0 makes the first step's mean
            # a_t x_t + b_t eps with a_t = -b_t ~ 1e3: its log-likelihood then swamps
            # every policy gradient.
            timestep_spacing="leading",
            steps_offset=1,
        )
    alphas_cumprod = scheduler.alphas_cumprod.to(device) if cfg.objective == "epsilon" else None
    ema = EMAModel(unet.parameters(), decay=cfg.ema_decay)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, cfg.steps, warmup=200))
    start = time.perf_counter()
    bar = tqdm(range(cfg.steps), desc=f"diffusion ({cfg.objective})", unit="step")
    for _ in bar:
        batch = generate_shapes(cfg.batch_size, cfg.image_size, generator=gen)
        x0 = (batch.images * 2 - 1).to(device)  # (B, 3, H, W) in [-1, 1]
        labels = batch.labels.clone()
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.uncond_prob
        labels[drop] = num_classes
        noise = torch.randn(x0.shape, generator=gen).to(device)
        if cfg.objective == "flow":
            sigma = torch.sigmoid(torch.randn(cfg.batch_size, generator=gen)).to(device)  # logit-normal(0, 1)
            s = sigma.reshape(-1, 1, 1, 1)
            xt, target, t = (1 - s) * x0 + s * noise, noise - x0, sigma * 1000
        else:
            t = torch.randint(0, 1000, (cfg.batch_size,), generator=gen).to(device)
            abar = alphas_cumprod[t].reshape(-1, 1, 1, 1)
            xt, target = abar.sqrt() * x0 + (1 - abar).sqrt() * noise, noise
        loss = F.mse_loss(unet(xt, t, class_labels=labels.to(device)).sample, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        sched.step()
        ema.step(unet.parameters())
        bar.set_postfix(loss=f"{loss.item():.4f}")
    ema.copy_to(unet.parameters())
    from diffusers import DDPMPipeline

    name = FLOW_MODEL_NAME if cfg.objective == "flow" else DEFAULT_MODEL_NAME
    out = Path(cfg.out) if cfg.out else embedded_model_path(name)
    out.mkdir(parents=True, exist_ok=True)
    # A DDPMPipeline folder (unet/ + scheduler/): the flow model's scheduler/ names its flow scheduler.
    DDPMPipeline(unet=unet.cpu(), scheduler=scheduler).save_pretrained(out, safe_serialization=True)
    meta = {
        "context_names": list(SHAPE_CLASSES),
        "null_context": num_classes,
        "trained_with": dataclasses.asdict(cfg),
        "train_seconds": round(time.perf_counter() - start, 1),
        "device": str(device),
    }
    (out / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def train_segmentation(cfg: SegmentationConfig) -> Path:
    """Trains the per-pixel classifier with cross-entropy and saves safetensors."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = _device()
    gen = torch.Generator().manual_seed(cfg.seed)
    net = SegmentationNet(num_classes=len(SHAPE_CLASSES) + 1).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _cosine_lr(s, cfg.steps))
    bar = tqdm(range(cfg.steps), desc="segmentation", unit="step")
    for _ in bar:
        # Varied pixel noise makes the net robust to imperfect generated samples.
        noise_std = float(torch.rand((), generator=gen)) * 0.1
        batch = generate_shapes(cfg.batch_size, cfg.image_size, generator=gen, noise_std=noise_std)
        target = torch.where(batch.masks, batch.labels[:, None, None] + 1, 0)  # (B, H, W)
        loss = F.cross_entropy(net(batch.images.to(device)), target.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    out = Path(cfg.out) if cfg.out else embedded_model_path() / SEGMENTATION_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    save_segmentation_net(net.cpu(), out)
    return out


def main() -> None:
    import tyro

    cfg = tyro.extras.subcommand_cli_from_dict(
        {
            "diffusion": DiffusionConfig,
            "segmentation": SegmentationConfig,
        }
    )
    path = train_diffusion(cfg) if isinstance(cfg, DiffusionConfig) else train_segmentation(cfg)
    print(f"saved to {path}")


if __name__ == "__main__":
    from pxpo_gym.cli import run

    run(main, "pxpo_gym.pretrain")
