"""A project's label classes, read in their order: the bottom of the domain layer, so that
annotations (which check labels against the classes) and projects (which rename a class
inside the labels) both build on it without importing each other."""

from __future__ import annotations

from sqlalchemy import ColumnElement, text
from sqlmodel import Session, col, select

from service.errors import Conflict, NotFound
from service.models import Annotation, LabelClass, Prediction, User
from service.security import audit


def classes_of(session: Session, project_id: int) -> list[LabelClass]:
    return list(session.exec(
        select(LabelClass).where(LabelClass.project_id == project_id)
        .order_by(col(LabelClass.position), col(LabelClass.id))
    ).all())


def class_names(session: Session, project_id: int) -> list[str]:
    """Every class, archived ones too (labels that use them stay valid and train)."""
    return [c.name for c in classes_of(session, project_id)]


def active_class_names(session: Session, project_id: int) -> list[str]:
    """The classes people label with (archived ones left out), in hotkey order."""
    return [c.name for c in classes_of(session, project_id) if not c.archived]


def uses_label(session: Session, label: str) -> ColumnElement[bool]:
    """A condition on the ``annotation`` table: its ``data`` holds ``label`` as a class, a box's
    or a polygon's label. JSON is read with the database's own functions (``json_each`` on
    SQLite, a JSON path on PostgreSQL), so the test runs in the query, not row by row here."""
    if session.get_bind().dialect.name == "postgresql":
        return text(
            "(jsonb_path_exists(CAST(annotation.data AS jsonb), "
            "'$.labels[*] ? (@ == $c)', jsonb_build_object('c', CAST(:uses_label AS text))) OR "
            "jsonb_path_exists(CAST(annotation.data AS jsonb), "
            "'$.boxes[*] ? (@.label == $c)', jsonb_build_object('c', CAST(:uses_label AS text))) OR "
            "jsonb_path_exists(CAST(annotation.data AS jsonb), "
            "'$.polygons[*] ? (@.label == $c)', jsonb_build_object('c', CAST(:uses_label AS text))))"
        ).bindparams(uses_label=label)  # type: ignore[return-value]
    return text(
        "(EXISTS (SELECT 1 FROM json_each(annotation.data, '$.labels') WHERE value = :uses_label) OR "
        "EXISTS (SELECT 1 FROM json_each(annotation.data, '$.boxes') "
        "WHERE json_extract(value, '$.label') = :uses_label) OR "
        "EXISTS (SELECT 1 FROM json_each(annotation.data, '$.polygons') "
        "WHERE json_extract(value, '$.label') = :uses_label))"
    ).bindparams(uses_label=label)  # type: ignore[return-value]


def class_of(session: Session, *, project_id: int, class_id: int) -> LabelClass:
    cls = session.get(LabelClass, class_id)
    if cls is None or cls.project_id != project_id:
        raise NotFound("class not found")
    return cls


def class_in_use(session: Session, *, project_id: int, name: str) -> bool:
    """Whether any label version (current or past) or any model prediction uses the class."""
    labelled = session.exec(select(Annotation.id).where(Annotation.project_id == project_id,
                                                        uses_label(session, name)).limit(1)).first()
    predicted = session.exec(select(Prediction.id).where(Prediction.project_id == project_id,
                                                         Prediction.label == name).limit(1)).first()
    return labelled is not None or predicted is not None


def set_archived(session: Session, *, cls: LabelClass, archived: bool, user: User) -> LabelClass:
    """Archive a class (hidden from labelling, kept on every label that has it) or bring it back."""
    if cls.archived != archived:
        cls.archived = archived
        session.add(cls)
        audit(session, user.id, "class.archive" if archived else "class.unarchive", project_id=cls.project_id,
              detail={"id": cls.id, "name": cls.name})
    return cls


def delete_class(session: Session, *, project_id: int, class_id: int, user: User) -> None:
    """Delete a class nothing uses; one with labels (or model predictions) is a 409: archive it."""
    cls = class_of(session, project_id=project_id, class_id=class_id)
    if class_in_use(session, project_id=project_id, name=cls.name):
        raise Conflict(f"class {cls.name!r} is used by labels or predictions: archive it instead "
                       f"(PATCH the class with archived: true), which hides it from labelling")
    session.delete(cls)
    session.flush()
    for i, c in enumerate(classes_of(session, project_id)):
        if c.position != i:
            c.position = i
            session.add(c)
    audit(session, user.id, "class.delete", project_id=project_id, detail={"id": class_id, "name": cls.name})
