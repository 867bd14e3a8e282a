"""Exports under concurrent writes: a real ``labelloop serve`` on SQLite (the default set-up),
labellers submitting through the queue, a training and the inference it starts, and a
manager exporting CSV, COCO and Label Studio back to back. Prints the exports' status
codes (the target: no 5xx). Not a test.

    .venv/bin/python lab/benchmarks/bench_exports.py --exports 60 --labelers 8
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lab.benchmarks.bench_load import labeler, ready_labels, seed  # noqa: E402
from tests.system.faults.live import LiveServer, colour_png  # noqa: E402

FORMATS = ("csv", "coco", "labelstudio")


async def exporter(url: str, head: dict[str, str], pid: int, n: int, out: dict[str, Any]) -> None:
    async with httpx.AsyncClient(base_url=url, headers=head, timeout=120) as c:
        for i in range(n):
            t = time.monotonic()
            try:
                r = await c.get(f"/api/v1/projects/{pid}/export", params={"format": FORMATS[i % len(FORMATS)]})
                out["exports"].append((r.status_code, time.monotonic() - t))
            except httpx.HTTPError as exc:  # a dropped connection counts as a failed export
                out["exports"].append((f"{type(exc).__name__}", time.monotonic() - t))
            try:
                jobs = (await c.get(f"/api/v1/projects/{pid}/jobs")).json()["data"]
                out["jobs_seen"].update(f"{j['kind']}:{j['state']}" for j in jobs)
            except (httpx.HTTPError, ValueError, KeyError):
                out["errors"].append("jobs listing")


async def drive(url: str, heads: list[dict[str, str]], admin: dict[str, str], pid: int, truth: dict[int, str],
                n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"exports": [], "jobs_seen": set(), "next": [], "submit": [], "next_server": [],
                           "submit_server": [], "errors": [], "submitted": [], "drained": False}
    done = asyncio.Event()

    async def export_then_stop() -> None:
        await exporter(url, admin, pid, n, out)
        done.set()

    until = time.monotonic() + 3600
    labellers = [asyncio.create_task(labeler(url, h, pid, truth, until, out, 0.2, random.Random(i)))
                 for i, h in enumerate(heads)]
    await export_then_stop()
    for t in labellers:
        t.cancel()
    await asyncio.gather(*labellers, return_exceptions=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exports", type=int, default=60)
    ap.add_argument("--labelers", type=int, default=8)
    ap.add_argument("--pool", type=int, default=3000)
    args = ap.parse_args()
    rng = random.Random(0)
    images = [colour_png(i % 2 == 0, rng, size=16) for i in range(args.pool + 40)]
    work = Path(tempfile.mkdtemp(prefix="labelloop-bench-exports-"))
    srv = LiveServer(work / "data", scheduler_enabled="true", scheduler_interval_seconds=2, torch_threads=1,
                     job_heartbeat_timeout_seconds=120, run_jobs_in_process="true")
    try:
        pid, truth, heads = seed(srv, images, args.labelers)
        admin = srv.admin()
        srv.start()
        with httpx.Client(base_url=srv.url, headers=admin, timeout=60) as c:
            ready_labels(c, pid, truth, 40)
            r = c.post(f"/api/v1/projects/{pid}/train")
            assert r.status_code in (202, 409), r.text
        t0 = time.monotonic()
        out = asyncio.run(drive(srv.url, heads, admin, pid, truth, args.exports))
        codes = Counter(code for code, _ in out["exports"])
        failed = sum(v for k, v in codes.items() if not isinstance(k, int) or k >= 500)
        secs = sorted(s for _, s in out["exports"])
        print(f"SQLite, {args.labelers} labellers (0.2 s think), training + inference, {args.exports} exports "
              f"({', '.join(FORMATS)} in turn) in {time.monotonic() - t0:.0f} s")
        print(f"export status codes: {dict(codes)}; 5xx or dropped: {failed}")
        print(f"export seconds p50 / max: {secs[len(secs) // 2]:.2f} / {secs[-1]:.2f}")
        print(f"labeller submits during the exports: {len(out['submitted'])}; labeller errors: "
              f"{dict(Counter(out['errors']))}")
        print(f"jobs seen: {sorted(out['jobs_seen'])}")
        srv.stop()
    finally:
        srv.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
