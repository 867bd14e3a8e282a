"""``labelloop annotate``: automatic annotation of a project from the command line (the job
itself is :mod:`service.loop.annotate`)."""

from __future__ import annotations

import argparse

from sqlmodel import Session, select

from service.cli_support import cli_engine, project_named
from service.config import Settings
from service.errors import LabelloopError
from service.loop.annotate import AnnotateIn, start_annotation
from service.models import Job, ModelVersion, RegisteredModel, utcnow


def register(sub: argparse._SubParsersAction) -> None:
    sp = sub.add_parser("annotate", help="automatic annotation of a project with a chosen model")
    sp.add_argument("project", help="project name or id")
    which = sp.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="registered external model name")
    which.add_argument("--model-version", type=int, help="model version number of the project")
    sp.add_argument("--threshold", type=float)
    sp.add_argument("--clean-old", action="store_true")
    sp.add_argument("--masks-as-polygons", action="store_true")
    sp.add_argument("--label-map", default="", help="model_label=project_class,... (default: same names)")
    sp.add_argument("--no-wait", action="store_true", help="only enqueue (a worker runs it)")
    sp.set_defaults(func=cmd_annotate)


def cmd_annotate(args: argparse.Namespace, settings: Settings) -> int:
    from service.jobs.runner import run_job, worker_name
    from service.models import JobState

    engine = cli_engine(settings)
    pairs = [kv.split("=", 1) for kv in args.label_map.split(",") if kv.strip()]
    with Session(engine, expire_on_commit=False) as s:
        project = project_named(s, args.project)
        body = AnnotateIn(label_map={k.strip(): v.strip() for k, v in pairs}, threshold=args.threshold,
                          clean_old=args.clean_old, masks_as_polygons=args.masks_as_polygons)
        if args.model:
            rm = s.exec(select(RegisteredModel).where(RegisteredModel.name == args.model)).first()
            if rm is None:
                raise SystemExit(f"error: no registered model {args.model!r}")
            body.model_id = rm.id
        else:
            mv = s.exec(select(ModelVersion).where(ModelVersion.project_id == project.id,
                                                   ModelVersion.version == args.model_version)).first()
            body.model_version_id = mv.id if mv is not None else -1
        try:
            job = start_annotation(s, project=project, body=body, user_id=None)
        except LabelloopError as exc:
            print(f"error: {exc.detail}")
            return 2
        if not args.no_wait:
            job.state, job.worker, job.started_at = JobState.running, worker_name(), utcnow()
            # stamp a first heartbeat as claim_next does: recover_stale only fails running jobs
            # whose heartbeat is old, so a CLI killed before its first beat (while it loads the
            # model) would otherwise leave the job ``running`` for ever
            job.heartbeat_at = job.started_at
        s.commit()
        job_id = int(job.id)  # type: ignore[arg-type]
    if args.no_wait:
        print(f"queued job {job_id}")
        return 0
    state = run_job(engine, settings, job_id)
    with Session(engine) as s:
        done = s.get(Job, job_id)
        assert done is not None
        print(f"job {job_id} {state.value}: {done.message or ''} {done.result}")
    return 0 if state == JobState.succeeded else 1
