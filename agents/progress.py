"""What a training run shows while it works: a line before each phase that can take seconds, and an epoch
bar that moves within an epoch.

The bar counts epochs in fractions: each sampling batch and each optimiser step moves it by its share of the
epoch (``ticks_per_epoch``; the trainer calls ``Trainer.progress`` after each), so it moves every few seconds
rather than once per epoch; at an epoch's end it stands on the epoch's whole number and shows the epoch's
reward and approx_kl. Lines go to stdout through tqdm (the bar, on stderr, is redrawn below them), so a
command-line error stays one line on stderr (``pxpo_gym.cli``). Shown by the main rank with
``TrainConfig.progress``; silent otherwise. Nothing here changes what is trained or logged.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from tqdm import tqdm

BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total_fmt} epochs [{elapsed}<{remaining}{postfix}]"
"""tqdm's default layout with the epoch count to two decimals (it moves in fractions of an epoch)."""


def ticks_per_epoch(config: Any, samples_with_gradients: bool) -> int:
    """How often the trainer calls ``Trainer.progress`` in one epoch of ``config`` (a ``TrainConfig``): once
    per sampling batch and once per optimiser step; an algorithm that samples with gradients (the oracle)
    takes one optimiser step per train batch and no separate sampling."""
    updates = math.ceil(config.sampling.images_per_epoch / config.optimiser.train_batch_size)
    if samples_with_gradients:
        return updates
    return config.sampling.sample_batches_per_epoch + config.optimiser.inner_epochs * updates


class RunProgress:
    """The run's lines and its epoch bar.

    Args:
        enabled: show anything at all (the main rank, with ``progress``).
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.epoch = 0
        """The last whole epoch the bar stood on."""
        self.ticks = 1
        self.done = 0
        """Ticks of the epoch under way."""

    def say(self, line: str) -> None:
        """One line on stdout before a wait (above the bar, if one is open)."""
        if self.enabled:
            tqdm.write(line, file=sys.stdout)
            sys.stdout.flush()

    def open(self, total: int, initial: int, desc: str, ticks: int) -> None:
        """Opens the bar at epoch ``initial`` of ``total``, moving ``1 / ticks`` of an epoch per ``tick``."""
        self.bar = tqdm(
            total=total, initial=initial, desc=desc, bar_format=BAR_FORMAT, disable=not self.enabled
        )
        self.epoch, self.ticks, self.done = initial, max(1, ticks), 0

    def tick(self, what: str = "") -> None:
        """A sampling batch ('sample') or an optimiser step ('update') is done: the bar moves by its share,
        never past the epoch's end (``epoch_done`` puts it there, whatever an algorithm's count of ticks)."""
        if self.bar is None or self.bar.disable:
            return
        self.done += 1
        self.bar.update(self.epoch + min(self.done / self.ticks, 1.0) - self.bar.n)  # redrawn at tqdm's pace

    def note(self, text: str) -> None:
        """Shows what the run does between epochs (e.g. 'evaluating') in place of the last epoch's numbers."""
        if self.bar is not None and not self.bar.disable:
            self.bar.set_postfix_str(text)

    def epoch_done(self, epoch: int, metrics: dict[str, float]) -> None:
        """Puts the bar on ``epoch`` with the epoch's reward and approx_kl."""
        self.epoch, self.done = epoch, 0
        if self.bar is None or self.bar.disable:
            return
        self.bar.n = epoch
        self.bar.set_postfix(reward=f"{metrics['reward_mean']:.4f}", approx_kl=f"{metrics['approx_kl']:.2g}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
