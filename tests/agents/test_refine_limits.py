"""The refine server's limits and its process: what one request may cost (the image's scale, the feedback
archive), what it may block (the event loop, the job queue), and how the process starts and stops (bad
options, a port in use, a client gone mid-upload, Ctrl-C): one line each, never a traceback."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from agents.refine.__main__ import build  # noqa: E402
from agents.refine.app import MAX_IMAGE_SIDE  # noqa: E402
from agents.refine.config import RefineConfig  # noqa: E402
from agents.refine.feedback import DISLIKE, Feedback  # noqa: E402
from agents.refine.workspace import Version, feedback_archive  # noqa: E402
from tests.agents.test_refine import b64, halves, local_client, png, small_config, wait  # noqa: E402


@pytest.fixture
def client(tiny_model_dir):
    server, app = build(small_config(tiny_model_dir, max_updates=4))
    with local_client(app) as client:
        client.server = server
        yield client


def test_image_scale_is_capped_by_the_png_side(client):
    """A 128-px image may be scaled 16x (2048 px), not 64x (8192 px: 245 MB built per request before)."""
    ws = client.post("/api/workspaces", json={}).json()["id"]
    client.server.workspaces[ws].workspace.versions[0].image = torch.rand(3, 128, 128)
    big = client.get(f"/api/workspaces/{ws}/versions/0.png?scale=64")
    assert big.status_code == 400
    assert big.json()["error"] == (
        "scale must be an int in [1, 16] for this 128x128 image (a PNG's side is at most 2048 px), got '64'"
    )
    largest = client.get(f"/api/workspaces/{ws}/versions/0.png?scale=16")
    assert (
        largest.status_code == 200 and Image.open(io.BytesIO(largest.content)).size == (MAX_IMAGE_SIDE,) * 2
    )
    assert client.get("/api/info").json()["max_scale"] == 256  # for the page: the 8-px model's 8 * 256 = 2048


def test_image_is_built_off_the_event_loop(client, monkeypatch):
    """While one PNG is being built, another request is answered (before: the loop waited for the PNG)."""
    ws = client.post("/api/workspaces", json={}).json()["id"]
    entered, release, freed = threading.Event(), threading.Event(), []
    build_png = Version.png

    def slow_png(self, scale=1):
        entered.set()
        freed.append(release.wait(timeout=10))  # on the loop thread nothing can set it: False after 10 s
        return build_png(self, scale)

    monkeypatch.setattr(Version, "png", slow_png)
    replies = []
    fetch = threading.Thread(
        target=lambda: replies.append(client.get(f"/api/workspaces/{ws}/versions/0.png?scale=4"))
    )
    fetch.start()
    assert entered.wait(timeout=30)
    assert client.get("/api/info").status_code == 200  # served while the PNG is still being built
    release.set()
    fetch.join(timeout=30)
    assert freed == [True] and replies[0].status_code == 200


def test_cancelling_a_queued_job_frees_the_workspace_at_once(client):
    ws = client.post("/api/workspaces", json={}).json()["id"]
    gate = threading.Event()
    client.server.queue.submit(gate.wait, 30)  # the single worker is busy: the apply below stays queued
    body = {"feedback": b64(png(halves(8))), "updates": 1}
    try:
        assert client.post(f"/api/workspaces/{ws}/apply", json=body).json()["state"] == "queued"
        cancelled = client.post(f"/api/workspaces/{ws}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert client.get(f"/api/workspaces/{ws}").json()["job"]["state"] == "cancelled"
        again = client.post(f"/api/workspaces/{ws}/apply", json=body)  # before the worker is free
        assert again.status_code == 202, again.text
    finally:
        gate.set()
    assert wait(client, ws)["state"] == "done"
    assert len(client.server.workspaces[ws].workspace.versions) == 2  # only the second apply ran


class Records(logging.Handler):
    """Keeps every log record it is handed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_client_disconnect_mid_upload_logs_one_line(tiny_model_dir):
    from benchmarks.studies.browser import serve

    _, app = build(small_config(tiny_model_dir))
    records = Records()
    loggers = [logging.getLogger(name) for name in ("uvicorn", "agents.refine")]
    with serve(app) as url:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        for logger in loggers:  # after serve: uvicorn's logging config is in place
            logger.addHandler(records)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                head = (
                    f"POST /api/workspaces HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                )
                sock.sendall(head.encode() + b'{"seed": ')  # 9 of the 1000 bytes announced, then gone
                time.sleep(0.2)
            deadline = time.monotonic() + 30
            while not records.records and time.monotonic() < deadline:
                time.sleep(0.05)
            assert urllib.request.urlopen(url + "api/info", timeout=30).status == 200  # still serving
        finally:
            for logger in loggers:
                logger.removeHandler(records)
    assert [(r.levelno, r.exc_info) for r in records.records] == [(logging.WARNING, None)]
    line = records.records[0].getMessage()
    assert "\n" not in line and "disconnected" in line and "/api/workspaces" in line


def test_feedback_zip_is_streamed_not_built_in_memory(tiny_model_dir, tmp_path):
    """A 16 MB archive passes through the server with a few MB of Python memory (before: twice its size),
    holding what ``feedback_archive`` holds."""
    import zipfile

    from benchmarks.studies.browser import serve

    server, app = build(small_config(tiny_model_dir))
    generator = torch.Generator().manual_seed(0)
    noise = [torch.rand(3, 256, 256, generator=generator) for _ in range(41)]  # each PNG ~197 kB
    painting = Feedback(torch.zeros(8, 8, dtype=torch.long), torch.zeros(3, 8, 8), png(halves(8)))
    download = tmp_path / "feedback.zip"
    with serve(app) as url:
        request = urllib.request.Request(
            url + "api/workspaces", data=b"{}", headers={"Content-Type": "application/json"}
        )
        ws = json.load(urllib.request.urlopen(request, timeout=60))["id"]
        workspace = server.workspaces[ws].workspace
        workspace.versions = [Version(0, None, noise[0], {})] + [
            Version(k, k - 1, noise[k], {}, 1, [0.0, 1.0], 1, painting, {"updates": 1}) for k in range(1, 41)
        ]
        tracemalloc.start()
        try:
            start = tracemalloc.get_traced_memory()[0]
            with (
                urllib.request.urlopen(url + f"api/workspaces/{ws}/feedback.zip", timeout=120) as reply,
                download.open("wb") as file,
            ):
                assert reply.headers["Content-Type"] == "application/zip"
                while chunk := reply.read(1 << 16):  # the client holds one chunk at a time, too
                    file.write(chunk)
            peak = tracemalloc.get_traced_memory()[1] - start
        finally:
            tracemalloc.stop()
    size = download.stat().st_size
    assert peak < size / 4, (peak, size)  # 2.2 MB measured: the 1 MiB spool, one PNG and one chunk
    expected = feedback_archive(workspace, server.loaded.context_names, server.options.model)
    with zipfile.ZipFile(download) as got, zipfile.ZipFile(io.BytesIO(expected)) as want:
        assert got.namelist() == want.namelist() and len(got.namelist()) == 1 + 4 * 40
        assert all(got.read(name) == want.read(name) for name in want.namelist())  # only the times differ
    assert size == len(expected) > 15e6


def refine_command(*args: str) -> list[str]:
    """``python -m agents.refine`` on the embedded model, one torch thread, the smallest apply."""
    small = ("--group-size", "2", "--num-inference-steps", "2", "--refine-steps", "1")
    return [sys.executable, "-m", "agents.refine", "--threads", "1", *small, *args]


def child_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_ctrl_c_cancels_the_running_job_and_exits_quietly():
    proc = subprocess.Popen(
        refine_command("--port", "0", "--max-updates", "1000000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
    )
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line, (line, proc.poll())
        url = line.split(": ", 1)[1].strip()

        def post(path: str, body: dict) -> dict:
            data = json.dumps(body).encode()
            request = urllib.request.Request(url + path, data, {"Content-Type": "application/json"})
            return json.load(urllib.request.urlopen(request, timeout=60))

        height, width = json.load(urllib.request.urlopen(url + "api/info", timeout=60))["image_size"]
        ws = post("api/workspaces", {})["id"]
        rgba = np.zeros((height, width, 4), np.uint8)
        rgba[:, : width // 2] = (*DISLIKE, 255)
        post(f"api/workspaces/{ws}/apply", {"feedback": b64(png(rgba)), "updates": 1_000_000})
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # running, one update done: Ctrl-C lands mid-job
            job = json.load(urllib.request.urlopen(url + f"api/workspaces/{ws}", timeout=60))["job"]
            if job["done_updates"] >= 1:
                break
            time.sleep(0.05)
        assert job["state"] == "running", job
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)  # the job's 10**6 updates would take hours
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode in (0, 130), (proc.returncode, stderr)
    assert stderr == "agents.refine: stopped by Ctrl-C (any running job was cancelled)\n"


def test_bad_options_are_refused_when_parsed():
    cases = [
        (dict(threads=0), "threads must be an int >= 1 (or None: torch's default), got threads=0"),
        (dict(threads=True), "threads must be an int >= 1"),
        (dict(device="nonsense"), "device must be cpu, cuda, cuda:N or mps, got device='nonsense'"),
        (dict(device="meta"), "device must be cpu, cuda, cuda:N or mps, got device='meta'"),
        (dict(host="999.1.1.1"), "got host='999.1.1.1'"),
        (dict(host="my_host"), "host must be an IP address of this machine"),
    ]
    for options, message in cases:
        with pytest.raises(ValueError) as caught:
            RefineConfig(**options)
        assert message in str(caught.value)
    for host in ("127.0.0.1", "0.0.0.0", "::1", "localhost", "studio.lan"):
        assert RefineConfig(host=host).host == host
    assert (
        RefineConfig(device="cuda:1").device == "cuda:1"
    )  # parsed anywhere; checked on the machine at start


def test_cli_errors_are_one_line_and_exit_2():
    """Bad options, a host that is not this machine's and a port in use: one line on stderr, status 2."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        cases = {
            ("--threads", "0"): "threads must be an int >= 1",
            ("--device", "nonsense"): "device='nonsense'",
            ("--device", "cuda:99", "--port", "0"): "device='cuda:99' but",  # known when the server starts
            ("--host", "999.1.1.1"): "host='999.1.1.1'",
            ("--host", "192.0.2.1"): "host='192.0.2.1' is not an address of this machine",  # TEST-NET-1
            ("--port", port): f"port={port} is already in use on 127.0.0.1",
        }
        procs = {  # at once: each spends its time importing torch
            args: subprocess.Popen(
                refine_command(*args),
                stderr=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=child_env(),
            )
            for args in cases
        }
        outcomes = {args: (proc.communicate(timeout=120), proc.returncode) for args, proc in procs.items()}
    for args, ((stdout, stderr), status) in outcomes.items():
        assert status == 2 and stdout == "", (args, status, stderr)
        assert stderr.startswith("agents.refine: error: ") and stderr.count("\n") == 1, (args, stderr)
        assert cases[args] in stderr, (args, stderr)
