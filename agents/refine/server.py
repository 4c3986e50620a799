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
- ``POST /api/workspaces/{id}/apply`` ``{"feedback": base64 PNG, "updates": K, "steps": S}``: starts a job
  (202); S, the strength, is how many of the last denoising steps the edit may change (default: as before).
- ``POST /api/workspaces/{id}/cancel``: stops its job between updates (the workspace is left as before).
- ``POST /api/workspaces/{id}/checkout`` ``{"version": v}``; ``POST /api/workspaces/{id}/reset``.
- ``GET /api/workspaces/{id}/feedback.zip``: every apply's painting, images and settings (``FEEDBACK_FORMAT``).
- ``DELETE /api/workspaces/{id}``.

Requests are checked before they are read: the Host header must name the server's own address (or one of
``--allowed-hosts``), a request carrying an Origin must come from the server's own origin (or one of
``--allowed-origins``), so other web pages in the user's browser (and DNS rebinding) cannot drive the API;
a body must be JSON and its Content-Length (and what is actually read) within the limit.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import gc
import json
import re
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
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from agents.refine.config import RefineConfig
from agents.refine.feedback import parse_feedback
from agents.refine.workspace import Cancelled, Workspace, feedback_archive, refine_train_config
from pxpo_gym.models import LoadedModel

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Host names that always reach the server when it binds a loopback address."""


def parse_count(text: str, name: str, low: int, high: int, status: int = 400) -> int:
    """An integer from a URL (ASCII digits only, range checked before conversion) or an ApiError."""
    if not re.fullmatch(r"[0-9]{1,9}", text) or not low <= int(text) <= high:
        raise ApiError(status, f"{name} must be an int in [{low}, {high}], got {text[:40]!r}")
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
            entry.job.cancel.set()
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
        self.queue.submit(self.run_job, entry, job, feedback, steps)
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
                if isinstance(index, bool) or not isinstance(index, int):
                    raise ApiError(400, f"version must be an int, got {str(index)[:40]!r}")
                if not 0 <= index < count:
                    raise ApiError(
                        404, f"version must be an existing version in [0, {count - 1}], got {index}"
                    )
                entry.workspace.checkout(index)
        return self.describe(workspace_id)


async def json_body(request: Request, limit: int) -> dict[str, Any]:
    """The request's JSON object, read only if its declared size is within ``limit`` bytes and never past it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not re.fullmatch(r"[0-9]{1,12}", declared):
            raise ApiError(400, f"Content-Length must be a byte count, got {declared[:40]!r}")
        if int(declared) > limit:
            raise ApiError(413, f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw:
        return {}
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise ApiError(415, f"request body must be application/json, got Content-Type {kind[:60]!r}")
    try:
        body = json.loads(raw)
    except (
        ValueError,
        RecursionError,
    ) as err:  # bad JSON or UTF-8, an int past Python's digit limit, nesting
        raise ApiError(400, f"request body is not valid JSON: {str(err)[:200]}") from err
    if not isinstance(body, dict):
        raise ApiError(400, f"request body must be a JSON object, got {type(body).__name__}")
    return body


class GuardMiddleware:
    """Refuses, before anything is read, requests whose Host is not the server's own address and requests
    whose Origin is not the server's own origin (a JSON 403 / 400), unless the options allow them.

    Args:
        app: the ASGI app behind the guard.
        hosts: host names (no port) that may appear in Host (``LOCAL_HOSTS``, the bound host, the allowed).
        origins: extra origins (``scheme://host[:port]``) allowed beside the request's own.
    """

    def __init__(self, app: Any, hosts: set[str], origins: set[str]) -> None:
        self.app, self.hosts, self.origins = app, hosts, origins

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        name = host[1:].split("]")[0] if host.startswith("[") else host.rsplit(":", 1)[0]
        origin = headers.get("origin")
        error = None
        if name.lower() not in self.hosts:
            error = 400, f"Host {host[:80]!r} is not this server's address (allowed: {sorted(self.hosts)})"
        elif origin is not None and origin not in self.origins and origin != f"http://{host}":
            error = 403, f"requests from Origin {origin[:80]!r} are refused (only this page's own origin)"
        if error is None:
            await self.app(scope, receive, send)
            return
        await JSONResponse({"error": error[1]}, status_code=error[0])(scope, receive, send)


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
                "num_inference_steps": opts.num_inference_steps,
                "default_steps": opts.refine_steps,
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
        scale = parse_count(request.query_params.get("scale", "1"), "scale", 1, 64)
        return Response(version.png(scale), media_type="image/png")

    async def feedback(request: Request) -> Response:
        workspace_id = request.path_params["id"]
        entry = server.entry(workspace_id)
        data = await run_in_threadpool(
            feedback_archive, entry.workspace, server.loaded.context_names, server.options.model
        )
        name = f"refine-feedback-{workspace_id}.zip"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        return Response(data, media_type="application/zip", headers=headers)

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
        Route(workspace + "/feedback.zip", feedback),
        Route(workspace + "/apply", apply, methods=["POST"]),
        Route(workspace + "/cancel", cancel, methods=["POST"]),
        Route(workspace + "/checkout", checkout, methods=["POST"]),
        Route(workspace + "/reset", reset, methods=["POST"]),
        Mount("/static", StaticFiles(packages=[("agents.refine", "static")]), name="static"),
    ]
    handlers = {ApiError: api_error, HTTPException: http_error, Exception: server_error}
    opts = server.options
    hosts = {*LOCAL_HOSTS, opts.host.lower(), *(h.lower() for h in opts.allowed_hosts)}
    guard = Middleware(GuardMiddleware, hosts=hosts, origins=set(opts.allowed_origins))
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan, middleware=[guard])
