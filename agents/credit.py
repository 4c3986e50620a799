"""Per-pixel credit that follows the reward: which pixels' log-likelihoods each reward pixel weights.

The score-function gradient of the mean reward R = (1/HW) sum_ij r_ij is

    grad J = E[ sum_t sum_kl grad log p(x_{t-1}^kl | x_t) * sum_ij r_ij ].

The cross term E[grad log p(x_{t-1}^kl) r_ij] vanishes when r_ij does not
depend on the noise drawn at pixel kl in step t. So pixel kl at step t only
needs the rewards of the pixels its noise reaches:

    A^t_kl = sum_ij K_t(kl, ij) A_ij.

K_t = 1 everywhere is DDPO's credit (unbiased, every pixel's noise in every
term); K_t = identity is pure PXPO (one term, biased wherever r_ij depends on
other pixels' noise). A K_t whose support covers the true dependence footprint
stays unbiased with fewer noise terms. The footprint depends on the step (late
noise reaches the image locally, early noise is spread by the denoiser over the
whole image) and on the reward (a conv net's receptive field, a whole-image
score), so it is measured, once per run, on the pretrained model:

    influence_t(o) = RMS over images and reward pixels p of || d r_{p+o} / d z_t^p ||_channels,

the dependence of the reward map on each step's unit noise z_t (x_{t-1} = mean +
sigma_t z_t), as a function of the offset o between the reward pixel and the noise
pixel (assumed translation invariant: a conv UNet and conv or per-pixel rewards
are). Differentiable rewards use autograd (one backward pass per batch, one
random reward pixel per image); others (JPEG size) finite-difference probes
(one noise pixel of one step perturbed per probe episode).

Credits (``CREDITS``):

- ``"pixel"``: identity (the paper's PXPO; what ``"checked"``, the default, trains with while its check passes).
- ``"image"``: DDPO's own image-level advantage at every pixel (all-ones kernel).
- ``"footprint"``: K_t(o) = influence_t(o) / max_o influence_t(o), entries below
  ``threshold`` dropped: each reward pixel credits the noise pixels in proportion
  to how strongly they reach it (biased towards the near pixels; the least noise).
- ``"support"``: K_t = 1 on the smallest set of offsets holding ``1 - threshold`` of
  the squared influence, 0 elsewhere: the unbiased superset form.
- ``"auto"``: ``"pixel"`` where the reward is pixel-local, ``"image"`` where it is not,
  decided once per run by ``reward_locality`` (the share of a reward map's response to a
  change at one pixel that falls on that pixel, at least ``LOCAL_SHARE`` for "pixel").
  Per-pixel credit wins on pixel-local rewards and, on a reward that judges a pixel by
  its surroundings (a segmentation net), falls behind DDPO's credit under the same loss
  (docs/defaults-history.md, "Credit chosen by the reward's locality").
- ``"checked"`` (PXPO's default): ``"pixel"`` while per-pixel credit agrees with the reward on the
  epoch's own images, ``"image"`` from the first epoch it does not (``agents.credit_check``): re-checked
  every epoch, because a reward whose pixels interact only once the images change passes a check made on
  the pretrained model's images and then collapses under per-pixel credit.
- ``"receptive"``: the last step's ``"footprint"`` kernel at every step. At the last
  step x_0 = mean + sigma z, so d r / d z = sigma d r / d x_0: its kernel is the
  reward's own receptive field (the identity for a pixel-local reward, a box for a
  conv net, everything for a whole-image score), without the denoiser's spreading.
  Biased like ``"pixel"`` at early steps, but it keeps the reward's own cross terms.

Kernel credits are rescaled per step to the per-pixel advantages' root mean square,
so every step's advantages keep one scale (the loss's step weights stay in charge
of how much each step counts). Where the reward is silent (a pixel whose reward
never varies) the advantage is 0 under every credit but ``"image"``;
``silent_kl_coef`` (``agents.algorithms.pxpo``) keeps those pixels near the pretrained model.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from tqdm import tqdm

from pxpo_gym.deprecation import moved_names
from pxpo_gym.rewards import pool_to_grid

CREDITS = ("pixel", "image", "footprint", "support", "receptive", "auto", "checked")
KERNEL_CREDITS = ("footprint", "support", "receptive")
"""Credits that need a measured footprint."""
EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Footprint:
    """The measured dependence of the reward map on each step's noise.

    Attributes:
        influence: (T, 2h - 1, 2w - 1) float32, CPU: RMS of d r_{p+o} / d z_t^p (channels
            combined) at offset o = (reward pixel - noise pixel); index (h - 1, w - 1) is o = 0.
            Step k is the k-th denoising step (noise index k + 1 of the env's episode noise).
        method: "autograd" or "probe".
        images: episodes measured.
        seconds: wall-clock cost of the measurement.
    """

    influence: torch.Tensor
    method: str
    images: int
    seconds: float

    def summary(self) -> dict:
        """Per step: the share of the influence at offset 0 and the radius holding 90% of it."""
        share, radius = [], []
        steps, kh, kw = self.influence.shape
        oy = torch.arange(kh)[:, None] - (kh - 1) // 2
        ox = torch.arange(kw)[None, :] - (kw - 1) // 2
        dist = torch.maximum(oy.abs(), ox.abs()).flatten()  # Chebyshev distance of each offset
        for t in range(steps):
            mass = self.influence[t].square().flatten()
            total = float(mass.sum())
            if total <= 0:
                share.append(0.0)
                radius.append(0)
                continue
            share.append(float(mass[dist == 0].sum()) / total)
            cumulative = torch.stack([mass[dist <= r].sum() for r in range(int(dist.max()) + 1)])
            radius.append(int((cumulative < 0.9 * total).sum()))
        return {
            "method": self.method,
            "images": self.images,
            "seconds": round(self.seconds, 3),
            "self_share": share,
            "radius90": radius,
        }


def credit_kernels(influence: torch.Tensor, credit: str, threshold: float) -> torch.Tensor:
    """(T, kh, kw) kernels of a kernel credit from a measured influence.

    Args:
        influence: (T, 2h - 1, 2w - 1) >= 0 (``Footprint.influence``).
        credit: "footprint", "support" or "receptive".
        threshold: "footprint" and "receptive": entries below threshold x the step's max are dropped;
            "support": the kernel covers 1 - threshold of the squared influence.

    Returns:
        (T, kh, kw) float32, each step's kernel 1 at its largest entry; a step whose
        influence is all 0 gets the identity (its credit is then pure PXPO's).

    Raises:
        ValueError: unknown credit, threshold outside [0, 1), influence of the wrong shape or negative.
    """
    if credit not in KERNEL_CREDITS:
        raise ValueError(f"credit must be one of {KERNEL_CREDITS} for a kernel, got credit={credit!r}")
    if not 0 <= threshold < 1:
        raise ValueError(f"credit_threshold must be in [0, 1), got credit_threshold={threshold}")
    if influence.ndim != 3 or influence.shape[1] % 2 == 0 or influence.shape[2] % 2 == 0:
        raise ValueError(f"influence must be (T, 2h - 1, 2w - 1), got shape {tuple(influence.shape)}")
    if not bool(torch.isfinite(influence).all()) or bool((influence < 0).any()):
        raise ValueError("influence must be finite and >= 0")
    steps, kh, kw = influence.shape
    if credit == "receptive":  # the last step's footprint kernel (the reward's own) at every step
        return credit_kernels(influence[-1:], "footprint", threshold).expand(steps, kh, kw).clone()
    kernels = torch.zeros(steps, kh, kw)
    for t in range(steps):
        inf = influence[t].float()
        top = float(inf.max())
        if top <= 0:
            kernels[t, (kh - 1) // 2, (kw - 1) // 2] = 1.0
            continue
        if credit == "footprint":
            kernel = inf / top
            kernels[t] = torch.where(kernel >= threshold, kernel, torch.zeros(()))
        else:
            mass = inf.square().flatten()
            order = torch.argsort(mass, descending=True)
            cumulative = torch.cumsum(mass[order], 0)
            # The smallest prefix holding 1 - threshold of the mass (at least the largest entry).
            keep = int((cumulative < (1 - threshold) * cumulative[-1]).sum()) + 1
            flat = torch.zeros(kh * kw)
            flat[order[:keep]] = 1.0
            kernels[t] = flat.view(kh, kw)
    return kernels


def apply_kernels(advantages: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Per-step credited advantages A^t_kl = sum_o K_t(o) A_{kl + o}, rescaled to A's RMS.

    Args:
        advantages: (N, h, w) per-pixel advantages.
        kernels: (T, 2h - 1, 2w - 1) per-step kernels over offsets (reward pixel - noise pixel).

    Returns:
        (N, T, h, w) float32: step t's credit, scaled so that its RMS over the batch equals
        the RMS of ``advantages`` (a step whose credit is all 0 stays 0).
    """
    n, h, w = advantages.shape
    if tuple(kernels.shape[1:]) != (2 * h - 1, 2 * w - 1):
        raise ValueError(
            f"kernels must be (T, {2 * h - 1}, {2 * w - 1}) for ({h}, {w}) maps, got {tuple(kernels.shape)}"
        )
    adv = advantages.float()
    # conv2d is a cross-correlation: out[y, x] = sum_{a, b} A[y + a - (h - 1), x + b - (w - 1)] K[a, b],
    # i.e. the kernel index (a, b) is the offset o = (a - (h - 1), b - (w - 1)) from the noise pixel.
    credited = torch.nn.functional.conv2d(
        adv[:, None], kernels.to(adv)[:, None], padding=(h - 1, w - 1)
    )  # (N, T, h, w)
    # Both RMS reduce contiguous (N, h, w) tensors the same way, so the identity kernel gives A back
    # bit for bit (scale exactly 1).
    target = adv.contiguous().square().mean().sqrt()
    rms = torch.stack([credited[:, t].contiguous().square().mean().sqrt() for t in range(credited.shape[1])])
    scale = torch.where(rms > 0, target / rms.clamp(min=1e-12), torch.zeros_like(rms))
    return credited * scale[None, :, None, None]


def _offset_canvas(
    values: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, flip: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Places (B, T, h, w) per-pixel values on (B, T, 2h - 1, 2w - 1) offset canvases; returns them and
    (B, 1, 2h - 1, 2w - 1) masks of the offsets each image saw.

    flip=False: values are indexed by the reward pixel q, for a fixed noise pixel p = (rows, cols)
    (o = q - p). flip=True: values are indexed by the noise pixel p, for a fixed reward pixel
    q = (rows, cols) (o = q - p, so the map is flipped).
    """
    b, steps, h, w = values.shape
    canvas = values.new_zeros(b, steps, 2 * h - 1, 2 * w - 1)
    counts = values.new_zeros(b, 1, 2 * h - 1, 2 * w - 1)
    for i in range(b):  # a loop over measured images, once per run
        y, x = int(rows[i]), int(cols[i])
        if flip:
            top, left, part = y, x, values[i].flip(-2, -1)  # o = q - p ranges over q - (h-1) ... q
        else:
            top, left, part = h - 1 - y, w - 1 - x, values[i]  # o = q - p ranges over -p ... h-1-p
        canvas[i, :, top : top + h, left : left + w] = part
        counts[i, :, top : top + h, left : left + w] = 1.0
    return canvas, counts


def _episode_noise(core, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, T + 1, C, h, w) unit noise for the measurement episodes."""
    shape = (n, core.num_steps + 1, *core.loaded.sample_shape)
    return torch.randn(shape, generator=generator).to(core.device)


def _rollout_maps(envs, action_fn: EpsFn, noise: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """(n, h, w) reward maps on the sample grid of n <= num_envs episodes with the given noise and
    contexts (the env's other slots replay episode 0); autograd follows the noise."""
    core = envs.unwrapped
    n = noise.shape[0]
    pad = core.num_envs - n
    if pad:
        noise = torch.cat([noise, noise[:1].detach().expand(pad, *noise.shape[1:])])
        contexts = torch.cat([contexts, contexts[:1].expand(pad)])
    obs, _ = envs.reset(options={"noise": noise, "context": contexts.to(core.device)})
    for _ in range(core.num_steps):
        obs, _, _, _, info = envs.step(action_fn(obs["sample"], obs["timestep"], obs["context"]))
    return pool_to_grid(info["reward_map"][:n], tuple(core.loaded.sample_shape[1:]))


def measure_footprint(
    envs,
    action_fn: EpsFn,
    images: int = 32,
    seed: int = 0,
    method: str = "auto",
    probe_size: float = 1.0,
    progress: bool = False,
) -> Footprint:
    """Measures the reward map's dependence on each step's noise (module docstring).

    Args:
        envs: a vector env (its ``num_envs`` is the measurement's batch size) with the model,
            reward and schedule of training.
        action_fn: the (pretrained) policy's noise prediction.
        images: episodes measured (autograd: one random reward pixel each; probe: one
            perturbed noise pixel each, spread evenly over the steps, plus its unperturbed twin;
            at least 4 per step, the corners first).
        seed: seeds the episodes' noise, contexts and pixels.
        method: "autograd" (the reward must be differentiable), "probe", or "auto"
            (autograd when the reward has a gradient, else probe).
        probe_size: the finite-difference probe's step in units of the noise's std.

    Returns:
        ``Footprint``.

    Raises:
        ValueError: unknown method, images < 1, or autograd on a reward without gradient.
    """
    if method not in ("auto", "autograd", "probe"):
        raise ValueError(f"method must be 'auto', 'autograd' or 'probe', got method={method!r}")
    if not isinstance(images, int) or images < 1:
        raise ValueError(f"images must be an int >= 1, got images={images!r}")
    core = envs.unwrapped
    differentiable = reward_has_gradient(core)
    if method == "auto":
        method = "autograd" if differentiable else "probe"
    if method == "autograd" and not differentiable:
        raise ValueError("method='autograd' needs a reward with a gradient w.r.t. the image; use 'probe'")
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    steps = core.num_steps
    if method == "probe":
        images = max(images, 4 * steps)
    _, h, w = core.loaded.sample_shape
    total = torch.zeros(steps, 2 * h - 1, 2 * w - 1)  # summed squared sensitivities per step and offset
    counts = torch.zeros(steps, 2 * h - 1, 2 * w - 1)  # how many measurements each cell averages
    # Autograd: one backward pass covers a whole batch; probe: each episode has an unperturbed twin.
    batch = core.num_envs if method == "autograd" else max(1, core.num_envs // 2)
    done = 0
    bar = tqdm(total=images, desc=f"footprint ({method})", unit="image", disable=not progress)
    choices = core.context_choices.cpu()
    while done < images:
        n = min(batch, images - done)
        contexts = choices[torch.randint(len(choices), (n,), generator=generator)]
        rows = torch.randint(h, (n,), generator=generator)
        cols = torch.randint(w, (n,), generator=generator)
        if method == "probe":
            # Each step's first 4 probes sit in the corners: together they see every offset.
            probe = torch.arange(done, done + n) // steps
            corner = probe < 4
            rows = torch.where(corner, (probe % 2) * (h - 1), rows)
            cols = torch.where(corner, (probe // 2 % 2) * (w - 1), cols)
        noise = _episode_noise(core, n, generator)
        if method == "autograd":
            squared = _autograd_sensitivity(envs, action_fn, noise, contexts, rows, cols)  # (n, T, h, w)
            canvas, seen = _offset_canvas(squared, rows, cols, flip=True)
            seen = seen.expand_as(canvas)
        else:
            probe_steps = (torch.arange(done, done + n) % steps).to(noise.device)
            squared = _probe_sensitivity(
                envs, action_fn, noise, contexts, rows, cols, probe_steps, probe_size
            )
            canvas, seen = _offset_canvas(squared, rows, cols, flip=False)
            step_mask = torch.nn.functional.one_hot(probe_steps, steps).to(canvas)  # (n, T)
            seen = seen * step_mask[:, :, None, None]
        total += canvas.sum(dim=0).cpu()
        counts += seen.sum(dim=0).cpu()
        done += n
        bar.update(n)
    bar.close()
    influence = (total / counts.clamp(min=1)).sqrt()
    return Footprint(influence.float(), method, images, time.perf_counter() - started)


def _grid_maps(core, images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
    """(N, h, w) float32 on the CPU: the env's reward maps of CPU ``images`` pooled to the sample grid,
    scored in batches of the env's own size (what its reward was sized for: a latent pipeline's images
    are large)."""
    grid = tuple(core.loaded.sample_shape[1:])
    parts = []
    for start in range(0, len(images), core.num_envs):
        chunk = slice(start, start + core.num_envs)
        with torch.no_grad():  # a probe: no graph through the reward
            maps = core.reward_fn(images[chunk].to(core.device), contexts[chunk].to(core.device))
        parts.append(pool_to_grid(maps.detach().float(), grid).cpu())
    return torch.cat(parts)


LOCALITY_PROBES = 32
"""Random images per context that ``reward_locality`` perturbs."""
LOCAL_SHARE = 0.5
"""``credit='auto'``: a reward is pixel-local when at least this share of its map's response to a change at
one pixel falls on that pixel (1 for a per-pixel reward; about 1 / (h w) for one score per image)."""


def invert_cells(images: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
    """A copy of ``images`` (n, 3, H, W) in [0, 1] with the pixels under the chosen cells of the (h, w) sample
    grid inverted (x -> 1 - x): ``cells`` (n, h, w) bool."""
    grid_mask = cells[:, None].float().to(images.device)  # (n, 1, h, w)
    inside = torch.nn.functional.interpolate(grid_mask, size=tuple(images.shape[2:]), mode="nearest").bool()
    return torch.where(inside, 1 - images, images)


def reward_locality(core, probes: int = LOCALITY_PROBES, seed: int = 0) -> float:
    """How pixel-local the env's reward is, on the sample grid: for ``probes`` images of uniform noise per
    context, the image under one random grid cell is inverted (x -> 1 - x) and the reward map is scored
    again; the result is the share of the squared change of the map (pooled to the grid) that falls on
    the changed cell, summed over the probes. 1 for a reward whose pixel depends only on itself (colour,
    a target map), near 1 / (h w) for one score per image (JPEG size), in between for a conv net's
    receptive field. Two reward passes over probes x contexts images. A reward that never responds (gated
    to 0 on noise) counts as pixel-local (1.0): per-pixel credit, the paper's rule, is then kept."""
    if not isinstance(probes, int) or probes < 1:
        raise ValueError(f"probes must be an int >= 1, got probes={probes!r}")
    choices = core.context_choices.cpu()
    generator = torch.Generator().manual_seed(seed)
    n = probes * len(choices)
    height, width = core.loaded.image_size
    grid = tuple(core.loaded.sample_shape[1:])
    images = torch.rand((n, 3, height, width), generator=generator)
    rows = torch.randint(grid[0], (n,), generator=generator)
    cols = torch.randint(grid[1], (n,), generator=generator)
    cells = torch.zeros(n, *grid, dtype=torch.bool)
    cells[torch.arange(n), rows, cols] = True
    changed = invert_cells(images, cells)
    contexts = choices.repeat_interleave(probes)
    # The same batches for both: the two maps of an image come from identically shaped reward calls.
    change = (_grid_maps(core, changed, contexts) - _grid_maps(core, images, contexts)).double().square()
    total = float(change.sum())
    if total <= 0:
        return 1.0
    return min(1.0, float(change[torch.arange(n), rows, cols].sum()) / total)  # <= 1 but for rounding


UNSCORED_PROBES = 8
"""Random images per context that ``reward_unscored`` scores."""


def reward_unscored(core, probes: int = UNSCORED_PROBES, seed: int = 0) -> torch.Tensor:
    """(num_contexts, h, w) bool on the sample grid: the pixels whose reward map is exactly the same for
    ``probes`` images of uniform noise per context, i.e. pixels the reward does not look at (a reward that
    scores only part of the image). One reward pass over probes x contexts images; contexts the env never
    samples stay False.

    A pixel that is only dark in every real image (its colour reward constant) is scored: noise moves
    it. A gated reward that is 0 on every noise image looks unscored everywhere, which is why PXPO's
    'hold-unscored' also needs the pixel to be silent on the pretrained model's own images.
    """
    choices = core.context_choices.cpu()
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand((probes * len(choices), 3, *core.loaded.image_size), generator=generator)
    contexts = choices.repeat_interleave(probes)
    maps = _grid_maps(core, images, contexts)  # (probes x K, h, w)
    per_context = maps.view(len(choices), probes, *maps.shape[1:])  # contexts in blocks of probes
    out = torch.zeros(core.loaded.num_contexts, *maps.shape[1:], dtype=torch.bool)
    out[choices] = per_context.amax(dim=1) == per_context.amin(dim=1)
    return out


def reward_has_gradient(core) -> bool:
    """Whether the env's reward has a gradient with respect to the image (a grey image probed once)."""
    grey = torch.full((1, 3, *core.loaded.image_size), 0.5, device=core.device, requires_grad=True)
    return bool(core.reward_fn(grey, core.context_choices[:1]).requires_grad)


def _autograd_sensitivity(envs, action_fn, noise, contexts, rows, cols) -> torch.Tensor:
    """(n, T, h, w): ||d r_q / d z_t^p||^2 over channels, for image i's reward pixel q = (rows[i], cols[i])."""
    leaf = noise.detach().requires_grad_(True)
    with torch.enable_grad():
        maps = _rollout_maps(envs, action_fn, leaf, contexts)  # (n, h, w)
        picked = maps[torch.arange(len(rows)), rows.to(maps.device), cols.to(maps.device)]
        (grad,) = torch.autograd.grad(picked.sum(), leaf)  # images are independent: one pass for all
    return grad[:, 1:].detach().square().sum(dim=2)  # drop x_T's noise: (n, T, h, w)


def _probe_sensitivity(envs, action_fn, noise, contexts, rows, cols, probe_steps, probe_size) -> torch.Tensor:
    """(n, T, h, w): ((r_q(z + d e_p) - r_q(z)) / d)^2 for the noise pixel p = (rows[i], cols[i]) of step
    probe_steps[i] (all channels moved by d / sqrt(C), a step of length d), in row probe_steps[i]."""
    n, steps, channels = noise.shape[0], noise.shape[1] - 1, noise.shape[2]
    idx = torch.arange(n, device=noise.device)
    perturbed = noise.clone()
    step = probe_size / channels**0.5
    perturbed[idx, probe_steps + 1, :, rows.to(noise.device), cols.to(noise.device)] += step
    with torch.no_grad():
        maps = _rollout_maps(envs, action_fn, torch.cat([noise, perturbed]), torch.cat([contexts, contexts]))
    diff = ((maps[n:] - maps[:n]) / probe_size).square()  # (n, h, w)
    out = diff.new_zeros(n, steps, *diff.shape[1:])
    out[idx, probe_steps] = diff
    return out


__getattr__ = moved_names(
    __name__,
    {
        "reward_insensitive": f"{__name__}:reward_unscored",
        "INSENSITIVE_PROBES": f"{__name__}:UNSCORED_PROBES",
    },
)
