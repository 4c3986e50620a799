"""Advantage normalisation with a running per-context buffer (DDPO's per-prompt stat tracker).

DDPO (arXiv 2305.13301, official code) normalises each reward by the mean and
standard deviation of the recent rewards of the same prompt, once that prompt
has been seen ``min_count`` times; before that it uses the current batch's
statistics. ``ContextStats`` does the same for values of any shape: scalars for
DDPO, (H, W) reward maps for PXPO, where the mean is then per pixel and the
standard deviation one of (``std_mode``):

- ``"pixel"``: per pixel. A pixel whose reward barely varies (a background
  pixel that the segmentation net always calls background) gets a tiny std, so
  its noise is blown up to the same size as the informative pixels' advantages.
- ``"pooled"``: one std per context, the root mean over pixels of the per-pixel
  variances. Pixels keep their relative importance: a pixel whose reward varies
  little gets small advantages.
- ``"floored"``: per pixel, but at least the pooled std.
"""

from __future__ import annotations

import torch

STD_EPS = 1e-6
"""Added to the standard deviation, as in DDPO's reference code."""
STD_MODES = ("pixel", "pooled", "floored")


class ContextStats:
    """Ring buffers of the last ``buffer_size`` values seen for each context.

    Args:
        num_contexts: number of context ids (classes or prompts).
        buffer_size: values kept per context.
        min_count: values a context needs before its own statistics replace the batch's.
        value_shape: shape of one value: () for scalar rewards, (H, W) for reward maps.
        std_mode: "pixel", "pooled" or "floored" (module docstring); the same for scalars.
    """

    def __init__(
        self,
        num_contexts: int,
        buffer_size: int,
        min_count: int,
        value_shape: tuple[int, ...] = (),
        std_mode: str = "pixel",
    ) -> None:
        if buffer_size < 1 or not 1 <= min_count <= buffer_size:
            raise ValueError(
                f"need buffer_size >= 1 and 1 <= min_count <= buffer_size, got "
                f"buffer_size={buffer_size}, min_count={min_count}"
            )
        if std_mode not in STD_MODES:
            raise ValueError(f"std_mode must be one of {STD_MODES}, got std_mode={std_mode!r}")
        self.std_mode = std_mode
        self.buffer_size = buffer_size
        self.min_count = min_count
        # Each context's newest values sit at the end of its row.
        self.buffer = torch.zeros(num_contexts, buffer_size, *value_shape)
        self.count = torch.zeros(num_contexts, dtype=torch.int64)

    def update(self, contexts: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Adds a batch to the buffers and returns its normalised values.

        Args:
            contexts: (N,) int64 context ids.
            values: (N, *value_shape) rewards.

        Returns:
            (N, *value_shape) float32: (value - mean) / (std + 1e-6), with the
            context's buffer statistics (this batch included) when the context
            has at least ``min_count`` values, else the whole batch's statistics.
        """
        values = values.detach().float().cpu()
        contexts = contexts.detach().cpu()
        batch_mean, batch_std = values.mean(dim=0), self._std(values)
        out = torch.empty_like(values)
        for ctx in contexts.unique().tolist():  # a loop over contexts, not samples
            chosen = contexts == ctx
            new = values[chosen]
            self.buffer[ctx] = torch.cat([self.buffer[ctx], new])[-self.buffer_size :]
            self.count[ctx] += new.shape[0]
            filled = int(min(self.count[ctx], self.buffer_size))
            if filled >= self.min_count:
                recent = self.buffer[ctx, -filled:]
                mean, std = recent.mean(dim=0), self._std(recent)
            else:
                mean, std = batch_mean, batch_std
            out[chosen] = (new - mean) / (std + STD_EPS)
        return out

    def _std(self, values: torch.Tensor) -> torch.Tensor:
        """(n, *value_shape) -> the std used to normalise, broadcastable to one value."""
        std = values.std(dim=0, unbiased=False)
        if self.std_mode == "pixel" or std.ndim == 0:
            return std
        pooled = std.square().mean().sqrt()
        return pooled.expand_as(std) if self.std_mode == "pooled" else std.clamp(min=float(pooled))

    def silent(self, tolerance: float) -> torch.Tensor:
        """(num_contexts, *value_shape) bool: values whose std over the context's recent values is at
        most ``tolerance`` x the context's pooled std (and contexts with fewer than 2 values: none)."""
        out = torch.zeros(self.buffer.shape[:1] + self.buffer.shape[2:], dtype=torch.bool)
        for ctx in range(self.buffer.shape[0]):
            filled = int(min(self.count[ctx], self.buffer_size))
            if filled < 2:
                continue
            std = self.buffer[ctx, -filled:].std(dim=0, unbiased=False)
            pooled = std.square().mean().sqrt()
            out[ctx] = std <= tolerance * pooled
        return out

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"buffer": self.buffer.clone(), "count": self.count.clone()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if state["buffer"].shape != self.buffer.shape:
            raise ValueError(
                f"stat buffer shape {tuple(state['buffer'].shape)} does not match {tuple(self.buffer.shape)}"
            )
        self.buffer = state["buffer"].clone()
        self.count = state["count"].clone()
