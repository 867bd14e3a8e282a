"""SIGKILL the server in the middle of every other kind of job; restart; nothing half-written
is visible (``test_kill.py`` covers import, ``train``, ``infer`` and the CLI export).

One ``labelloop serve`` (SQLite data dir) lives for the module; each test works in its own
project, waits until its job has really done work (progress reported after committed work,
or the phase it is in named by its message), SIGKILLs the server's process group, reads the
database as the kill left it, restarts on the same data dir and checks what each kind of
job promises:

* ``cold_start`` (killed after its first 512-item embedding chunk): ``Item.query_score`` of
  the pool is written in one transaction: after a kill no item has a score; a re-run
  scores every pool item, picks in rank order, the rest 0;
* ``cluster`` (killed while it cuts pages): grid pages live only in a succeeded job's
  result: a killed clustering has none, its page ids are unknown (404), the previous
  clustering is still the one served; a re-run's pages cover the pool once per size;
* ``annotate`` (API, killed after its first batch): each batch of 8 items commits its
  proposals, the superseding of older ones and the item statuses together: a kill leaves
  a whole-batch prefix of the items annotated and the others untouched. ``labelloop
  annotate`` killed while it starts up must not leave its job ``running`` for ever;
  a re-run proposes once for every item;
* ``hard_examples`` (killed during the flip test): label-error flags and the ``review``
  statuses they imply commit together, the flip test (``tta_flip`` on the proposals and
  the ``unstable`` flags) in a later transaction: the label-error set is whole, the
  flip-test output absent; a re-run adds no duplicate flag;
* ``train`` of a detection project (killed in an epoch): the version ends ``failed``, never current,
  with no files published and no review flags; a re-run publishes a new version;
  ``infer`` (killed after its first chunk): predictions, statuses and query
  scores are written in one transaction: none after a kill, one per pool item after a
  re-run.

A killed job must end ``failed`` with the recovery's reason (none of these is resumable).
"""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import numpy as np
import pytest
from sqlmodel import Session, col, select

from service.db import read_only
from service.loop.grids import pages_of
from service.models import Item, Job, Prediction, ReviewFlag
from tests.detection.conftest import CLASSES as SHAPES
from tests.detection.conftest import canvas, png
from tests.system.faults.live import (
    JOB_SECONDS,
    LABELLOOP,
    STEP_SECONDS,
    LiveServer,
    colour_png,
    label_through_queue,
    wait_for,
)

pytestmark = pytest.mark.slow

DETECTOR_TRAIN = ("train", "train_detector")  # one ``train`` for every task since migration 0005
DETECTOR_INFER = ("infer", "infer_detector")
HEARTBEAT = 1.0  # the server's job heartbeat timeout: a killed job is stale this long after its last beat
BATCH = 8  # service.loop.annotate.BATCH: one transaction per batch of items
OPEN_STATUSES = ("unlabelled", "proposed", "skipped")
ENDED = ("succeeded", "failed", "cancelled")


@dataclass
class Live:
    srv: LiveServer
    headers: dict[str, str]
    engine: Any
    killed_at: float = 0.0

    @property
    def reader(self) -> Any:
        """Deferred (read-only) transactions: they never wait for the SQLite write lock, so
        they see what is committed even while a job holds that lock."""
        return read_only(self.engine)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.srv.url, headers=self.headers, timeout=120)

    def kill(self) -> None:
        self.srv.kill()
        self.killed_at = time.time()

    def restart(self) -> None:
        """Start again once the killed job's last heartbeat is older than the timeout, so that
        the start-up recovery (``recover_stale``) sees it as the dead process's job."""
        time.sleep(max(0.0, self.killed_at + HEARTBEAT + 0.3 - time.time()))
        self.srv.start()

    def up(self) -> None:
        if self.srv.proc is None or self.srv.proc.poll() is not None:  # an earlier test failed while down
            self.srv.proc = None
            self.restart()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    srv = LiveServer(tmp_path_factory.mktemp("kill-jobs") / "data", job_heartbeat_timeout_seconds=HEARTBEAT)
    srv.start()
    env = Live(srv, srv.admin(), srv.engine())
    try:
        yield env
    finally:
        srv.kill()
        env.engine.dispose()


# -- helpers ------------------------------------------------------------------------------------


