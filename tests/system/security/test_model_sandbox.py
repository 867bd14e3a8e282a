"""Registered models cannot touch the server's files: TorchScript (code) is admin-only behind
``allow_code_models`` and runs in a locked-down child that refuses file / storage ops before
running anything; ONNX external data is refused; errors never name server paths."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image
from sqlmodel import Session, select
from torch import nn

from learning.adapters.sandbox import SandboxError, TorchScriptSandbox, scrub_paths
from service.jobs.runner import ThreadExecutor
from service.models import Prediction
from tests.conftest import Ctx

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
ROOT = Path(__file__).resolve().parents[3]
LABELS = ["red", "green", "blue"]
SPEC = {"size": 32}
ORIGINAL = b"precious bytes, not to be changed"


class ForwardAttack(nn.Module):
    """The reported attack: ``forward`` maps a file outside the data dir and writes to it."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target = target

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        t = torch.from_file(self.target, shared=True, size=8, dtype=torch.uint8)
        t.fill_(65)
        scores = x.mean(dim=(2, 3))[0] + t.sum().float() * 0
        return torch.tensor([[1.0, 1.0, 9.0, 9.0]] * 3), torch.arange(3), scores


class HelperAttack(ForwardAttack):
    """The same write, hidden in a helper method that ``forward`` calls."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.tensor([[1.0, 1.0, 9.0, 9.0]] * 3), torch.arange(3), self.helper(x)

    @torch.jit.export
    def helper(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.from_file(self.target, shared=True, size=8, dtype=torch.uint8)
        return x.mean(dim=(2, 3))[0] + t.fill_(66).sum().float() * 0


class SetstateAttack(nn.Module):
    """The write in ``__setstate__``, which ``torch.jit.load`` runs while loading."""

    def __init__(self, target: str) -> None:
        super().__init__()
        self.target, self.n = target, 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.tensor([[1.0, 1.0, 9.0, 9.0]] * 3), torch.arange(3), x.mean(dim=(2, 3))[0] * self.n

    @torch.jit.export
    def __getstate__(self) -> tuple[str, int, bool]:
        return self.target, self.n, self.training

    @torch.jit.export
    def __setstate__(self, state: tuple[str, int, bool]) -> None:
        t = torch.from_file(state[0], shared=True, size=8, dtype=torch.uint8)
        self.target, self.n, self.training = state[0], int(t.fill_(67).sum()) * 0 + state[1], state[2]


class Spin(nn.Module):
    """Never returns."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while bool(x.sum() > -1.0):
            x = x + 1.0
        return x


class Classifier(nn.Module):
    """A benign classifier: logits = mean of the red and blue channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))[:, [0, 2]] * 10


def scripted(module: nn.Module) -> bytes:
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    return buf.getvalue()


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file the server can write, outside its data dir."""
    path = tmp_path / "outside" / "victim.bin"
    path.parent.mkdir()
    path.write_bytes(ORIGINAL)
    return path


def register(ctx: Ctx, headers: dict, data: bytes, *, kind: str = "torchscript", name: str = "m",
             task: str = "detection", labels: list[str] = LABELS) -> Any:
    return ctx.client.post("/api/v1/models", headers=headers, files={"file": ("m.bin", data)},
                           data={"name": name, "kind": kind, "task": task, "labels": json.dumps(labels),
                                 "input_spec": json.dumps(SPEC)})


def stored(ctx: Ctx) -> list[Path]:
    folder = ctx.settings.models_dir / "external"
    return [p for p in folder.iterdir() if not p.name.startswith(".")] if folder.exists() else []


def assert_no_server_path(ctx: Ctx, detail: str) -> None:
    for leak in (str(ctx.settings.data_dir), str(ctx.settings.data_dir.resolve()), "/tmp", ".check-", str(ROOT)):
        assert leak not in detail, detail


