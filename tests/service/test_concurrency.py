"""8 labelers calling queue/next at once on 200 items, against a real uvicorn."""

from __future__ import annotations

import threading
from collections import Counter

import httpx

from tests.conftest import Ctx, make_project


def test_eight_labelers_drain_exactly_once(ctx: Ctx, live: str) -> None:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=200)["id"]
    heads = []
    for i in range(8):
        heads.append(ctx.user(f"l{i}", "labeler"))
        ctx.member(pid, f"l{i}", "labeler")
    got: dict[int, list[int]] = {i: [] for i in range(8)}
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        with httpx.Client(base_url=live, headers=heads[i], timeout=60) as c:
            barrier.wait()
            while True:
                r = c.post(f"/api/v1/projects/{pid}/queue/next")
                if r.status_code == 204:
                    return
                if r.status_code != 200:
                    errors.append(f"next {r.status_code} {r.text}")
                    return
                lease = r.json()
                got[i].append(lease["item"]["id"])
                r = c.post(f"/api/v1/items/{lease['item']['id']}/annotations",
                           json={"labels": ["cat"], "lease_id": lease["lease_id"]})
                if r.status_code != 201:
                    errors.append(f"submit {r.status_code} {r.text}")
                    return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    all_ids = [x for v in got.values() for x in v]
    dup = [k for k, n in Counter(all_ids).items() if n > 1]
    assert not dup, f"items leased twice: {dup[:5]}"
    assert len(all_ids) == 200
    assert sum(1 for v in got.values() if v) >= 2  # work was really shared
    items = ctx.client.get(f"/api/v1/projects/{pid}/items?status=labelled&limit=1", headers=admin).json()
    assert items["count"] == 200
