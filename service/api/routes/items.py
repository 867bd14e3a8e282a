"""Items: upload, list, read, image/thumbnail, history, labels (ETag), skip, undo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, File, Header, HTTPException, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from service.api.deps import (
    CONFLICT,
    PRECONDITION,
    STD_ERRORS,
    TOO_LARGE,
    AdminUser,
    CurrentUser,
    SessionDep,
    SettingsDep,
    _err,
    get_item,
    get_project,
)
from service.api.routes.transfer import FORMAT_PATTERN
from service.crud import annotations as ann_crud
from service.crud import browse, transfer
from service.crud import items as crud
from service.crud.folders import import_folder
from service.models import (
    AnnotationPublic,
    ItemBatchPublic,
    ItemPublic,
    ItemsPublic,
    Role,
    ServerImport,
    SkipCreate,
)
from service.models.items import ItemFilter, ItemReject, ItemRowPublic, ItemTimelinePublic

router = APIRouter(tags=["items"])


@router.post("/projects/{project_id}/items", response_model=ItemBatchPublic, status_code=201,
             responses={**STD_ERRORS, **TOO_LARGE, 507: _err("storage full or read-only")})
async def upload(project_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep,
                 files: list[UploadFile] = File(..., description="images or zip archives")) -> ItemBatchPublic:
    """Upload many images (or zips of images). Bad files are listed in ``rejected``."""
    project = get_project(session, user, project_id, Role.manager)
    batch: list[tuple[str, bytes]] = []
    cap = max(settings.max_upload_bytes, settings.max_request_bytes)
    for f in files:
        data = await f.read(cap + 1)
        if len(data) > cap:
            raise HTTPException(413, f"{f.filename}: over {cap} bytes")
        batch.append((f.filename or "upload", data))
    result = await run_in_threadpool(crud.ingest, session, project=project, files=batch, settings=settings)
    return ItemBatchPublic.model_validate(result.as_dict())


@router.post("/projects/{project_id}/items/server-import", response_model=ItemBatchPublic, status_code=201,
             responses=STD_ERRORS)
def server_import(project_id: int, body: ServerImport, admin: AdminUser, session: SessionDep,
                  settings: SettingsDep) -> ItemBatchPublic:
    """Admins only: import a server folder now (and optionally watch it)."""
    project = get_project(session, admin, project_id, Role.admin)
    root = crud.check_server_root(settings, Path(body.path))
    result = import_folder(session, project=project, root=root, settings=settings, watch=body.watch,
                           interval_minutes=body.interval_minutes)
    return ItemBatchPublic.model_validate(result.as_dict())


@router.get("/projects/{project_id}/items", response_model=ItemsPublic, responses={**STD_ERRORS, 422: _err(
    "bad filter or cursor")})
def list_items(project_id: int, user: CurrentUser, session: SessionDep, filters: Annotated[ItemFilter, Query()],
               cursor: str | None = Query(default=None, max_length=200),
               offset: int = Query(default=0, ge=0, le=10_000_000),
               limit: int = Query(default=50, ge=1, le=500)) -> ItemsPublic:
    """Items by id with their current labels (the data browser): every filter given must
    match; page with ``offset`` or with ``next_cursor``; ``count`` counts all matches."""
    project = get_project(session, user, project_id)
    assert project.id is not None
    after = crud.decode_cursor(cursor) if cursor else None
    data, count = browse.browse(session, project_id=project.id, f=filters, limit=limit + 1, offset=offset,
                                after_id=after)
    nxt = crud.encode_cursor(data[limit - 1].id) if len(data) > limit else None
    return ItemsPublic(data=data[:limit], count=count, next_cursor=nxt)


@router.get("/projects/{project_id}/items/export", response_class=Response, responses={**STD_ERRORS, 200: {
    "content": {"application/json": {}, "application/zip": {}, "text/csv": {}, "application/xml": {}},
    "description": "the export file of the selected items"}})
def export_selection(project_id: int, user: CurrentUser, session: SessionDep,
                     filters: Annotated[ItemFilter, Query()],
                     format: str = Query(..., pattern=FORMAT_PATTERN)) -> Response:
    """The current labels of the items the filters select (as ``GET /projects/{id}/items``
    takes them), in an export format (as ``GET /projects/{id}/export``)."""
    project = get_project(session, user, project_id, Role.manager)
    assert project.id is not None
    only = browse.selection(session, project_id=project.id, f=filters)
    body, media, name = transfer.export(session, project=project, fmt=format, user=user, only=only)
    return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.get("/items/{item_id}", response_model=ItemPublic, responses=STD_ERRORS)
def read_item(item_id: int, user: CurrentUser, session: SessionDep, response: Response) -> ItemPublic:
    item, _ = get_item(session, user, item_id)
    response.headers["ETag"] = ann_crud.etag(item)
    return crud.item_public(session, item)


def _blob_response(path: Path, media_type: str, sha: str) -> FileResponse:
    return FileResponse(path, media_type=media_type, headers={
        "Cache-Control": "private, max-age=31536000, immutable",
        "ETag": f'"{sha}"',
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": "inline",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    })


@router.get("/items/{item_id}/image", response_class=FileResponse,
            responses={**STD_ERRORS, 200: {"content": {"image/*": {}}, "description": "the stored image"}})
def item_image(item_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> FileResponse:
    item, _ = get_item(session, user, item_id)
    path = crud.blob_store(settings).path(item.sha256)
    if not path.exists():
        raise HTTPException(404, "image file missing from storage")
    return _blob_response(path, item.media_type, item.sha256)


@router.get("/items/{item_id}/thumbnail", response_class=FileResponse,
            responses={**STD_ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "a small preview"}})
def item_thumbnail(item_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> FileResponse:
    item, _ = get_item(session, user, item_id)
    path = crud.blob_store(settings).thumbnail(item.sha256, size=settings.thumbnail_size)
    media = "image/webp" if path.suffix == ".webp" else "image/jpeg"
    return _blob_response(path, media, item.sha256)


@router.get("/items/{item_id}/history", response_model=list[AnnotationPublic], responses=STD_ERRORS)
def item_history(item_id: int, user: CurrentUser, session: SessionDep) -> list[AnnotationPublic]:
    item, _ = get_item(session, user, item_id)
    return [AnnotationPublic.model_validate(a, from_attributes=True)
            for a in ann_crud.history(session, item=item)]


@router.get("/items/{item_id}/timeline", response_model=ItemTimelinePublic, responses=STD_ERRORS)
def item_timeline(item_id: int, user: CurrentUser, session: SessionDep, response: Response) -> ItemTimelinePublic:
    """The item as the data browser shows it, with its label versions, proposals, review
    flags and audit rows (oldest first)."""
    item, _ = get_item(session, user, item_id)
    response.headers["ETag"] = ann_crud.etag(item)
    return browse.timeline(session, item=item)


@router.post("/items/{item_id}/reject", response_model=ItemRowPublic,
             responses={**STD_ERRORS, **PRECONDITION, **CONFLICT})
def reject_item(item_id: int, user: CurrentUser, session: SessionDep, response: Response,
                body: ItemReject | None = None, if_match: str | None = Header(default=None)) -> ItemRowPublic:
    """Reviewers: send a labelled or proposed item back to the queue (its labels stay in the
    history). Send the item's ETag as ``If-Match``."""
    item, _ = get_item(session, user, item_id, Role.reviewer)
    browse.reject(session, item=item, user=user, if_match=if_match, reason=body.reason if body else "")
    response.headers["ETag"] = ann_crud.etag(item)
    return browse.row_of(session, item)


