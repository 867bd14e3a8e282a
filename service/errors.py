"""What the domain layers (``service.crud``, ``service.loop``) raise when a request cannot be
done: plain exceptions with the HTTP status they stand for. The app answers them once
(``service.main``: ``{"detail": ...}`` with the status); the CLI prints the detail. No layer
below the routes imports the web framework."""

from __future__ import annotations


class LabelloopError(Exception):
    """A refusal with a sentence a person reads (``detail``) and the status it maps to."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Forbidden(LabelloopError):
    status = 403


class NotFound(LabelloopError):
    status = 404


class Conflict(LabelloopError):
    status = 409


class Gone(LabelloopError):
    status = 410


class PreconditionFailed(LabelloopError):
    status = 412


class Invalid(LabelloopError):
    status = 422


class PreconditionRequired(LabelloopError):
    status = 428


class StorageFailed(LabelloopError):
    status = 507


BY_STATUS: dict[int, type[LabelloopError]] = {c.status: c for c in (
    Forbidden, NotFound, Conflict, Gone, PreconditionFailed, Invalid, PreconditionRequired, StorageFailed)}
