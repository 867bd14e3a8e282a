"""People (issue #25): admins list, create and disable users and make one-time invite links;
managers add and remove members and change their roles, in their own projects only; classes
that labels use are archived, not deleted. SQLite always, PostgreSQL where configured."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, select

from service.models import utcnow
from service.models.users import Invite
from tests.conftest import Ctx, make_project

API = "/api/v1"


def _invite(ctx: Ctx, admin: dict[str, str], role: str = "labeler", **kw: object) -> dict:
    r = ctx.client.post(f"{API}/invites", json={"role": role, **kw}, headers=admin)
    assert r.status_code == 201, r.text
    return r.json()


def _login(ctx: Ctx, name: str, password: str) -> int:
    return ctx.client.post(f"{API}/auth/login", json={"name": name, "password": password}).status_code


def test_only_admins_manage_users_and_invites(ctx: Ctx) -> None:
    admin = ctx.user("admin", "admin")
    for role in ("labeler", "reviewer", "manager"):
        someone = ctx.user(f"a-{role}", role)
        assert ctx.client.post(f"{API}/users", json={"name": f"new-{role}", "role": "labeler"},
                               headers=someone).status_code == 403
        assert ctx.client.get(f"{API}/users", headers=someone).status_code == 403
        assert ctx.client.patch(f"{API}/users/1", json={"disabled": True}, headers=someone).status_code == 403
        assert ctx.client.post(f"{API}/invites", json={"role": "admin"}, headers=someone).status_code == 403
        assert ctx.client.get(f"{API}/invites", headers=someone).status_code == 403
    assert ctx.client.get(f"{API}/users").status_code == 401
    r = ctx.client.post(f"{API}/users", json={"name": "lena", "role": "labeler", "password": "long-enough"},
                        headers=admin)
    assert r.status_code == 201, r.text
    listed = ctx.client.get(f"{API}/users", headers=admin).json()
    assert listed["count"] == 5 and "lena" in [u["name"] for u in listed["data"]]
    assert all("password_hash" not in u for u in listed["data"])


def test_an_admin_disables_and_changes_a_user_but_not_themselves(ctx: Ctx) -> None:
    admin = ctx.user("admin", "admin")
    lena = ctx.user("lena", "labeler", password="long-enough")
    lena_id = ctx.client.get(f"{API}/auth/me", headers=lena).json()["id"]
    admin_id = ctx.client.get(f"{API}/auth/me", headers=admin).json()["id"]
    r = ctx.client.patch(f"{API}/users/{lena_id}", json={"role": "reviewer"}, headers=admin)
    assert r.status_code == 200 and r.json()["role"] == "reviewer" and r.json()["disabled"] is False
    r = ctx.client.patch(f"{API}/users/{lena_id}", json={"disabled": True}, headers=admin)
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert ctx.client.get(f"{API}/auth/me", headers=lena).status_code == 401
    assert _login(ctx, "lena", "long-enough") == 401
    assert ctx.client.patch(f"{API}/users/{admin_id}", json={"disabled": True}, headers=admin).status_code == 409
    assert ctx.client.patch(f"{API}/users/{admin_id}", json={"role": "labeler"}, headers=admin).status_code == 409
    assert ctx.client.patch(f"{API}/users/99999", json={"role": "labeler"}, headers=admin).status_code == 404


def test_an_invite_makes_one_user_once(ctx: Ctx) -> None:
    admin = ctx.user("admin", "admin")
    inv = _invite(ctx, admin, role="reviewer", ttl_hours=2)
    assert inv["link"] == f"/#/invite/{inv['token']}" and inv["used_at"] is None and inv["role"] == "reviewer"
    listed = ctx.client.get(f"{API}/invites", headers=admin).json()
    assert listed["count"] == 1 and "token" not in listed["data"][0]
    accept = f"{API}/invites/{inv['token']}/accept"
    assert ctx.client.post(accept, json={"name": "rita", "password": "short"}).status_code == 422
    assert ctx.client.post(accept, json={"name": "admin", "password": "long-enough"}).status_code == 409
    r = ctx.client.post(accept, json={"name": "rita", "password": "long-enough"})  # no sign-in needed
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "rita" and r.json()["role"] == "reviewer"
    assert _login(ctx, "rita", "long-enough") == 200
    again = ctx.client.post(accept, json={"name": "rita2", "password": "long-enough"})
    assert again.status_code == 410 and "used" in again.json()["detail"]
    used = ctx.client.get(f"{API}/invites", headers=admin).json()["data"][0]
    assert used["used_at"] is not None and used["used_by"] == r.json()["id"]
    assert ctx.client.post(f"{API}/invites/not-a-real-token-at-all/accept",
                           json={"name": "x", "password": "long-enough"}).status_code == 404


def test_expired_and_revoked_invites_are_gone(ctx: Ctx) -> None:
    admin = ctx.user("admin", "admin")
    old, revoked = _invite(ctx, admin), _invite(ctx, admin)
    with Session(ctx.engine) as s:
        row = s.exec(select(Invite).where(Invite.id == old["id"])).one()
        row.expires_at = utcnow() - timedelta(minutes=1)
        s.add(row)
        s.commit()
    r = ctx.client.post(f"{API}/invites/{old['token']}/accept", json={"name": "late", "password": "long-enough"})
    assert r.status_code == 410 and "expired" in r.json()["detail"]
    assert ctx.client.delete(f"{API}/invites/{revoked['id']}", headers=admin).status_code == 204
    r = ctx.client.post(f"{API}/invites/{revoked['token']}/accept", json={"name": "x", "password": "long-enough"})
    assert r.status_code == 410
    assert _login(ctx, "late", "long-enough") == 401 and _login(ctx, "x", "long-enough") == 401


def test_managers_add_change_and_remove_members_of_their_own_project(ctx: Ctx) -> None:
    ctx.user("admin", "admin")
    mia = ctx.user("mia", "manager")
    max_ = ctx.user("max", "manager")
    lab = ctx.user("lab", "labeler")
    a = make_project(ctx, mia, name="A")["id"]
    b = make_project(ctx, max_, name="B")["id"]
    lab_id = ctx.client.get(f"{API}/auth/me", headers=lab).json()["id"]
    members = f"{API}/projects/{a}/members"
    assert ctx.client.put(members, json={"user": "lab", "role": "labeler"}, headers=mia).status_code == 200
    assert ctx.client.get(f"{API}/projects/{a}/items", headers=lab).status_code == 200
    r = ctx.client.put(members, json={"user": "lab", "role": "reviewer"}, headers=mia)
    assert r.status_code == 200 and r.json()["role"] == "reviewer"
    roles = {m["user_name"]: m["role"] for m in ctx.client.get(members, headers=mia).json()}
    assert roles == {"mia": "manager", "lab": "reviewer"}
    # the other project's manager, and a member below manager, cannot touch A's members
    assert ctx.client.delete(f"{members}/{lab_id}", headers=max_).status_code == 404
    assert ctx.client.put(members, json={"user": "max", "role": "manager"}, headers=max_).status_code == 404
    assert ctx.client.get(members, headers=max_).status_code == 404
    assert ctx.client.delete(f"{members}/{lab_id}", headers=lab).status_code == 403
    assert ctx.client.delete(f"{API}/projects/{b}/members/{lab_id}", headers=mia).status_code == 404
    assert ctx.client.delete(f"{members}/{lab_id}", headers=mia).status_code == 204
    assert ctx.client.get(f"{API}/projects/{a}/items", headers=lab).status_code == 404
    assert ctx.client.delete(f"{members}/{lab_id}", headers=mia).status_code == 404
    mia_id = ctx.client.get(f"{API}/auth/me", headers=mia).json()["id"]
    last = ctx.client.delete(f"{members}/{mia_id}", headers=mia)
    assert last.status_code == 409 and "manager" in last.json()["detail"]


def test_a_used_class_is_archived_and_an_unused_one_deleted(ctx: Ctx) -> None:
    admin = ctx.user("admin", "admin")
    mia = ctx.user("mia", "manager")
    lab = ctx.user("lab", "labeler")
    p = make_project(ctx, mia, name="A", classes=["cat", "dog", "cow"], n_images=1)
    ctx.member(p["id"], "lab", "labeler")
    other = make_project(ctx, admin, name="B", classes=["x"])
    cls = {c["name"]: c["id"] for c in p["classes"]}
    item = ctx.client.get(f"{API}/projects/{p['id']}/items", headers=mia).json()["data"][0]["id"]
    assert ctx.client.post(f"{API}/items/{item}/annotations", json={"labels": ["dog"]},
                           headers=lab).status_code == 201
    classes = f"{API}/projects/{p['id']}/classes"
    used = ctx.client.delete(f"{classes}/{cls['dog']}", headers=mia)
    assert used.status_code == 409 and "archive" in used.json()["detail"]
    assert ctx.client.delete(f"{classes}/{cls['cow']}", headers=lab).status_code == 403
    assert ctx.client.delete(f"{API}/projects/{p['id']}/classes/{other['classes'][0]['id']}",
                             headers=mia).status_code == 404
    assert ctx.client.delete(f"{API}/projects/{other['id']}/classes/{cls['cow']}", headers=mia).status_code == 404
    assert ctx.client.delete(f"{classes}/{cls['cow']}", headers=mia).status_code == 204
    kept = ctx.client.get(f"{API}/projects/{p['id']}", headers=mia).json()["classes"]
    assert [(c["name"], c["position"], c["archived"]) for c in kept] == [("cat", 0, False), ("dog", 1, False)]
    r = ctx.client.patch(f"{classes}/{cls['dog']}", json={"archived": True}, headers=mia)
    assert r.status_code == 200 and r.json()["archived"] is True
    seen = ctx.client.get(f"{API}/projects/{p['id']}", headers=lab).json()["classes"]
    assert {c["name"]: c["archived"] for c in seen} == {"cat": False, "dog": True}
    row = ctx.client.get(f"{API}/projects/{p['id']}/items", headers=lab).json()["data"][0]
    assert row["labels"] == ["dog"]  # the label keeps its archived class
    assert ctx.client.patch(f"{classes}/{cls['dog']}", json={"archived": False},
                            headers=mia).json()["archived"] is False
