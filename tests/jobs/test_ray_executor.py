"""The Ray executor (``LABELLOOP_EXECUTOR=ray``) against a real Ray cluster of two nodes of one
CPU each (``ray start --head`` and ``ray start --address``, started here, their processes
killed at the end: :mod:`lab.ray_cluster`): a train + infer job gives what the
in-process executor gives, shard by shard on an actor pool; a cancel stops a job and leaves
the database as the last commit left it; a shard that raises fails the job and says which
shard and why; a node killed mid-job (a third one, added by that test) costs nothing but
time: its shards run again elsewhere and every result is written once. On SQLite, and on
PostgreSQL too where ``LABELLOOP_TEST_DATABASE_URL`` names one.

Workers get the fake colour adapter (:mod:`tests.jobs.ray_hooks`, installed in each Ray
worker by ``worker_process_setup_hook``), so no test here needs a real backbone."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, col, select

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'labelloop[ray]'): Ray executor untested")

import tests.fakes as fakes  # noqa: E402
from lab.ray_cluster import LocalCluster  # noqa: E402
from service.jobs.executor import LocalContext  # noqa: E402
from service.jobs.ray_executor import POOL, RayExecutor, ShardFailed, check_data_dir, release_pool  # noqa: E402
from service.jobs.runner import ThreadExecutor, enqueue  # noqa: E402
from service.loop import clusters  # noqa: E402
from service.main import create_app  # noqa: E402
from service.models import GridPage, Item, Job, JobState, ModelVersion, Prediction  # noqa: E402
from service.pipelines import classification as cls  # noqa: E402
from tests.conftest import DB_PARAMS, Ctx, make_settings  # noqa: E402
from tests.factories import colour_project, label, start_job  # noqa: E402
from tests.jobs.ray_hooks import FLAGS_ENV, fake_create_adapter, flagged, slow_double  # noqa: E402

# about 55 s on two cores: every Ray actor imports torch (and the fakes) when it starts
pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
COUNTS = {"red": 12, "green": 12, "blue": 12}
POLICY = {"algorithm": "fast", "min_labels_per_class": 3, "retrain_every_labels": 1000}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Two Ray nodes of one CPU each for this module, this process connected to them."""
    flags = tmp_path_factory.mktemp("ray-flags")
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    c = LocalCluster(tmp_path_factory.mktemp("ray-logs"), {"PYTHONPATH": path, FLAGS_ENV: str(flags)})
    try:
        c.start_head(num_cpus=1)
        ray.init(address=c.address, log_to_driver=False,
                 runtime_env={"worker_process_setup_hook": "tests.jobs.ray_hooks.use_fakes",
                              "env_vars": {"PYTHONPATH": path, FLAGS_ENV: str(flags)}})
        c.add_node(num_cpus=1)
        yield c
    finally:
        if ray.is_initialized():
            release_pool()
            ray.shutdown()
        c.stop()


@pytest.fixture(scope="module")
def ray_flags(cluster: LocalCluster) -> Path:
    """The workers' flag folder (:mod:`tests.jobs.ray_hooks`)."""
    return Path(cluster.env[FLAGS_ENV])


