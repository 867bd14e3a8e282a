"""Automatic annotation on demand (CVAT style): the ``annotate`` job and its checks (the CLI
is :mod:`service.cli_annotate`, the route :mod:`service.api.routes.annotate`).

A chosen model (a registered external model, or a ready model version of the project)
runs over the project's items and writes ``proposed`` predictions (Pending), stamped with
a model version: the trained one, or for an external model a ``kind="external"`` model
version row named after it (version 0, never current). ``label_map`` maps model labels to
project classes; model labels left out are dropped and listed in the job result.

Items whose current label came from people (human, import, model-confirmed) are never
touched, nor one a person labels while the model runs (checked again under a row lock, as
:func:`service.loop.infer.begin_publish` does). An item keeps at most one open proposal:
a new one supersedes every older open proposal of the item, whichever model wrote it.
Without ``clean_old`` only items waiting for a label (unlabelled, skipped, proposed) are
annotated, and an item the model now has no proposal for loses only this model version's
old one; with it the item's open proposals all go, and a ``model`` annotation
(auto-accepted) is replaced by an empty version (history keeps it) so the item waits
again. Either way an item is ``proposed`` exactly when it has an open proposal, so the
dashboard's pending count and Pending agree. Work goes in batches, each committed in one
transaction, so a cancel keeps whole batches and never half of one; the job's result and
message say how far it got.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from sqlmodel import Session, col, select

from service.crud.annotations import current_annotation, is_empty, write_version
from service.crud.classes import class_names
from service.crud.items import blob_store
from service.errors import Invalid, NotFound
from service.loop.clusters import load_model
from service.loop.data import HUMAN
from service.models import Item, ItemStatus, Job, ModelVersion, Prediction, Project, Provenance, RegisteredModel, utcnow

if TYPE_CHECKING:
    from service.jobs.runner import JobContext

BATCH = 8
CLASSIFY = ("multiclass", "multilabel")


class AnnotateIn(BaseModel):
    model_id: int | None = Field(default=None, description="a registered external model")
    model_version_id: int | None = Field(default=None, description="a ready model version of this project")
    label_map: dict[str, str] = Field(default_factory=dict, description="model label -> project class; "
                                      "empty: labels named like a project class map to it")
    threshold: float | None = Field(default=None, ge=0.0, le=1.0, description="default: the model's")
    clean_old: bool = False
    masks_as_polygons: bool = False
    filter: dict[str, list[str]] = Field(default_factory=dict, description='{"status": ["unlabelled", ...]}')


def _model(session: Session, project: Project, body: AnnotateIn) -> tuple[str, str, list[str], float]:
    """(name, task, labels, default threshold) of the chosen model; 404/422 when unusable."""
    if (body.model_id is None) == (body.model_version_id is None):
        raise Invalid("give exactly one of model_id or model_version_id")
    if body.model_id is not None:
        rm = session.get(RegisteredModel, body.model_id)
        if rm is None:
            raise NotFound(f"no registered model {body.model_id}")
        return rm.name, rm.task, list(rm.labels), rm.default_threshold
    mv = session.get(ModelVersion, body.model_version_id)
    if mv is not None and mv.kind == "external" and mv.project_id == project.id:  # stands for a registered model
        body.model_id, body.model_version_id = (mv.metrics or {}).get("registered_model_id", -1), None
        return _model(session, project, body)
    if mv is None or mv.project_id != project.id or mv.status != "ready" or not mv.path:
        raise NotFound(f"no ready model version {body.model_version_id} in this project")
    return mv.name or f"v{mv.version}", str(project.task.value), list(mv.classes), 0.5


def start_annotation(session: Session, *, project: Project, body: AnnotateIn, user_id: int | None) -> Job:
    """Check the request (422 listing what is wrong) and enqueue the ``annotate`` job."""
    assert project.id is not None
    name, model_task, labels, default = _model(session, project, body)
    if (model_task in CLASSIFY) != (project.task.value in CLASSIFY):
        raise Invalid(f"a {model_task} model cannot annotate a {project.task.value} project")
    classes = class_names(session, project.id)
    label_map = dict(body.label_map) or {lab: lab for lab in labels if lab in classes}
    bad_keys = sorted(k for k in label_map if k not in labels)
    bad_values = sorted({v for v in label_map.values() if v not in classes})
    if bad_keys or bad_values:
        parts = [f"not labels of the model: {bad_keys}"] * bool(bad_keys)
        parts += [f"not classes of the project: {bad_values}"] * bool(bad_values)
        raise Invalid("unknown labels in label_map: " + "; ".join(parts))
    if not label_map:
        raise Invalid(f"no model label maps to a project class; give label_map (model labels: {labels})")
    statuses = body.filter.get("status") or []
    wrong = sorted(set(statuses) - {s.value for s in ItemStatus})
    if wrong or set(body.filter) - {"status"}:
        raise Invalid(f"filter takes status in {[s.value for s in ItemStatus]}; got {body.filter}")
    from service.jobs.runner import enqueue  # here: building the CLI's parser must not import torch

    payload = {**body.model_dump(), "label_map": label_map, "model_name": name,
               "threshold": default if body.threshold is None else body.threshold,
               "dropped_labels": [lab for lab in labels if lab not in label_map]}
    return enqueue(session, kind="annotate", project_id=project.id, payload=payload, user_id=user_id)


def _stamp(session: Session, project_id: int, rm: RegisteredModel) -> ModelVersion:
    """The project's model-version row standing for an external model (created once)."""
    mv = session.exec(select(ModelVersion).where(ModelVersion.project_id == project_id,
                                                 ModelVersion.kind == "external",
                                                 ModelVersion.name == rm.name)).first()
    if mv is None:
        mv = ModelVersion(project_id=project_id, version=0, name=rm.name, kind="external", algorithm="external",
                          status="ready", path=rm.path, classes=list(rm.labels),
                          metrics={"registered_model_id": rm.id, "sha256": rm.sha256})
        session.add(mv)
        session.commit()
    return mv


