"""Automatic annotation end to end: a tiny ONNX model made here, registered over HTTP, label
matching, progress, a cancelled run that leaves whole batches only, clean_old (without it an
auto-accepted label is left alone), and 422s."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from sqlmodel import Session, col, select
from torch import nn

import service.cli_annotate as annotate_cli
import service.loop.annotate as annotate_mod
from learning.adapters.external import ExternalAdapter
from service.crud.annotations import write_version
from service.jobs.runner import JobContext, ThreadExecutor
from service.models import Annotation, Item, Job, ModelVersion, Prediction, Provenance
from tests.conftest import Ctx

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
LABELS = ["red", "green", "blue"]
SPEC = {"size": 32, "mean": [0, 0, 0], "std": [1, 1, 1], "layout": "NCHW"}


class Tiny(nn.Module):
    """``[1, 3, 32, 32]`` -> boxes ``[3, 4]`` (xyxy), labels ``[3]``, scores ``[3]`` = channel means."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("boxes", torch.tensor([[2.0, 2.0, 14.0, 14.0], [16.0, 16.0, 30.0, 30.0],
                                                    [4.0, 4.0, 28.0, 28.0]]))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.boxes, torch.arange(3, dtype=torch.int64), x.mean(dim=(2, 3))[0]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    d = tmp_path_factory.mktemp("models")
    torch.onnx.export(Tiny(), (torch.zeros(1, 3, 32, 32),), str(d / "tiny.onnx"), input_names=["image"],
                      output_names=["boxes", "labels", "scores"], dynamo=False)
    torch.jit.trace(Tiny(), torch.zeros(1, 3, 32, 32)).save(str(d / "tiny.pt"))
    return {"onnx": (d / "tiny.onnx").read_bytes(), "torchscript": (d / "tiny.pt").read_bytes()}


def register(ctx: Ctx, headers: dict, data: bytes, *, name: str = "tiny", kind: str = "onnx",
             labels: Any = LABELS, spec: dict = SPEC) -> Any:
    return ctx.client.post("/api/v1/models", headers=headers, files={"file": ("m.bin", data)},
                           data={"name": name, "kind": kind, "task": "detection", "default_threshold": "0.5",
                                 "labels": labels if isinstance(labels, str) else json.dumps(labels),
                                 "input_spec": json.dumps(spec)})


def stored(ctx: Ctx) -> list[Path]:
    folder = ctx.settings.models_dir / "external"
    return sorted(p for p in folder.glob("*") if not p.name.startswith(".")) if folder.exists() else []


def test_register_and_list_models_with_checks(ctx: Ctx, model_files: dict[str, bytes]) -> None:
    admin, labeler = ctx.user("root", "admin"), ctx.user("lab", "labeler")
    assert register(ctx, labeler, model_files["onnx"]).status_code == 403
    bad = [register(ctx, admin, b"definitely not a model"),
           register(ctx, admin, model_files["onnx"], spec={**SPEC, "size": 48}),
           register(ctx, admin, model_files["onnx"], labels=[]),
           register(ctx, admin, model_files["onnx"], labels=["red", "red", "blue"]),
           register(ctx, admin, model_files["onnx"], labels="red,blue"),
           register(ctx, admin, model_files["onnx"], kind="pickle")]
    assert [r.status_code for r in bad] == [422] * 6, [r.text for r in bad]
    assert "input mismatch" in bad[1].json()["detail"]
    assert stored(ctx) == []  # nothing stored before the checks pass
    r = register(ctx, admin, model_files["onnx"])
    assert r.status_code == 201, r.text
    assert register(ctx, admin, model_files["onnx"]).status_code == 409
    r = register(ctx, admin, model_files["torchscript"], name="tiny-ts", kind="torchscript")
    assert r.status_code == 403, r.text  # TorchScript is code: off unless the server allows it
    ctx.settings.allow_code_models = True
    r = register(ctx, admin, model_files["torchscript"], name="tiny-ts", kind="torchscript")
    assert r.status_code == 201, r.text  # checked and run in the sandbox child
    listed = ctx.client.get("/api/v1/models", headers=labeler).json()
    assert listed["count"] == 2
    assert {k: listed["data"][0][k] for k in ("name", "kind", "task", "labels")} == {
        "name": "tiny", "kind": "onnx", "task": "detection", "labels": LABELS}
    assert {"id", "name", "kind", "task", "labels"} <= set(listed["data"][1])
    assert len(stored(ctx)) == 2


