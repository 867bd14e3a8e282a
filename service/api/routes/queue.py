"""The labelling queue: lease the next item, keep a lease alive."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Response

from service.api.deps import STD_ERRORS, CurrentUser, SessionDep, SettingsDep, _err, get_project
from service.crud import annotations as ann_crud
from service.crud import queue as crud
from service.crud.items import item_public
from service.models import Lease, LeasePublic, LeaseRenewed

router = APIRouter(tags=["queue"])


@router.post("/projects/{project_id}/queue/next", response_model=LeasePublic,
             responses={**STD_ERRORS, 204: {"description": "nothing left to label"}})
def queue_next(project_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep,
               response: Response) -> LeasePublic | Response:
    project = get_project(session, user, project_id)
    got = crud.next_item(session, project=project, user=user, ttl_seconds=settings.lease_ttl_seconds)
    if got is None:
        return Response(status_code=204)
    assert got.lease.id is not None
    response.headers["ETag"] = ann_crud.etag(got.item)
    return LeasePublic(lease_id=got.lease.id, expires_at=got.lease.expires_at, reason=got.reason,
                    renewed=got.renewed, etag=ann_crud.etag(got.item), item=item_public(session, got.item))


@router.post("/leases/{lease_id}/heartbeat", response_model=LeaseRenewed,
             responses={**STD_ERRORS, 410: _err("the lease expired")})
def lease_heartbeat(lease_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> LeaseRenewed:
    lease = session.get(Lease, lease_id)
    if lease is None or lease.user_id != user.id:
        raise HTTPException(404, "lease not found (it may have expired and been given to someone else)")
    lease = crud.heartbeat(session, lease=lease, user=user, ttl_seconds=settings.lease_ttl_seconds)
    assert lease.id is not None
    return LeaseRenewed(lease_id=lease.id, expires_at=lease.expires_at)


@router.delete("/leases/{lease_id}", status_code=204, responses=STD_ERRORS)
def release_lease(lease_id: int, user: CurrentUser, session: SessionDep) -> Response:
    """Give the item back to the queue now (e.g. the labeler left the page)."""
    lease = session.get(Lease, lease_id)
    if lease is None or lease.user_id != user.id:
        raise HTTPException(404, "lease not found")
    session.delete(lease)
    return Response(status_code=204)
