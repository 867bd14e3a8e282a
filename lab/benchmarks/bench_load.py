"""Load benchmark: N simulated labelers (queue/next -> submit loops) and a manager polling
stats against a real ``labelloop serve`` on 127.0.0.1, while a training job and then
the inference job it starts run. Prints a markdown table. Not a test.

    .venv/bin/python lab/benchmarks/bench_load.py --backends sqlite,postgresql \\
        --labelers 20,50,100 --seconds 60 --think 1,0

``--think`` is how long a labeler looks at an image between ``queue/next`` and the
submit (default 1 s, a fast keyboard labeler); ``0`` sends the requests back to back,
which measures the server's capacity rather than a day of labelling.

Per configuration: a fresh data dir (and, for PostgreSQL, the database
``labelloop_bench``, dropped and created again; never ``test``), a project of
two colour classes with ``--pool`` images seeded in process, 40 labels through
the API so it is ready, then ``POST /projects/{id}/train`` and the load. After
the window: every submitted item is distinct (no item was leased twice), the
annotations written by the labelers equal the successful submits, and every
labelled item still has status ``labelled`` (inference must not undo a label).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sqlalchemy import create_engine, func, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlmodel import Session, col, select  # noqa: E402

from service.models import Annotation, Item, ItemStatus, Project  # noqa: E402
from tests.system.faults.live import LiveServer, colour_png, label_through_queue  # noqa: E402

PG_BENCH = "postgresql+psycopg://postgres@127.0.0.1:5432/labelloop_bench"


def fresh_pg(url: str) -> None:
    target = make_url(url)
    assert target.database and target.database != "test", "the benchmark never uses the test database"
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def seed(srv: LiveServer, images: list[bytes], n_labelers: int) -> tuple[int, dict[int, str], list[dict[str, str]]]:
    """Project, pool and labeler tokens, written in process before the server starts."""
    from service.crud.items import ingest
    from service.crud.projects import create_project, set_member
    from service.crud.users import create_user
    from service.models import ProjectCreate, Role
    from service.security import issue_token

    engine = srv.engine()
    heads = []
    with Session(engine) as s:
        owner = create_user(s, name="owner", role=Role.admin, password=None)
        project = create_project(s, user=owner, data=ProjectCreate(name="load", classes=["red", "blue"], policy={
            "min_labels_per_class": 5, "holdout_share": 0.2, "retrain_every_labels": 10**6,
            "target_precision": 0.8, "delta": 0.2, "calibration": "pooled"}))
        res = ingest(s, project=project, files=[(f"c{i:05d}.png", b) for i, b in enumerate(images)],
                     settings=srv.settings, thumbnails=False)
        truth = {int(r["id"]): "red" if int(r["file"][1:6]) % 2 == 0 else "blue" for r in res.created}
        for i in range(n_labelers):
            u = create_user(s, name=f"lab{i:03d}", role=Role.labeler, password=None)
            set_member(s, project=project, user_name=u.name, role=Role.labeler, by=None)
            heads.append({"Authorization": f"Bearer {issue_token(s, u, name='bench')[1]}"})
        s.commit()
        pid = int(project.id or 0)
    engine.dispose()
    return pid, truth, heads


def ready_labels(c: httpx.Client, pid: int, truth: dict[int, str], n: int) -> None:
    """``n`` labels through the queue, tolerating the errors the load is there to count."""
    for _ in range(5):
        try:
            label_through_queue(c, pid, truth, n)
            return
        except (httpx.HTTPError, AssertionError, KeyError) as exc:
            print(f"# setup labelling hit {type(exc).__name__}: {str(exc)[:120]}; retrying", file=sys.stderr)
            time.sleep(0.5)
            n = max(0, n - int(c.get(f"/api/v1/projects/{pid}/items?status=labelled&limit=1").json()["count"]))
    raise RuntimeError("could not label the setup items")


def server_seconds(r: httpx.Response) -> float:
    """The server's own time for the request (its ``Server-Timing: app;dur=<ms>``)."""
    for part in r.headers.get("server-timing", "").split(","):
        if part.strip().startswith("app;dur="):
            return float(part.strip()[8:]) / 1000
    return float("nan")


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return 1000 * xs[min(len(xs) - 1, int(q * len(xs)))]


