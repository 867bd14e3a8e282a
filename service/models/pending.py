"""Pending: the current model's pre-labels waiting for a person (``/projects/{id}/pending``).
Views over :class:`service.models.ml.Prediction` rows, no table of their own."""

from __future__ import annotations

from typing import Any

from sqlmodel import Field, SQLModel


class PendingItemPublic(SQLModel):
    prediction_id: int
    item_id: int
    file_name: str
    label: str | None = Field(description="proposed class (classification)")
    labels: list[str]
    score: float
    model_version: int
    model_version_id: int
    etag: str = Field(description="the item's version, for If-Match")
    flags: list[str] = Field(description="kinds of the item's open review flags")
    top: list[tuple[str, float]] = Field(description="the model's best classes with their probabilities")
    boxes: list[dict[str, Any]]
    polygons: list[dict[str, Any]]


class PendingPublic(SQLModel):
    data: list[PendingItemPublic]
    count: int


class PendingDecide(SQLModel):
    ids: list[int] = Field(min_length=1, max_length=1000, description="prediction ids")


class PendingCorrect(SQLModel):
    id: int = Field(description="prediction id")
    labels: list[str] = Field(min_length=1, max_length=1000)


class PendingDecided(SQLModel):
    done: int


class PendingUndonePublic(SQLModel):
    """An undo of Pending decisions: the proposals open again (or, where the item held a
    label before, closed with that label restored) and their items."""

    done: int
    item_ids: list[int]
