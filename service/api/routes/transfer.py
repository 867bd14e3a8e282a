"""Annotation import and export."""

from __future__ import annotations

from fastapi import APIRouter, File, Query, Response, UploadFile
from fastapi.responses import FileResponse

from service.api.deps import CONFLICT, STD_ERRORS, CurrentUser, SessionDep, SettingsDep, _err, get_project
from service.crud import transfer as crud
from service.loop.export import export_file, find_export, start_export
from service.models import JobPublic, LabelImportPublic, Role
from service.models.transfer import ExportJobCreate

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


@router.post("/projects/{project_id}/export-jobs", response_model=JobPublic, status_code=202,
             responses={**STD_ERRORS, 422: _err("unknown format or class")})
def create_export_job(project_id: int, body: ExportJobCreate, user: CurrentUser, session: SessionDep) -> JobPublic:
    """Export as a job (for large projects): a subset (status, provenance, classes), with the
    images or not, split into train and val or not. Follow it as any job; download the file
    from ``GET /jobs/{id}/download`` once it succeeded."""
    project = get_project(session, user, project_id, Role.manager)
    return JobPublic.model_validate(start_export(session, project=project, body=body, user=user),
                                    from_attributes=True)


@router.get("/jobs/{job_id}/download", response_class=FileResponse, responses={
    **STD_ERRORS, **CONFLICT, 410: _err("the file is no longer stored"),
    200: {"content": {"application/json": {}, "application/zip": {}, "text/csv": {}, "application/xml": {}},
          "description": "the export job's file"}})
def download_export(job_id: int, user: CurrentUser, session: SessionDep, settings: SettingsDep) -> FileResponse:
    """The file a succeeded export job wrote (project managers, as the export itself)."""
    job = find_export(session, job_id)
    get_project(session, user, job.project_id or 0, Role.manager)
    path, media, name = export_file(settings, job)
    return FileResponse(path, media_type=media, filename=name)
