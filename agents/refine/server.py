"""The refine server's state: the shared model, the workspaces and the job queue (``agents.refine.app``
serves it over HTTP).

Every workspace is an id the server makes (``secrets.token_hex``); nothing the
client sends names a file. One apply job runs at a time per workspace (a second
gets 409) and one at a time in the whole server (the model and the CPU are
shared): jobs wait in a single-worker queue and report their progress; a queued
job that is cancelled leaves the queue at once. Workspaces idle for
``workspace_ttl`` seconds expire and their memory is freed. Every refusal is an
``ApiError`` (a status and a message for the client).
"""

from __future__ import annotations

import base64
import binascii
import gc
import re
import secrets
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pxpo_gym.models import LoadedModel

from .config import RefineConfig
from .feedback import parse_feedback
from .workspace import Cancelled, Workspace, refine_train_config


def parse_count(text: str, name: str, low: int, high: int, status: int = 400, why: str = "") -> int:
    """An integer from a URL (ASCII digits only, range checked before conversion) or an ApiError (``why``
    follows the range in its message)."""
    if not re.fullmatch(r"[0-9]{1,9}", text) or not low <= int(text) <= high:
        raise ApiError(status, f"{name} must be an int in [{low}, {high}]{why}, got {text[:40]!r}")
    return int(text)


class ApiError(Exception):
    """A request the API refuses: a status and a message for the client."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Job:
    """One apply: its progress as the page shows it."""

    updates: int
    state: str = "queued"
    """queued, running, done, cancelled or failed."""
    done_updates: int = 0
    rewards: list[float] = field(default_factory=list)
    version: int | None = None
    error: str | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    future: Future | None = None
    """Its place in the server's queue (set when it is queued)."""

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def stop(self) -> None:
        """Cancels the job: a queued one leaves the queue now, a running one stops after its current update."""
        self.cancel.set()
        if self.future is not None and self.future.cancel():  # not started: it never will
            self.state = "cancelled"

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "updates": self.updates,
            "done_updates": self.done_updates,
            "rewards": self.rewards,
            "version": self.version,
            "error": self.error,
        }


@dataclass
class Entry:
    """A workspace with its lock, its latest job and when it was last used."""

    workspace: Workspace
    lock: threading.Lock = field(default_factory=threading.Lock)
    job: Job | None = None
    last_used: float = 0.0
    """The server clock's reading when it was last used."""