async def labeler(url: str, head: dict[str, str], pid: int, truth: dict[int, str], until: float,
                  out: dict[str, Any], think: float, rng: random.Random) -> None:
    async with httpx.AsyncClient(base_url=url, headers=head, timeout=60) as c:
        await asyncio.sleep(rng.uniform(0, think))  # labelers do not all start in the same millisecond
        while time.monotonic() < until:
            t = time.monotonic()
            try:
                r = await c.post(f"/api/v1/projects/{pid}/queue/next")
            except httpx.HTTPError as exc:
                out["errors"].append(f"next {type(exc).__name__}")
                continue
            out["next"].append(time.monotonic() - t)
            out["next_server"].append(server_seconds(r))
            if r.status_code == 204:
                out["drained"] = True
                return
            if r.status_code != 200:
                out["errors"].append(f"next {r.status_code}")
                continue
            lease = r.json()
            iid = lease["item"]["id"]
            if think:  # looking at the image: uniform in [think / 2, 3 * think / 2]
                await asyncio.sleep(rng.uniform(think / 2, 3 * think / 2))
            body = {"labels": [truth.get(iid, "red")], "lease_id": lease["lease_id"]}
            t = time.monotonic()
            try:
                r = await c.post(f"/api/v1/items/{iid}/annotations", json=body, headers={"If-Match": lease["etag"]})
            except httpx.HTTPError as exc:
                out["errors"].append(f"submit {type(exc).__name__}")
                continue
            out["submit"].append(time.monotonic() - t)
            out["submit_server"].append(server_seconds(r))
            if r.status_code == 201:
                out["submitted"].append(iid)
            else:
                out["errors"].append(f"submit {r.status_code}")


async def manager(url: str, head: dict[str, str], pid: int, until: float, out: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=url, headers=head, timeout=60) as c:
        while time.monotonic() < until:
            t = time.monotonic()
            try:
                r = await c.get(f"/api/v1/projects/{pid}/stats")
                out["stats"].append(time.monotonic() - t)
                if r.status_code != 200:
                    out["errors"].append(f"stats {r.status_code}")
                jobs = (await c.get(f"/api/v1/projects/{pid}/jobs")).json()["data"]
                out["jobs"] = {(j["kind"], j["id"]): j["state"] for j in jobs}
            except httpx.HTTPError as exc:
                out["errors"].append(f"stats {type(exc).__name__}")
            await asyncio.sleep(1.0)


async def drive(url: str, heads: list[dict[str, str]], admin: dict[str, str], pid: int, truth: dict[int, str],
                seconds: float, think: float) -> dict[str, Any]:
    out: dict[str, Any] = {"next": [], "submit": [], "stats": [], "next_server": [], "submit_server": [],
                           "errors": [], "submitted": [], "jobs": {},
                           "drained": False}
    until = time.monotonic() + seconds
    t0 = time.monotonic()
    await asyncio.gather(manager(url, admin, pid, until, out),
                         *(labeler(url, h, pid, truth, until, out, think, random.Random(i))
                           for i, h in enumerate(heads)))
    out["wall"] = time.monotonic() - t0
    return out


def verify(srv: LiveServer, pid: int, out: dict[str, Any], n_before: int) -> dict[str, Any]:
    dup = [k for k, n in Counter(out["submitted"]).items() if n > 1]
    engine = srv.engine()
    with Session(engine) as s:
        by_labelers = s.exec(select(func.count()).select_from(Annotation).where(
            Annotation.project_id == pid, col(Annotation.origin).startswith("queue"))).one()
        lost_status = s.exec(select(func.count()).select_from(Item).where(
            Item.project_id == pid, col(Item.id).in_(out["submitted"] or [-1]),
            Item.status != ItemStatus.labelled)).one()
        assert s.get(Project, pid) is not None
    engine.dispose()
    return {"dup": len(dup), "annotations": int(by_labelers) - n_before, "unlabelled_again": int(lost_status)}