def _job(c: httpx.Client, jid: int) -> dict[str, Any]:
    r = c.get(f"/api/v1/jobs/{jid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def _finish(c: httpx.Client, jid: int, timeout: float = JOB_SECONDS) -> dict[str, Any]:
    job = wait_for(lambda: (j := _job(c, jid))["state"] in ENDED and j, timeout=timeout, every=0.1,
                   what=f"job {jid} to end")
    assert job["state"] == "succeeded", job
    return dict(job)


def _kill_when(live: Live, c: httpx.Client, jid: int, ready: Callable[[dict[str, Any]], bool], what: str,
               timeout: float = JOB_SECONDS) -> dict[str, Any]:
    """SIGKILL the server as soon as job ``jid`` runs and ``ready(job)``; it must not have ended."""

    def check() -> dict[str, Any] | None:
        job = _job(c, jid)
        assert job["state"] in ("queued", "running"), f"job {jid} ended before the kill ({what}): {job}"
        return job if job["state"] == "running" and ready(job) else None

    job = wait_for(check, timeout=timeout, every=0.01, what=what)
    live.kill()
    return dict(job)


def _assert_killed(job: dict[str, Any]) -> None:
    assert job["state"] == "failed", job
    assert "stopped heartbeating" in (job["error"] or ""), job
    assert job["finished_at"] is not None, job


def _project(c: httpx.Client, name: str, policy: dict[str, Any], **extra: Any) -> int:
    r = c.post("/api/v1/projects", json={"name": name, "classes": ["red", "blue"], "policy": policy, **extra})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _upload_colours(c: httpx.Client, pid: int, n: int, seed: int, prefix: str) -> list[dict[str, Any]]:
    """``n`` noisy red (even index) / blue squares, in requests of 200."""
    rng = random.Random(seed)
    created: list[dict[str, Any]] = []
    for start in range(0, n, 200):
        files = [("files", (f"{prefix}_{i:04d}.png", colour_png(i % 2 == 0, rng), "image/png"))
                 for i in range(start, min(n, start + 200))]
        r = c.post(f"/api/v1/projects/{pid}/items", files=files)
        assert r.status_code == 201, r.text
        created += r.json()["created"]
    assert len(created) == n
    return created


def _set_policy(c: httpx.Client, pid: int, **policy: Any) -> None:
    r = c.put(f"/api/v1/projects/{pid}/policy", json=policy)
    assert r.status_code == 200, r.text


def _enqueue(live: Live, kind: str, pid: int, payload: dict[str, Any] | None = None) -> int:
    """A queued job row, as the scheduler's checks would add it (the server's executor polls)."""
    with Session(live.engine) as s:
        job = Job(kind=kind, project_id=pid, payload=payload or {"reason": "test"})
        s.add(job)
        s.commit()
        assert job.id is not None
        return job.id


def _scores(live: Live, pid: int) -> dict[int, float | None]:
    with Session(live.reader) as s:
        return {int(i.id): i.query_score for i in s.exec(select(Item).where(Item.project_id == pid))
                if i.id is not None}


# -- cold start and grids ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def pool_project(live: Live) -> tuple[int, list[int]]:
    """600 unlabelled items, no model: over one 512-item embedding chunk, so progress is
    reported (after a whole chunk is cached) while work remains."""
    live.up()
    with live.client() as c:
        pid = _project(c, "pool", {"min_labels_per_class": 5})
        ids = sorted(int(x["id"]) for x in _upload_colours(c, pid, 600, seed=11, prefix="pool"))
    return pid, ids


def test_kill_cold_start(live: Live, pool_project: tuple[int, list[int]]) -> None:
    pid, pool = pool_project
    live.up()
    with live.client() as c:
        _set_policy(c, pid, image_size=24)  # a feature space of its own: nothing is cached yet
    before = _scores(live, pid)
    assert set(before) == set(pool) and all(v is None for v in before.values()), "the pool is scored already"
    jid = _enqueue(live, "cold_start", pid)
    with live.client() as c:
        _kill_when(live, c, jid, lambda j: j["progress"] > 0, "cold_start to cache its first embedding chunk")
    assert _scores(live, pid) == before, "a killed cold start wrote query scores"
    live.restart()
    with live.client() as c:
        killed = _job(c, jid)
        _assert_killed(killed)
        assert killed["result"] == {}, killed
        assert _scores(live, pid) == before
        # the re-run (embedding cache holds the killed run's first chunk) scores the whole pool once
        result = _finish(c, _enqueue(live, "cold_start", pid))["result"]
    scores = _scores(live, pid)
    picked = [int(i) for i in result["picked_ids"]]
    assert result["pool"] == len(pool) and result["picked"] == len(picked) > 0, result
    assert all(v is not None for v in scores.values()), "a re-run left pool items unscored"
    assert {i for i, v in scores.items() if v is not None and v > 1.0} == set(picked)
    assert all(scores[i] == 0.0 for i in pool if i not in set(picked))
    ranked = [float(scores[i] or 0.0) for i in picked]
    assert ranked == sorted(ranked, reverse=True)  # rank order kept


def _page_ids(c: httpx.Client, pid: int, size: int) -> tuple[int | None, list[str]]:
    """(the clustering served, ids of up to 20 pages it leases to the caller)."""
    r = c.get(f"/api/v1/projects/{pid}/grids", params={"size": size, "limit": 20})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["cluster_job_id"], [p["id"] for p in body["data"]]


def _cutting(c: httpx.Client, jid: int) -> dict[str, Any] | None:
    job = _job(c, jid)
    return job if job["state"] in ENDED or job["message"].startswith("cutting grids") else None


def test_kill_cluster(live: Live, pool_project: tuple[int, list[int]]) -> None:
    pid, pool = pool_project
    live.up()
    with live.client() as c:
        _set_policy(c, pid, image_size=24)
        r = c.post(f"/api/v1/projects/{pid}/grids/refresh")
        assert r.status_code == 202, r.text
        first = _finish(c, r.json()["id"])  # the clustering that must stay served
        assert first["result"]["n_items"] == len(pool)
        # the pool is embedded now: a run goes straight to cutting pages (of 4, then 6 and 9),
        # where a half-made clustering would exist. Kill while it cuts pages of 4 or 6 (a few
        # tenths of a second); a run seen later than that is left to finish (a kill could come
        # after its end) and becomes the clustering to keep.
        for _attempt in range(6):
            r = c.post(f"/api/v1/projects/{pid}/grids/refresh")
            assert r.status_code == 202, r.text
            jid = int(r.json()["id"])
            job = wait_for(partial(_cutting, c, jid), timeout=JOB_SECONDS, every=0.005,
                           what="the clustering to cut pages")
            if job["state"] == "running" and job["message"] in ("cutting grids of 4", "cutting grids of 6"):
                live.kill()
                break
            first = _finish(c, jid)
        else:
            pytest.fail("every clustering got past cutting pages of 6 before the kill")
    live.restart()
    with live.client() as c:
        killed = _job(c, jid)
        _assert_killed(killed)
        assert killed["result"] == {}, f"a killed clustering has (part of) a result: {killed['result']}"
        for size in (4, 6, 9):
            served, pages = _page_ids(c, pid, size)
            assert served == first["id"], (served, first["id"])
            assert pages and all(p.startswith(f"{first['id']}-{size}-") for p in pages), pages
            r = c.post(f"/api/v1/grids/{jid}-{size}-0/skip")
            assert r.status_code == 404, f"page of the killed clustering is reachable: {r.status_code} {r.text}"
        r = c.post(f"/api/v1/projects/{pid}/grids/refresh")
        assert r.status_code == 202, r.text
        rerun = _finish(c, r.json()["id"])
        result = rerun["result"]
        assert result["n_items"] == len(pool), result["n_items"]
        for size in (4, 6, 9):
            with Session(live.reader) as s:
                pages = pages_of(s, rerun["id"], size)
            assert result["n_pages"][str(size)] == len(pages)
            members = sorted(i for p in pages for i in p["item_ids"])
            assert members == pool, f"pages of {size} do not cover the pool once each"
            assert all(0 < len(p["item_ids"]) <= size for p in pages)
            assert [p["id"] for p in pages] == [f"{rerun['id']}-{size}-{n}" for n in range(len(pages))]
            assert _page_ids(c, pid, size)[0] == rerun["id"]


# -- automatic annotation and hard examples ---------------------------------------------------


@dataclass
class Trained:
    pid: int
    name: str
    mv_id: int
    version: int
    wrong: dict[int, tuple[str, str]]  # item -> (given label, true label): the planted label errors


def _annotate_all(c: httpx.Client, pid: int, mv_id: int) -> dict[str, Any]:
    """Propose for every item people did not label (threshold 0: every item gets one)."""
    r = c.post(f"/api/v1/projects/{pid}/annotate", json={"model_version_id": mv_id, "threshold": 0.0})
    assert r.status_code == 202, r.text
    return _finish(c, r.json()["id"])


@pytest.fixture(scope="module")
def trained(live: Live) -> Trained:
    """60 people's labels (4 of them wrong), a ``fast`` model, 300 unlabelled items."""
    live.up()
    with live.client() as c:
        pid = _project(c, "trained", {"min_labels_per_class": 5, "holdout_share": 0.3, "algorithm": "fast",
                                      "retrain_every_labels": 100000})
        created = _upload_colours(c, pid, 60, seed=21, prefix="lab")
        truth = {int(x["id"]): "red" if int(x["file"].rsplit("_", 1)[1][:4]) % 2 == 0 else "blue" for x in created}
        flip = {"red": "blue", "blue": "red"}
        wrong = {i: (flip[truth[i]], truth[i]) for i in sorted(truth)[:4]}
        assert label_through_queue(c, pid, {i: wrong[i][0] if i in wrong else t for i, t in truth.items()}, 60) == 60
        _upload_colours(c, pid, 300, seed=22, prefix="pool")
        r = c.post(f"/api/v1/projects/{pid}/train")
        assert r.status_code == 202, r.text
        train = _finish(c, r.json()["id"])
        infer = wait_for(lambda: [j for j in c.get(f"/api/v1/projects/{pid}/jobs").json()["data"]
                                  if j["kind"] == "infer"], timeout=STEP_SECONDS, what="the inference after training")
        _finish(c, infer[0]["id"])
        mv_id = int(train["result"]["model_version_id"])
    return Trained(pid, "trained", mv_id, int(train["result"]["version"]), wrong)


def _targets(s: Session, pid: int) -> list[int]:
    """Items the annotate job works on, in its order: no label from people (here: not labelled)."""
    return [int(i or 0) for i in s.exec(select(Item.id).where(Item.project_id == pid,
                                                              col(Item.status).in_(OPEN_STATUSES))
                                        .order_by(col(Item.id))).all()]


def _open_by_item(s: Session, pid: int) -> dict[int, list[Prediction]]:
    out: dict[int, list[Prediction]] = {}
    for p in s.exec(select(Prediction).where(Prediction.project_id == pid, Prediction.state == "proposed")
                    .order_by(col(Prediction.id))):
        out.setdefault(p.item_id, []).append(p)
    return out


Snapshot = dict[int, tuple[str, list[tuple[int, str]]]]  # item -> (status, [(prediction, state)])


def _snapshot(live: Live, pid: int, targets: list[int]) -> Snapshot:
    with Session(live.reader) as s:
        out: Snapshot = {int(i.id): (str(i.status), []) for i in s.exec(select(Item).where(col(Item.id).in_(targets)))
                         if i.id is not None}
        for p in s.exec(select(Prediction).where(col(Prediction.item_id).in_(targets)).order_by(col(Prediction.id))):
            assert p.id is not None
            out[p.item_id][1].append((p.id, p.state))
    return out


def _check_annotated(live: Live, t: Trained, targets: list[int], before: Snapshot) -> int:
    """What annotate runs left, against the ``before`` snapshot: the proposals made since are a
    whole-batch prefix of the items (id order); each prefix item has exactly that one open
    proposal (complete, of the model; older ones superseded) and status ``proposed``; every
    other item is exactly as before. Returns the prefix's length."""
    since = max((p for _, preds in before.values() for p, _ in preds), default=0)
    with Session(live.reader) as s:
        assert _targets(s, t.pid) == targets
        opened = _open_by_item(s, t.pid)
        new = s.exec(select(Prediction).where(Prediction.project_id == t.pid, col(Prediction.id) > since)
                     .order_by(col(Prediction.id))).all()
    now = _snapshot(live, t.pid, targets)
    k = len(new)
    assert [p.item_id for p in new] == targets[:k], "the committed proposals are not a prefix of the items"
    assert k % BATCH == 0 or k == len(targets), f"{k} proposals: not whole batches of {BATCH}"
    assert set(opened) <= set(targets), "open proposals on items people labelled"
    for p in new:
        assert [q.id for q in opened[p.item_id]] == [p.id], f"item {p.item_id}: open {opened[p.item_id]}"
        assert p.model_version_id == t.mv_id and p.label in ("red", "blue") and 0.0 <= p.score <= 1.0, p
        assert p.data == {"labels": [p.label], "boxes": [], "polygons": [], "model": f"v{t.version}"}, p.data
        assert now[p.item_id][0] == "proposed", f"item {p.item_id} has its proposal but status {now[p.item_id][0]}"
        older = [state for q, state in now[p.item_id][1] if q != p.id]
        assert older == [state if state != "proposed" else "superseded" for _, state in before[p.item_id][1]]
    for iid in targets[k:]:
        assert now[iid] == before[iid], f"item {iid} beyond the committed batches changed: {before[iid]} -> {now[iid]}"
    for iid in targets:
        assert (now[iid][0] == "proposed") == (iid in opened), f"item {iid}: status {now[iid][0]} vs its proposals"
    return k


def test_kill_annotate(live: Live, trained: Trained) -> None:
    t = trained
    live.up()
    with Session(live.reader) as s:
        targets = _targets(s, t.pid)
    assert len(targets) == 300
    before = _snapshot(live, t.pid, targets)
    with live.client() as c:
        r = c.post(f"/api/v1/projects/{t.pid}/annotate", json={"model_version_id": t.mv_id, "threshold": 0.0})
        assert r.status_code == 202, r.text
        api_job = int(r.json()["id"])
        _kill_when(live, c, api_job, lambda j: j["progress"] > 0, "annotate to commit a batch")
    k = _check_annotated(live, t, targets, before)  # the database as the kill left it
    assert BATCH <= k < len(targets), k

    # the CLI runs the job in its own process: SIGKILL it while it starts up (its job is
    # ``running``, the model not loaded yet), with the server still down
    before = _snapshot(live, t.pid, targets)
    cli = subprocess.Popen([str(LABELLOOP), "annotate", t.name, "--model-version", str(t.version),
                            "--threshold", "0"], env=live.srv.env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)

    def cli_starting() -> int | None:
        assert cli.poll() is None, f"labelloop annotate exited ({cli.returncode}) before the kill"
        with Session(live.reader) as s:
            job = s.exec(select(Job).where(Job.kind == "annotate", col(Job.id) > api_job)).first()
        if job is not None and job.state == "running":
            assert not job.message, f"the CLI's job got past its start-up before the kill: {job.message}"
            return job.id
        return None

    try:
        cli_job = wait_for(cli_starting, timeout=STEP_SECONDS, every=0.005, what="the CLI's annotate job to run")
    finally:
        cli.kill()
        cli.wait(timeout=30)
    live.killed_at = time.time()
    assert _check_annotated(live, t, targets, before) == 0

    live.restart()
    with live.client() as c:
        for jid in (api_job, cli_job):
            _assert_killed(_job(c, jid))
        before = _snapshot(live, t.pid, targets)
        open_now = sum(st == "proposed" for _, preds in before.values() for _, st in preds)
        pending = c.get(f"/api/v1/projects/{t.pid}/pending", params={"limit": 1}).json()["count"]
        proposed = c.get(f"/api/v1/projects/{t.pid}/items", params={"status": "proposed", "limit": 1}).json()["count"]
        assert pending == proposed == open_now >= k, (pending, proposed, open_now, k)
        done = _annotate_all(c, t.pid, t.mv_id)  # a re-run after the kills works
    assert done["result"]["processed"] == done["result"]["proposed"] == len(targets), done["result"]
    assert _check_annotated(live, t, targets, before) == len(targets)


def _flags(s: Session, pid: int, kind: str) -> list[ReviewFlag]:
    return list(s.exec(select(ReviewFlag).where(ReviewFlag.project_id == pid, ReviewFlag.kind == kind)
                       .order_by(col(ReviewFlag.id))).all())


def _check_label_errors(live: Live, t: Trained) -> None:
    """The planted label errors are flagged, each once, and (hold-out aside) wait in ``review``."""
    with Session(live.reader) as s:
        flags = _flags(s, t.pid, "label error")
        items = {int(i.id): i for i in s.exec(select(Item).where(Item.project_id == t.pid)) if i.id is not None}
    assert sorted(f.item_id for f in flags) == sorted(t.wrong), f"label-error flags {[f.item_id for f in flags]}"
    for f in flags:
        item = items[f.item_id]
        assert f.state == "open" and (f.detail["given"], f.detail["suggested"]) == t.wrong[f.item_id], f.detail
        assert f.detail["annotation_version"] == item.version
    review = {i for i, it in items.items() if it.status == "review"}
    assert review == {f.item_id for f in flags if not items[f.item_id].is_holdout}, "statuses out of step"


def test_kill_hard_examples(live: Live, trained: Trained) -> None:
    t = trained
    live.up()
    with live.client() as c:
        with Session(live.reader) as s:
            opened = _open_by_item(s, t.pid)
            fresh = set(opened) == set(_targets(s, t.pid)) and not any("tta_flip" in p.data
                                                                         for ps in opened.values() for p in ps)
        if not fresh:  # proposals the flip test has not seen yet
            _annotate_all(c, t.pid, t.mv_id)
        with Session(live.reader) as s:
            assert not _flags(s, t.pid, "label error") and not _flags(s, t.pid, "unstable")
            proposals = [p.id for ps in _open_by_item(s, t.pid).values() for p in ps]
        r = c.post(f"/api/v1/projects/{t.pid}/review/scan")
        assert r.status_code == 202, r.text
        jid = int(r.json()["id"])
        # the scan computes everything before it writes: a kill mid-way (the flip test over the
        # 300 proposals) leaves no flag, no flip mark and no status change behind
        _kill_when(live, c, jid, lambda j: "test-time augmentation" in j["message"], "the flip test to start")
    with Session(live.reader) as s:
        assert not _flags(s, t.pid, "label error") and not _flags(s, t.pid, "unstable")
        assert not [p.id for p in s.exec(select(Prediction).where(col(Prediction.id).in_(proposals)))
                    if "tta_flip" in p.data], "flip marks from a killed scan"
        assert not s.exec(select(Item).where(Item.project_id == t.pid, Item.status == "review")).first()
    live.restart()
    with live.client() as c:
        _assert_killed(_job(c, jid))
        result = _finish(c, c.post(f"/api/v1/projects/{t.pid}/review/scan").json()["id"])["result"]
        assert result["label_errors"] == len(t.wrong), result
        assert result["checked_proposals"] == len(proposals), result
        listed = c.get(f"/api/v1/projects/{t.pid}/review", params={"kind": "label error", "limit": 100}).json()
        assert sorted(f["item_id"] for f in listed["data"]) == sorted(t.wrong), listed
        again = _finish(c, c.post(f"/api/v1/projects/{t.pid}/review/scan").json()["id"])["result"]
    assert again["label_errors"] == 0 and again["checked_proposals"] == 0, f"a re-run flagged again: {again}"
    _check_label_errors(live, t)
    with Session(live.reader) as s:
        assert all("tta_flip" in p.data for p in s.exec(select(Prediction).where(col(Prediction.id).in_(proposals))))
        unstable = _flags(s, t.pid, "unstable")
    assert len(unstable) == len({f.item_id for f in unstable}), "an item flagged unstable twice"
    assert len(unstable) == result["unstable"], (len(unstable), result)
    assert {f.detail["prediction_id"] for f in unstable} <= set(proposals)


# -- detection ---------------------------------------------------------------------------------


def test_kill_train_and_infer_detector(live: Live) -> None:
    live.up()
    rng = np.random.default_rng(7)
    both = [d for d in (canvas(rng, 48) for _ in range(200)) if len({b["label"] for b in d[1]["boxes"]}) == 2]
    labelled, pool = both[:16], [canvas(rng, 48) for _ in range(128)]  # any hold-out split trains both classes
    with live.client() as c:
        policy = {"min_labels_per_class": 2, "holdout_share": 0.5, "target_precision": 0.7, "delta": 0.2,
                  "retrain_every_labels": 100000, "epochs": 3, "image_size": 48}
        r = c.post("/api/v1/projects", json={"name": "shapes", "task": "detection", "classes": SHAPES,
                                             "policy": policy})
        assert r.status_code == 201, r.text
        pid = int(r.json()["id"])
        r = c.post(f"/api/v1/projects/{pid}/items",
                   files=[("files", (f"l{i:03d}.png", png(im), "image/png")) for i, (im, _) in enumerate(labelled)])
        assert r.status_code == 201, r.text
        truth = {int(x["id"]): labelled[int(x["file"][1:4])][1] for x in r.json()["created"]}
        for _ in range(16):
            lease = c.post(f"/api/v1/projects/{pid}/queue/next").json()
            r = c.post(f"/api/v1/items/{lease['item']['id']}/annotations",
                       json={"boxes": truth[lease["item"]["id"]]["boxes"], "lease_id": lease["lease_id"]})
            assert r.status_code == 201, r.text
        r = c.post(f"/api/v1/projects/{pid}/items",
                   files=[("files", (f"p{i:03d}.png", png(im), "image/png")) for i, (im, _) in enumerate(pool)])
        assert r.status_code == 201, r.text
        r = c.post(f"/api/v1/projects/{pid}/train")
        assert r.status_code == 202 and r.json()["kind"] in DETECTOR_TRAIN, r.text
        train_job = int(r.json()["id"])
        _kill_when(live, c, train_job, lambda j: "epoch" in j["message"], "the detector to train an epoch")
    models = live.srv.settings.models_dir / f"project-{pid}"
    live.restart()
    with live.client() as c:
        _assert_killed(_job(c, train_job))
        mvs = c.get(f"/api/v1/projects/{pid}/model-versions").json()
        assert len(mvs) == 1 and mvs[0]["status"] == "failed" and not mvs[0]["is_current"], mvs
        assert not (models / f"v{mvs[0]['version']}").exists(), "files of a killed training are published"
        assert c.get(f"/api/v1/projects/{pid}/review", params={"limit": 1}).json()["count"] == 0
        assert c.get(f"/api/v1/projects/{pid}/readiness").json()["ready"]

        before = _scores(live, pid)
        r = c.post(f"/api/v1/projects/{pid}/train")  # a re-run trains and publishes a new version
        assert r.status_code == 202, r.text
        mv_id = int(_finish(c, r.json()["id"])["result"]["model_version_id"])
        mvs = {m["id"]: m for m in c.get(f"/api/v1/projects/{pid}/model-versions").json()}
        assert mvs[mv_id]["status"] == "ready" and mvs[mv_id]["is_current"], mvs
        assert (models / f"v{mvs[mv_id]['version']}" / "manifest.json").is_file()
        infer = wait_for(lambda: [j for j in c.get(f"/api/v1/projects/{pid}/jobs").json()["data"]
                                  if j["kind"] in DETECTOR_INFER], timeout=STEP_SECONDS,
                         what="the detector's inference")
        infer_job = int(infer[0]["id"])
        _kill_when(live, c, infer_job, lambda j: j["progress"] > 0, "the detector to predict a chunk")
    with Session(live.reader) as s:
        assert not s.exec(select(Prediction).where(Prediction.model_version_id == mv_id)).all(), \
            "predictions of a killed inference are visible"
        statuses = {i.status for i in s.exec(select(Item).where(Item.project_id == pid))}
    assert statuses == {"labelled", "unlabelled"}, statuses
    assert _scores(live, pid) == before, "a killed inference wrote query scores"
    live.restart()
    with live.client() as c:
        _assert_killed(_job(c, infer_job))
        assert c.get(f"/api/v1/projects/{pid}/model-versions").json()[0]["is_current"]
        result = _finish(c, _enqueue(live, "infer", pid, {"model_version_id": mv_id}))["result"]
        assert result["pool"] == 128, result
        pending = c.get(f"/api/v1/projects/{pid}/pending", params={"limit": 1}).json()["count"]
    with Session(live.reader) as s:
        waiting = {int(i.id): i for i in s.exec(select(Item).where(Item.project_id == pid,
                                                                    Item.status != "labelled")) if i.id is not None}
        preds = s.exec(select(Prediction).where(Prediction.model_version_id == mv_id)).all()
    assert len(waiting) == 128 and sorted(p.item_id for p in preds) == sorted(waiting), "not one prediction per item"
    assert all(it.query_score is not None for it in waiting.values())
    proposed = {p.item_id for p in preds if p.state == "proposed"}
    assert {i for i, it in waiting.items() if it.status == "proposed"} == proposed
    assert pending == len(proposed) == result["proposed"]
