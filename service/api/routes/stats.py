"""Dashboard numbers."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import STD_ERRORS, CurrentUser, SessionDep, get_project
from service.loop.stats import project_stats
from service.models import ProjectStats

router = APIRouter(tags=["dashboard"])


@router.get("/projects/{project_id}/stats", response_model=ProjectStats, responses=STD_ERRORS)
def stats(project_id: int, user: CurrentUser, session: SessionDep) -> ProjectStats:
    """Counts by status, queue make-up, label distribution, model, next training, runs,
    realised pre-label precision with its 95% interval against the target, coverage."""
    project = get_project(session, user, project_id)
    return ProjectStats.model_validate(project_stats(session, project=project))
