"""Exports as jobs: options (subset, images, split), progress, the file under the data dir,
download rights; and, on SQLite, export jobs while a labeller writes labels (no 5xx, each
file exactly its subset)."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
import zipfile
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from service.crud.items import blob_store
from service.jobs.runner import ThreadExecutor
from service.main import create_app
from service.models import AuditLog, Item, Job
from tests.conftest import Ctx, make_project, serve_app
from tests.factories import run_jobs

CLASSES = ["cat", "dog", "bird"]


def _csv_rows(body: bytes) -> dict[str, tuple[str, str]]:
    """file name -> (labels, provenance) of a CSV export."""
    return {r["file_name"]: (r["labels"], r["provenance"]) for r in csv.DictReader(io.StringIO(body.decode()))}


def _project(ctx: Ctx, n: int = 30, imported: int = 12) -> tuple[int, dict[str, str], dict[str, str], dict[str, int]]:
    """A project of ``n`` images; the first ``imported`` labelled by a CSV import (cat, dog
    alternately). Returns (project id, admin headers, {file: imported label}, {file: item id})."""
    admin = ctx.user("boss", "admin")
    project = make_project(ctx, admin, classes=CLASSES, n_images=n)
    pid = project["id"]
    names = {it["file_name"]: it["id"] for it in ctx.client.get(
        f"/api/v1/projects/{pid}/items", params={"limit": 500}, headers=admin).json()["data"]}
    truth = {f"img_{i:04d}.png": ("cat" if i % 2 else "dog") for i in range(imported)}
    body = "file_name,labels\n" + "".join(f"{f},{c}\n" for f, c in truth.items())
    r = ctx.client.post(f"/api/v1/projects/{pid}/import", params={"format": "csv"}, headers=admin,
                        files={"file": ("l.csv", body.encode(), "text/csv")})
    assert r.status_code == 200 and r.json()["updated"] == imported, r.text
    return pid, admin, truth, names


def _export(ctx: Ctx, headers: dict[str, str], pid: int, **options: Any) -> tuple[dict, bytes]:
    r = ctx.client.post(f"/api/v1/projects/{pid}/export-jobs", json=options, headers=headers)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "export" and job["state"] == "queued"
    run_jobs(ctx)
    job = ctx.client.get(f"/api/v1/jobs/{job['id']}", headers=headers).json()
    assert job["state"] == "succeeded", job
    got = ctx.client.get(f"/api/v1/jobs/{job['id']}/download", headers=headers)
    assert got.status_code == 200, got.text
    assert job["result"]["file"] in got.headers["content-disposition"]
    return job, got.content


def test_export_job_options_and_file(ctx: Ctx) -> None:
    pid, admin, truth, names = _project(ctx)
    # a person labels two more images (provenance human)
    for f, c in (("img_0020.png", "bird"), ("img_0021.png", "cat")):
        r = ctx.client.post(f"/api/v1/items/{names[f]}/annotations", json={"labels": [c]}, headers=admin)
        assert r.status_code == 201, r.text

    # no options: byte for byte the synchronous export, which still works
    job, body = _export(ctx, admin, pid, format="csv")
    old = ctx.client.get(f"/api/v1/projects/{pid}/export", params={"format": "csv"}, headers=admin)
    assert old.status_code == 200 and body == old.content
    assert job["result"]["images"] == len(truth) + 2 and job["result"]["val"] == 0
    stored = ctx.settings.data_dir / job["result"]["path"]
    assert stored.is_file() and stored.read_bytes() == body  # under the data dir

    # subset by provenance and class: only the imported cats, and only the class asked for
    job, body = _export(ctx, admin, pid, format="csv", provenance=["import"], classes=["cat"])
    rows = _csv_rows(body)
    assert rows == {f: ("cat", "import") for f, c in truth.items() if c == "cat"}
    job, body = _export(ctx, admin, pid, format="coco", provenance=["human"], status=["labelled"])
    coco = json.loads(body)
    assert sorted(im["file_name"] for im in coco["images"]) == ["img_0020.png", "img_0021.png"]

    # split and images: a zip stating the split; the same seed gives the same split
    job, body = _export(ctx, admin, pid, format="yolo", provenance=["import"], include_images=True,
                        val_share=0.25, seed=7)
    z = zipfile.ZipFile(io.BytesIO(body))
    manifest = json.loads(z.read("export.json"))
    assert manifest["split"]["seed"] == 7 and manifest["split"]["val_share"] == 0.25
    train, val = manifest["images"]["train"], manifest["images"]["val"]
    assert len(val) == 3 and len(train) == 9 and sorted(train + val) == sorted(truth)
    assert (job["result"]["train"], job["result"]["val"]) == (9, 3)
    store = blob_store(ctx.settings)
    with Session(ctx.engine) as s:
        sha = {it.file_name: it.sha256 for it in s.exec(select(Item)).all()}
    for part, files in (("train", train), ("val", val)):
        assert f"{part}/classes.txt" in z.namelist()
        for f in files:
            assert z.read(f"{part}/images/{f}") == store.path(sha[f]).read_bytes()
            assert f"{part}/labels/{f.rsplit('.', 1)[0]}.txt" in z.namelist()
    _, again = _export(ctx, admin, pid, format="yolo", provenance=["import"], include_images=True,
                       val_share=0.25, seed=7)
    assert json.loads(zipfile.ZipFile(io.BytesIO(again)).read("export.json"))["images"] == manifest["images"]

    # a split without images: labels per part, no images
    _, body = _export(ctx, admin, pid, format="csv", provenance=["import"], val_share=0.5, seed=1)
    z = zipfile.ZipFile(io.BytesIO(body))
    assert not [n for n in z.namelist() if "/images/" in n]
    parts = {p: _csv_rows(z.read(f"{p}/annotations.csv")) for p in ("train", "val")}
    assert len(parts["val"]) == 6 and set(parts["train"]) | set(parts["val"]) == set(truth)
    assert not set(parts["train"]) & set(parts["val"])
    with Session(ctx.engine) as s:
        audits = s.exec(select(AuditLog).where(AuditLog.action == "export")).all()
        assert any(a.detail.get("job_id") for a in audits)


def test_export_job_rights_and_states(ctx: Ctx) -> None:
    pid, admin, _, _ = _project(ctx, n=6, imported=4)
    ctx.user("lab")
    ctx.member(pid, "lab", "labeler")
    lab = ctx.user("lab2")
    ctx.member(pid, "lab2", "reviewer")
    assert ctx.client.post(f"/api/v1/projects/{pid}/export-jobs", json={"format": "csv"},
                           headers=lab).status_code == 403
    bad = ctx.client.post(f"/api/v1/projects/{pid}/export-jobs", json={"format": "csv", "classes": ["zebra"]},
                          headers=admin)
    assert bad.status_code == 422 and "zebra" in bad.text
    assert ctx.client.post(f"/api/v1/projects/{pid}/export-jobs", json={"format": "nope"},
                           headers=admin).status_code == 422
    assert ctx.client.post(f"/api/v1/projects/{pid}/export-jobs", json={"format": "csv", "val_share": 0.95},
                           headers=admin).status_code == 422
    job = ctx.client.post(f"/api/v1/projects/{pid}/export-jobs", json={"format": "csv"}, headers=admin).json()
    early = ctx.client.get(f"/api/v1/jobs/{job['id']}/download", headers=admin)
    assert early.status_code == 409 and "queued" in early.text
    run_jobs(ctx)
    assert ctx.client.get(f"/api/v1/jobs/{job['id']}/download", headers=lab).status_code == 403
    outsider = ctx.user("out")
    assert ctx.client.get(f"/api/v1/jobs/{job['id']}/download", headers=outsider).status_code == 404
    assert ctx.client.get(f"/api/v1/jobs/{job['id']}/download", headers=admin).status_code == 200
    with Session(ctx.engine) as s:  # another kind of job has no download
        other = Job(kind="sleep", project_id=pid)
        s.add(other)
        s.commit()
        other_id = other.id
    assert ctx.client.get(f"/api/v1/jobs/{other_id}/download", headers=admin).status_code == 404
    path = ctx.settings.data_dir / ctx.client.get(f"/api/v1/jobs/{job['id']}", headers=admin).json()["result"]["path"]
    path.unlink()
    assert ctx.client.get(f"/api/v1/jobs/{job['id']}/download", headers=admin).status_code == 410


def test_export_job_reports_progress(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.crud.transfer

    monkeypatch.setattr(service.crud.transfer, "SUBSET_BATCH", 3)
    pid, admin, _, _ = _project(ctx, n=12, imported=12)
    seen: list[tuple[float, str]] = []
    from service.jobs.runner import JobContext

    real = JobContext.progress

    def spy(self: JobContext, fraction: float, message: str = "") -> None:
        seen.append((fraction, message))
        real(self, fraction, message)

    monkeypatch.setattr(JobContext, "progress", spy)
    _export(ctx, admin, pid, format="csv", include_images=True)
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("read 6 of 12" in m for _, m in seen), seen
    assert any("wrote 12 of 12 images" in m for _, m in seen), seen


def test_export_jobs_while_a_labeller_writes(ctx: Ctx) -> None:
    """At least 20 export jobs run while a labeller labels through the API, on SQLite (and on
    PostgreSQL where configured): no 5xx
    anywhere, and each file holds exactly its subset (the labeller's labels as a prefix of
    the order they were given in: a snapshot, never half a write)."""
    pid, admin, truth, names = _project(ctx, n=70, imported=16)
    ctx.user("lab")
    ctx.member(pid, "lab", "labeler")
    lab_token = ctx.user("lab3")
    ctx.member(pid, "lab3", "labeler")
    todo = [(names[f], f, "bird" if i % 3 else "dog") for i, f in enumerate(sorted(set(names) - set(truth)))]
    given: list[str] = []  # file names in the order their labels were committed
    errors: list[str] = []
    stop = threading.Event()
    app = create_app(ctx.settings, background=False)
    executor = ThreadExecutor(ctx.engine, ctx.settings, threads=2)  # a worker beside the API
    with serve_app(app) as url:
        executor.start()

        def labeller() -> None:
            with httpx.Client(base_url=url, headers=lab_token, timeout=60) as c:
                for iid, f, cls in todo:
                    if stop.is_set():
                        return
                    r = c.post(f"/api/v1/items/{iid}/annotations", json={"labels": [cls]})
                    if r.status_code >= 500 or r.status_code != 201:
                        errors.append(f"label {f}: {r.status_code} {r.text[:200]}")
                        continue
                    given.append(f)
                    time.sleep(0.03)

        worker = threading.Thread(target=labeller)
        worker.start()
        subsets: list[dict[str, Any]] = [
            {"format": "csv", "provenance": ["import"]},
            {"format": "coco", "provenance": ["import"], "classes": ["cat"]},
            {"format": "csv", "provenance": ["human"]},
            {"format": "csv", "provenance": ["import"], "include_images": True, "val_share": 0.25, "seed": 3},
        ]
        checked = 0
        human_counts: list[int] = []
        try:
            with httpx.Client(base_url=url, headers=admin, timeout=60) as c:
                for n in range(24):
                    opts = subsets[n % len(subsets)]
                    before = len(given)
                    r = c.post(f"/api/v1/projects/{pid}/export-jobs", json=opts)
                    assert r.status_code == 202, r.text
                    jid = r.json()["id"]
                    executor.submit(jid)
                    deadline = time.time() + 120
                    while True:
                        job = c.get(f"/api/v1/jobs/{jid}")
                        assert job.status_code < 500, job.text
                        if job.json()["state"] in ("succeeded", "failed", "cancelled"):
                            break
                        assert time.time() < deadline, job.json()
                        time.sleep(0.05)
                    assert job.json()["state"] == "succeeded", job.json()
                    got = c.get(f"/api/v1/jobs/{jid}/download")
                    assert got.status_code == 200, got.text
                    after = len(given)
                    seen = _check(opts, got.content, truth, given, before, after)
                    if seen is not None:
                        human_counts.append(seen)
                    # the old synchronous export keeps working alongside
                    old = c.get(f"/api/v1/projects/{pid}/export", params={"format": "csv"})
                    assert old.status_code == 200, old.text
                    checked += 1
        finally:
            stop.set()
            worker.join(timeout=60)
            executor.stop()
    assert checked >= 20
    assert not errors, errors
    assert any(0 < n < len(todo) for n in human_counts), human_counts  # exports ran while labels came


def _check(opts: dict[str, Any], body: bytes, truth: dict[str, str], given: list[str], before: int,
           after: int) -> int | None:
    """Assert the file is its subset; the number of the labeller's labels in it (human subset)."""
    if opts.get("include_images"):
        z = zipfile.ZipFile(io.BytesIO(body))
        manifest = json.loads(z.read("export.json"))
        train, val = manifest["images"]["train"], manifest["images"]["val"]
        assert sorted(train + val) == sorted(truth) and len(val) == 4
        for p in ("train", "val"):
            rows = _csv_rows(z.read(f"{p}/annotations.csv"))
            assert rows == {f: (truth[f], "import") for f in manifest["images"][p]}
            assert all(f"{p}/images/{f}" in z.namelist() for f in rows)
    elif opts["format"] == "coco":
        coco = json.loads(body)
        assert sorted(im["file_name"] for im in coco["images"]) == sorted(f for f, c in truth.items() if c == "cat")
        assert [c["name"] for c in coco["categories"]] == ["cat"]
    elif opts["provenance"] == ["import"]:
        assert _csv_rows(body) == {f: (c, "import") for f, c in truth.items()}
    else:  # the labeller's labels committed so far: a prefix of the order they were given in
        rows = _csv_rows(body)
        exported = [f for f in given[:after] if f in rows]
        assert len(rows) == len(exported) and before <= len(rows) <= after, (len(rows), before, after)
        assert exported == given[:len(rows)]
        assert all(prov == "human" and lab in ("bird", "dog") for lab, prov in rows.values())
        return len(rows)
    return None


def test_a_project_keeps_its_newest_export_files(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.loop.export

    monkeypatch.setattr(service.loop.export, "KEEP", 2)
    pid, admin, _, _ = _project(ctx, n=4, imported=2)
    jobs = [_export(ctx, admin, pid, format="csv")[0]["id"] for _ in range(3)]
    got = [ctx.client.get(f"/api/v1/jobs/{j}/download", headers=admin).status_code for j in jobs]
    assert got == [410, 200, 200]
