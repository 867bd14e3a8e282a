"""Hugging Face image classifiers from disk (issue 29): registered from a folder or a repo in
the local cache, offline, safetensors only, their labels their own; then automatic annotation
with them proposes into Pending like any registered model. Bad folders are refused with one
sentence each. The models are tiny ViTs made here (no download)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

transformers = pytest.importorskip("transformers", reason="transformers not installed: pip install "
                                   "'labelloop[huggingface]'")
import torch  # noqa: E402

from service.models import Prediction  # noqa: E402
from tests.conftest import Ctx  # noqa: E402
from tests.loop.helpers import colour_project  # noqa: E402
from tests.loop.test_annotate_proposals import annotate  # noqa: E402

LABELS = {0: "crimson", 1: "leaf", 2: "sky"}


def tiny_vit(folder: Path, *, head: bool = True, favour: int = 0) -> Path:
    """A ViT of 32 px, 2 layers; its head always says ``LABELS[favour]`` (at about 0.99)."""
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor, ViTModel

    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    torch.manual_seed(0)
    model = ViTForImageClassification(cfg) if head else ViTModel(cfg)
    if head:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor([5.0 if i == favour else 0.0 for i in range(3)]))
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def register(ctx: Ctx, headers: dict[str, str], path: str, name: str = "vit") -> Any:
    return ctx.client.post("/api/v1/models", headers=headers,
                           data={"name": name, "kind": "huggingface", "path": path})


@pytest.fixture
def roots(ctx: Ctx, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder the server reads models from, and an empty Hugging Face cache."""
    allowed = tmp_path / "hf-models"
    allowed.mkdir()
    ctx.settings.hf_model_dirs = [allowed]
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return allowed


def test_a_hugging_face_classifier_is_registered_and_pre_labels_the_pool(ctx: Ctx, roots: Path) -> None:
    admin = ctx.user("root", "admin")
    pid, truth = colour_project(ctx, admin, {"red": 4, "green": 4, "blue": 4})
    folder = tiny_vit(roots / "vit-red")
    r = register(ctx, admin, str(folder))
    assert r.status_code == 201, r.text
    rm = r.json()
    assert rm["kind"] == "huggingface" and rm["task"] == "multiclass" and rm["labels"] == ["crimson", "leaf", "sky"]
    assert rm["input_spec"]["architecture"] == "ViTForImageClassification"
    assert rm["input_spec"]["size"] == {"height": 32, "width": 32}

    job = annotate(ctx, admin, pid, model_id=rm["id"], label_map={"crimson": "red", "leaf": "green"}, threshold=0.9)
    assert job["result"]["proposed"] == len(truth)
    with Session(ctx.engine) as s:
        props = s.exec(select(Prediction).where(Prediction.state == "proposed")).all()
    assert {p.label for p in props} == {"red"} and all(0.97 < p.score < 1.0 for p in props)
    assert all(p.data["model"] == "vit" for p in props)

    # the folder changed after registration: the job refuses to run it
    shutil.rmtree(folder)
    tiny_vit(folder, favour=1)
    r = ctx.client.post(f"/api/v1/projects/{pid}/annotate", json={"model_id": rm["id"], "label_map": {"leaf": "green"}},
                        headers=admin)
    assert r.status_code == 202, r.text
    from service.jobs.runner import claim_next, run_job

    job_id = claim_next(ctx.engine, "test", ["annotate"])
    assert job_id is not None
    run_job(ctx.engine, ctx.settings, job_id)
    failed = ctx.client.get(f"/api/v1/jobs/{job_id}", headers=admin).json()
    assert failed["state"] == "failed" and "changed since it was registered" in failed["error"]


def test_a_repo_in_the_local_cache_is_registered_by_its_id(ctx: Ctx, roots: Path, tmp_path: Path) -> None:
    admin = ctx.user("root", "admin")
    snap = tmp_path / "hf-cache" / "models--acme--tiny-vit"
    commit = "0" * 40
    tiny_vit(snap / "snapshots" / commit, favour=2)
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text(commit)
    r = register(ctx, admin, "acme/tiny-vit")
    assert r.status_code == 201, r.text
    assert r.json()["labels"] == ["crimson", "leaf", "sky"]
    missing = register(ctx, admin, "acme/not-here", name="other")
    assert missing.status_code == 422 and "local Hugging Face cache" in missing.json()["detail"]


def test_folders_that_cannot_be_used_are_refused_with_a_reason(ctx: Ctx, roots: Path, tmp_path: Path) -> None:
    admin = ctx.user("root", "admin")
    labeler = ctx.user("lab", "labeler")
    outside = tiny_vit(tmp_path / "elsewhere")
    cases = {
        str(outside): "outside the folders this server reads models from",
        str(roots / "nothing"): "is not a folder",
        str(tiny_vit(roots / "no-head", head=False)): "labelloop can use Hugging Face image-classification models",
    }
    empty = roots / "empty"
    empty.mkdir()
    cases[str(empty)] = "no config.json"
    pickled = tiny_vit(roots / "pickled")
    for f in pickled.glob("*.safetensors"):
        f.unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"not loaded")
    cases[str(pickled)] = ".safetensors"
    for i, (path, words) in enumerate(cases.items()):
        r = register(ctx, admin, path, name=f"m{i}")
        assert r.status_code == 422 and words in r.json()["detail"], (path, r.text)
    assert register(ctx, labeler, str(roots / "no-head")).status_code == 403
    both = ctx.client.post("/api/v1/models", headers=admin, files={"file": ("m.bin", b"x")},
                           data={"name": "x", "kind": "huggingface", "path": str(outside)})
    assert both.status_code == 422 and "not a file" in both.json()["detail"]
    assert ctx.client.get("/api/v1/models", headers=admin).json()["count"] == 0
