"""Start the refine page: ``python -m agents.refine`` (then open the printed URL).

    python -m agents.refine                                   # the embedded shapes model on the CPU
    python -m agents.refine --model runs/my-run/model --port 8765
    python -m agents.refine --model stabilityai/... --prompts "a red car" "a cat" --device cuda

Every option is documented by ``--help``. The server binds 127.0.0.1 unless --host says otherwise.
"""

from __future__ import annotations

from agents.refine.config import RefineConfig


def build(cfg: RefineConfig):
    """The server state and app of ``cfg`` (the model loaded once, shared by every workspace)."""
    import torch

    try:
        from agents.refine.server import RefineServer, make_app
    except ImportError as err:  # starlette is the refine extra
        raise ImportError(
            f"the refine page needs starlette and uvicorn: pip install 'pxpo-gym[refine]' ({err})"
        ) from err
    from pxpo_gym.loading import load_model

    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    loaded = load_model(cfg.model, cfg.device, prompts=list(cfg.prompts) or None)
    server = RefineServer(cfg, loaded)
    return server, make_app(server)


def main() -> None:
    import socket

    import tyro
    import uvicorn

    cfg = tyro.cli(RefineConfig)
    _, app = build(cfg)
    sock = socket.socket(socket.AF_INET6 if ":" in cfg.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((cfg.host, cfg.port))
    host, port = sock.getsockname()[:2]
    print(
        f"refine page for model {cfg.model!r}: http://{host if ':' not in host else f'[{host}]'}:{port}/",
        flush=True,
    )
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    from pxpo_gym.cli import run

    run(main, "agents.refine")
