"""Start the refine page: ``python -m agents.refine`` (then open the printed URL).

    python -m agents.refine                                   # the embedded shapes model on the CPU
    python -m agents.refine --model runs/my-run/model --port 8765
    python -m agents.refine --model stabilityai/... --prompts "a red car" "a cat" --device cuda

Every option is documented by ``--help``. The server binds 127.0.0.1 unless --host says otherwise.
A bad option, a port in use or a host that is not this machine's prints one line and exits 2; Ctrl-C
cancels the running job, prints one line and exits 130.
"""

from __future__ import annotations

import errno
import socket
import sys

from .config import RefineConfig, check_device_here


def build(cfg: RefineConfig):
    """The server state and app of ``cfg`` (the model loaded once, shared by every workspace)."""
    import torch

    try:
        from .app import make_app
        from .server import RefineServer
    except ImportError as err:  # starlette is the refine extra
        raise ImportError(
            f"the refine page needs starlette and uvicorn: pip install 'pxpo-gym[refine]' ({err})"
        ) from err
    from pxpo_gym.loading import load_model

    check_device_here(cfg.device)  # before the model loads: one line, not a traceback from deep inside it
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    loaded = load_model(cfg.model, cfg.device, prompts=list(cfg.prompts) or None)
    server = RefineServer(cfg, loaded)
    return server, make_app(server)


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host``:``port`` (bound before the model loads, so a port in use fails at once).

    Raises:
        ValueError: the port is in use or not ours to bind, or the host is not an address of this machine.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as err:
        raise ValueError(
            f"host={host!r} does not resolve to an address ({err.strerror}): pass an IP address"
        ) from err
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        # listening now, so the printed URL answers at once: connections wait in the backlog for uvicorn
        sock.listen(128)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise ValueError(
                f"port={port} is already in use on {host}: stop what holds it or pass another --port (0 picks a free one)"
            ) from err
        if err.errno == errno.EADDRNOTAVAIL:
            raise ValueError(
                f"host={host!r} is not an address of this machine: use 127.0.0.1, or 0.0.0.0 for every interface"
            ) from err
        raise ValueError(f"cannot listen on host={host!r} port={port}: {err.strerror or err}") from err
    return sock


def main() -> None:
    import uvicorn

    from pxpo_gym.cli import parse

    cfg = parse(RefineConfig)
    sock = listen(cfg.host, cfg.port)
    server = None
    try:
        server, app = build(cfg)
        host, port = sock.getsockname()[:2]
        print(
            f"refine page for model {cfg.model!r}: http://{host if ':' not in host else f'[{host}]'}:{port}/",
            flush=True,
        )
        # On Ctrl-C uvicorn stops serving, the app's shutdown cancels the jobs (RefineServer.close), then
        # uvicorn usually raises the signal again: the KeyboardInterrupt below, which ends the process
        # quietly. When it returns instead (the signal came while it was shutting down), should_exit says so.
        serving = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        serving.run(sockets=[sock])
        if serving.should_exit:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        if server is not None:
            server.close()  # already done by the app's shutdown unless Ctrl-C came before uvicorn was up
        print("agents.refine: stopped by Ctrl-C (any running job was cancelled)", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        sock.close()


if __name__ == "__main__":
    from pxpo_gym.cli import run

    run(main, "agents.refine")
