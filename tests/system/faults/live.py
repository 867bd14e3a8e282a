"""A real ``labelloop serve`` subprocess that tests can SIGKILL, plus data helpers.

The server runs on 127.0.0.1 on a free port against a data dir (SQLite) or a
PostgreSQL URL; the admin user is created directly in the database so that no
CLI start-up is paid. Nothing here is collected as a test.
"""

from __future__ import annotations

import io
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image
from sqlmodel import Session

from service.config import Settings
from service.db import make_engine, upgrade_schema
from tests import factories

REPO = Path(__file__).resolve().parents[3]
# Deadlines only decide when a test gives up (every wait returns as soon as its condition
# holds), so they are sized for a loaded machine: a 90 s start-up deadline failed
# test_processes.py while the rest of the suite ran beside it.
STARTUP_SECONDS = 300.0  # a ``labelloop serve`` (or uvicorn) process answering /health
JOB_SECONDS = 420.0  # a job (training included) to reach a state
STEP_SECONDS = 300.0  # anything else a test waits for (an upload, a job to be picked up)
LABELLOOP = Path(sys.executable).parent / "labelloop"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``labelloop serve`` in its own process group; ``kill()`` is a real SIGKILL."""

    def __init__(self, data_dir: Path, *, database_url: str = "", serve_args: tuple[str, ...] = (),
                 **settings: Any) -> None:
        self.data_dir = data_dir
        self.serve_args = serve_args
        self.workers: list[subprocess.Popen[bytes]] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
        env.update({"LABELLOOP_DATA_DIR": str(data_dir), "LABELLOOP_PORT": str(self.port),
                    "LABELLOOP_SECRET_KEY": "fault-secret", "OMP_WAIT_POLICY": "PASSIVE",
                    "LABELLOOP_TORCH_THREADS": "1", "LABELLOOP_JOB_HEARTBEAT_TIMEOUT_SECONDS": "2",
                    "LABELLOOP_SCHEDULER_ENABLED": "false", "LABELLOOP_IMAGE_SIZE": "32"})
        env["PYTHONPATH"] = str(REPO)  # this checkout's code, whatever the venv's editable install points at
        if database_url:
            env["LABELLOOP_DATABASE_URL"] = database_url
        env.update({f"LABELLOOP_{k.upper()}": str(v) for k, v in settings.items()})
        self.env = env
        self.settings = Settings(data_dir=data_dir, database_url=database_url, secret_key="fault-secret")
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir.parent / f"server-{self.port}.log"

    def start(self, timeout: float = STARTUP_SECONDS) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            cmd = [str(LABELLOOP), "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.serve_args]
            self.proc = subprocess.Popen(cmd, env=self.env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not start in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def start_worker(self, *args: str) -> subprocess.Popen[bytes]:
        """A ``labelloop worker`` process on the same database and data dir (its own group)."""
        with open(self.log.with_name(f"worker-{self.port}-{len(self.workers)}.log"), "ab") as log:
            proc = subprocess.Popen([str(LABELLOOP), "worker", *args], env=self.env, cwd=REPO, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        return proc

    def kill(self) -> None:
        """SIGKILL the server's (and workers') whole process groups (no shutdown code runs)."""
        for proc in [self.proc, *self.workers]:
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        self.proc = None
        self.workers = []

    def stop(self) -> None:
        for proc in [self.proc, *self.workers]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
        self.proc = None
        self.workers = []

    def engine(self) -> Any:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(self.settings.database_url)
        upgrade_schema(engine)
        return engine

    def admin(self, name: str = "root") -> dict[str, str]:
        """Create an admin in the database; return its Authorization header."""
        from service.crud.users import create_user
        from service.models import Role
        from service.security import issue_token

        engine = self.engine()
        try:
            with Session(engine) as s:
                user = create_user(s, name=name, role=Role.admin, password=None)
                _, token, _ = issue_token(s, user, name="faults")
                s.commit()
        finally:
            engine.dispose()
        return {"Authorization": f"Bearer {token}"}


def colour_png(red: bool, rng: random.Random, size: int = 24) -> bytes:
    """A noisy red or blue square: two classes a model separates at once."""
    return factories.colour_png((200, 30, 30) if red else (30, 30, 200), rng, size=size, jitter=0, noise=40,
                                seed_range=10**9)


def add_colours(c: httpx.Client, pid: int, n: int, seed: int) -> dict[int, str]:
    """Upload ``n`` red/blue squares to project ``pid``; return {item id: true colour}."""
    rng = random.Random(seed)
    files = [("files", (f"c{seed}_{i:04d}.png", colour_png(i % 2 == 0, rng), "image/png")) for i in range(n)]
    r = c.post(f"/api/v1/projects/{pid}/items", files=files, timeout=120)
    assert r.status_code == 201, r.text
    return {x["id"]: ("red" if int(x["file"].rsplit("_", 1)[1][:4]) % 2 == 0 else "blue") for x in r.json()["created"]}


def noise_png(seed: int, size: int = 256) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def wait_for(pred: Callable[[], Any], *, timeout: float, every: float = 0.02, what: str = "condition") -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def label_through_queue(c: httpx.Client, pid: int, truth: dict[int, str], n: int) -> int:
    """Label ``n`` items of ``truth`` as the queue hands them out (others are skipped)."""
    done = 0
    for _ in range(4 * n + 100):
        if done >= n:
            break
        r = c.post(f"/api/v1/projects/{pid}/queue/next")
        if r.status_code == 204:
            break
        lease = r.json()
        iid = lease["item"]["id"]
        if iid not in truth:
            assert c.post(f"/api/v1/items/{iid}/skip").status_code == 204
            continue
        r = c.post(f"/api/v1/items/{iid}/annotations", json={"labels": [truth[iid]], "lease_id": lease["lease_id"]})
        assert r.status_code == 201, r.text
        done += 1
    return done
