"""Dashboard numbers."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import STD_ERRORS, CurrentUser, SessionDep, get_project
from service.loop.activity import project_activity
from service.loop.stats import project_stats
from service.models import ProjectStats, Role
from service.models.stats import ProjectActivity

router = APIRouter(tags=["dashboard"])


@router.get("/projects/{project_id}/stats", response_model=ProjectStats, responses=STD_ERRORS)
def stats(project_id: int, user: CurrentUser, session: SessionDep) -> ProjectStats:
    """Counts by status, queue make-up, label distribution, model, next training, runs,
    realised pre-label precision with its 95% interval against the target, coverage."""
    project = get_project(session, user, project_id)
    return ProjectStats.model_validate(project_stats(session, project=project))


@router.get("/projects/{project_id}/activity", response_model=ProjectActivity, responses=STD_ERRORS)
def activity(project_id: int, user: CurrentUser, session: SessionDep) -> ProjectActivity:
    """For managers: labels over time (per day, per hour in a project's first two days) split into
    human, confirmed and auto-accepted; each labeller's labels, labels per active hour and median
    seconds per image; agreement where two people labelled the same image; and each model
    version's certified coverage and realised precision."""
    project = get_project(session, user, project_id, Role.manager)
    return ProjectActivity.model_validate(project_activity(session, project=project))
