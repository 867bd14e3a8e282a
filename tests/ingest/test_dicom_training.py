"""A project that import accepted DICOM images into trains and predicts on them.

Import decoded DICOM through pydicom while training opened every image with Pillow
alone, so one accepted DICOM file failed the training job. Both now go through
learning.images.decode_rgb. Skips without pydicom (an optional package).
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from sqlmodel import Session, select

from service.models import Job, ModelVersion, Prediction
from tests.conftest import Ctx
from tests.ingest.dicom_files import make_dicom
from tests.loop.helpers import COLOURS, colour_png, label, run_jobs, start_job

pytest.importorskip("pydicom")


def _colour_dicom(colour: str, rng: random.Random, size: int = 24) -> bytes:
    """An RGB DICOM image of one colour group with a little noise."""
    base = np.array(COLOURS[colour], dtype=np.int16)
    noise = np.random.default_rng(rng.randint(0, 10**6)).integers(-10, 10, size=(size, size, 3))
    return make_dicom(np.clip(base + noise, 0, 255).astype(np.uint8), photometric="RGB")


def _grey_dicom(colour: str, rng: random.Random, size: int = 24) -> bytes:
    """A 12-bit grey DICOM image, dark for red and bright for blue (what a scanner writes)."""
    level = 600 if colour == "red" else 3400
    noise = np.random.default_rng(rng.randint(0, 10**6)).integers(-40, 40, size=(size, size))
    arr = np.clip(level + noise, 0, 4095).astype(np.uint16)
    arr[0, 0], arr[-1, -1] = 0, 4095  # a full-range calibration strip, as scanners leave
    return make_dicom(arr)


@pytest.mark.parametrize("algorithm", ["fast", "precise"])
def test_a_project_with_dicom_images_trains_and_predicts(ctx: Ctx, algorithm: str) -> None:
    admin = ctx.user("root", "admin")
    ctx.settings.image_size = 32
    policy = {"min_labels_per_class": 3, "retrain_every_labels": 1000, "algorithm": algorithm, "epochs": 2}
    r = ctx.client.post("/api/v1/projects", json={"name": "scans", "classes": ["red", "blue"],
                                                  "policy": policy}, headers=admin)
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    rng = random.Random(0)
    files, truth_by_name = [], {}
    for i in range(24):
        colour = "red" if i % 2 == 0 else "blue"
        kind = ("rgb.dcm", "grey.dcm", "png")[i % 3]
        name = f"{i:03d}.{kind}"
        data = {"rgb.dcm": _colour_dicom, "grey.dcm": _grey_dicom, "png": colour_png}[kind](colour, rng)
        content_type = "image/png" if kind == "png" else "application/dicom"
        files.append(("files", (name, data, content_type)))
        truth_by_name[name] = colour
    r = ctx.client.post(f"/api/v1/projects/{pid}/items", files=files, headers=admin)
    assert r.status_code == 201, r.text
    created = r.json()["created"]
    assert len(created) == 24, r.json()
    truth = {c["id"]: truth_by_name[c["file"]] for c in created}
    dicom_ids = {c["id"] for c in created if c["file"].endswith(".dcm")}
    assert len(dicom_ids) == 16
    labelled = sorted(truth)[:16]
    for iid in labelled:
        label(ctx, admin, iid, truth[iid])
    assert dicom_ids & set(labelled)

    start_job(ctx, "train", pid)
    run_jobs(ctx)
    with Session(ctx.engine) as s:
        trains = s.exec(select(Job).where(Job.project_id == pid, Job.kind == "train")).all()
        assert [(j.state, j.error) for j in trains] == [("succeeded", None)]
        assert s.exec(select(ModelVersion).where(ModelVersion.project_id == pid)).all()
        predicted = {p.item_id for p in s.exec(select(Prediction)).all()}
    assert dicom_ids - set(labelled) <= predicted  # unlabelled DICOM items were predicted too
