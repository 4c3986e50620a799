"""The refine page over HTTP: a Starlette app with one page and a JSON API on a ``RefineServer``
(``agents.refine.server``: the workspaces and the job queue).

API (JSON in and out; errors are ``{"error": message}`` with a 4xx status):

- ``GET /api/info``: the model's contexts, image size and the server's limits.
- ``POST /api/workspaces`` ``{"context": id or name, "seed": int}``: a new workspace (version 0).
- ``GET /api/workspaces/{id}``: its versions, the current one and its job.
- ``GET /api/workspaces/{id}/versions/{v}.png?scale=N``: a version's image (N: pixelated upscale, at most
  ``max_scale``: the PNG's sides stay within ``MAX_IMAGE_SIDE`` pixels; /api/info gives the limit).
- ``POST /api/workspaces/{id}/apply`` ``{"feedback": base64 PNG, "updates": K, "steps": S}``: starts a job
  (202); S, the strength, is how many of the last denoising steps the edit may change (default: as before).
- ``POST /api/workspaces/{id}/cancel``: a queued job leaves the queue at once, a running one stops between
  updates (the workspace is left as before).
- ``POST /api/workspaces/{id}/checkout`` ``{"version": v}``; ``POST /api/workspaces/{id}/reset``.
- ``GET /api/workspaces/{id}/feedback.zip``: every apply's painting, images and settings (``FEEDBACK_FORMAT``),
  written to a temporary file (in memory up to ``SPOOL_BYTES``) and streamed.
- ``DELETE /api/workspaces/{id}``.

Requests are checked before they are read: the Host header must name the server's own address (or one of
``--allowed-hosts``), a request carrying an Origin must come from the server's own origin (or one of
``--allowed-origins``), so other web pages in the user's browser (and DNS rebinding) cannot drive the API;
a body must be JSON and its Content-Length (and what is actually read) within the limit. A client that
disconnects mid-upload costs one log line. Images and archives are built off the event loop. Every request,
refused ones included, prints one line on stdout (``AccessLogMiddleware``; ``--no-access-log``: none).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import resources
from typing import IO, Any

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .server import ApiError, RefineServer, parse_count
from .workspace import write_feedback_archive

log = logging.getLogger(__name__)

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
"""Host names that always reach the server when it binds a loopback address."""
MAX_IMAGE_SIDE = 2048
"""Largest side, in pixels, of a PNG the image endpoint builds (a 2048 x 2048 RGB image is 12 MB raw):
``?scale=N`` is refused above ``max_scale`` of the image."""
IMAGE_RENDERS = 2
"""Upscaled PNGs built at once (in worker threads; more requests wait their turn)."""
SPOOL_BYTES = 1 << 20
"""A feedback archive stays in memory up to this size, then moves to a temporary file."""
CHUNK_BYTES = 1 << 16
"""Bytes per chunk of a streamed archive."""
MAX_LOGGED_PATH = 120
"""Characters of a request's path the access log prints."""


