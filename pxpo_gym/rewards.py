"""Per-pixel rewards: built-ins, user callables, and the checks they all pass.

A reward is any callable ``fn(images, contexts) -> map`` where ``images`` is
(B, 3, H, W) float RGB in [0, 1] on the env's device and ``contexts`` is (B,)
int64. It returns either a per-pixel map (B, H, W) or one scalar per image (B,),
which is broadcast to a constant map. ``make_reward`` turns a name, a
``"package.module:function"`` string or a callable into a ``Reward`` that
checks every output (shape, finiteness) and names itself in every error.

Built-ins (``make_reward(name, **kwargs)``):

- ``color``: closeness of every pixel to a target colour (the PXPO paper's colour
  experiment), 1 - ||rgb - target|| / sqrt(3), in [0, 1].
- ``target_map``: painted feedback. A target image or colour (required) plus a
  signed per-pixel weight map: weight * closeness to the target. Maps and targets
  can be arrays or PNG files.
- ``segmentation``: probability, from the shipped segmentation network, that a
  pixel belongs to a wanted shape class (the conditioned class by default).
- ``brightness``: per-pixel mean of the RGB channels.
- ``jpeg_compressibility`` / ``jpeg_incompressibility``: DDPO's global rewards,
  minus / plus the JPEG size in kB at quality 95; one scalar per image.

Several rewards with weights make a ``WeightedReward``, the per-pixel weighted
sum of its components (each checked on its own): ``make_reward(["color:0.5",
"segmentation:0.5"])``, ``make_reward({"color": 0.5, "segmentation": 0.5})`` or
``make_reward([(my_fn, 2.0), "brightness:1"])``. Its options are keyed by
component name: ``reward_kwargs={"color": {"target": "blue"}}``.
"""

from __future__ import annotations

import importlib
import inspect
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pxpo_gym.colors import RewardFn, as_rgb, closeness
from pxpo_gym.suite_rewards import SUITE_REWARDS


class Reward:
    """A reward function with a name, whose outputs are checked.

    Args:
        fn: ``fn(images (B, 3, H, W), contexts (B,)) -> (B, H, W) or (B,)``.
        name: used in error messages.
    """

    def __init__(self, fn: RewardFn, name: str) -> None:
        if not callable(fn):
            raise TypeError(f"reward {name!r} is not callable: got {type(fn).__name__}")
        self.fn = fn
        self.name = name

    def __repr__(self) -> str:
        return f"Reward({self.name!r})"

    def parts(
        self, images: torch.Tensor, contexts: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The checked map and, for a weighted sum, each component's checked map by name (else none)."""
        return self(images, contexts), {}

    def __call__(self, images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        """Returns the checked per-pixel map, (B, H, W) float32 on the images' device.

        Raises:
            ValueError: the reward returned the wrong type or shape, NaN or inf.
        """
        batch, _, height, width = images.shape
        out = self.fn(images, contexts)
        if isinstance(out, np.ndarray):
            out = torch.from_numpy(out).to(images.device)
        if not isinstance(out, torch.Tensor):
            raise ValueError(
                f"reward {self.name!r} must return a torch.Tensor or numpy array, got {type(out).__name__}"
            )
        if out.device != images.device:
            raise ValueError(
                f"reward {self.name!r} returned its map on device {out.device}; it must be on the "
                f"images' device {images.device}"
            )
        if out.is_complex() or not (out.is_floating_point() or out.dtype in _INT_DTYPES):
            raise ValueError(f"reward {self.name!r} must return real numbers, got dtype={out.dtype}")
        out = out.to(dtype=torch.float32)
        if out.shape == (batch,):
            out = out[:, None, None].expand(batch, height, width)
        if out.shape != (batch, height, width):
            raise ValueError(
                f"reward {self.name!r} returned shape {tuple(out.shape)}; expected the per-pixel "
                f"map ({batch}, {height}, {width}) or one scalar per image ({batch},)"
            )
        if not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).sum())
            raise ValueError(f"reward {self.name!r} returned {bad} non-finite values (NaN or inf)")
        return out


