"""Choosing an executor (``LABELLOOP_EXECUTOR``, ``LABELLOOP_RAY_ADDRESS``, ``LABELLOOP_SHARD_SIZE``)
and the in-process context's shards: no Ray needed."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.config import Settings
from service.jobs.executor import LocalContext, ShardTask, map_in_process, split
from service.jobs.runner import ThreadExecutor
from service.main import build_executor, create_app
from tests.conftest import make_settings


def test_the_default_is_in_process_with_shards_of_2048() -> None:
    s = Settings()
    assert (s.executor, s.ray_address, s.shard_size) == ("inprocess", "local", 2048)


@pytest.mark.parametrize("address", ["local", "auto", "ray://head:10001", "10.0.0.5:6379"])
def test_ray_addresses_are_accepted(address: str) -> None:
    assert Settings(ray_address=address).ray_address == address


@pytest.mark.parametrize("field,value,words", [
    ("ray_address", "http://head", "is not an address: use local, auto, ray://host:10001"),
    ("executor", "celery", "'inprocess', 'worker' or 'ray'"),
    ("shard_size", 0, "greater than or equal to 1"),
])
def test_a_bad_setting_stops_the_start_with_a_sentence(field: str, value: Any, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Settings(**{field: value})


def test_ray_chosen_but_not_installed_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(ValidationError, match=r"pip install 'labelloop\[ray\]'"):
        Settings(executor="ray")


def test_a_private_ray_per_api_process_is_refused() -> None:
    pytest.importorskip("ray", reason="ray is not installed: the check runs only where it could start")
    with pytest.raises(ValidationError, match="would start a private Ray in each of the 4 API processes"):
        Settings(executor="ray", web_workers=4)
    assert Settings(executor="ray", web_workers=4, ray_address="auto").web_workers == 4


def test_worker_and_inprocess_build_the_thread_executor(tmp_path: Path) -> None:
    for name in ("inprocess", "worker"):
        s = make_settings(tmp_path, executor=name)
        assert type(build_executor(None, s)) is ThreadExecutor  # type: ignore[arg-type]


def test_with_executor_worker_the_api_runs_no_jobs(tmp_path: Path) -> None:
    s = make_settings(tmp_path, executor="worker")
    s.run_jobs_in_process = True
    app = create_app(s)
    with TestClient(app):
        assert app.state.executor is None
    s = make_settings(tmp_path / "b")
    s.run_jobs_in_process = True
    app = create_app(s)
    with TestClient(app):
        assert type(app.state.executor) is ThreadExecutor


class Doubler:
    """A ShardTask: ``load`` counts how often it ran."""

    key = "doubler"

    def __init__(self) -> None:
        self.loads = 0

    def load(self) -> int:
        self.loads += 1
        return 2

    def run(self, loaded: int, shard: list[int], report: Any) -> list[int]:
        report(0.5)
        return [loaded * x for x in shard]


def test_in_process_shards_run_in_order_load_once_and_sum_their_progress() -> None:
    task = Doubler()
    assert isinstance(task, ShardTask)
    seen: list[float] = []
    shards = split(list(range(5)), 2)
    assert shards == [[0, 1], [2, 3], [4]]
    assert map_in_process(task, shards, seen.append) == [[0, 2], [4, 6], [8]]
    assert task.loads == 1
    assert seen == [0.2, 0.4, 0.6, 0.8, 0.9, 1.0]  # halfway through each shard, then its end
    ctx = LocalContext(shard_size=3)
    assert ctx.map(lambda s: sum(s), ctx.shards([1, 2, 3, 4])) == [6, 4]
    assert ctx.run(lambda inputs, c: (inputs, c is ctx), 7) == (7, True)  # in-process: here, same context
    assert split([], 4) == []


def test_a_remote_worker_resolves_its_device_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.jobs.executor as executor
    from service.pipelines.base import ModelConfig

    model = ModelConfig(backbone="b", checkpoint=None, image_size=32, torch_threads=1, data_dir=tmp_path,
                        device="cuda:1", device_setting="cuda:1")
    assert model.here() is model  # in the driver: as set
    monkeypatch.setattr(executor, "_REMOTE", True)
    from learning.device import resolve_device

    assert model.here().device == str(resolve_device("auto"))  # a Ray GPU worker sees its GPU as cuda:0
    assert ModelConfig(backbone="b", checkpoint=None, image_size=32, torch_threads=1, data_dir=tmp_path,
                       device="cpu", device_setting="cpu").here().device == "cpu"


def test_an_executor_never_started_stops_cleanly(tmp_path: Path) -> None:
    """A script that only calls ``run_pending`` (the simulator) stops its executor without error."""
    from service.db import engine_from_settings

    s = make_settings(tmp_path)
    s.ensure_dirs()
    executor = build_executor(engine_from_settings(s), s, threads=2)
    executor.stop()
    executor.stop()  # twice: still nothing to wait for
    assert all(t.ident is None for t in executor._threads)
