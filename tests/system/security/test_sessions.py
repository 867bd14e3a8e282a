"""Sign-in, sessions and tokens: rate limits, expiry, revocation, CSRF, headers."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from tests.conftest import Ctx

PASSWORD = "correct horse battery"


def _login(client: TestClient, name: str = "root", password: str = PASSWORD) -> dict:
    r = client.post("/api/v1/auth/login", json={"name": name, "password": password})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_sign_in_is_rate_limited_per_name_and_says_when_to_retry(ctx: Ctx) -> None:
    ctx.user("root", "admin", password=PASSWORD)
    ctx.user("other", "labeler", password=PASSWORD)
    limit = ctx.settings.login_attempts_per_minute
    codes = [ctx.client.post("/api/v1/auth/login", json={"name": "root", "password": "guess"}).status_code
             for _ in range(limit)]
    assert codes == [401] * limit
    r = ctx.client.post("/api/v1/auth/login", json={"name": "root", "password": "guess"})
    assert r.status_code == 429 and r.headers["Retry-After"] == "60"
    # locked out even with the right password, while another account is not
    assert ctx.client.post("/api/v1/auth/login", json={"name": "root", "password": PASSWORD}).status_code == 429
    assert ctx.client.post("/api/v1/auth/login", json={"name": "other", "password": PASSWORD}).status_code == 200


def test_wrong_name_and_wrong_password_look_the_same(ctx: Ctx) -> None:
    ctx.user("root", "admin", password=PASSWORD)
    a = ctx.client.post("/api/v1/auth/login", json={"name": "root", "password": "nope"})
    b = ctx.client.post("/api/v1/auth/login", json={"name": "nobody", "password": "nope"})
    assert a.status_code == b.status_code == 401 and a.json() == b.json()


def test_session_cookie_flags_and_expiry(ctx: Ctx) -> None:
    ctx.user("root", "admin", password=PASSWORD)
    ctx.settings.session_ttl_hours = 1.5 / 3600  # 1.5 s
    r = ctx.client.post("/api/v1/auth/login", json={"name": "root", "password": PASSWORD})
    cookies = [v.lower() for k, v in r.headers.multi_items() if k.lower() == "set-cookie"]
    session = next(c for c in cookies if c.startswith("labelloop_session="))
    assert "httponly" in session and "samesite=strict" in session and "path=/" in session
    assert ctx.client.get("/api/v1/auth/me").status_code == 200
    kept = ctx.client.cookies.get("labelloop_session") or ""
    time.sleep(1.7)
    # the browser drops the cookie at Max-Age; a client that keeps it is refused by the server
    r = TestClient(ctx.client.app, cookies={"labelloop_session": kept}).get("/api/v1/auth/me")
    assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_logout_revokes_the_session_server_side(ctx: Ctx) -> None:
    ctx.user("root", "admin", password=PASSWORD)
    csrf = _login(ctx.client)["csrf_token"]
    stolen = ctx.client.cookies.get("labelloop_session")
    assert ctx.client.post("/api/v1/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    replay = TestClient(ctx.client.app, cookies={"labelloop_session": stolen or ""})
    assert replay.get("/api/v1/auth/me").status_code == 401  # a copied cookie dies with the session


def test_csrf_is_required_for_cookie_writes_only(ctx: Ctx) -> None:
    ctx.user("root", "admin", password=PASSWORD)
    ctx.user("eve", "admin", password=PASSWORD)
    other = TestClient(ctx.client.app)
    eve_csrf = _login(other, "eve")["csrf_token"]
    csrf = _login(ctx.client)["csrf_token"]
    body = {"name": "p1", "classes": ["a", "b"]}
    assert ctx.client.get("/api/v1/projects").status_code == 200  # reads need no token
    assert ctx.client.post("/api/v1/projects", json=body).status_code == 403
    assert ctx.client.post("/api/v1/projects", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert ctx.client.post("/api/v1/projects", json=body, headers={"X-CSRF-Token": eve_csrf}).status_code == 403
    assert ctx.client.post("/api/v1/projects", json=body, headers={"X-CSRF-Token": csrf}).status_code == 201
    bearer = ctx.user("script", "admin")  # a Bearer token is not ambient authority: no CSRF token needed
    assert TestClient(ctx.client.app).post("/api/v1/projects", json={"name": "p2"}, headers=bearer).status_code == 201


def test_token_revocation_expiry_and_ownership(ctx: Ctx) -> None:
    root = ctx.user("root", "admin")
    lab = ctx.user("lab", "labeler")
    r = ctx.client.post("/api/v1/auth/tokens", json={"name": "ci", "ttl_days": 1.5 / 86400}, headers=lab)
    assert r.status_code == 201
    short = {"Authorization": f"Bearer {r.json()['token']}"}
    r = ctx.client.post("/api/v1/auth/tokens", json={"name": "keep"}, headers=lab)
    keep_id, keep = r.json()["id"], {"Authorization": f"Bearer {r.json()['token']}"}
    assert ctx.client.get("/api/v1/auth/me", headers=short).status_code == 200
    # tokens are shown once; listing never returns a secret
    listed = ctx.client.get("/api/v1/auth/tokens", headers=lab).json()
    assert listed and all("token" not in t for t in listed)
    # a labeler cannot revoke (or even see) someone else's token
    root_tokens = ctx.client.get("/api/v1/auth/tokens", headers=root).json()
    assert ctx.client.delete(f"/api/v1/auth/tokens/{root_tokens[0]['id']}", headers=lab).status_code == 404
    assert ctx.client.get("/api/v1/auth/me", headers=root).status_code == 200
    assert ctx.client.delete(f"/api/v1/auth/tokens/{keep_id}", headers=lab).status_code == 204
    r = ctx.client.get("/api/v1/auth/me", headers=keep)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
    time.sleep(1.7)
    assert ctx.client.get("/api/v1/auth/me", headers=short).status_code == 401
    assert ctx.client.get("/api/v1/auth/me", headers=lab).status_code == 200
    for bad in ("Bearer ", "Bearer ll_" + "x" * 43, "Basic cm9vdDpwdw==", "bearer\tll_x"):
        assert ctx.client.get("/api/v1/auth/me", headers={"Authorization": bad}).status_code == 401


def test_security_headers_on_pages_and_api(ctx: Ctx) -> None:
    r = ctx.client.get("/web/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.headers["X-Content-Type-Options"] == "nosniff"
    assert r.headers["X-Frame-Options"] == "DENY"
    assert r.headers["Referrer-Policy"] == "same-origin"
    csp = r.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "'unsafe-eval'" not in csp
    api = ctx.client.get("/api/v1/health")
    assert api.headers["X-Content-Type-Options"] == "nosniff" and api.headers["X-Frame-Options"] == "DENY"
    assert ctx.client.get("/", follow_redirects=False).headers["location"] == "/web/"
