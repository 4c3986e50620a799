"""The refine server: a Starlette app with one page, a JSON API and a job queue.

Every workspace is an id the server makes (``secrets.token_hex``); nothing the
client sends names a file. One apply job runs at a time per workspace (a second
gets 409) and one at a time in the whole server (the model and the CPU are
shared): jobs wait in a single-worker queue and report their progress.
Workspaces idle for ``workspace_ttl`` seconds expire and their memory is freed.

API (JSON in and out; errors are ``{"error": message}`` with a 4xx status):

- ``GET /api/info``: the model's contexts, image size and the server's limits.
- ``POST /api/workspaces`` ``{"context": id or name, "seed": int}``: a new workspace (version 0).
- ``GET /api/workspaces/{id}``: its versions, the current one and its job.
- ``GET /api/workspaces/{id}/versions/{v}.png?scale=N``: a version's image (N: pixelated upscale).
- ``POST /api/workspaces/{id}/apply`` ``{"feedback": base64 PNG, "updates": K}``: starts a job (202).
- ``POST /api/workspaces/{id}/cancel``: stops its job between updates (the workspace is left as before).
- ``POST /api/workspaces/{id}/checkout`` ``{"version": v}``; ``POST /api/workspaces/{id}/reset``.
- ``DELETE /api/workspaces/{id}``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gc
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agents.refine.workspace import Cancelled, Workspace, parse_feedback, refine_train_config


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

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

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
    last_used: float = field(default_factory=time.monotonic)


class RefineServer:
    """The server's state: the shared model, the workspaces and the job queue.

    Args:
        options: a ``RefineConfig`` (agents.refine.__main__).
        loaded: the model every workspace refines (``pxpo_gym.loading.load_model``).
    """

    def __init__(self, options: Any, loaded: Any) -> None:
        self.options, self.loaded = options, loaded
        self.train_config = refine_train_config(options)
        self.workspaces: dict[str, Entry] = {}
        self.guard = threading.Lock()  # guards the dict, not the workspaces
        self.queue = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refine-job")

    # -- workspaces -----------------------------------------------------------

    def entry(self, workspace_id: str) -> Entry:
        with self.guard:
            entry = self.workspaces.get(workspace_id)
        if entry is None:
            raise ApiError(404, f"unknown workspace {workspace_id!r} (it may have expired)")
        entry.last_used = time.monotonic()
        return entry

    def context_id(self, value: Any) -> int:
        names = list(self.loaded.context_names)
        if isinstance(value, str) and value in names:
            return names.index(value)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(names):
            raise ApiError(
                400, f"context must be an id in [0, {len(names)}) or one of {names}, got {value!r}"
            )
        return value

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        context = self.context_id(body.get("context", 0))
        seed = body.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**31:
            raise ApiError(400, f"seed must be an int in [0, 2**31), got {seed!r}")
        self.expire()
        with self.guard:
            if len(self.workspaces) >= self.options.max_workspaces:
                raise ApiError(
                    429, f"the server holds {len(self.workspaces)} workspaces (the limit): delete one or wait"
                )
        workspace = Workspace(self.loaded, self.train_config, context, seed, self.options.refine_steps)
        workspace_id = secrets.token_hex(8)
        with self.guard:
            self.workspaces[workspace_id] = Entry(workspace)
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
                {"index": v.index, "parent": v.parent, "updates": v.updates, "rewards": v.rewards}
                for v in ws.versions
            ],
            "job": entry.job.as_json() if entry.job is not None else None,
        }

    def version(self, workspace_id: str, index: str) -> Any:
        ws = self.entry(workspace_id).workspace
        if not index.isdigit() or int(index) >= len(ws.versions):
            raise ApiError(
                404, f"workspace {workspace_id!r} has no version {index!r} (0..{len(ws.versions) - 1})"
            )
        return ws.versions[int(index)]

    def delete(self, workspace_id: str) -> None:
        entry = self.entry(workspace_id)
        if entry.job is not None and entry.job.active:
            entry.job.cancel.set()
        with self.guard:
            self.workspaces.pop(workspace_id, None)
        gc.collect()

    def expire(self) -> list[str]:
        """Drops workspaces idle for longer than the ttl (a running job keeps its workspace alive)."""
        now = time.monotonic()
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
            raise ApiError(400, f"updates must be an int in [1, {limit}], got {updates!r}")
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
        self.queue.submit(self.run_job, entry, job, feedback)
        return job.as_json()

    def run_job(self, entry: Entry, job: Job, feedback: Any) -> None:
        if job.cancel.is_set():
            job.state = "cancelled"
            return
        job.state = "running"

        def progress(k: int, reward: float) -> None:
            job.done_updates, entry.last_used = k, time.monotonic()
            job.rewards.append(reward)

        try:
            version = entry.workspace.apply(feedback, job.updates, progress, job.cancel.is_set)
        except Cancelled:
            job.state = "cancelled"
        except Exception as err:  # the job fails, the server and the workspace stay as they were
            job.state, job.error = "failed", f"{type(err).__name__}: {err}"
        else:
            job.version, job.state = version.index, "done"
        entry.last_used = time.monotonic()

    def cancel(self, workspace_id: str) -> dict[str, Any]:
        entry = self.entry(workspace_id)
        if entry.job is None or not entry.job.active:
            raise ApiError(409, "this workspace has no job to cancel")
        entry.job.cancel.set()
        return entry.job.as_json()

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
                if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
                    raise ApiError(
                        404, f"version must be an existing version in [0, {count - 1}], got {index!r}"
                    )
                entry.workspace.checkout(index)
        return self.describe(workspace_id)


async def json_body(request: Request, limit: int) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > limit:
        raise ApiError(413, f"request body is {len(raw)} bytes; the limit is {limit}")
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ApiError(400, f"request body is not valid JSON: {err}") from err
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(body).__name__}")
    return body


def make_app(server: RefineServer) -> Starlette:
    """The Starlette app serving the page (``agents/refine/static``) and the API of ``server``."""
    limit = 2 * server.options.max_feedback_bytes + 4096

    async def info(request: Request) -> JSONResponse:
        opts = server.options
        return JSONResponse(
            {
                "model": opts.model,
                "contexts": list(server.loaded.context_names),
                "latent": server.loaded.is_latent,
                "image_size": list(server.loaded.image_size),
                "max_updates": opts.max_updates,
                "default_updates": opts.default_updates,
                "group_size": opts.group_size,
                "max_feedback_bytes": opts.max_feedback_bytes,
            }
        )

    async def create(request: Request) -> JSONResponse:
        body = await json_body(request, limit)
        return JSONResponse(await run_in_threadpool(server.create, body), status_code=201)

    async def show(request: Request) -> JSONResponse:
        return JSONResponse(server.describe(request.path_params["id"]))

    async def delete(request: Request) -> JSONResponse:
        server.delete(request.path_params["id"])
        return JSONResponse({"deleted": request.path_params["id"]})

    async def image(request: Request) -> Response:
        version = server.version(request.path_params["id"], request.path_params["version"])
        scale = request.query_params.get("scale", "1")
        if not scale.isdigit() or not 1 <= int(scale) <= 64:
            raise ApiError(400, f"scale must be an int in [1, 64], got {scale!r}")
        return Response(version.png(int(scale)), media_type="image/png")

    async def apply(request: Request) -> JSONResponse:
        body = await json_body(request, limit)
        return JSONResponse(server.apply(request.path_params["id"], body), status_code=202)

    async def cancel(request: Request) -> JSONResponse:
        return JSONResponse(server.cancel(request.path_params["id"]))

    async def checkout(request: Request) -> JSONResponse:
        body = await json_body(request, limit)
        return JSONResponse(await run_in_threadpool(server.checkout, request.path_params["id"], body))

    async def reset(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(server.checkout, request.path_params["id"], {}, True))

    async def page(request: Request) -> Response:
        html = resources.files("agents.refine").joinpath("static/index.html").read_text()
        return Response(html, media_type="text/html")

    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": f"{request.method} {request.url.path}: {exc.detail}"}, status_code=exc.status_code
        )

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        async def reaper() -> None:
            while True:
                await asyncio.sleep(min(30.0, server.options.workspace_ttl))
                server.expire()

        task = asyncio.create_task(reaper())
        yield
        task.cancel()
        server.queue.shutdown(wait=False, cancel_futures=True)

    workspace = "/api/workspaces/{id:str}"
    routes = [
        Route("/", page),
        Route("/api/info", info),
        Route("/api/workspaces", create, methods=["POST"]),
        Route(workspace, show, methods=["GET"]),
        Route(workspace, delete, methods=["DELETE"]),
        Route(workspace + "/versions/{version:str}.png", image),
        Route(workspace + "/apply", apply, methods=["POST"]),
        Route(workspace + "/cancel", cancel, methods=["POST"]),
        Route(workspace + "/checkout", checkout, methods=["POST"]),
        Route(workspace + "/reset", reset, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("agents.refine", "static")]), name="static"),
    ]
    handlers = {ApiError: api_error, HTTPException: http_error, Exception: server_error}
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
