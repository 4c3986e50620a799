"""The refine page's options (``python -m agents.refine --help`` lists them): what the server, its
workspaces and ``benchmarks.studies.refine`` are configured by."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class RefineConfig:
    """Serve a page that refines images by painted feedback."""

    model: str = "default"
    """Embedded model name, diffusers folder (e.g. a run's RUN/model) or hub id."""
    prompts: tuple[str, ...] = ()
    """Latent text-to-image models: the prompts the page offers (required for them)."""
    device: str = "cpu"
    """torch device of the model and the updates: cpu, cuda, cuda:N or mps."""
    host: str = "127.0.0.1"
    """Address to bind: an IP address of this machine or a host name (127.0.0.1: this machine only)."""
    port: int = 8765
    """TCP port; 0 picks a free one."""
    update: Literal["gradient", "pxpo"] = "gradient"
    """How an apply updates the model: the exact gradient of the painted reward through the acted steps, or
    PXPO's score-function updates (measured too weak for visible edits at K <= 8; for comparison)."""
    group_size: int = 8
    """Samples per update: the workspace's own noise and group_size - 1 others of its context."""
    refine_steps: int = 10
    """The default strength: the last denoising steps an apply's policy acts on and is trained on; the earlier
    ones stay the model's, so the layout is kept and the group varies only in later detail (num_inference_steps:
    all). The page may ask for any value in [1, num_inference_steps] per apply."""
    inner_epochs: int = 4
    """PXPO: clipped optimizer steps per update on its samples (the gradient update takes one)."""
    learning_rate: float = 3e-4
    """AdamW learning rate of the updates."""
    kl_coef: float = 1.0
    """PXPO: uniform KL penalty to the model the workspace started from, over the whole image."""
    hold: float = 0.3
    """Reward weight of the unpainted pixels' closeness to the image they start from (keeps what was not
    painted; liked pixels weigh 1)."""
    lora_rank: int | None = None
    """None: LoRA rank 4 on latent pipelines, the full model on pixel models; 0: full; > 0: LoRA."""
    num_inference_steps: int = 20
    """Denoising steps per image (DDIM, or a flow model's SDE)."""
    noise_level: float | None = None
    """Flow-matching models: the sampler's noise level (None: Flow-GRPO's 0.7; pxpo_gym.flow)."""
    transition: Literal["sde", "cps"] = "sde"
    """Flow-matching models: Flow-GRPO's SDE step or coefficient-preserving sampling."""
    default_updates: int = 4
    """The page's initial K."""
    max_updates: int = 32
    """Largest K one apply may ask for."""
    max_workspaces: int = 8
    """Workspaces held at once (each holds a copy of the trainable weights per version)."""
    max_versions: int = 32
    """Versions per workspace."""
    workspace_ttl: float = 1800.0
    """Seconds a workspace may sit idle before it expires and its memory is freed."""
    max_feedback_bytes: int = 1 << 20
    """Largest feedback PNG accepted."""
    threads: int | None = None
    """torch CPU threads (>= 1); None leaves torch's default."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names, beside 127.0.0.1, localhost, ::1 and --host, that requests may name in their Host header
    (e.g. this machine's name when binding 0.0.0.0 on a trusted network)."""
    allowed_origins: tuple[str, ...] = ()
    """Origins (scheme://host:port), beside the page's own, whose pages may call the API."""
    access_log: bool = True
    """Print one line per request on stdout: method, path (no query, no body), status and milliseconds
    (--no-access-log: none; the page polls a running job's progress about 3 times a second)."""

    def __post_init__(self) -> None:
        for name in (
            "group_size",
            "refine_steps",
            "inner_epochs",
            "num_inference_steps",
            "default_updates",
            "max_updates",
            "max_workspaces",
            "max_versions",
            "max_feedback_bytes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")
        if self.group_size < 2:
            raise ValueError(
                f"group_size must be >= 2 (advantages are relative to the group), got {self.group_size}"
            )
        if self.refine_steps > self.num_inference_steps:
            raise ValueError(
                f"refine_steps={self.refine_steps} exceeds num_inference_steps={self.num_inference_steps}"
            )
        if not 0 <= self.port < 65536:
            raise ValueError(f"port must be in [0, 65535], got port={self.port}")
        if self.default_updates > self.max_updates:
            raise ValueError(f"default_updates={self.default_updates} exceeds max_updates={self.max_updates}")
        if not self.workspace_ttl > 0:
            raise ValueError(f"workspace_ttl must be > 0 seconds, got {self.workspace_ttl}")
        if not (self.learning_rate > 0 and self.kl_coef >= 0 and self.hold >= 0):
            raise ValueError(
                "need learning_rate > 0, kl_coef >= 0 and hold >= 0, got learning_rate="
                f"{self.learning_rate}, kl_coef={self.kl_coef}, hold={self.hold}"
            )
        if self.update not in ("gradient", "pxpo"):
            raise ValueError(f"update must be 'gradient' or 'pxpo', got update={self.update!r}")
        if self.threads is not None and (
            isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1
        ):
            raise ValueError(
                f"threads must be an int >= 1 (or None: torch's default), got threads={self.threads!r}"
            )
        check_host(self.host)
        check_device(self.device)


HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
"""One label of a host name (RFC 1123)."""


def check_host(host: str) -> None:
    """Refuses a ``host`` that is neither an IP address nor a well-formed host name (whether a name resolves to
    this machine is only known when the server binds it).

    Raises:
        ValueError: e.g. ``999.1.1.1`` (dotted numbers that are no IPv4 address) or ``my_host``.
    """
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    # a name's last label is never all digits (RFC 1123 2.1), so 999.1.1.1 is a bad address, not a name
    if len(host) > 253 or not all(HOST_LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        raise ValueError(
            "host must be an IP address of this machine (127.0.0.1, ::1, 0.0.0.0 for every interface) or a "
            f"host name, got host={host!r}"
        )


def check_device(device: str) -> None:
    """Refuses a ``device`` that is not a torch device string of a kind the refine page runs on (parse time:
    whether this machine has it is ``check_device_here``'s question, asked when the server starts).

    Raises:
        ValueError: e.g. ``nonsense``, ``cuda:x`` or ``meta``.
    """
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got device={device!r}") from err
    if parsed.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device must be cpu, cuda, cuda:N or mps, got device={device!r}")


def check_device_here(device: str) -> None:
    """Refuses a ``device`` (already ``check_device``-ed) that this torch build or machine does not have.

    Raises:
        ValueError: CUDA without CUDA, a CUDA index past the last GPU, MPS without MPS.
    """
    import torch

    from pxpo_gym.validation import parse_device

    parsed = parse_device(device)  # CUDA without CUDA
    if parsed.type == "cuda" and parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise ValueError(
            f"device={device!r} but this machine has {torch.cuda.device_count()} CUDA device(s): "
            f"use cuda:0 to cuda:{torch.cuda.device_count() - 1}"
        )
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} but MPS is not available on this machine; use device='cpu'")
