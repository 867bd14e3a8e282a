"""The demo project: generated shape images so a new user sees something at once."""

from __future__ import annotations

import io
import random
import secrets

from PIL import Image, ImageDraw
from sqlmodel import Session, select

from service.config import Settings
from service.crud.items import ingest
from service.crud.projects import create_project
from service.crud.users import create_user
from service.models import Project, ProjectCreate, Role, User
from service.security import hash_password

DEMO_CLASSES = ["circle", "square", "triangle"]


def shape_image(kind: str, rng: random.Random, size: int = 96) -> bytes:
    bg = tuple(rng.randint(180, 255) for _ in range(3))
    fg = tuple(rng.randint(0, 120) for _ in range(3))
    im = Image.new("RGB", (size, size), bg)  # type: ignore[arg-type]
    d = ImageDraw.Draw(im)
    r = rng.randint(size // 6, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    if kind == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fg)
    elif kind == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fg)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fg)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def ensure_demo(session: Session, settings: Settings, *, n_images: int = 60, seed: int = 0) -> tuple[str, str | None]:
    """Create (or reuse) the admin and demo project; returns (admin name, new password or None)."""
    admin = session.exec(select(User).where(User.name == "admin")).first()
    password = None
    if admin is None:
        password = secrets.token_urlsafe(9)
        admin = create_user(session, name="admin", role=Role.admin, password=password)
    elif admin.password_hash is None:
        password = secrets.token_urlsafe(9)
        admin.password_hash = hash_password(password)
        session.add(admin)
    if session.exec(select(Project).where(Project.name == "demo")).first() is None:
        project = create_project(session, data=ProjectCreate(
            name="demo", classes=DEMO_CLASSES,
            instructions="Pick the shape you see. Keys 1-3 choose the class."), user=admin)
        rng = random.Random(seed)
        files = [(f"shape_{i:03d}.png", shape_image(DEMO_CLASSES[i % 3], rng)) for i in range(n_images)]
        ingest(session, project=project, files=files, settings=settings)
    session.commit()
    return admin.name, password
