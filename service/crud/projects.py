"""Projects, classes and memberships."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, func, select

from learning.policy import Policy
from service.crud.annotations import rename_label
from service.crud.classes import classes_of, set_archived
from service.errors import Conflict, Invalid, NotFound
from service.models import (
    LabelClass,
    LabelClassCreate,
    LabelClassPublic,
    LabelClassUpdate,
    Membership,
    MembershipPublic,
    PolicyPublic,
    Project,
    ProjectCreate,
    ProjectPublic,
    ProjectUpdate,
    Role,
    User,
)
from service.security import audit


def validate_policy(data: dict[str, Any]) -> dict[str, Any]:
    """A full policy dict (defaults filled) or 422 naming the bad key."""
    try:
        return Policy.from_dict(data).to_dict()
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        raise Invalid(msg if msg.startswith("invalid policy") else f"invalid policy: {msg}") from exc


def policy_of(project: Project) -> PolicyPublic:
    """The project's full policy, defaults filled in."""
    return PolicyPublic.model_validate(validate_policy(project.policy or {}))


def project_public(session: Session, project: Project, role: Role | None = None) -> ProjectPublic:
    assert project.id is not None
    return ProjectPublic(
        id=project.id, name=project.name, task=project.task, instructions=project.instructions,
        created_at=project.created_at, policy=policy_of(project),
        classes=[LabelClassPublic.model_validate(c, from_attributes=True)
                 for c in classes_of(session, project.id)],
        my_role=role.value if role else None,
    )


def create_project(session: Session, *, data: ProjectCreate, user: User) -> Project:
    if session.exec(select(Project).where(Project.name == data.name)).first():
        raise Conflict(f"a project named {data.name!r} exists")
    names = [n.strip() for n in data.classes]
    if any(not n for n in names) or len(set(names)) != len(names):
        raise Invalid("class names must be non-empty and unique")
    project = Project(name=data.name, task=data.task, instructions=data.instructions,
                      policy=validate_policy(data.policy or {}), created_by=user.id)
    session.add(project)
    session.flush()
    assert project.id is not None
    for i, n in enumerate(names):
        session.add(LabelClass(project_id=project.id, name=n, position=i))
    if user.role != Role.admin and user.id is not None:
        session.add(Membership(project_id=project.id, user_id=user.id, role=Role.manager))
    audit(session, user.id, "project.create", project_id=project.id, detail={"name": data.name})
    session.flush()
    return project


def list_projects(session: Session, *, user: User) -> list[tuple[Project, Role]]:
    if user.role == Role.admin:
        return [(p, Role.admin) for p in session.exec(select(Project).order_by(col(Project.id))).all()]
    rows = session.exec(
        select(Project, Membership).join(Membership, col(Membership.project_id) == Project.id)
        .where(Membership.user_id == user.id).order_by(col(Project.id))
    ).all()
    return [(p, m.role) for p, m in rows]


def update_project(session: Session, *, project: Project, data: ProjectUpdate, user: User) -> Project:
    # null means "leave as is": neither field may be empty in the database
    changes = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    if "name" in changes and changes["name"] != project.name:
        if session.exec(select(Project).where(Project.name == changes["name"])).first():
            raise Conflict(f"a project named {changes['name']!r} exists")
    for k, v in changes.items():
        setattr(project, k, v)
    session.add(project)
    audit(session, user.id, "project.update", project_id=project.id, detail=changes)
    return project


def set_policy(session: Session, *, project: Project, data: dict[str, Any], user: User,
               partial: bool = True) -> PolicyPublic:
    merged = {**(project.policy or {}), **data} if partial else data
    policy = validate_policy(merged)
    project.policy = policy
    session.add(project)
    audit(session, user.id, "policy.update", project_id=project.id, detail=data)
    return PolicyPublic.model_validate(policy)


def add_class(session: Session, *, project: Project, data: LabelClassCreate, user: User) -> LabelClass:
    assert project.id is not None
    name = data.name.strip()
    if not name:
        raise Invalid("class name must not be empty")
    if session.exec(select(LabelClass).where(LabelClass.project_id == project.id,
                                             LabelClass.name == name)).first():
        raise Conflict(f"class {name!r} exists")
    n = session.exec(select(func.count()).select_from(LabelClass)
                     .where(LabelClass.project_id == project.id)).one()
    pos = n if data.position is None else data.position
    cls = LabelClass(project_id=project.id, name=name, color=data.color, position=pos)
    _shift_positions(session, project.id, pos, exclude=None)
    session.add(cls)
    session.flush()
    audit(session, user.id, "class.add", project_id=project.id, detail={"name": name})
    _renumber(session, project.id, first=cls)
    return cls


def _shift_positions(session: Session, project_id: int, pos: int, exclude: int | None) -> None:
    for c in classes_of(session, project_id):
        if c.id != exclude and c.position >= pos:
            c.position += 1
            session.add(c)


def _renumber(session: Session, project_id: int, first: LabelClass | None = None) -> None:
    ordered = sorted(classes_of(session, project_id),
                     key=lambda c: (c.position, 0 if first is not None and c.id == first.id else 1))
    for i, c in enumerate(ordered):
        if c.position != i:
            c.position = i
            session.add(c)
    session.flush()


def update_class(session: Session, *, project: Project, class_id: int, data: LabelClassUpdate,
                 user: User) -> LabelClass:
    """Rename / recolour / move a class. Labels keep their class through a rename."""
    assert project.id is not None
    cls = session.get(LabelClass, class_id)
    if cls is None or cls.project_id != project.id:
        raise NotFound("class not found")
    changes = data.model_dump(exclude_unset=True)
    if changes.get("name") is not None and changes["name"] != cls.name:
        new = changes["name"].strip()
        if not new:
            raise Invalid("class name must not be empty")
        if session.exec(select(LabelClass).where(LabelClass.project_id == project.id,
                                                 LabelClass.name == new)).first():
            raise Conflict(f"class {new!r} exists")
        rename_label(session, project_id=project.id, old=cls.name, new=new)
        cls.name = new
    if "color" in changes:
        cls.color = changes["color"]
    if "position" in changes and changes["position"] is not None:
        cls.position = changes["position"]
        _shift_positions(session, project.id, cls.position, exclude=cls.id)
        session.add(cls)
        session.flush()
        _renumber(session, project.id, first=cls)
    if changes.get("archived") is not None:
        set_archived(session, cls=cls, archived=bool(changes.pop("archived")), user=user)
    session.add(cls)
    audit(session, user.id, "class.update", project_id=project.id, detail={"id": class_id, **changes})
    return cls


def list_members(session: Session, *, project_id: int) -> list[MembershipPublic]:
    rows = session.exec(select(Membership, User).join(User).where(Membership.project_id == project_id)).all()
    return [MembershipPublic(user_id=u.id or 0, user_name=u.name, role=m.role) for m, u in rows]


def set_member(session: Session, *, project: Project, user_name: str, role: Role,
               by: User | None) -> Membership:
    target = session.exec(select(User).where(User.name == user_name)).first()
    if target is None:
        raise NotFound(f"no user named {user_name!r}")
    if role == Role.admin:
        raise Invalid("admin is a global role, not a project role")
    m = session.exec(select(Membership).where(Membership.project_id == project.id,
                                              Membership.user_id == target.id)).first()
    if m is None:
        assert project.id is not None and target.id is not None
        m = Membership(project_id=project.id, user_id=target.id, role=role)
    m.role = role
    session.add(m)
    audit(session, by.id if by else None, "member.set", project_id=project.id,
          detail={"user": user_name, "role": role.value})
    session.flush()
    return m