def test_torchscript_attack_is_refused_before_it_runs(ctx: Ctx, victim: Path) -> None:
    admin, manager = ctx.user("root", "admin"), ctx.user("boss", "manager")
    attack = scripted(ForwardAttack(str(victim)))
    r = register(ctx, manager, attack)
    assert r.status_code == 403 and "admin" in r.json()["detail"], r.text
    assert ctx.settings.allow_code_models is False
    r = register(ctx, admin, attack)
    assert r.status_code == 403 and "LABELLOOP_ALLOW_CODE_MODELS" in r.json()["detail"], r.text
    ctx.settings.allow_code_models = True
    assert register(ctx, manager, attack).status_code == 403  # still admins only
    r = register(ctx, admin, attack)
    assert r.status_code == 422, r.text
    assert "aten::from_file" in r.json()["detail"]
    assert_no_server_path(ctx, r.json()["detail"])
    assert victim.read_bytes() == ORIGINAL
    assert stored(ctx) == []


@pytest.mark.parametrize("attack,word", [(HelperAttack, "aten::from_file"), (SetstateAttack, "__setstate__")])
def test_hidden_file_access_is_refused(ctx: Ctx, victim: Path, attack: type[nn.Module], word: str) -> None:
    ctx.settings.allow_code_models = True
    r = register(ctx, ctx.user("root", "admin"), scripted(attack(str(victim))))
    assert r.status_code == 422 and word in r.json()["detail"], r.text
    assert victim.read_bytes() == ORIGINAL and stored(ctx) == []


LOCKDOWN = """
import errno, os, socket, sys, torch
from learning.adapters._sandbox_child import lock_down
victim, model = sys.argv[1], open(sys.argv[2], "rb").read()
kept = os.open(sys.argv[3], os.O_WRONLY)  # a file descriptor opened before the lockdown
lock_down(memory_bytes=2 << 30, cpu_seconds=60)
for what, call in [("read", lambda: open(victim, "rb")), ("write", lambda: open(victim, "r+b")),
                   ("create", lambda: open(victim + ".new", "wb")), ("socket", socket.socket),
                   ("pipe", os.pipe), ("kept", lambda: os.write(kept, b"x"))]:
    try:
        call()
        print(what, "ALLOWED")
    except OSError as exc:
        print(what, errno.errorcode[exc.errno])
for what, call in [("from_file", lambda: torch.from_file(victim, shared=True, size=4, dtype=torch.uint8)),
                   ("load", lambda: torch.jit.load(__import__("io").BytesIO(model)))]:
    try:
        call()
        print(what, "ALLOWED")
    except RuntimeError:
        print(what, "refused")
"""


def test_lockdown_stops_files_sockets_and_load_time_code(tmp_path: Path, victim: Path) -> None:
    model = tmp_path / "setstate.pt"
    model.write_bytes(scripted(SetstateAttack(str(victim))))
    kept = tmp_path / "kept.txt"
    kept.write_bytes(b"")
    out = subprocess.run([sys.executable, "-c", LOCKDOWN, str(victim), str(model), str(kept)], cwd=ROOT,
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    results = dict(line.split() for line in out.stdout.splitlines())
    assert results == {"read": "EMFILE", "write": "EMFILE", "create": "EMFILE", "socket": "EMFILE",
                       "pipe": "EMFILE", "kept": "EFBIG", "from_file": "refused", "load": "refused"}, out.stdout
    assert victim.read_bytes() == ORIGINAL and kept.read_bytes() == b""
    assert not (victim.parent / "victim.bin.new").exists()


def test_benign_torchscript_registers_and_annotates(ctx: Ctx, monkeypatch: pytest.MonkeyPatch) -> None:
    admin = ctx.user("root", "admin")
    ctx.settings.allow_code_models = True
    r = register(ctx, admin, scripted(Classifier()), task="multiclass", labels=["cat", "dog"])
    assert r.status_code == 201, r.text
    pid = ctx.client.post("/api/v1/projects", json={"name": "pets", "task": "multiclass",
                                                    "classes": ["cat", "dog"]}, headers=admin).json()["id"]
    files = []
    for i, rgb in enumerate([(230, 20, 20), (20, 20, 230), (220, 30, 30)]):
        buf = io.BytesIO()
        Image.fromarray(np.full((20, 24, 3), rgb, dtype=np.uint8)).save(buf, format="PNG")
        files.append(("files", (f"{i}.png", buf.getvalue(), "image/png")))
    assert ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=admin).status_code == 201
    started: list[TorchScriptSandbox] = []
    real_init = TorchScriptSandbox.__init__

    def spy(self: TorchScriptSandbox, *args: Any, **kw: Any) -> None:
        real_init(self, *args, **kw)
        started.append(self)

    monkeypatch.setattr(TorchScriptSandbox, "__init__", spy)
    body = {"model_id": r.json()["id"], "threshold": 0.5}
    job = ctx.client.post(f"/api/v1/projects/{pid}/annotate", json=body, headers=admin)
    assert job.status_code == 202, job.text
    ThreadExecutor(ctx.engine, ctx.settings).run_pending()
    done = ctx.client.get(f"/api/v1/jobs/{job.json()['id']}", headers=admin).json()
    assert done["state"] == "succeeded" and done["result"]["proposed"] == 3, done
    with Session(ctx.engine) as s:
        labels = sorted(p.label for p in s.exec(select(Prediction)).all() if p.label)
    assert labels == ["cat", "cat", "dog"]
    assert len(started) == 1 and not started[0].alive  # one child for the job, stopped after it

    ctx.settings.allow_code_models = False  # switched off: stored TorchScript models no longer run
    job = ctx.client.post(f"/api/v1/projects/{pid}/annotate", json=body, headers=admin)
    ThreadExecutor(ctx.engine, ctx.settings).run_pending()
    done = ctx.client.get(f"/api/v1/jobs/{job.json()['id']}", headers=admin).json()
    assert done["state"] == "failed" and "LABELLOOP_ALLOW_CODE_MODELS" in str(done["message"]), done
    assert len(started) == 1


