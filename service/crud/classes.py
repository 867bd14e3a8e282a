"""A project's label classes, read in their order: the bottom of the domain layer, so that
annotations (which check labels against the classes) and projects (which rename a class
inside the labels) both build on it without importing each other."""

from __future__ import annotations

from sqlmodel import Session, col, select

from service.models import LabelClass


def classes_of(session: Session, project_id: int) -> list[LabelClass]:
    return list(session.exec(
        select(LabelClass).where(LabelClass.project_id == project_id)
        .order_by(col(LabelClass.position), col(LabelClass.id))
    ).all())


def class_names(session: Session, project_id: int) -> list[str]:
    return [c.name for c in classes_of(session, project_id)]
