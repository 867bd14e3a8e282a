"""``labelloop`` command line: serve, demo, worker, users, import, export."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from sqlmodel import Session, select

from service.config import Settings, get_settings
from service.db import engine_from_settings, upgrade_schema


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    engine = engine_from_settings(settings)
    upgrade_schema(engine)
    return engine


def _serve(settings: Settings, host: str | None, port: int | None, workers: int | None = None) -> None:
    import uvicorn

    from service.main import create_app

    host, port, workers = host or settings.host, port or settings.port, workers or settings.web_workers
    if workers <= 1:
        app = create_app(settings)
        freeze_startup_objects()
        uvicorn.run(app, host=host, port=port, log_level="info")
        return
    # Several processes: each builds its app from the environment, so hand them the
    # settings this process resolved (one secret key for all, whatever the data dir).
    os.environ.update({"LABELLOOP_DATA_DIR": str(settings.data_dir.resolve()),
                       "LABELLOOP_DATABASE_URL": settings.database_url,
                       "LABELLOOP_SECRET_KEY": settings.resolved_secret_key()})
    print(f"serving with {workers} processes; the scheduler runs in one of them")
    uvicorn.run("service.cli:served_app", factory=True, workers=workers, host=host, port=port,
                log_level="info")


def served_app():  # type: ignore[no-untyped-def]
    """The app of one ``serve --workers N`` process (a fresh interpreter: set up logging)."""
    from service.main import create_app

    configure_logging()
    app = create_app()
    freeze_startup_objects()
    return app


def freeze_startup_objects() -> None:
    """Keep the half a million objects of the imports (torch, timm, scipy, the app) out of
    the garbage collector's full passes: a full pass over them holds every request of the
    process for 0.3-0.4 s (``gc.collect()`` after ``create_app()`` on the 2-core test
    machine), and they live as long as the process anyway."""
    gc.collect()
    gc.freeze()


def configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("apscheduler", "alembic", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    _serve(settings, args.host, args.port, args.workers)
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from service.demo import ensure_demo

    def say(line: str) -> None:
        print(line, flush=True)

    engine = _engine(settings)
    with Session(engine) as s:
        name, password = ensure_demo(s, settings, empty=args.empty, say=say)
    host, port = args.host or settings.host, args.port or settings.port
    print(f"demo project ready in {settings.data_dir.resolve()}")
    if password:
        print(f"sign in at http://{host}:{port}/ as {name} / {password}")
    else:
        print(f"sign in at http://{host}:{port}/ as {name} (password printed at first start)")
    sys.stdout.flush()
    engine.dispose()
    _serve(settings, args.host, args.port, args.workers)
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from service.main import build_executor

    if args.nice:
        os.nice(args.nice)  # before torch starts its threads: they inherit it
    engine = _engine(settings)
    ex = build_executor(engine, settings, threads=args.threads)  # LABELLOOP_EXECUTOR=ray: its steps on Ray
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    ex.start()
    print(f"worker running {args.threads} thread(s) against {engine.url.render_as_string()}")
    stop.wait()
    ex.stop()
    return 0


def cmd_users_create(args: argparse.Namespace, settings: Settings) -> int:
    from service.crud.projects import set_member
    from service.crud.users import create_user
    from service.errors import LabelloopError
    from service.models import Project, Role
    from service.security import issue_token

    engine = _engine(settings)
    with Session(engine) as s:
        try:
            user = create_user(s, name=args.name, role=Role(args.role), password=args.password)
            for pname in args.project or []:
                project = s.exec(select(Project).where(Project.name == pname)).first()
                if project is None:
                    print(f"error: no project named {pname!r}", file=sys.stderr)
                    return 2
                set_member(s, project=project, user_name=user.name,
                           role=Role(args.role) if args.role != "admin" else Role.manager, by=user)
        except LabelloopError as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            return 2
        _, token, _ = issue_token(s, user, kind="api", name="cli")
        s.commit()
        print(f"created user {user.name} ({user.role.value}); API token (shown once):")
        print(token)
    return 0


def _project(s: Session, name: str):  # type: ignore[no-untyped-def]
    from service.models import Project

    project = s.exec(select(Project).where(Project.name == name)).first()
    if project is None and name.isdigit():
        project = s.get(Project, int(name))
    if project is None:
        raise SystemExit(f"error: no project {name!r}")
    return project


def _admin(s: Session):  # type: ignore[no-untyped-def]
    from service.models import Role, User

    admin = s.exec(select(User).where(User.role == Role.admin)).first()
    if admin is None:
        raise SystemExit("error: create an admin first (labelloop users create NAME --role admin)")
    return admin


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from service.crud.folders import import_folder
    from service.crud.items import ingest
    from service.crud.transfer import import_labels
    from service.errors import LabelloopError

    engine = _engine(settings)
    path = Path(args.path)
    with Session(engine) as s:
        project = _project(s, args.project)
        try:
            if args.format:
                out = import_labels(s, project=project, fmt=args.format, data=path.read_bytes(), user=_admin(s))
                print(out)
            elif path.is_dir():
                res = import_folder(s, project=project, root=path.resolve(), settings=settings)
                print({k: len(v) for k, v in res.as_dict().items()})
                for r in res.rejected:
                    print(f"rejected {r['file']}: {r['message']}", file=sys.stderr)
            else:
                res = ingest(s, project=project, files=[(path.name, path.read_bytes())], settings=settings)
                print({k: len(v) for k, v in res.as_dict().items()})
        except LabelloopError as exc:
            print(f"error: {exc.detail}", file=sys.stderr)
            return 2
        s.commit()
    return 0


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from service.crud.transfer import export

    engine = _engine(settings)
    with Session(engine) as s:
        project = _project(s, args.project)
        body, _, name = export(s, project=project, fmt=args.format, user=_admin(s))
        s.commit()
    out = Path(args.out)
    if out.is_dir():
        out = out / name
    tmp = out.with_suffix(out.suffix + ".part")
    try:
        with open(tmp, "wb") as fh:
            fh.write(body)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        print(f"error: could not write {out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"wrote {out} ({len(body)} bytes)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labelloop", description="human-in-the-loop active learning for images")
    sub = p.add_subparsers(dest="cmd", required=True)
    for name, help_ in (("serve", "run the API, web UI and scheduler"),
                        ("demo", "create (or reuse) the demo project and an admin login, then serve")):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--host")
        sp.add_argument("--port", type=int)
        sp.add_argument("--workers", type=int, help="API server processes (default LABELLOOP_WEB_WORKERS, 1)")
        if name == "demo":
            sp.add_argument("--empty", action="store_true",
                            help="only 60 unlabelled images, nothing trained (default: a project the loop has "
                                 "already run on: imported and queue labels, two models, Pending, grids, Review)")
    w = sub.add_parser("worker", help="run jobs in this process against the same database")
    w.add_argument("--threads", type=int, default=1)
    w.add_argument("--nice", type=int, default=10,
                   help="lower this process's CPU priority by this much (default 10) so that training "
                        "never slows labelers' requests on the same machine; 0 keeps it")
    users = sub.add_parser("users", help="manage users").add_subparsers(dest="users_cmd", required=True)
    uc = users.add_parser("create", help="create a user and print an API token on the last line")
    uc.add_argument("name")
    uc.add_argument("--role", required=True, choices=["labeler", "reviewer", "manager", "admin"])
    uc.add_argument("--password")
    uc.add_argument("--project", action="append", help="add as a member of this project (repeatable)")
    im = sub.add_parser("import", help="import images (file, zip, folder) or, with --format, annotations")
    im.add_argument("project")
    im.add_argument("path")
    im.add_argument("--format", choices=["coco", "yolo", "voc", "cvat", "labelstudio", "csv"])
    ex = sub.add_parser("export", help="export annotations")
    ex.add_argument("project")
    ex.add_argument("--format", required=True, choices=["coco", "yolo", "voc", "cvat", "labelstudio", "csv"])
    ex.add_argument("--out", required=True)
    _extra_commands(sub)
    return p


def _extra_commands(sub: argparse._SubParsersAction) -> None:
    """Commands with their own modules: simulate, simulate-review (the lab's), annotate, backup."""
    from service import backup, cli_annotate

    # The one place the product reaches into the lab (research code beside the service, not
    # part of it): its commands are registered when the ``lab`` package is importable and
    # are simply absent otherwise.
    try:
        from lab import cli as lab_cli
    except ModuleNotFoundError as exc:
        if exc.name != "lab":
            raise
    else:
        lab_cli.register(sub)
    for mod in (cli_annotate, backup):
        mod.register(sub)


COMMANDS = {"serve": cmd_serve, "demo": cmd_demo, "worker": cmd_worker, "import": cmd_import,
            "export": cmd_export}


def main(argv: list[str] | None = None) -> int:
    # Before torch is imported: OpenMP threads that spin while idle cost up to 5x on 2 cores.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    configure_logging()
    args = build_parser().parse_args(argv)
    settings = get_settings()
    if args.cmd == "users":
        return cmd_users_create(args, settings)
    fn = COMMANDS.get(args.cmd) or getattr(args, "func", None)
    if fn is None:
        raise SystemExit(f"unknown command {args.cmd}")
    return int(fn(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
