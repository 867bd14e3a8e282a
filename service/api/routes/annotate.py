"""Automatic annotation over HTTP: start the ``annotate`` job (see :mod:`service.loop.annotate`)."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import STD_ERRORS, CurrentUser, SessionDep, _err, get_project
from service.loop.annotate import AnnotateIn, start_annotation
from service.models import JobPublic, Role

router = APIRouter(tags=["annotate"])


@router.post("/projects/{project_id}/annotate", response_model=JobPublic, status_code=202,
             responses={**STD_ERRORS, 422: _err("unknown labels in label_map (listed), a model that does not "
                                                 "fit the project's task, or a bad filter")})
def annotate(project_id: int, body: AnnotateIn, user: CurrentUser, session: SessionDep) -> JobPublic:
    """Run a registered model (``model_id``) or a model version (``model_version_id``) over the
    project; proposals land in Pending. Follow the job at ``/jobs/{id}`` (cancel keeps what was written)."""
    project = get_project(session, user, project_id, Role.manager)
    job = start_annotation(session, project=project, body=body, user_id=user.id)
    return JobPublic.model_validate(job, from_attributes=True)