def max_scale(size: tuple[int, int]) -> int:
    """The largest ``?scale`` of an image of ``size`` (H, W) whose PNG stays within ``MAX_IMAGE_SIDE`` pixels a
    side (1 for an image already larger)."""
    return max(1, MAX_IMAGE_SIDE // max(size))


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


class AccessLogMiddleware:
    """Prints one line per HTTP request on stdout once it is answered: method, path, status and the
    milliseconds to the end of the response, e.g. ``refine: POST /api/workspaces 200 41 ms``. The query
    string and the body are never printed; the path is cut at ``MAX_LOGGED_PATH`` characters, with anything
    unprintable escaped (one request, one line).

    Args:
        app: the ASGI app whose requests are logged.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), None

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            status = status or 500  # answered by Starlette's outermost handler
            raise
        finally:
            ms = (time.perf_counter() - started) * 1000
            path = scope["path"].encode("unicode_escape").decode("ascii")
            if len(path) > MAX_LOGGED_PATH:
                path = path[:MAX_LOGGED_PATH] + "..."
            print(
                f"refine: {scope['method']} {path} {status or '-'} {ms:.0f} ms", file=sys.stdout, flush=True
            )


def spooled_archive(server: RefineServer, workspace_id: str) -> tuple[IO[bytes], int]:
    """``workspace_id``'s feedback archive in a temporary file (in memory up to ``SPOOL_BYTES``), rewound,
    and its size in bytes."""
    entry = server.entry(workspace_id)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
    try:
        write_feedback_archive(spool, entry.workspace, server.loaded.context_names, server.options.model)
    except BaseException:
        spool.close()
        raise
    size = spool.tell()
    spool.seek(0)
    return spool, size


def file_chunks(file: IO[bytes]) -> Iterator[bytes]:
    """``file``'s bytes in ``CHUNK_BYTES`` pieces; closes it when done or dropped (a client gone mid-download)."""
    with file:
        while chunk := file.read(CHUNK_BYTES):
            yield chunk


def make_app(server: RefineServer) -> Starlette:
    """The Starlette app serving the page (``agents/refine/static``) and the API of ``server``."""
    limit = 2 * server.options.max_feedback_bytes + 4096
    renders = anyio.CapacityLimiter(IMAGE_RENDERS)

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
                "max_scale": max_scale(server.loaded.image_size),
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
        height, width = version.image.shape[-2:]
        why = f" for this {width}x{height} image (a PNG's side is at most {MAX_IMAGE_SIDE} px)"
        scale = parse_count(
            request.query_params.get("scale", "1"), "scale", 1, max_scale((height, width)), why=why
        )
        # PNG encoding takes a while at large scales: in a worker thread, so other requests go on
        data = await anyio.to_thread.run_sync(version.png, scale, limiter=renders)
        return Response(data, media_type="image/png")

    async def feedback(request: Request) -> Response:
        workspace_id = request.path_params["id"]
        spool, size = await run_in_threadpool(spooled_archive, server, workspace_id)
        name = f"refine-feedback-{workspace_id}.zip"
        headers = {"Content-Disposition": f'attachment; filename="{name}"', "Content-Length": str(size)}
        return StreamingResponse(file_chunks(spool), media_type="application/zip", headers=headers)

    async def apply(request: Request) -> JSONResponse:
        body = await json_body(request, limit)  # the PNG is decoded in a worker thread, the locks taken there
        return JSONResponse(
            await run_in_threadpool(server.apply, request.path_params["id"], body), status_code=202
        )

    async def cancel(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(server.cancel, request.path_params["id"]))

    async def checkout(request: Request) -> JSONResponse:
        body = await json_body(request, limit)
        return JSONResponse(await run_in_threadpool(server.checkout, request.path_params["id"], body))

    async def reset(request: Request) -> JSONResponse:
        return JSONResponse(await run_in_threadpool(server.checkout, request.path_params["id"], {}, True))

    async def page(request: Request) -> Response:
        html = resources.files(__package__).joinpath("static/index.html").read_text()
        return Response(html, media_type="text/html")

    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": f"{request.method} {request.url.path}: {exc.detail}"}, status_code=exc.status_code
        )

    async def client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # Nobody reads the reply; the line is all that is left of the request (no traceback: not a bug).
        log.warning(
            "refine: the client disconnected during %s %s; request dropped", request.method, request.url.path
        )
        return JSONResponse({"error": "the client disconnected before the request was read"}, status_code=400)

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
        await run_in_threadpool(server.close)  # cancels every job; the running one stops after its update

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
        Mount("/static", StaticFiles(packages=[(__package__, "static")]), name="static"),
    ]
    handlers = {
        ApiError: api_error,
        HTTPException: http_error,
        ClientDisconnect: client_gone,
        Exception: server_error,
    }
    opts = server.options
    hosts = {*LOCAL_HOSTS, opts.host.lower(), *(h.lower() for h in opts.allowed_hosts)}
    guard = Middleware(GuardMiddleware, hosts=hosts, origins=set(opts.allowed_origins))
    # the access log outermost: refused requests are logged too
    logged = [Middleware(AccessLogMiddleware)] if opts.access_log else []
    return Starlette(
        routes=routes, exception_handlers=handlers, lifespan=lifespan, middleware=[*logged, guard]
    )