class RefineServer:
    """The server's state: the shared model, the workspaces and the job queue.

    Args:
        options: the page's ``RefineConfig``.
        loaded: the model every workspace refines (``pxpo_gym.loading.load_model``).
    """

    def __init__(self, options: RefineConfig, loaded: LoadedModel) -> None:
        self.options, self.loaded = options, loaded
        self.train_config = refine_train_config(options)
        self.workspaces: dict[str, Entry] = {}
        self.reserved = 0
        """Workspaces being built (counted against the limit before they exist, so concurrent creates cannot
        pass it)."""
        self.guard = threading.Lock()  # guards the dict and the reservation count, not the workspaces
        self.queue = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refine-job")
        self.clock = time.monotonic
        """Seconds, for idle expiry (a test may replace it)."""

    # -- workspaces -----------------------------------------------------------

    def entry(self, workspace_id: str) -> Entry:
        with self.guard:
            entry = self.workspaces.get(workspace_id)
        if entry is None:
            raise ApiError(404, f"unknown workspace {workspace_id!r} (it may have expired)")
        entry.last_used = self.clock()
        return entry

    def context_id(self, value: Any) -> int:
        names = list(self.loaded.context_names)
        if isinstance(value, str) and value in names:
            return names.index(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(names):
            raise ApiError(
                400, f"context must be an id in [0, {len(names)}) or one of {names}, got {str(value)[:40]!r}"
            )
        return value

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        context = self.context_id(body.get("context", 0))
        seed = body.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise ApiError(400, f"seed must be an int in [0, 2**31), got {str(seed)[:40]!r}")
        self.expire()
        with self.guard:
            held = len(self.workspaces) + self.reserved
            if held >= self.options.max_workspaces:
                raise ApiError(429, f"the server holds {held} workspaces (the limit): delete one or wait")
            self.reserved += 1
        try:
            workspace = Workspace(
                self.loaded, self.train_config, context, seed, self.options.refine_steps, self.options.hold
            )
            workspace_id = secrets.token_hex(8)
            with self.guard:
                self.workspaces[workspace_id] = Entry(workspace, last_used=self.clock())
        finally:
            with self.guard:
                self.reserved -= 1
        return self.describe(workspace_id)

    def describe(self, workspace_id: str) -> dict[str, Any]:
        entry = self.entry(workspace_id)
        ws = entry.workspace
        return {
            "id": workspace_id,
            "context": ws.context,
            "context_name": self.loaded.context_names[ws.context],
            "seed": ws.seed,
            "current": ws.current,
            "versions": [
                {
                    "index": v.index,
                    "parent": v.parent,
                    "updates": v.updates,
                    "steps": v.steps,
                    "rewards": v.rewards,
                }
                for v in ws.versions
            ],
            "job": entry.job.as_json() if entry.job is not None else None,
        }

    def version(self, workspace_id: str, index: str) -> Any:
        ws = self.entry(workspace_id).workspace
        return ws.versions[
            parse_count(index, f"workspace {workspace_id!r}'s version", 0, len(ws.versions) - 1, 404)
        ]

    def delete(self, workspace_id: str) -> None:
        entry = self.entry(workspace_id)
        if entry.job is not None and entry.job.active:
            entry.job.stop()
        with self.guard:
            self.workspaces.pop(workspace_id, None)
        gc.collect()

    def expire(self) -> list[str]:
        """Drops workspaces idle for longer than the ttl (a running job keeps its workspace alive)."""
        now = self.clock()
        with self.guard:
            stale = [
                key
                for key, entry in self.workspaces.items()
                if now - entry.last_used > self.options.workspace_ttl and not (entry.job and entry.job.active)
            ]
            for key in stale:
                del self.workspaces[key]
        if stale:
            gc.collect()
        return stale

    # -- jobs -----------------------------------------------------------------

    def apply(self, workspace_id: str, body: dict[str, Any]) -> dict[str, Any]:
        entry = self.entry(workspace_id)
        updates = body.get("updates")
        limit = self.options.max_updates
        if isinstance(updates, bool) or not isinstance(updates, int) or not 1 <= updates <= limit:
            raise ApiError(400, f"updates must be an int in [1, {limit}], got {str(updates)[:40]!r}")
        steps = body.get("steps", entry.workspace.versions[entry.workspace.current].steps)
        total = entry.workspace.num_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= total:
            raise ApiError(400, f"steps must be an int in [1, {total}], got {str(steps)[:40]!r}")
        encoded = body.get("feedback")
        if not isinstance(encoded, str):
            raise ApiError(400, "feedback must be a base64 PNG string")
        limit_bytes = self.options.max_feedback_bytes
        if len(encoded) > 4 * limit_bytes // 3 + 4:
            raise ApiError(413, f"feedback is over the size limit of {limit_bytes} bytes")
        try:
            data = base64.b64decode(encoded.split(",", 1)[-1], validate=True)
            feedback = parse_feedback(data, self.loaded.image_size, limit_bytes)
        except (binascii.Error, ValueError) as err:
            status = 413 if "limit" in str(err) else 400
            raise ApiError(status, f"feedback: {err}") from err
        with entry.lock:
            if entry.job is not None and entry.job.active:
                raise ApiError(409, "this workspace is already applying feedback: wait for it or cancel it")
            if len(entry.workspace.versions) >= self.options.max_versions:
                raise ApiError(
                    409,
                    f"this workspace has {self.options.max_versions} versions (the limit): reset it or start a new one",
                )
            job = entry.job = Job(updates)
            # queued under the lock, so a cancel that follows always finds the job's place in the queue
            job.future = self.queue.submit(self.run_job, entry, job, feedback, steps)
        return job.as_json()

    def run_job(self, entry: Entry, job: Job, feedback: Any, steps: int) -> None:
        if job.cancel.is_set():
            job.state = "cancelled"
            return
        job.state = "running"

        def progress(k: int, reward: float) -> None:
            job.done_updates, entry.last_used = k, self.clock()
            job.rewards.append(reward)

        try:
            version = entry.workspace.apply(feedback, job.updates, progress, job.cancel.is_set, steps)
        except Cancelled:
            job.state = "cancelled"
        except Exception as err:  # the job fails, the server and the workspace stay as they were
            job.state, job.error = "failed", f"{type(err).__name__}: {err}"
        else:
            job.version, job.state = version.index, "done"
        entry.last_used = self.clock()

    def cancel(self, workspace_id: str) -> dict[str, Any]:
        entry = self.entry(workspace_id)
        with entry.lock:
            job = entry.job
            if job is None or not job.active:
                raise ApiError(409, "this workspace has no job to cancel")
            job.stop()
        return job.as_json()

    def close(self) -> None:
        """Cancels every job and waits for the running one to stop (after its current update): the server's
        shutdown, e.g. on Ctrl-C."""
        with self.guard:
            entries = list(self.workspaces.values())
        for entry in entries:
            if entry.job is not None and entry.job.active:
                entry.job.stop()
        self.queue.shutdown(wait=True, cancel_futures=True)

    def checkout(self, workspace_id: str, body: dict[str, Any], reset: bool = False) -> dict[str, Any]:
        entry = self.entry(workspace_id)
        with entry.lock:
            if entry.job is not None and entry.job.active:
                raise ApiError(409, "this workspace is applying feedback: wait for it or cancel it first")
            if reset:
                entry.workspace.reset()
            else:
                index = body.get("version")
                count = len(entry.workspace.versions)
                if isinstance(index, bool) or not isinstance(index, int):
                    raise ApiError(400, f"version must be an int, got {str(index)[:40]!r}")
                if not 0 <= index < count:
                    raise ApiError(
                        404, f"version must be an existing version in [0, {count - 1}], got {index}"
                    )
                entry.workspace.checkout(index)
        return self.describe(workspace_id)
