"""SIGKILL the server in the middle of an import, a training and an inference; restart;
nothing half-written is visible. Then SIGKILL ``labelloop export`` while it runs.

One server data dir goes through the phases in order (each restart is a fresh
process on the same SQLite file and storage):

1. import: killed while blobs are being written -> no item rows; the orphan
   blobs are invisible and every stored object still hashes to its name;
2. training: killed once its model version row exists -> after restart the job
   is ``failed`` with a reason, and so is the version (never ``ready``/current);
3. inference: killed while it predicts -> job ``failed``; no proposal is half
   written (items ``proposed`` == open proposals == 0); the trained model stays;
4. export (CLI): killed at several moments -> the output file is absent or whole.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.system.faults.live import (
    JOB_SECONDS,
    LABELLOOP,
    STEP_SECONDS,
    LiveServer,
    add_colours,
    label_through_queue,
    noise_png,
    wait_for,
)

pytestmark = pytest.mark.slow


def _objects(data_dir: Path) -> list[Path]:
    root = data_dir / "storage" / "objects"
    return [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


def _check_objects_whole(data_dir: Path) -> None:
    for p in _objects(data_dir):
        if p.name.startswith(".tmp-"):
            continue  # a write that never finished: never at a final path, swept later
        assert hashlib.sha256(p.read_bytes()).hexdigest() == p.name, f"half-written object {p}"


def _jobs(c: httpx.Client, pid: int, kind: str) -> list[dict[str, Any]]:
    return [j for j in c.get(f"/api/v1/projects/{pid}/jobs").json()["data"] if j["kind"] == kind]


def _phase_import(srv: LiveServer, c: httpx.Client, pid: int) -> list[tuple[str, bytes]]:
    batch = [(f"n{i:03d}.png", noise_png(i)) for i in range(120)]
    files = [("files", (n, d, "image/png")) for n, d in batch]
    outcome: dict[str, Any] = {}

    def send() -> None:
        try:
            outcome["status"] = c.post(f"/api/v1/projects/{pid}/items", files=files, timeout=120).status_code
        except httpx.HTTPError as exc:
            outcome["error"] = repr(exc)

    t = threading.Thread(target=send)
    t.start()
    wait_for(lambda: _objects(srv.data_dir), timeout=STEP_SECONDS, every=0.005, what="the first stored blob")
    srv.kill()
    t.join(timeout=30)
    assert "status" not in outcome, f"the import finished before the kill: {outcome}"
    assert _objects(srv.data_dir), "no blob written before the kill"
    return batch


def _verify_import(c: httpx.Client, srv: LiveServer, pid: int, batch: list[tuple[str, bytes]]) -> None:
    assert c.get(f"/api/v1/projects/{pid}/items").json()["count"] == 0, "rows of a killed import are visible"
    _check_objects_whole(srv.data_dir)
    r = c.post(f"/api/v1/projects/{pid}/items", files=[("files", (n, d, "image/png")) for n, d in batch[:20]])
    assert r.status_code == 201 and len(r.json()["created"]) == 20, r.text
    for row in r.json()["created"][:5]:
        img = c.get(f"/api/v1/items/{row['id']}/image")
        assert img.status_code == 200 and hashlib.sha256(img.content).hexdigest() == row["sha256"]


_add_colours = add_colours


def _phase_train(srv: LiveServer, c: httpx.Client, pid: int) -> int:
    # "precise" fine-tunes the backbone: a window of many seconds to be killed in
    assert c.put(f"/api/v1/projects/{pid}/policy", json={"algorithm": "precise", "epochs": 30}).status_code == 200
    r = c.post(f"/api/v1/projects/{pid}/train")
    assert r.status_code == 202, r.text
    wait_for(lambda: [m for m in c.get(f"/api/v1/projects/{pid}/model-versions").json()
                      if m["status"] == "training"], timeout=JOB_SECONDS, what="a model version in training")
    srv.kill()  # the job's error after restart proves it was still running
    return int(r.json()["id"])


def _verify_train(c: httpx.Client, pid: int, job_id: int) -> None:
    job = c.get(f"/api/v1/jobs/{job_id}").json()
    assert job["state"] == "failed", job
    assert "stopped heartbeating" in (job["error"] or ""), job
    mvs = c.get(f"/api/v1/projects/{pid}/model-versions").json()
    assert mvs and all(m["status"] == "failed" and not m["is_current"] for m in mvs), mvs
    assert c.get(f"/api/v1/projects/{pid}/stats").status_code == 200


def _phase_infer(srv: LiveServer, c: httpx.Client, pid: int) -> int:
    assert c.put(f"/api/v1/projects/{pid}/policy", json={"algorithm": "fast"}).status_code == 200
    r = c.post(f"/api/v1/projects/{pid}/train")
    assert r.status_code == 202, r.text
    train_id = r.json()["id"]

    def infer_running() -> dict[str, Any] | None:
        train = c.get(f"/api/v1/jobs/{train_id}").json()
        assert train["state"] in ("queued", "running", "succeeded"), train
        return next((j for j in _jobs(c, pid, "infer") if j["state"] == "running"), None)

    job = wait_for(infer_running, timeout=JOB_SECONDS, every=0.01, what="the inference job to run")
    srv.kill()
    return int(job["id"])


def _verify_infer(c: httpx.Client, pid: int, job_id: int) -> None:
    job = c.get(f"/api/v1/jobs/{job_id}").json()
    assert job["state"] == "failed" and "stopped heartbeating" in (job["error"] or ""), job
    ready = [m for m in c.get(f"/api/v1/projects/{pid}/model-versions").json() if m["status"] == "ready"]
    assert len(ready) == 1 and ready[0]["is_current"], ready
    proposed = c.get(f"/api/v1/projects/{pid}/items", params={"status": "proposed", "limit": 1}).json()["count"]
    pending = c.get(f"/api/v1/projects/{pid}/pending", params={"limit": 1}).json()["count"]
    assert proposed == pending == 0, (proposed, pending)


def _phase_export(srv: LiveServer, tmp: Path) -> None:
    out = tmp / "export.json"
    complete = False
    for delay in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 6.0, 30.0):
        proc = subprocess.Popen([str(LABELLOOP), "export", "faults", "--format", "coco", "--out", str(out)],
                                env=srv.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if out.exists():
            doc = json.loads(out.read_text())  # never half a file
            assert doc["images"] and doc["annotations"]
            complete = proc.returncode == 0
            if complete:
                break
    assert complete, "the export never finished"
    assert not list(tmp.glob("export.json.part")), "a finished export left its .part file"


def test_sigkill_mid_import_train_infer_export(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = LiveServer(data)
    srv.start()
    headers = srv.admin()
    try:
        with httpx.Client(base_url=srv.url, headers=headers, timeout=60) as c:
            r = c.post("/api/v1/projects", json={"name": "faults", "classes": ["red", "blue"], "policy": {
                "min_labels_per_class": 5, "holdout_share": 0.3, "target_precision": 0.8, "delta": 0.2,
                "retrain_every_labels": 100000, "calibration": "pooled"}})
            assert r.status_code == 201, r.text
            pid = r.json()["id"]
            batch = _phase_import(srv, c, pid)
        srv.start()
        with httpx.Client(base_url=srv.url, headers=headers, timeout=60) as c:
            _verify_import(c, srv, pid, batch)
            truth = _add_colours(c, pid, 60, seed=1)
            label_through_queue(c, pid, truth, 60)
            _add_colours(c, pid, 600, seed=2)  # the unlabelled pool inference works through
            t0 = time.time()
            train_job = _phase_train(srv, c, pid)
        srv.start()
        with httpx.Client(base_url=srv.url, headers=headers, timeout=60) as c:
            assert time.time() - t0 > 2  # the heartbeat timeout: the killed job is stale
            _verify_train(c, pid, train_job)
            infer_job = _phase_infer(srv, c, pid)
        srv.start()
        with httpx.Client(base_url=srv.url, headers=headers, timeout=60) as c:
            _verify_infer(c, pid, infer_job)
            items = c.get(f"/api/v1/projects/{pid}/items", params={"status": "labelled", "limit": 1}).json()
            assert items["count"] >= 60
        _phase_export(srv, tmp_path)
    finally:
        srv.kill()