class WeightedReward(Reward):
    """A per-pixel weighted sum of named rewards: sum_k w_k r_k(images, contexts).

    Args:
        components: (reward, weight) pairs; names must differ, weights be finite numbers.
    """

    def __init__(self, components: Sequence[tuple[Reward, float]]) -> None:
        if not components:
            raise ValueError("a weighted reward needs at least one component reward")
        names = [reward.name for reward, _ in components]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(
                f"reward {repeated[0]!r} is given twice; each component of a weighted reward needs its "
                "own name (pass Reward(fn, name) objects to combine two settings of one reward)"
            )
        for name, (_, weight) in zip(names, components):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"the weight of reward {name!r} must be a finite number, got {weight!r}")
        self.components = [(reward, float(weight)) for reward, weight in components]
        super().__init__(
            lambda images, contexts: self.parts(images, contexts)[0], self.label(self.components)
        )

    @staticmethod
    def label(components: Sequence[tuple[Reward, float]]) -> str:
        return " + ".join(f"{weight:g} * {reward.name}" for reward, weight in components)

    @property
    def names(self) -> list[str]:
        """The component names, in order."""
        return [reward.name for reward, _ in self.components]

    def parts(
        self, images: torch.Tensor, contexts: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        maps = {reward.name: reward(images, contexts) for reward, _ in self.components}
        total = sum(weight * maps[reward.name] for reward, weight in self.components)
        return total, maps

    def __call__(self, images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        return self.parts(images, contexts)[0]


def split_weight(spec: str) -> tuple[str, float | None]:
    """``"name:0.5"`` -> (``"name"``, 0.5); a spec without a ``:weight`` suffix -> (spec, None).

    A built-in name takes ``name`` or ``name:weight``; a user's callable takes
    ``package.module:function`` (no weight) or ``package.module:function:weight``.

    Raises:
        ValueError: a weight that is not a finite, non-zero number, or a spec with too many ':'
            (the message names the spec and the forms allowed).
    """
    parts = spec.split(":")
    forms = "'name', 'name:weight', 'package.module:function' or 'package.module:function:weight'"
    builtin = parts[0] in REWARDS
    if len(parts) == 1:
        return spec, None
    if len(parts) > (2 if builtin else 3):
        raise ValueError(f"reward={spec!r} has too many ':'; a reward spec is {forms}")
    head, tail = ":".join(parts[:-1]), parts[-1]
    try:
        weight = float(tail)
    except ValueError:
        if len(parts) == 2 and not builtin:  # 'module:function' (no function is named like a number)
            return spec, None
        raise ValueError(
            f"reward={spec!r}: the weight after ':' must be a number, got {tail!r}; a reward spec is {forms}"
        ) from None
    if not math.isfinite(weight) or weight == 0:
        raise ValueError(
            f"reward={spec!r}: the weight after ':' must be a finite number other than 0, got {tail!r} "
            "(leave a reward out rather than weigh it 0)"
        )
    return head, weight


def names_code(spec: Any) -> bool:
    """Whether a reward spec (or a list of them) names code to import: anything but built-in names,
    with or without a ``:weight``."""
    if isinstance(spec, dict):
        return any(names_code(key) for key in spec)
    if isinstance(spec, (list, tuple)):
        if len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], (int, float)):
            return names_code(spec[0])  # a (name, weight) pair
        return any(names_code(item) for item in spec)
    if not isinstance(spec, str):
        return True
    return spec.split(":")[0] not in REWARDS


def refuse_code_from_file(spec: Any, where: str, flag: str = "--reward") -> None:
    """Refuses a reward spec read from a file (an export's metadata, a checkpoint) that names an import path.

    Code runs only when the user names it on the command line or in Python: a model folder or a
    checkpoint is something people download, and importing ``module:function`` from it would run it.

    Raises:
        ValueError: the spec names code; the message says where it was read and how to pass it oneself.
    """
    if not names_code(spec):
        return
    specs = [spec] if isinstance(spec, str) else list(spec)
    named = [s for s in specs if names_code(s)]
    given = " ".join(f"{flag} {s}" for s in specs)
    raise ValueError(
        f"{where} names the reward {', '.join(map(repr, named))}, an import path: code named in a file is "
        f"never run. If you trust it, pass it yourself ({given}) or add --trust-code"
    )


