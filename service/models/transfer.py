"""Exports as jobs (``POST /projects/{id}/export-jobs``): what to export, and where the
file is once the ``export`` job has written it. The job row itself is a
:class:`service.models.ml.Job` (``kind="export"``); its ``result`` is an
:class:`ExportResult` as a dict."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.models.common import ItemStatus, Provenance


class ExportJobCreate(BaseModel):
    """An export job's options: the format, which items (every filter given must match),
    whether the images go with the labels, and a seeded train/val split."""

    format: str = Field(pattern="^(coco|yolo|voc|cvat|labelstudio|csv)$", description="the annotation format")
    status: list[ItemStatus] = Field(default_factory=list, max_length=5,
                                     description="item statuses to keep (empty: any)")
    provenance: list[Provenance] = Field(default_factory=list, max_length=4,
                                         description="who or what made the current label (empty: any)")
    classes: list[str] = Field(default_factory=list, max_length=1000,
                               description="keep these classes only: an image with none of them is left out, "
                                           "and its labels of other classes are dropped (empty: every class)")
    include_images: bool = Field(default=False, description="a zip with the image files beside the labels")
    val_share: float = Field(default=0.0, ge=0.0, le=0.9,
                             description="share of the images drawn for validation (0: no split)")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="the split's random seed (stated in the file)")


class ExportResult(BaseModel):
    """What a finished export job wrote (``Job.result``)."""

    file: str = Field(description="the download's file name")
    path: str = Field(description="where it is stored, relative to the data dir")
    media_type: str
    size: int = Field(description="bytes")
    images: int = Field(description="labelled images in the export")
    train: int
    val: int
    skipped_shapes: int = Field(description="stored shapes that could not be placed on their image")
