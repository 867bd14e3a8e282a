"""Annotation import and export."""

from __future__ import annotations

from fastapi import APIRouter, File, Query, Response, UploadFile

from service.api.deps import STD_ERRORS, CurrentUser, SessionDep, _err, get_project
from service.crud import transfer as crud
from service.models import LabelImportPublic, Role

router = APIRouter(tags=["import/export"])
FORMAT_PATTERN = "^(coco|yolo|voc|cvat|labelstudio|csv)$"


@router.post("/projects/{project_id}/import", response_model=LabelImportPublic,
             responses={**STD_ERRORS, 422: _err("malformed file")})
async def import_annotations(project_id: int, user: CurrentUser, session: SessionDep,
                             format: str = Query(..., pattern=FORMAT_PATTERN),
                             file: UploadFile = File(...)) -> LabelImportPublic:
    """Attach labels from a COCO/YOLO/VOC/CVAT/Label Studio/CSV file to items matched by file name."""
    project = get_project(session, user, project_id, Role.manager)
    data = await file.read()
    return LabelImportPublic.model_validate(
        crud.import_labels(session, project=project, fmt=format, data=data, user=user))


@router.get("/projects/{project_id}/export", response_class=Response, responses={**STD_ERRORS, 200: {
    "content": {"application/json": {}, "application/zip": {}, "text/csv": {}, "application/xml": {}},
    "description": "the export file"}})
def export_annotations(project_id: int, user: CurrentUser, session: SessionDep,
                       format: str = Query(..., pattern=FORMAT_PATTERN)) -> Response:
    project = get_project(session, user, project_id, Role.manager)
    body, media, name = crud.export(session, project=project, fmt=format, user=user)
    return Response(body, media_type=media, headers={"Content-Disposition": f'attachment; filename="{name}"'})
