"""What fine-tuning SD3.5-Medium and FLUX.1-dev with LoRA holds in GPU memory, computed from their transformer
configs on the meta device (no weights are downloaded or allocated).

    python -m benchmarks.performance.memory_table --out benchmarks/results/memory_table

Per model: parameters; the frozen base in bf16; the policy's base under the previous scheme (a float32 copy
of the whole model beside the env's) and today's (the env's own tensors, shared: 0 bytes); the LoRA adapters
(rank ``rank`` on the attention projections to_q / to_k / to_v / to_out.0, as Flow-GRPO) in float32 with
their gradients and AdamW's two moments; and an estimate of the activations one 512 x 512 image keeps for the
backward pass with gradient checkpointing (one bf16 hidden state per block for every token, image and text,
plus the largest block's own intermediates while it is recomputed, taken as 12 hidden states: attention's
q, k, v and output, the MLP's 4x expansion and the norms). The activation figure is arithmetic, not a
measurement (no GPU here); the parameter counts are exact for the configs below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

CONFIGS = {
    # stabilityai/stable-diffusion-3.5-medium, transformer/config.json (SD3Transformer2DModel, MMDiT-X)
    "sd3.5-medium": (
        "SD3Transformer2DModel",
        dict(
            sample_size=128,
            patch_size=2,
            in_channels=16,
            num_layers=24,
            attention_head_dim=64,
            num_attention_heads=24,
            joint_attention_dim=4096,
            caption_projection_dim=1536,
            pooled_projection_dim=2048,
            out_channels=16,
            pos_embed_max_size=384,
            dual_attention_layers=tuple(range(13)),
            qk_norm="rms_norm",
        ),
        333,  # text tokens: 77 CLIP + 256 T5
        2,  # latent patch
    ),
    # black-forest-labs/FLUX.1-dev, transformer/config.json (FluxTransformer2DModel)
    "flux.1-dev": (
        "FluxTransformer2DModel",
        dict(
            patch_size=1,
            in_channels=64,
            num_layers=19,
            num_single_layers=38,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=4096,
            pooled_projection_dim=768,
            guidance_embeds=True,
            axes_dims_rope=(16, 56, 56),
        ),
        512,  # T5 tokens
        2,  # the pipeline packs 2 x 2 latents
    ),
}
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
GIB = 2**30


@dataclass(frozen=True)
class MemoryTableConfig:
    """Memory of LoRA fine-tuning on SD3.5-Medium and FLUX.1-dev, from their configs (meta device)."""

    rank: int = 32
    """LoRA rank (Flow-GRPO's SD3.5 setting)."""
    resolution: int = 512
    """Image side in pixels (the VAE downsamples 8x)."""
    out: str = "benchmarks/results/memory_table"
    """Output folder (memory_table.json, memory_table.md)."""


def model_rows(cfg: MemoryTableConfig) -> list[dict[str, object]]:
    import diffusers

    rows = []
    for name, (class_name, config, text_tokens, patch) in CONFIGS.items():
        with torch.device("meta"):
            model = getattr(diffusers, class_name)(**config)
        params = sum(p.numel() for p in model.parameters())
        lora = 0
        for module_name, module in model.named_modules():
            if module_name.endswith(LORA_TARGETS) and isinstance(module, torch.nn.Linear):
                lora += cfg.rank * (module.in_features + module.out_features)
        blocks = config["num_layers"] + config.get("num_single_layers", 0)
        hidden = config["num_attention_heads"] * config["attention_head_dim"]
        tokens = (cfg.resolution // 8 // patch) ** 2 + text_tokens
        per_state = tokens * hidden * 2  # bf16
        rows.append(
            {
                "model": name,
                "class": class_name,
                "parameters": params,
                "base_bf16_gib": params * 2 / GIB,
                "previous_policy_copy_fp32_gib": params * 4 / GIB,
                "policy_base_now_gib": 0.0,
                "lora_parameters": lora,
                "lora_fp32_with_grads_and_adam_gib": lora * 4 * 4 / GIB,
                "tokens_per_image": tokens,
                "activations_per_image_gib_estimate": (blocks + 12) * per_state / GIB,
            }
        )
    return rows


def main(cfg: MemoryTableConfig) -> list[dict[str, object]]:
    from benchmarks.provenance import provenance

    rows = model_rows(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        **provenance("benchmarks.performance.memory_table"),
        "rank": cfg.rank,
        "resolution": cfg.resolution,
    }
    (out / "memory_table.json").write_text(json.dumps({**meta, "rows": rows}, indent=1) + "\n")
    lines = [
        f"LoRA rank {cfg.rank} on {', '.join(LORA_TARGETS)}, {cfg.resolution} px, bf16 base "
        f"(`python -m benchmarks.performance.memory_table`, commit {meta['commit']}; activations estimated, see the script).",
        "",
        "| model | parameters | base (bf16) | policy's base, before (fp32 copy) | policy's base, now | LoRA params "
        "| LoRA + grads + AdamW (fp32) | tokens / image | activations / image (checkpointing, estimate) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['parameters'] / 1e9:.2f} B | {r['base_bf16_gib']:.1f} GiB "
            f"| {r['previous_policy_copy_fp32_gib']:.1f} GiB | 0 (shared) | {r['lora_parameters'] / 1e6:.1f} M "
            f"| {r['lora_fp32_with_grads_and_adam_gib']:.2f} GiB | {r['tokens_per_image']} "
            f"| {r['activations_per_image_gib_estimate']:.2f} GiB |"
        )
    (out / "memory_table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows


if __name__ == "__main__":
    import tyro

    from pxpo_gym.cli import run

    run(lambda: main(tyro.cli(MemoryTableConfig)), "benchmarks.performance.memory_table")