def test_errors_do_not_name_server_paths(ctx: Ctx) -> None:
    admin = ctx.user("root", "admin")
    ctx.settings.allow_code_models = True
    for kind in ("onnx", "torchscript"):
        r = register(ctx, admin, b"definitely not a model", kind=kind)
        assert r.status_code == 422 and f"not a loadable {kind} model" in r.json()["detail"], r.text
        assert_no_server_path(ctx, r.json()["detail"])
    assert stored(ctx) == []


def test_paths_are_scrubbed_and_a_stuck_model_is_stopped() -> None:
    msg = "Load model from /tmp/p/data/models/external/.check-1f2e failed: C:\\srv\\m.onnx; scale 1/255, NCHW/NHWC"
    assert scrub_paths(msg) == "Load model from <path> failed: <path>; scale 1/255, NCHW/NHWC"
    with TorchScriptSandbox(scripted(Spin()), timeout_s=2) as box:
        with pytest.raises(SandboxError, match="longer than 2 s"):
            box.run(np.zeros((1, 3, 4, 4), np.float32))
        assert not box.alive
        with pytest.raises(SandboxError, match="stopped"):
            box.run(np.zeros((1, 3, 4, 4), np.float32))


def onnx_with_external_data(location: str | None) -> bytes:
    """``scores = mean(image) + w``, with ``w`` (3 floats) read from ``location`` by onnxruntime
    (``None``: ``w`` inside the file)."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3], vals=[0.0, 0.0, 0.0])
    if location is not None:
        w.ClearField("float_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", "12")):
            w.external_data.add(key=k, value=v)
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["image"], ["m"], axes=[2, 3], keepdims=0),
         helper.make_node("Add", ["m", "w"], ["scores"])], "leak",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()


def test_onnx_external_data_is_refused(ctx: Ctx, victim: Path) -> None:
    manager = ctx.user("boss", "manager")
    for i, location in enumerate([str(victim), "../../outside/victim.bin", "victim.bin"]):
        r = register(ctx, manager, onnx_with_external_data(location), kind="onnx", name=f"x{i}",
                     task="multiclass")
        assert r.status_code == 422 and "external data" in r.json()["detail"], r.text
        assert_no_server_path(ctx, r.json()["detail"])
    assert victim.read_bytes() == ORIGINAL and stored(ctx) == []
    r = register(ctx, manager, onnx_with_external_data(None), kind="onnx", task="multiclass")
    assert r.status_code == 201, r.text  # the same graph, self-contained: managers may register ONNX