def run_config(backend: str, n: int, seconds: float, images: list[bytes], pg_url: str,
               train: bool = True, think: float = 0.0, server_workers: int = 1,
               jobs_in: str = "server", max_concurrent: int = 16) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="labelloop-bench-"))
    try:
        if backend == "postgresql":
            fresh_pg(pg_url)
        srv = LiveServer(work / "data", database_url=pg_url if backend == "postgresql" else "",
                         serve_args=("--workers", str(server_workers)),
                         scheduler_enabled=str(train).lower(), scheduler_interval_seconds=2, torch_threads=1,
                         job_heartbeat_timeout_seconds=120, run_jobs_in_process=str(jobs_in == "server").lower(),
                         max_concurrent_requests=max_concurrent)
        pid, truth, heads = seed(srv, images, n)
        admin = srv.admin()
        srv.start()
        if jobs_in == "worker":
            srv.start_worker()  # niced by default
        with httpx.Client(base_url=srv.url, headers=admin, timeout=60) as c:
            ready_labels(c, pid, truth, 40)
            if train:  # 409: the retraining check was quicker and started one already
                r = c.post(f"/api/v1/projects/{pid}/train")
                assert r.status_code in (202, 409), r.text
        out = asyncio.run(drive(srv.url, heads, admin, pid, truth, seconds, think))
        checks = verify(srv, pid, out, 40)
        srv.stop()
        return {"backend": backend, "labelers": n, "think": think, "setup": f"{server_workers}/{jobs_in}",
                **out, **checks}
    except BaseException:
        for log in work.glob("server-*.log"):
            shutil.copy(log, Path(tempfile.gettempdir()) / f"bench-{backend}-{n}-{log.name}")
            print(f"server log kept in {tempfile.gettempdir()}/bench-{backend}-{n}-{log.name}", file=sys.stderr)
        raise
    finally:
        srv_stop = locals().get("srv")
        if srv_stop is not None:
            srv_stop.kill()
        shutil.rmtree(work, ignore_errors=True)


def row(r: dict[str, Any]) -> str:
    wall = r["wall"]
    jobs = ", ".join(f"{k}:{v}" for (k, _), v in sorted(r["jobs"].items(), key=lambda kv: kv[0][1]))
    errs = Counter(r["errors"])
    return (f"| {r['backend']} | {r['setup']} | {r['labelers']} | {r['think']:g} | "
            f"{len(r['submitted']) / wall:.1f} | "
            f"{pct(r['next'], .5):.0f} / {pct(r['next'], .95):.0f} / {pct(r['next'], .99):.0f} | "
            f"{pct(r['submit'], .5):.0f} / {pct(r['submit'], .95):.0f} / {pct(r['submit'], .99):.0f} | "
            f"{pct(r['next_server'], .99):.0f} / {pct(r['submit_server'], .99):.0f} | "
            f"{pct(r['stats'], .5):.0f} / {pct(r['stats'], .95):.0f} / {pct(r['stats'], .99):.0f} | "
            f"{len(r['submitted'])} | {sum(errs.values())} {dict(errs) if errs else ''} | {r['dup']} | "
            f"{r['annotations']} | {r['unlabelled_again']} | {jobs}{' (drained)' if r['drained'] else ''} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--labelers", default="20,50,100")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--pool", type=int, default=12000, help="unlabelled images per configuration")
    ap.add_argument("--pg-url", default=PG_BENCH)
    ap.add_argument("--no-train", action="store_true", help="no training/inference during the load (a baseline)")
    ap.add_argument("--think", default="1.0",
                    help="comma list of mean seconds a labeler looks at an image between next and submit "
                         "(uniform in [t/2, 3t/2]); 0 = back-to-back requests, i.e. the server's capacity")
    ap.add_argument("--server-workers", type=int, default=1, help="`labelloop serve --workers N`")
    ap.add_argument("--jobs-in", choices=["server", "worker"], default="server",
                    help="run the jobs inside the server process(es) or in a separate (niced) `labelloop worker`")
    ap.add_argument("--max-concurrent", type=int, default=16,
                    help="LABELLOOP_MAX_CONCURRENT_REQUESTS of each API process (the admission gate)")
    args = ap.parse_args()
    rng = random.Random(0)
    images = [colour_png(i % 2 == 0, rng, size=16) for i in range(args.pool + 40)]
    results = []
    print("| DB | server processes / jobs in | labelers | think s | submits/s | queue/next p50/p95/p99 ms | "
          "submit p50/p95/p99 ms | in server (Server-Timing) next / submit p99 ms | stats p50/p95/p99 ms | "
          "submits | errors | items leased twice | annotations written | "
          "labelled items not `labelled` after | jobs at end |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for think in (float(x) for x in args.think.split(",")):
        for backend in args.backends.split(","):
            for n in (int(x) for x in args.labelers.split(",")):
                t = time.time()
                results.append(run_config(backend, n, args.seconds, images, args.pg_url, train=not args.no_train,
                                          think=think, server_workers=args.server_workers, jobs_in=args.jobs_in,
                                          max_concurrent=args.max_concurrent))
                print(row(results[-1]), flush=True)
                print(f"# {backend} x {n} think {think:g}: {time.time() - t:.0f} s", file=sys.stderr, flush=True)
    print(f"\nmean of the {len(results)} runs' submit p50: "
          f"{statistics.mean(pct(r['submit'], .5) for r in results):.0f} ms", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
