"""A real Ray cluster of several nodes on this machine, for the Ray executor's tests
(``tests/jobs``) and ``python -m lab.benchmarks.bench_ray --nodes``.

Each node is a ``ray start --block`` process (the head with ``--head``) of its own process
group, with the CPUs it is given; :meth:`LocalCluster.kill_node` kills one node's raylet and
worker processes at once (SIGKILL), as a machine that dies would; :meth:`LocalCluster.stop`
kills every process of the cluster (found by the GCS port on their command lines), so that
nothing outlives the tests and no other Ray on the machine is touched. The cluster runs
without token authentication (:data:`AUTH`): it listens on this machine only and lives for
one test module or benchmark."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import ray

RAY = str(Path(sys.executable).with_name("ray"))
# the GCS marks a node dead after about 3 s without heartbeats (Ray's default: about 30 s)
SYSTEM_CONFIG = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
                 "health_check_initial_delay_ms": 1000}


# A throw-away cluster on 127.0.0.1: no token. Whether Ray 2.60 asks for one otherwise depends on
# the machine (a ~/.ray/auth_token left by an earlier `ray.init` turns it on for `ray start`),
# and the driver and the nodes must agree.
AUTH = {"RAY_AUTH_MODE": "disabled"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Node:
    process: subprocess.Popen
    node_id: str


@dataclass
class LocalCluster:
    logs: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _start(self, args: list[str], name: str) -> subprocess.Popen:
        log = (self.logs / f"{name}.log").open("w")
        return subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                                 *args], env={**os.environ, **self.env, **AUTH, "RAY_USAGE_STATS_ENABLED": "0"},
                                start_new_session=True, stdout=log, stderr=subprocess.STDOUT)

    def start_head(self, num_cpus: int = 1, timeout: float = 120.0) -> None:
        """The head node; returns once its GCS answers. This process then connects without a
        token (:data:`AUTH`, set in its environment too)."""
        os.environ.update(AUTH)
        process = self._start(["--head", f"--port={self.port}", f"--num-cpus={num_cpus}",
                               "--include-dashboard=false", f"--system-config={json.dumps(SYSTEM_CONFIG)}"], "head")
        deadline = time.time() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"ray start --head exited {process.returncode}: see {self.logs / 'head.log'}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        self.nodes.append(Node(process, ""))

    def add_node(self, num_cpus: int = 1, timeout: float = 120.0) -> Node:
        """One more node (this process must be connected: ``ray.init(address=...)``)."""
        if not self.nodes[0].node_id:
            self.nodes[0].node_id = self._alive()[0]
        before = set(self._alive())
        process = self._start([f"--address={self.address}", f"--num-cpus={num_cpus}"], f"node{len(self.nodes)}")
        deadline = time.time() + timeout
        while not (new := set(self._alive()) - before):
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"a Ray node did not join: see {self.logs}")
            time.sleep(0.3)
        node = Node(process, new.pop())
        self.nodes.append(node)
        return node

    def kill_node(self, node: Node, worker_pids: list[int]) -> None:
        """SIGKILL the node's raylet (its process group) and its ``worker_pids`` (Ray's workers
        start sessions of their own), as a machine that dies would."""
        os.killpg(node.process.pid, signal.SIGKILL)
        for pid in worker_pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        node.process.wait(30)

    def stop(self) -> None:
        """Kill every process of this cluster: the nodes' groups, then whatever names its GCS port."""
        for node in self.nodes:
            try:
                os.killpg(node.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            node.process.wait(30)
        mark = f":{self.port}".encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if mark in cmd and (b"gcs" in cmd or b"ray" in cmd):
                try:
                    os.kill(int(entry.name), signal.SIGKILL)
                except ProcessLookupError:
                    pass

    @staticmethod
    def _alive() -> list[str]:
        return [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