def color_reward(target: Sequence[float] | str = (1.0, 0.0, 0.0)) -> RewardFn:
    """Per-pixel closeness to one target colour (default pure red), in [0, 1]."""
    rgb = as_rgb(target, "target")

    def color(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        return closeness(images, rgb.to(images.device)[None, :, None, None])

    return color


def load_map(source: str | Path | np.ndarray | torch.Tensor, name: str, channels: int) -> torch.Tensor:
    """Loads a float map from an array or image file (PNG, values scaled to [0, 1]).

    Returns (H, W) for ``channels == 1`` and (3, H, W) for ``channels == 3``.
    """
    if isinstance(source, (str, Path)):
        from PIL import Image

        path = Path(source)
        if not path.is_file():
            raise ValueError(f"{name}={str(source)!r} is not a file")
        try:
            with Image.open(path) as img:
                pixels = np.asarray(img.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255
        except OSError as err:
            raise ValueError(f"{name}={str(source)!r} is not a readable image: {err}") from err
        arr = torch.from_numpy(pixels)
        if channels == 3:
            arr = arr.permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)
    else:
        arr = torch.as_tensor(source, dtype=torch.float32)
    want = "(H, W)" if channels == 1 else "(3, H, W)"
    if arr.ndim != (2 if channels == 1 else 3) or (channels == 3 and arr.shape[0] != 3):
        raise ValueError(f"{name} must have shape {want}, got {tuple(arr.shape)}")
    if not bool(torch.isfinite(arr).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def target_map_reward(
    target: Sequence[float] | str | np.ndarray | torch.Tensor | None = None,
    weights: str | Path | np.ndarray | torch.Tensor | None = None,
) -> RewardFn:
    """Painted feedback: signed weight times closeness to a target, per pixel.

    Args:
        target: required: a colour (3 floats or a name) or a target image (3, H, W) in
            [0, 1], or an RGB image file.
        weights: signed (H, W) map of how much each pixel matters (negative: be
            unlike the target there), an array or a grayscale image file
            (0..255 -> 0..1). None weights every pixel 1.

    Returns:
        ``fn(images, contexts) -> (B, H, W)``, weight * (1 - ||rgb - target|| / sqrt(3)).

    Raises:
        ValueError: no target (without one the reward would be ``color``'s default red, silently), or a
            target or weights that cannot be read.
    """
    if target is None:
        raise ValueError(
            "reward='target_map' needs a target, got target=None: pass a colour (a name or 3 floats in "
            "[0, 1]), a (3, H, W) image in [0, 1] or an RGB image file, e.g. reward_kwargs={'target': 'blue'} "
            '(--reward-kwargs \'{"target": "blue"}\')'
        )
    if isinstance(target, (str, Path)) and Path(str(target)).suffix.lower() in (".png", ".jpg", ".jpeg"):
        target_img = load_map(target, "target", channels=3)
    elif isinstance(target, (np.ndarray, torch.Tensor)) and np.ndim(target) == 3:
        target_img = load_map(target, "target", channels=3)
    else:
        target_img = as_rgb(target, "target")[:, None, None]  # (3, 1, 1)
    weight = None if weights is None else load_map(weights, "weights", channels=1)
    if weight is not None and target_img.shape[1:] != (1, 1) and target_img.shape[1:] != weight.shape:
        raise ValueError(
            f"target has size {tuple(target_img.shape[1:])} but weights has {tuple(weight.shape)}"
        )

    def target_map(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        size = tuple(images.shape[2:])
        for label, arr in (("target", target_img), ("weights", weight)):
            if arr is not None and arr.shape[-2:] != (1, 1) and tuple(arr.shape[-2:]) != size:
                raise ValueError(f"{label} has size {tuple(arr.shape[-2:])}, the images are {size}")
        close = closeness(images, target_img.to(images.device)[None])
        return close if weight is None else close * weight.to(images.device)

    return target_map


def segmentation_reward(
    target_class: int | str = "context", weights_path: str | Path | None = None, class_offset: int = 0
) -> RewardFn:
    """Per-pixel probability that a pixel shows the wanted shape class.

    Args:
        target_class: ``"context"`` (the class the image was conditioned on), a
            shape class id, or a class name from ``pxpo_gym.shapes.SHAPE_CLASSES``.
        weights_path: a ``SegmentationNet`` safetensors file; the shipped one if None.
        class_offset: with ``"context"``, want the class this many places after the
            conditioned one (cyclically): 1 asks a circle to become a square.
    """
    from pxpo_gym.segmentation import load_segmentation_net
    from pxpo_gym.shapes import SHAPE_CLASSES

    if isinstance(target_class, str) and target_class != "context":
        if target_class not in SHAPE_CLASSES:
            raise ValueError(f"target_class={target_class!r} is not 'context' or one of {SHAPE_CLASSES}")
        target_class = SHAPE_CLASSES.index(target_class)
    if isinstance(target_class, int) and not 0 <= target_class < len(SHAPE_CLASSES):
        raise ValueError(f"target_class must be in [0, {len(SHAPE_CLASSES)}), got {target_class}")
    if isinstance(class_offset, bool) or not isinstance(class_offset, int):
        raise ValueError(f"class_offset must be an int, got class_offset={class_offset!r}")
    if class_offset and target_class != "context":
        raise ValueError(f"class_offset={class_offset} applies only to target_class='context'")
    net = load_segmentation_net(weights_path)

    def segmentation(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        if next(net.parameters()).device != images.device:
            net.to(images.device)
        # No no_grad here: the net's weights are frozen, and gradients reach the
        # images when they require them (the exact-gradient baseline backpropagates).
        probs = net(images.float()).softmax(dim=1)  # (B, K+1, H, W)
        if target_class == "context":
            wanted = (contexts.clamp(0, len(SHAPE_CLASSES) - 1) + class_offset) % len(SHAPE_CLASSES) + 1
        else:
            wanted = torch.full_like(contexts, int(target_class) + 1)
        return probs[torch.arange(images.shape[0], device=images.device), wanted]

    return segmentation


def brightness_reward() -> RewardFn:
    """Per-pixel mean of the RGB channels, in [0, 1]."""

    def brightness(images: torch.Tensor, contexts: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=1)

    return brightness


def jpeg_sizes_kb(images: torch.Tensor, quality: int = 95) -> torch.Tensor:
    """JPEG file size in kB of each image, (B,) float32 on the images' device."""
    from PIL import Image

    pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
    sizes = []
    for img in pixels:  # PIL encodes one image at a time
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, format="JPEG", quality=quality)
        sizes.append(buffer.tell() / 1000)
    return torch.tensor(sizes, dtype=torch.float32, device=images.device)


def _jpeg_quality(quality: Any) -> int:
    if (
        isinstance(quality, (bool, np.bool_))
        or not isinstance(quality, (int, np.integer))
        or not 1 <= quality <= 100
    ):
        raise ValueError(f"quality must be an int in [1, 100] (JPEG quality), got quality={quality!r}")
    return int(quality)


def jpeg_compressibility_reward(quality: int = 95) -> RewardFn:
    """DDPO's compressibility: minus the JPEG size in kB, one scalar per image."""
    quality = _jpeg_quality(quality)
    return lambda images, contexts: -jpeg_sizes_kb(images, quality)


def jpeg_incompressibility_reward(quality: int = 95) -> RewardFn:
    """DDPO's incompressibility: the JPEG size in kB, one scalar per image."""
    quality = _jpeg_quality(quality)
    return lambda images, contexts: jpeg_sizes_kb(images, quality)


REWARDS: dict[str, Callable[..., RewardFn]] = {
    "color": color_reward,
    "target_map": target_map_reward,
    "segmentation": segmentation_reward,
    "brightness": brightness_reward,
    "jpeg_compressibility": jpeg_compressibility_reward,
    "jpeg_incompressibility": jpeg_incompressibility_reward,
    **SUITE_REWARDS,
}


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)


def make_reward(spec: str | RewardFn | Reward, **kwargs: Any) -> Reward:
    """Builds a checked ``Reward`` from a built-in name, ``"module:function"`` or a callable.

    Args:
        spec: a name in ``REWARDS`` (``kwargs`` go to its factory), a string
            ``"package.module:function"`` naming a user's reward callable, a callable
            ``fn(images, contexts)``, or a ``Reward``. Several rewards with weights
            (a ``WeightedReward``): a list of ``"name:weight"`` strings, (spec, weight)
            pairs or specs (weight 1), or a dict {spec: weight}; a single
            ``"name:weight"`` string is a one-component weighted reward.
        **kwargs: options of a built-in reward; not allowed with a callable. For
            several rewards: {component name: {its options}}.

    Raises:
        ValueError: unknown name, unimportable ``module:function``, bad options or weights.
    """
    if isinstance(spec, dict) or (isinstance(spec, (list, tuple)) and not isinstance(spec, str)):
        return _weighted(spec, kwargs)
    if isinstance(spec, str) and split_weight(spec)[1] is not None:
        return _weighted([spec], kwargs)
    if isinstance(spec, Reward):
        if kwargs:
            raise ValueError(f"reward options {sorted(kwargs)} given with a ready Reward {spec.name!r}")
        return spec
    if isinstance(spec, str) and ":" in spec:
        module_name, _, attr = spec.partition(":")
        if not module_name or not attr:
            raise ValueError(f"reward={spec!r} must be a built-in name or 'package.module:function'")
        try:
            fn = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as err:
            raise ValueError(f"reward={spec!r}: cannot import {attr!r} from {module_name!r}: {err}") from err
        return make_reward(fn, **kwargs) if not kwargs else Reward(fn(**kwargs), spec)
    if isinstance(spec, str):
        if spec not in REWARDS:
            raise ValueError(
                f"reward={spec!r} is not a built-in reward; choose one of {sorted(REWARDS)}, "
                "pass 'package.module:function', or pass a callable"
            )
        try:
            return Reward(REWARDS[spec](**kwargs), spec)
        except TypeError as err:
            raise ValueError(f"reward={spec!r}: bad options {kwargs}: {err}") from err
    if callable(spec):
        if kwargs:
            raise ValueError(f"reward options {sorted(kwargs)} only apply to built-in reward names")
        name = getattr(spec, "__name__", type(spec).__name__)
        try:
            inspect.signature(spec).bind(None, None)
        except TypeError as err:
            raise ValueError(
                f"reward {name!r} must be callable as fn(images, contexts) -> reward map, but: {err}"
            ) from err
        except ValueError:  # a builtin without a signature: it is called as it is
            pass
        return Reward(spec, name)
    raise TypeError(f"reward must be a name, 'module:function' or a callable, got {type(spec).__name__}")


def _weighted(spec: Any, kwargs: dict[str, Any]) -> Reward:
    """A ``WeightedReward`` from a list or dict of component specs (see ``make_reward``)."""
    items = list(spec.items()) if isinstance(spec, dict) else list(spec)
    if not items:
        raise ValueError("reward is an empty list: name at least one reward")
    pairs: list[tuple[Any, float]] = []
    for item in items:
        if isinstance(item, str):
            name, weight = split_weight(item)
            pairs.append((name, 1.0 if weight is None else weight))
        elif isinstance(item, tuple) and len(item) == 2:
            pairs.append(item)
        elif isinstance(item, Reward) or callable(item):
            pairs.append((item, 1.0))
        else:
            raise ValueError(
                f"each reward of a list must be 'name', 'name:weight', a (spec, weight) pair or a callable, got {item!r}"
            )
    if len(pairs) == 1 and isinstance(items[0], str) and split_weight(items[0])[1] is None:
        return make_reward(pairs[0][0], **kwargs)  # one plain name: the reward itself
    components = []
    for component, weight in pairs:
        reward = make_reward(component) if not isinstance(component, str) else None
        name = component if isinstance(component, str) else reward.name
        options = kwargs.get(name, {})
        if not isinstance(options, dict):
            raise ValueError(
                f"reward_kwargs[{name!r}] must be a dict of that reward's options, got {options!r}"
            )
        components.append((reward if reward is not None else make_reward(component, **options), weight))
    weighted = WeightedReward(components)
    unknown = sorted(set(kwargs) - set(weighted.names))
    if unknown:
        raise ValueError(
            f"reward_kwargs of several rewards are keyed by reward name ({weighted.names}); got {unknown}: "
            'e.g. reward_kwargs={"color": {"target": "blue"}}'
        )
    return weighted


def pool_to_grid(reward_maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Carries image-resolution reward maps onto a (latent) sample grid by area pooling.

    Each grid cell gets the mean reward of the image pixels it covers (exact
    block averages when H, W are multiples of h, w). Identity when sizes match,
    as for pixel models. Broadcast over the sample's channels is left to the
    caller (a pixel's channels share one reward).

    Args:
        reward_maps: (B, H, W) float.
        size: (h, w) of the sample grid.

    Returns:
        (B, h, w) float32.
    """
    if tuple(reward_maps.shape[-2:]) == tuple(size):
        return reward_maps.float()
    pooled = torch.nn.functional.adaptive_avg_pool2d(reward_maps[:, None].float(), size)  # (B, 1, h, w)
    return pooled[:, 0]


def aggregator(reward_aggregate: str | Callable) -> Callable[[torch.Tensor], torch.Tensor]:
    """How a (B, H, W) reward map becomes the (B,) reward: 'mean', 'sum' or a user's callable (checked)."""
    if isinstance(reward_aggregate, str) and reward_aggregate == "mean":
        return lambda m: m.mean(dim=(1, 2))
    if isinstance(reward_aggregate, str) and reward_aggregate == "sum":
        return lambda m: m.sum(dim=(1, 2))
    if callable(reward_aggregate):
        return _checked_aggregate(reward_aggregate)
    raise ValueError(
        f"reward_aggregate must be 'mean', 'sum' or a callable (B, H, W) -> (B,), got {reward_aggregate!r}"
    )


def _checked_aggregate(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """Wraps a user's aggregate so that a wrong shape or a NaN fails with a message, before any state changes."""
    name = getattr(fn, "__name__", type(fn).__name__)

    def aggregate(maps: torch.Tensor) -> torch.Tensor:
        out = fn(maps)
        want = (maps.shape[0],)
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != want:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"reward_aggregate {name!r} must return a tensor of shape {want}, got {got}")
        if out.is_complex() or not bool(torch.isfinite(out).all()):
            raise ValueError(f"reward_aggregate {name!r} returned complex, NaN or inf values: {out.tolist()}")
        return out

    return aggregate
