"""The labelling queue: lease the next item, keep a lease alive."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, HTTPException, Response
from pydantic import BaseModel, Field

from service.api.deps import STD_ERRORS, CurrentUser, SessionDep, SettingsDep, _err, get_project
from service.api.routes.items import item_public
from service.crud import annotations as ann_crud
from service.crud import queue as crud
from service.models import ItemPublic, Lease

router = APIRouter(tags=["queue"])


class LeaseOut(BaseModel):
    lease_id: int
    expires_at: datetime
    reason: str = Field(description="why this item: strategy | holdout | audit | random")
    renewed: bool = Field(description="true when this is the lease the caller already held")
    etag: str
    item: ItemPublic


@router.post("/projects/{project_id}/queue/next", response_model=LeaseOut,
             responses={**STD_ERRORS, 204: {"description": "nothing left to label"}})
def queue_next(project_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep,
               response: Response) -> LeaseOut | Response:
    project = get_project(session, user, project_id)
    got = crud.next_item(session, project=project, user=user, ttl_seconds=settings.lease_ttl_seconds)
    if got is None:
        return Response(status_code=204)
    assert got.lease.id is not None
    response.headers["ETag"] = ann_crud.etag(got.item)
    return LeaseOut(lease_id=got.lease.id, expires_at=got.lease.expires_at, reason=got.reason,
                    renewed=got.renewed, etag=ann_crud.etag(got.item), item=item_public(session, got.item))


class HeartbeatOut(BaseModel):
    lease_id: int
    expires_at: datetime


@router.post("/leases/{lease_id}/heartbeat", response_model=HeartbeatOut,
             responses={**STD_ERRORS, 410: _err("the lease expired")})
def lease_heartbeat(lease_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> HeartbeatOut:
    lease = session.get(Lease, lease_id)
    if lease is None or lease.user_id != user.id:
        raise HTTPException(404, "lease not found (it may have expired and been given to someone else)")
    lease = crud.heartbeat(session, lease=lease, user=user, ttl_seconds=settings.lease_ttl_seconds)
    assert lease.id is not None
    return HeartbeatOut(lease_id=lease.id, expires_at=lease.expires_at)


@router.delete("/leases/{lease_id}", status_code=204, responses=STD_ERRORS)
def release_lease(lease_id: int, user: CurrentUser, session: SessionDep) -> Response:
    """Give the item back to the queue now (e.g. the labeler left the page)."""
    lease = session.get(Lease, lease_id)
    if lease is None or lease.user_id != user.id:
        raise HTTPException(404, "lease not found")
    session.delete(lease)
    return Response(status_code=204)
