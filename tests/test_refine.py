"""The refine server over HTTP: workspaces, apply jobs, 409 / cancel, and every bad input refused
with a clear JSON message that changes nothing."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("starlette")
pytest.importorskip("httpx")
from starlette.testclient import TestClient  # noqa: E402

from agents.refine.__main__ import RefineConfig, build  # noqa: E402
from agents.refine.workspace import DISLIKE, LIKE, parse_feedback, region_change  # noqa: E402


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def halves(size: int) -> np.ndarray:
    """Feedback: left half disliked, right half liked (RGBA, opaque)."""
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[:, : size // 2] = (*DISLIKE, 255)
    rgba[:, size // 2 :] = (*LIKE, 255)
    return rgba


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def client(tiny_model_dir):
    cfg = RefineConfig(
        model=str(tiny_model_dir),
        group_size=4,
        inner_epochs=1,
        num_inference_steps=3,
        refine_steps=2,
        max_updates=4,
    )
    server, app = build(cfg)
    with TestClient(app) as client:
        client.server = server
        yield client


def wait(client, ws_id, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/workspaces/{ws_id}").json()["job"]
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError("job did not finish")


def test_page_and_assets_are_served_from_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # nothing fetched from the internet
    for asset in ("app.js", "style.css"):
        response = client.get(f"/static/{asset}")
        assert (
            response.status_code == 200 and "http://" not in response.text and "https://" not in response.text
        )
    info = client.get("/api/info").json()
    assert info["contexts"] == ["class_0", "class_1", "class_2"] and info["image_size"] == [8, 8]


def test_apply_makes_a_new_version_and_history_is_exact(client):
    ws = client.post("/api/workspaces", json={"context": 1, "seed": 3}).json()
    v0 = client.get(f"/api/workspaces/{ws['id']}/versions/0.png").content
    job = client.post(
        f"/api/workspaces/{ws['id']}/apply", json={"feedback": b64(png(halves(8))), "updates": 2}
    )
    assert job.status_code == 202
    done = wait(client, ws["id"])
    assert done["state"] == "done" and done["done_updates"] == 2 and len(done["rewards"]) == 2
    state = client.get(f"/api/workspaces/{ws['id']}").json()
    assert state["current"] == 1 and state["versions"][1]["parent"] == 0
    v1 = client.get(f"/api/workspaces/{ws['id']}/versions/1.png").content
    assert v1 != v0
    big = Image.open(io.BytesIO(client.get(f"/api/workspaces/{ws['id']}/versions/1.png?scale=4").content))
    assert big.size == (32, 32)
    # going back re-renders exactly version 0's image from its saved weights
    entry = client.server.workspaces[ws["id"]]
    client.post(f"/api/workspaces/{ws['id']}/checkout", json={"version": 0})
    assert torch.equal(entry.workspace.render(), entry.workspace.versions[0].image)
    client.post(f"/api/workspaces/{ws['id']}/checkout", json={"version": 1})
    assert torch.equal(entry.workspace.render(), entry.workspace.versions[1].image)
    reset = client.post(f"/api/workspaces/{ws['id']}/reset").json()
    assert reset["current"] == 0 and len(reset["versions"]) == 1


def test_second_apply_while_running_is_409_and_cancel_restores(client):
    ws = client.post("/api/workspaces", json={"context": 0, "seed": 0}).json()["id"]
    entry = client.server.workspaces[ws]
    before = entry.workspace.weights()
    body = {"feedback": b64(png(halves(8))), "updates": 4}
    assert client.post(f"/api/workspaces/{ws}/apply", json=body).status_code == 202
    second = client.post(f"/api/workspaces/{ws}/apply", json=body)
    assert second.status_code == 409 and "already applying" in second.json()["error"]
    assert client.post(f"/api/workspaces/{ws}/cancel").status_code == 200
    job = wait(client, ws)
    assert job["state"] == "cancelled"
    after = entry.workspace.weights()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-changed
    assert len(entry.workspace.versions) == 1
    assert client.post(f"/api/workspaces/{ws}/cancel").status_code == 409  # nothing left to cancel


def bad_feedback_cases():
    wrong_size = png(halves(16))
    half_transparent = halves(8)
    half_transparent[0, 0, 3] = 100
    return [
        ({"feedback": b64(wrong_size), "updates": 1}, 400, "16x16 pixels; the image is 8x8"),
        ({"feedback": b64(b"GIF89a not a png"), "updates": 1}, 400, "not a PNG"),
        ({"feedback": "", "updates": 1}, 400, "empty"),
        ({"feedback": "@@@not base64@@@", "updates": 1}, 400, "feedback"),
        ({"feedback": b64(png(np.zeros((8, 8, 4), np.uint8))), "updates": 1}, 400, "no painted pixel"),
        ({"feedback": b64(png(half_transparent)), "updates": 1}, 400, "fully transparent"),
        ({"feedback": b64(b"\x89PNG\r\n\x1a\n" + b"0" * (1 << 21)), "updates": 1}, 413, "limit"),
        ({"feedback": b64(png(halves(8))), "updates": 0}, 400, "updates must be an int in [1, 4]"),
        ({"feedback": b64(png(halves(8))), "updates": 10**9}, 400, "updates must be"),
        ({"feedback": b64(png(halves(8))), "updates": "2"}, 400, "updates must be"),
        ({"feedback": 7, "updates": 1}, 400, "base64 PNG string"),
    ]


@pytest.mark.parametrize("body, status, message", bad_feedback_cases())
def test_bad_apply_requests_are_refused_and_change_nothing(client, body, status, message):
    ws = client.post("/api/workspaces", json={"context": 0, "seed": 1}).json()["id"]
    response = client.post(f"/api/workspaces/{ws}/apply", json=body)
    assert response.status_code == status and message in response.json()["error"]
    state = client.get(f"/api/workspaces/{ws}").json()
    assert state["job"] is None and len(state["versions"]) == 1


def test_other_bad_requests_get_clear_json_errors(client):
    ws = client.post("/api/workspaces", json={"context": "class_2", "seed": 0}).json()["id"]
    cases = [
        (client.get("/api/workspaces/nope"), 404, "unknown workspace"),
        (client.post("/api/workspaces/nope/apply", json={}), 404, "unknown workspace"),
        (client.get(f"/api/workspaces/{ws}/versions/7.png"), 404, "no version"),
        (client.get(f"/api/workspaces/{ws}/versions/..%2F..%2Fetc.png"), 404, "Not Found"),
        (client.get(f"/api/workspaces/{ws}/versions/0.png?scale=1000"), 400, "scale"),
        (client.post(f"/api/workspaces/{ws}/checkout", json={"version": 5}), 404, "existing version"),
        (client.post("/api/workspaces", content=b"{not json"), 400, "not valid JSON"),
        (client.post("/api/workspaces", json=[1, 2]), 400, "JSON object"),
        (client.post("/api/workspaces", json={"context": 9}), 400, "context must be"),
        (client.post("/api/workspaces", json={"seed": -1}), 400, "seed must be"),
        (client.post(f"/api/workspaces/{ws}/apply", content=b"x" * (3 << 20)), 413, "limit"),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert message in response.json()["error"]
    # after all that the server still works
    assert client.get(f"/api/workspaces/{ws}").status_code == 200
    assert client.delete(f"/api/workspaces/{ws}").status_code == 200
    assert client.get(f"/api/workspaces/{ws}").status_code == 404


def test_workspaces_expire_and_are_limited(tiny_model_dir):
    cfg = RefineConfig(
        model=str(tiny_model_dir),
        group_size=2,
        num_inference_steps=2,
        refine_steps=1,
        max_workspaces=2,
        workspace_ttl=0.2,
    )
    server, app = build(cfg)
    with TestClient(app) as client:
        first = client.post("/api/workspaces", json={}).json()["id"]
        client.post("/api/workspaces", json={})
        third = client.post("/api/workspaces", json={})
        assert third.status_code == 429 and "limit" in third.json()["error"]
        time.sleep(0.3)
        assert (
            client.post("/api/workspaces", json={}).status_code == 201
        )  # creating expires the stale ones first
        assert client.get(f"/api/workspaces/{first}").status_code == 404


def test_feedback_parsing_by_hand():
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (*LIKE, 255)
    rgba[0, 1] = (*DISLIKE, 255)
    rgba[1, 2] = (10, 20, 30, 255)
    feedback = parse_feedback(png(rgba), (2, 3), 10_000)
    assert feedback.labels.tolist() == [[1, 2, 0], [0, 0, 3]]
    torch.testing.assert_close(feedback.colours[:, 1, 2], torch.tensor([10, 20, 30]) / 255)
    before, after = torch.zeros(3, 2, 3), torch.zeros(3, 2, 3)
    after[:, 0, 1] = 0.5
    assert region_change(before, after, feedback.labels == 2) == pytest.approx(0.5)
    assert region_change(before, after, feedback.labels == 1) == 0.0


def test_latent_pipeline_end_to_end_with_prompts_from_the_page(tiny_sd_dir):
    from tests.test_latent import PROMPTS

    cfg = RefineConfig(
        model=str(tiny_sd_dir),
        prompts=tuple(PROMPTS),
        group_size=2,
        inner_epochs=1,
        num_inference_steps=3,
        refine_steps=2,
        max_updates=2,
    )
    server, app = build(cfg)
    with TestClient(app) as client:
        info = client.get("/api/info").json()
        assert info["latent"] and info["contexts"] == PROMPTS and info["image_size"] == [16, 16]
        ws = client.post("/api/workspaces", json={"context": PROMPTS[1], "seed": 2}).json()
        assert ws["context_name"] == PROMPTS[1]
        trainable = [
            n
            for n, p in server.workspaces[ws["id"]].workspace.trainer.policy.named_parameters()
            if p.requires_grad
        ]
        assert trainable and all("lora_" in n for n in trainable)  # LoRA on latent pipelines
        body = {"feedback": b64(png(halves(16))), "updates": 1}
        assert client.post(f"/api/workspaces/{ws['id']}/apply", json=body).status_code == 202
        assert wait(client, ws["id"])["state"] == "done"
        assert client.get(f"/api/workspaces/{ws['id']}/versions/1.png").status_code == 200