def _data(dets: list[dict[str, Any]] | None, probs: Any, labels: list[str], p: dict[str, Any],
          task_: str) -> tuple[dict[str, Any], float]:
    """Model output of one image -> (annotation data in project classes, weakest kept score)."""
    m, t = p["label_map"], float(p["threshold"])
    data: dict[str, Any] = {"labels": [], "boxes": [], "polygons": []}
    scores: list[float] = []
    if dets is None:
        ranked = sorted(((float(s), lab) for s, lab in zip(probs, labels, strict=True) if lab in m), reverse=True)
        chosen = ranked[:1] if task_ == "multiclass" else ranked
        for s, lab in chosen:
            if s >= t and m[lab] not in data["labels"]:
                data["labels"].append(m[lab])
                scores.append(s)
        return data, min(scores, default=0.0)
    for d in dets:
        if d["label"] not in m or d["score"] < t:
            continue
        scores.append(float(d["score"]))
        if p["masks_as_polygons"] and d.get("points"):
            data["polygons"].append({"label": m[d["label"]], "points": d["points"], "score": d["score"]})
        else:
            data["boxes"].append({"label": m[d["label"]], "bbox": d["bbox"], "score": d["score"]})
    return data, min(scores, default=0.0)


OPEN = (ItemStatus.unlabelled, ItemStatus.skipped, ItemStatus.proposed)  # waiting for a label


def _annotatable(session: Session, item: Item, clean_old: bool) -> bool:
    """Whether the job may write to ``item``: never over a person's label; without ``clean_old``
    only an item still waiting for a label (an auto-accepted ``model`` label is kept as it is)."""
    ann = current_annotation(session, item)
    if ann is not None and ann.provenance in HUMAN:
        return False
    return clean_old or item.status in OPEN


def _supersede(session: Session, item: Item, mv_id: int | None = None) -> None:
    """Close the item's open proposals (only model version ``mv_id``'s when given)."""
    q = select(Prediction).where(Prediction.item_id == item.id, Prediction.state == "proposed")
    if mv_id is not None:
        q = q.where(Prediction.model_version_id == mv_id)
    for old in session.exec(q).all():
        old.state, old.decided_at = "superseded", utcnow()
        session.add(old)


def _has_open(session: Session, item: Item) -> bool:
    return session.exec(select(Prediction.id).where(Prediction.item_id == item.id,
                                                    Prediction.state == "proposed")).first() is not None


def _clean(session: Session, item: Item) -> int:
    """``clean_old``: an auto-accepted ``model`` annotation becomes an empty version (1 when it did)."""
    ann = current_annotation(session, item)
    if ann is not None and ann.provenance == Provenance.model and not is_empty(ann.data):
        write_version(session, item=item, data={"labels": [], "boxes": [], "polygons": []},
                      provenance=Provenance.model, origin="annotate-clean", author=None)
        return 1
    return 0


def _settle_status(session: Session, item: Item, has_open: bool) -> None:
    """``proposed`` exactly when the item has an open proposal (an item that lost its last one
    waits in the queue again)."""
    if has_open and item.status in (ItemStatus.unlabelled, ItemStatus.skipped):
        item.status = ItemStatus.proposed
    elif not has_open and item.status == ItemStatus.proposed:
        item.status = ItemStatus.unlabelled
    session.add(item)