def colour(rgb: tuple[int, int, int], seed: int) -> bytes:
    arr = np.full((30, 40, 3), rgb, dtype=np.uint8)
    arr[0, seed % 40] = (seed % 256, 0, 0)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def open_proposals(ctx: Ctx) -> dict[int, list[Prediction]]:
    out: dict[int, list[Prediction]] = {}
    with Session(ctx.engine) as s:
        for p in s.exec(select(Prediction).where(Prediction.state == "proposed")).all():
            out.setdefault(p.item_id, []).append(p)
    return out


def test_annotate_progress_cancel_and_clean_old(ctx: Ctx, model_files: dict[str, bytes],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    admin = ctx.user("root", "admin")
    model_id = register(ctx, admin, model_files["onnx"]).json()["id"]
    r = ctx.client.post("/api/v1/projects", json={"name": "fruit", "task": "detection",
                                                  "classes": ["apple", "sky"]}, headers=admin)
    pid = r.json()["id"]
    files = [("files", (f"i{i}.png", colour((220, 40, 40) if i % 2 else (40, 40, 220), i), "image/png"))
             for i in range(10)]
    ids = sorted(c["id"] for c in ctx.client.post(f"/api/v1/projects/{pid}/items", files=files,
                                                  headers=admin).json()["created"])
    model_item, human_item = ids[0], ids[1]
    human = {"boxes": [{"label": "sky", "bbox": [1, 1, 5, 5]}]}
    assert ctx.client.post(f"/api/v1/items/{human_item}/annotations", json=human, headers=admin).status_code == 201
    with Session(ctx.engine) as s:
        item = s.get(Item, model_item)
        assert item is not None
        write_version(s, item=item, data={"labels": [], "boxes": [{"label": "apple", "bbox": [0, 0, 3, 3]}],
                                          "polygons": []}, provenance=Provenance.model, origin="auto", author=None)
        s.commit()
    url = f"/api/v1/projects/{pid}/annotate"
    for wrong, name in (({"red": "pear"}, "pear"), ({"purple": "apple"}, "purple")):
        r = ctx.client.post(url, json={"model_id": model_id, "label_map": wrong}, headers=admin)
        assert r.status_code == 422 and name in r.json()["detail"]
    with Session(ctx.engine) as s:
        assert s.exec(select(Job).where(Job.kind == "annotate")).first() is None  # no job for a 422

    seen: list[float] = []
    real_progress = JobContext.progress

    def spy(self: JobContext, fraction: float, message: str = "") -> None:
        seen.append(fraction)
        real_progress(self, fraction, message)

    monkeypatch.setattr(JobContext, "progress", spy)
    monkeypatch.setattr(annotate_mod, "BATCH", 2)
    body = {"model_id": model_id, "label_map": {"red": "apple", "blue": "sky"}, "threshold": 0.5}
    r = ctx.client.post(url, json=body, headers=admin)
    assert r.status_code == 202 and r.json()["state"] == "queued", r.text
    ThreadExecutor(ctx.engine, ctx.settings).run_pending()
    job = ctx.client.get(f"/api/v1/jobs/{r.json()['id']}", headers=admin).json()
    assert job["state"] == "succeeded", job
    res = job["result"]
    # without clean_old only images waiting for a label: the auto-accepted one keeps its label
    assert res["items"] == 8 and res["proposed"] == 8 and res["dropped_labels"] == ["green"]
    assert seen == sorted(seen) and len(seen) >= 5 and seen[-1] == 1.0  # per-batch progress
    first = open_proposals(ctx)
    assert set(first) == set(ids) - {human_item, model_item} and all(len(v) == 1 for v in first.values())
    red = first[ids[3]][0]  # odd index: a red image
    assert red.data["model"] == "tiny" and red.data["boxes"][0]["label"] == "apple"
    assert red.data["boxes"][0]["bbox"] == pytest.approx([2.5, 1.875, 15.0, 11.25])  # 32 px -> 40x30
    assert not red.data["polygons"] and red.score > 0.5
    with Session(ctx.engine) as s:
        ann = s.exec(select(Annotation).where(Annotation.item_id == model_item)
                     .order_by(col(Annotation.version).desc())).first()
        assert ann is not None and ann.provenance == Provenance.model and ann.data["boxes"]  # kept

    calls = {"n": 0}
    real_predict = ExternalAdapter.predict

    def predict_then_cancel(self: ExternalAdapter, images: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:  # cancel while the second batch is being predicted
            with Session(ctx.engine) as s:
                for j in s.exec(select(Job).where(Job.kind == "annotate", Job.state == "running")).all():
                    j.cancel_requested = True
                    s.add(j)
                s.commit()
        return real_predict(self, images, **kw)

    monkeypatch.setattr(ExternalAdapter, "predict", predict_then_cancel)
    r = ctx.client.post(url, json={**body, "clean_old": True}, headers=admin)
    ThreadExecutor(ctx.engine, ctx.settings).run_pending()
    job = ctx.client.get(f"/api/v1/jobs/{r.json()['id']}", headers=admin).json()
    assert job["state"] == "cancelled", job
    assert job["result"]["processed"] == 4 and job["result"]["cancelled"] is True
    assert "4 of 9" in job["message"]
    after = open_proposals(ctx)
    done = [i for i in ids if i != human_item][:4]  # clean_old takes the auto-accepted image too
    assert model_item in done and all(len(v) == 1 for v in after.values())  # one open proposal each
    assert set(after) == set(first) | {model_item}  # its model label cleaned, it waits in Pending
    assert all(after[i][0].id != first[i][0].id for i in set(done) - {model_item})  # whole batches replaced
    assert all(after[i][0].id == first[i][0].id for i in set(after) - set(done))  # the rest untouched

    monkeypatch.setattr(ExternalAdapter, "predict", real_predict)
    r = ctx.client.post(url, json={**body, "clean_old": True}, headers=admin)
    ThreadExecutor(ctx.engine, ctx.settings).run_pending()
    assert ctx.client.get(f"/api/v1/jobs/{r.json()['id']}", headers=admin).json()["state"] == "succeeded"
    hist = ctx.client.get(f"/api/v1/items/{human_item}/history", headers=admin).json()
    assert len(hist) == 1 and hist[0]["provenance"] == "human" and hist[0]["data"]["boxes"][0]["label"] == "sky"
    hist = ctx.client.get(f"/api/v1/items/{model_item}/history", headers=admin).json()
    assert hist[-1]["provenance"] == "model" and not hist[-1]["data"]["boxes"]  # model annotation cleaned
    final = open_proposals(ctx)
    assert human_item not in final and all(len(v) == 1 for v in final.values()) and len(final) == 9


def test_cli_annotate(ctx: Ctx, model_files: dict[str, bytes]) -> None:
    admin = ctx.user("root", "admin")
    register(ctx, admin, model_files["onnx"])
    r = ctx.client.post("/api/v1/projects", json={"name": "cli", "task": "detection", "classes": ["apple"]},
                        headers=admin)
    ctx.client.post(f"/api/v1/projects/{r.json()['id']}/items", headers=admin,
                    files=[("files", ("a.png", colour((220, 40, 40), 1), "image/png"))])
    parser = argparse.ArgumentParser()
    annotate_cli.register(parser.add_subparsers(dest="cmd"))
    args = parser.parse_args(["annotate", "cli", "--model", "tiny", "--label-map", "red=apple",
                              "--threshold", "0.5"])
    assert args.func(args, ctx.settings) == 0
    assert len(open_proposals(ctx)) == 1
    args = parser.parse_args(["annotate", "cli", "--model", "tiny", "--label-map", "red=pear"])
    assert args.func(args, ctx.settings) == 2
    with Session(ctx.engine) as s:  # the external model's stamp row can be chosen as a model version too
        stamp = s.exec(select(ModelVersion).where(ModelVersion.kind == "external")).one()
    r = ctx.client.post(f"/api/v1/projects/{stamp.project_id}/annotate", headers=admin,
                        json={"model_version_id": stamp.id, "label_map": {"red": "apple"}})
    assert r.status_code == 202 and r.json()["payload"]["model_id"] is not None, r.text