@router.post("/items/{item_id}/annotations", response_model=AnnotationPublic, status_code=201,
             responses={**STD_ERRORS, **PRECONDITION, **CONFLICT})
def submit_annotation(item_id: int, body: ann_crud.AnnotationIn, user: CurrentUser, session: SessionDep,
                      response: Response, if_match: str | None = Header(default=None)) -> AnnotationPublic:
    """Label an item. Send the item's ETag as ``If-Match`` once it has labels."""
    item, project = get_item(session, user, item_id)
    ann = ann_crud.submit(session, item=item, project=project, user=user, body=body, if_match=if_match)
    response.headers["ETag"] = ann_crud.etag(item)
    return AnnotationPublic.model_validate(ann, from_attributes=True)


@router.post("/items/{item_id}/skip", status_code=204, responses={**STD_ERRORS, **CONFLICT})
def skip_item(item_id: int, user: CurrentUser, session: SessionDep, body: SkipCreate | None = None) -> Response:
    item, _ = get_item(session, user, item_id)
    ann_crud.skip(session, item=item, user=user, reason=body.reason if body else "")
    return Response(status_code=204)


@router.post("/items/{item_id}/undo", response_model=AnnotationPublic, status_code=201,
             responses={**STD_ERRORS, **PRECONDITION, **CONFLICT})
def undo(item_id: int, user: CurrentUser, session: SessionDep, response: Response,
         if_match: str | None = Header(default=None)) -> AnnotationPublic:
    """Restore the previous version as a new version."""
    item, _ = get_item(session, user, item_id)
    ann = ann_crud.undo(session, item=item, user=user, if_match=if_match)
    response.headers["ETag"] = ann_crud.etag(item)
    return AnnotationPublic.model_validate(ann, from_attributes=True)