def annotate_task(ctx: JobContext) -> dict[str, Any]:
    """The ``annotate`` job (listed in :mod:`service.jobs.registry`)."""
    from learning.adapters.external import ExternalAdapter
    from learning.adapters.huggingface import KIND as HF_KIND
    from learning.adapters.huggingface import HuggingFaceAdapter
    from service.jobs.runner import Cancelled

    p = ctx.payload
    store = blob_store(ctx.settings)
    with Session(ctx.engine, expire_on_commit=False) as s:
        project = s.get(Project, ctx.project_id)
        if project is None:
            raise ValueError("project was deleted")
        if p.get("model_id") is not None:
            rm = s.get(RegisteredModel, p["model_id"])
            if rm is None:
                raise ValueError("the registered model was deleted")
            if rm.kind == "torchscript" and not ctx.settings.allow_code_models:
                raise ValueError(f"{rm.name!r} is a TorchScript model (code) and this server does not run code "
                                 "models (LABELLOOP_ALLOW_CODE_MODELS is off)")
            mv = _stamp(s, project.id, rm)  # type: ignore[arg-type]
            adapter: Any
            if rm.kind == HF_KIND:  # the folder must still be the registered one (its digest)
                adapter = HuggingFaceAdapter(rm.path, device=ctx.settings.torch_device,
                                             num_threads=ctx.settings.torch_threads, sha256=rm.sha256)
            else:  # the stored file must still be the registered one; TorchScript runs in a sandbox child
                adapter = ExternalAdapter(rm.path, rm.kind, rm.task, rm.labels, rm.input_spec,  # type: ignore[arg-type]
                                          num_threads=ctx.settings.torch_threads, sha256=rm.sha256,
                                          device=ctx.settings.torch_device)
        else:
            mv = s.get(ModelVersion, p["model_version_id"])  # type: ignore[assignment]
            assert mv is not None and mv.path is not None
            adapter = load_model(mv.path, ctx.settings)
        q = select(Item).where(Item.project_id == project.id)
        if p.get("filter", {}).get("status"):
            q = q.where(col(Item.status).in_(p["filter"]["status"]))
        items = [i for i in s.exec(q.order_by(col(Item.id))).all() if _annotatable(s, i, bool(p["clean_old"]))]
        ids = [int(i.id) for i in items if i.id is not None]
        paths = [store.path(i.sha256) for i in items]
        s.commit()  # no transaction stays open while the model runs (SQLite would block writers)
    labels, task_ = list(adapter.classes), str(adapter.task)
    kw = {"polygons": bool(p["masks_as_polygons"])} if task_ in ("detection", "segmentation") else {}
    done = proposed = cleaned = 0
    clean_old = bool(p["clean_old"])
    result: dict[str, Any] = {"model": p["model_name"], "model_version_id": mv.id, "items": len(ids),
                              "dropped_labels": p["dropped_labels"], "threshold": p["threshold"]}
    try:
        ctx.progress(0.0, f"annotating {len(ids)} items with {p['model_name']}")
        for start in range(0, len(ids), BATCH):
            preds = adapter.predict(paths[start:start + BATCH], **kw)
            with Session(ctx.engine, expire_on_commit=False) as s:
                chunk = ids[start:start + BATCH]
                # people label while the model runs: re-read the batch under a row lock (PostgreSQL;
                # SQLite writes one at a time) and leave alone what is no longer ours to annotate
                fresh = {i.id: i for i in s.exec(select(Item).where(col(Item.id).in_(chunk)).with_for_update()).all()}
                for k, item_id in enumerate(chunk):
                    item = fresh.get(item_id)
                    if item is None or not _annotatable(s, item, clean_old):  # deleted or labelled meanwhile
                        continue
                    if clean_old:
                        _supersede(s, item)
                        cleaned += _clean(s, item)
                    data, score = _data(preds.boxes[k] if preds.boxes is not None else None, preds.probs[k],
                                        labels, p, task_)
                    if not (data["labels"] or data["boxes"] or data["polygons"]):
                        if not clean_old:  # this model's old proposal goes; another model's stays
                            _supersede(s, item, int(mv.id))  # type: ignore[arg-type]
                        s.flush()
                        _settle_status(s, item, _has_open(s, item))
                        continue
                    _supersede(s, item)  # one open proposal per item: the newest
                    only = {x["label"] for x in data["boxes"] + data["polygons"]} | set(data["labels"])
                    s.add(Prediction(item_id=item.id, project_id=project.id, model_version_id=mv.id,  # type: ignore[arg-type]
                                     label=next(iter(only)) if len(only) == 1 else None, score=score,
                                     state="proposed", data={**data, "model": p["model_name"]}))
                    _settle_status(s, item, True)
                    proposed += 1
                s.commit()
            done += len(chunk)
            result.update(processed=done, proposed=proposed, cleaned=cleaned)
            ctx.progress(done / max(1, len(ids)), f"{done} of {len(ids)} items, {proposed} proposals")
    except Cancelled:
        result.update(processed=done, proposed=proposed, cleaned=cleaned, cancelled=True)
        with Session(ctx.engine) as s:
            job = s.get(Job, ctx.job_id)
            if job is not None:
                job.result = result
                s.add(job)
                s.commit()
        raise Cancelled(f"stopped after {done} of {len(ids)} items; {proposed} proposals kept") from None
    finally:
        if isinstance(adapter, ExternalAdapter | HuggingFaceAdapter):
            adapter.close()  # stops a TorchScript sandbox child
    return {**result, "processed": done, "proposed": proposed, "cleaned": cleaned}