@pytest.fixture
def flags(ray_flags: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No flag set; this process builds the same fake adapter as the workers."""
    monkeypatch.setenv(FLAGS_ENV, str(ray_flags))
    monkeypatch.setattr(cls, "create_adapter", fake_create_adapter)
    monkeypatch.setattr(clusters, "create_adapter", fake_create_adapter)
    monkeypatch.setattr(fakes.ColourAdapter, "embed", flagged(fakes.ColourAdapter.embed))
    clusters.pretrained_features.cache_clear()
    for f in ray_flags.iterdir():
        f.unlink()
    yield ray_flags
    clusters.pretrained_features.cache_clear()
    for f in ray_flags.iterdir():
        f.unlink()


def _world(stack: ExitStack, tmp_path: Path, name: str, backend: str = "sqlite", **settings: Any
           ) -> tuple[Ctx, dict[str, str], int]:
    """A fresh app on its own data dir with a colour project, 15 of its 36 images labelled."""
    s = make_settings(tmp_path / name, backend, **settings)
    s.random_seed = 0
    c = Ctx(stack.enter_context(TestClient(create_app(s, background=False))), s)
    admin = c.user("root", "admin")
    pid, truth = colour_project(c, admin, COUNTS, policy=POLICY)
    for iid in sorted(truth)[:15]:
        label(c, admin, iid, truth[iid])
    return c, admin, pid


def _state(c: Ctx, job_id: int) -> JobState | None:
    with Session(c.engine) as s:
        job = s.get(Job, job_id)
        return job.state if job else None


def _outcome(c: Ctx) -> dict[str, Any]:
    """What the jobs left in the database (timings left out)."""
    with Session(c.engine) as s:
        jobs = [(j.kind, j.state, j.error, {k: v for k, v in (j.result or {}).items()})
                for j in s.exec(select(Job).order_by(col(Job.id))).all()]
        versions = [(v.version, v.status, v.is_current, v.thresholds,
                     {k: v for k, v in v.metrics.items() if k not in ("fit_seconds", "history")})
                    for v in s.exec(select(ModelVersion)).all()]
        preds = [(p.item_id, p.label, p.score, p.state, p.data)
                 for p in s.exec(select(Prediction).order_by(col(Prediction.item_id), col(Prediction.id))).all()]
        scores = [(i.id, i.query_score) for i in s.exec(select(Item).order_by(col(Item.id))).all()]
    return {"jobs": jobs, "versions": versions, "predictions": preds, "scores": scores}


@pytest.mark.parametrize("backend", DB_PARAMS)
def test_train_and_infer_on_ray_give_the_in_process_results(tmp_path: Path, flags: Path, backend: str) -> None:
    with ExitStack() as stack:
        local, _, pid = _world(stack, tmp_path, "inprocess")
        start_job(local, "train", pid)
        assert ThreadExecutor(local.engine, local.settings).run_pending() == 2  # train, then its infer

        # shards of 4 images: the 36 images of the fit and the 21 of the pool in several shards, on one
        # actor that keeps its model from the train job to the infer job (the fit runs beside it)
        remote, _, rpid = _world(stack, tmp_path, "ray", backend, shard_size=4)
        start_job(remote, "train", rpid)
        executor = RayExecutor(remote.engine, remote.settings, actors=1)
        assert executor.run_pending() == 2

        expected, got = _outcome(local), _outcome(remote)
        assert [j[:3] for j in got["jobs"]] == [("train", JobState.succeeded, None),
                                                ("infer", JobState.succeeded, None)]
        assert got == expected
        assert len(got["predictions"]) == 36 - 15 and got["versions"][0][1] == "ready"


def _run_kind(c: Ctx, pid: int, kind: str, executor: ThreadExecutor) -> dict[str, Any]:
    with Session(c.engine) as s:
        job = enqueue(s, kind=kind, project_id=pid, payload={"reason": "test"})
        s.commit()
        job_id = job.id
    assert executor.run_pending() == 1
    with Session(c.engine) as s:
        done = s.get(Job, job_id)
        assert done is not None and done.state == JobState.succeeded, done.error if done else None
        return {k: v for k, v in (done.result or {}).items() if "seconds" not in k}


def _embedded_elsewhere(flags: Path) -> bool:
    """Whether every embedding since the record was cleared ran in another process (an actor)."""
    pids = {int(x) for x in (flags / "embedded-by").read_text().split()} if (flags / "embedded-by").exists() else set()
    return bool(pids) and os.getpid() not in pids


def _pages(c: Ctx) -> list[tuple[Any, ...]]:
    with Session(c.engine) as s:
        return [(p.size, p.position, p.cluster, p.item_ids, p.suggested_class, p.holdout_ids)
                for p in s.exec(select(GridPage).order_by(col(GridPage.size), col(GridPage.position))).all()]


def test_cold_start_and_grids_embed_on_ray_as_in_process(tmp_path: Path, flags: Path) -> None:
    """The cold start's and the grids' embedding runs in shards on the actor pool; the picks
    and the pages are the in-process ones."""
    with ExitStack() as stack:
        local, _, pid = _world(stack, tmp_path, "inprocess")
        remote, _, rpid = _world(stack, tmp_path, "ray", shard_size=5)
        here = ThreadExecutor(local.engine, local.settings)
        there = RayExecutor(remote.engine, remote.settings, actors=2)
        picks = _run_kind(local, pid, "cold_start", here)
        assert picks["picked"] > 0
        (flags / "embedded-by").unlink(missing_ok=True)
        assert _run_kind(remote, rpid, "cold_start", there) == picks
        assert _outcome(remote)["scores"] == _outcome(local)["scores"]
        assert _embedded_elsewhere(flags)  # the cold start embedded on the actors, not here

        for c, p in ((local, pid), (remote, rpid)):  # a model, so that pages carry suggestions
            with Session(c.engine) as s:
                enqueue(s, kind="train", project_id=p, payload={})
                s.commit()
            assert ThreadExecutor(c.engine, c.settings).run_pending() == 2
        shutil.rmtree(remote.settings.data_dir / "embeddings")  # the grids embed the pool again, on Ray
        summary = _run_kind(local, pid, "cluster", here)
        (flags / "embedded-by").unlink(missing_ok=True)
        assert _run_kind(remote, rpid, "cluster", there) == summary
        assert _embedded_elsewhere(flags)
        assert _pages(remote) == _pages(local) and len(_pages(local)) > 0


def test_the_in_process_map_and_the_ray_map_agree_on_shards(flags: Path) -> None:
    seen: list[float] = []
    executor = RayExecutor(None, make_settings(flags.parent / "unused"), actors=2, poll_seconds=0.2)  # type: ignore[arg-type]
    assert executor.map(slow_double, [1, 2, 3, 4, 5], progress=seen.append) == [2, 4, 6, 8, 10]
    assert seen[-1] == 1.0 and seen == sorted(seen)  # progress sums the shards
    ctx = LocalContext(shard_size=2)
    assert ctx.shards([1, 2, 3, 4, 5]) == [[1, 2], [3, 4], [5]]
    assert ctx.map(slow_double, [1, 2, 3]) == [2, 4, 6]

    (flags / "fail").write_text("")
    with pytest.raises(ShardFailed, match=r"shard 3 of 4 failed on Ray: ValueError: planted failure on 3"):
        executor.map(slow_double, [1, 2, 3, 4])


def test_a_worker_process_killed_mid_map_is_retried_and_every_shard_comes_back_once(flags: Path) -> None:
    executor = RayExecutor(None, make_settings(flags.parent / "unused2"), actors=2, poll_seconds=0.2)  # type: ignore[arg-type]
    assert executor.map(slow_double, [1, 2]) == [2, 4]  # the pool is up
    with POOL.lock:
        pids = ray.get([a.pid.remote() for a in executor.workers(False)])
    (flags / "slow").write_text("1.5")
    out: list[Any] = []
    mapping = threading.Thread(target=lambda: out.append(executor.map(slow_double, list(range(1, 7)))))
    mapping.start()
    time.sleep(0.8)  # both actors are inside their first shard
    os.kill(pids[0], signal.SIGKILL)
    mapping.join(timeout=120)
    assert not mapping.is_alive()
    assert out == [[2, 4, 6, 8, 10, 12]]  # Ray restarted the actor and ran its shard again
    with POOL.lock:
        assert pids[0] not in ray.get([a.pid.remote() for a in executor.workers(False)])


def _predictions(c: Ctx) -> list[tuple[Any, ...]]:
    with Session(c.engine) as s:
        return [(p.item_id, p.label, p.score, p.state)
                for p in s.exec(select(Prediction).order_by(col(Prediction.item_id), col(Prediction.id))).all()]


def _wait_for_progress(c: Ctx, job_id: int, above: float = 0.05, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with Session(c.engine) as s:
            job = s.get(Job, job_id)
            assert job is not None
            if job.progress > above or job.state not in (JobState.queued, JobState.running):
                return
        time.sleep(0.1)


@pytest.mark.parametrize("backend", DB_PARAMS)
def test_a_node_killed_mid_job_costs_only_time_and_every_result_is_written_once(
        tmp_path: Path, flags: Path, cluster: LocalCluster, backend: str) -> None:
    with ExitStack() as stack:
        local, _, pid = _world(stack, tmp_path, "inprocess")
        start_job(local, "train", pid)
        assert ThreadExecutor(local.engine, local.settings).run_pending() == 2  # train, then its infer

        c, _, rpid = _world(stack, tmp_path, "node", backend, shard_size=3)
        with Session(c.engine) as s:
            enqueue(s, kind="train", project_id=rpid, payload={"infer": False})
            s.commit()
        assert ThreadExecutor(c.engine, c.settings).run_pending() == 1  # the model: committed before
        shutil.rmtree(c.settings.data_dir / "embeddings")  # the infer job embeds on Ray, in 7 shards of 3

        node = cluster.add_node(num_cpus=1)  # a third node, for this test to kill
        executor = RayExecutor(c.engine, c.settings, actors=3, poll_seconds=0.2)
        with POOL.lock:
            actors = executor.workers(False)
            where = ray.get([a.node.remote() for a in actors])
            pids = ray.get([a.pid.remote() for a in actors])
        assert node.node_id in where  # one actor per node: one CPU each
        (flags / "slow").write_text("1.5")
        job_id = start_job(c, "infer", rpid)
        runner = threading.Thread(target=executor.run_pending)
        runner.start()
        _wait_for_progress(c, job_id)  # a shard came back; the third node's actor is inside its next one
        cluster.kill_node(node, [p for p, n in zip(pids, where, strict=True) if n == node.node_id])
        runner.join(timeout=180)
        assert not runner.is_alive()

        with Session(c.engine) as s:
            job = s.get(Job, job_id)
            assert job is not None
            assert job.state == JobState.succeeded, (job.state, job.error)
        got = _predictions(c)
        assert got == _predictions(local)  # the same predictions as in-process ...
        assert len({p[0] for p in got}) == len(got) == 36 - 15  # ... each written once
        with POOL.lock:
            assert node.node_id not in ray.get([a.node.remote() for a in POOL.actors or []])


@pytest.mark.parametrize("backend", DB_PARAMS)
def test_a_cancelled_ray_job_stops_and_keeps_only_what_was_committed(tmp_path: Path, flags: Path,
                                                                     backend: str) -> None:
    with ExitStack() as stack:
        c, admin, pid = _world(stack, tmp_path, "cancel", backend, shard_size=3)
        with Session(c.engine) as s:
            enqueue(s, kind="train", project_id=pid, payload={"infer": False})
            s.commit()
        assert ThreadExecutor(c.engine, c.settings).run_pending() == 1  # the model: committed before

        shutil.rmtree(c.settings.data_dir / "embeddings")  # the fit embedded the whole pool: again, on Ray
        (flags / "slow").write_text("2")  # 7 shards of 2 s on 2 actors: 8 s if nobody cancels
        job_id = start_job(c, "infer", pid)
        executor = RayExecutor(c.engine, c.settings, actors=2, poll_seconds=0.2)
        runner = threading.Thread(target=executor.run_pending)
        runner.start()
        deadline = time.time() + 90
        while time.time() < deadline:  # until the first shard came back
            with Session(c.engine) as s:
                job = s.get(Job, job_id)
                assert job is not None
                if job.progress > 0.05:
                    break
            time.sleep(0.1)
        r = c.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=admin)
        assert r.status_code == 200, r.text
        asked = time.time()
        runner.join(timeout=60)
        assert not runner.is_alive()
        assert time.time() - asked < 5  # stopped at the next poll: the shards left were not waited for

        with Session(c.engine) as s:
            job = s.get(Job, job_id)
            assert job is not None
            assert job.state == JobState.cancelled, (job.state, job.error)
            assert s.exec(select(Prediction)).all() == []  # the infer job wrote nothing
            mv = s.exec(select(ModelVersion)).one()
            assert mv.status == "ready" and mv.is_current  # what the train job committed stays
            assert all(i.query_score is None for i in s.exec(select(Item)).all())


def test_a_shard_that_fails_fails_the_job_with_its_reason(tmp_path: Path, flags: Path) -> None:
    with ExitStack() as stack:
        c, _, pid = _world(stack, tmp_path, "fail", shard_size=8)
        with Session(c.engine) as s:
            enqueue(s, kind="train", project_id=pid, payload={"infer": False})
            s.commit()
        assert ThreadExecutor(c.engine, c.settings).run_pending() == 1
        shutil.rmtree(c.settings.data_dir / "embeddings")  # the fit embedded the whole pool: again, on Ray
        (flags / "fail").write_text("")
        job_id = start_job(c, "infer", pid)
        executor = RayExecutor(c.engine, c.settings, actors=2)  # as the API runs it: its own job thread
        executor.start()
        try:
            executor.submit(job_id)
            deadline = time.time() + 90
            while time.time() < deadline and _state(c, job_id) in (JobState.queued, JobState.running):
                time.sleep(0.2)
        finally:
            executor.stop()
        assert ray.is_initialized()  # the executor did not start this Ray: it leaves it running
        with Session(c.engine) as s:
            job = s.get(Job, job_id)
            assert job is not None and job.state == JobState.failed
            assert "ShardFailed" in (job.error or "") and "of 3 failed on Ray" in (job.error or "")
            assert "ValueError: planted failure in embed" in (job.error or "")
            assert s.exec(select(Prediction)).all() == []


def test_the_api_with_executor_ray_runs_its_jobs_through_ray(tmp_path: Path, flags: Path) -> None:
    s = make_settings(tmp_path, executor="ray")
    s.run_jobs_in_process = True
    app = create_app(s)
    with TestClient(app):
        assert type(app.state.executor) is RayExecutor and app.state.executor._threads[0].is_alive()
    assert not app.state.executor._threads[0].is_alive() and ray.is_initialized()  # stopped; Ray was not its own


def test_a_data_dir_a_node_cannot_see_stops_the_start(tmp_path: Path, flags: Path) -> None:
    check_data_dir(tmp_path)  # both nodes (on this machine) see it
    with pytest.raises(RuntimeError, match=r"the data dir .*/nowhere cannot be read and written on Ray node\(s\) "
                                           r"[0-9.]+ \(node [0-9a-f]{8}\), [0-9.]+ \(node [0-9a-f]{8}\); "
                                           r"mount it at that same path on every node"):
        check_data_dir(tmp_path / "nowhere")
