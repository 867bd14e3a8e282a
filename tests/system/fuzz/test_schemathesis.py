"""Schemathesis against the app's own OpenAPI, in process (ASGI), every route.

One pytest case per operation. Each runs a fixed budget of Hypothesis
examples (positive and negative data), authenticated as an admin with a
Bearer token, against a data dir where a project, items, a label, a lease and
a finished job exist; ids in paths point at those rows most of the time, so
routes get past their 404. Checks: no 5xx, and status code, content type,
headers and body as documented; invalid input is refused with a 4xx.

A second pass per operation sends the same kind of valid requests with hostile
text spliced into their strings: lone surrogates (``"\\ud800"``, which UTF-8 cannot
carry) and NUL, in JSON bodies and their keys; NUL and the UTF-8-looking bytes of a
surrogate (``%ED%A0%80``, not valid UTF-8) in query strings; NUL in string path
parameters. Its one check: no 5xx and no exception out of the app.

Budget: ``LABELLOOP_FUZZ_EXAMPLES`` examples per operation (default 40, about a
minute in all on 2 cores) and ``LABELLOOP_FUZZ_HOSTILE_EXAMPLES`` for the hostile
pass (default 12, about 20 seconds). ``LABELLOOP_FUZZ_DATABASE_URL`` runs it on that
PostgreSQL database instead of SQLite (its ``public`` schema is recreated).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.openapi.checks import JsonSchemaError, UndefinedStatusCode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.exc import DataError, IntegrityError
from sqlmodel import Session

from service.config import Settings
from service.jobs.runner import ThreadExecutor, enqueue
from service.main import create_app
from tests.conftest import Ctx, make_project, make_settings, png_bytes, reset_postgres

EXAMPLES = int(os.environ.get("LABELLOOP_FUZZ_EXAMPLES", "40"))
HOSTILE_EXAMPLES = int(os.environ.get("LABELLOOP_FUZZ_HOSTILE_EXAMPLES", "12"))
# optional: fuzz on PostgreSQL too (a database of its own: its schema is dropped)
FUZZ_PG_URL = os.environ.get("LABELLOOP_FUZZ_DATABASE_URL", "")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection]

# Failure classes found by this suite whose fix waits on files it does not own
# (patches in the reliability issue's report; each pinned by a strict xfail in
# test_fuzz_findings.py). Once the patches are in, empty this set: the fuzzing
# then holds the app to the fixed behaviour.
KNOWN_CLASSES: set[str] = set()


def _spec() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d:
        return create_app(Settings(data_dir=Path(d), secret_key="x"), background=False).openapi()


SCHEMA = schemathesis.openapi.from_dict(_spec())
LABELS = [r.ok().label for r in SCHEMA.get_all_operations() if isinstance(r, Ok)]


def _known_failure(failure: BaseException, response: Any) -> bool:
    if isinstance(failure, UndefinedStatusCode) and response.status_code == 400:
        return "400-undocumented" in KNOWN_CLASSES
    if isinstance(failure, JsonSchemaError) and response.status_code == 422:
        try:
            detail = response.json().get("detail")
        except ValueError:
            return False
        return isinstance(detail, str) and "422-string-detail" in KNOWN_CLASSES
    return False


def _known_crash(exc: BaseException) -> bool:
    if isinstance(exc, OverflowError) or (isinstance(exc, DataError) and "out of range" in str(exc)):
        return "int-overflow" in KNOWN_CLASSES
    if isinstance(exc, IntegrityError) and "NOT NULL" in str(exc).upper().replace("-", " "):
        return "null-update" in KNOWN_CLASSES
    if isinstance(exc, AttributeError) and "'NoneType' object has no attribute 'strip'" in str(exc):
        return "null-update" in KNOWN_CLASSES
    return False


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("fuzz")
    imports = tmp / "imports"
    imports.mkdir()
    (imports / "a.png").write_bytes(png_bytes(seed=99))
    s = make_settings(tmp, allow_server_import_roots=[imports])
    if FUZZ_PG_URL:
        reset_postgres(FUZZ_PG_URL)
        s.database_url = FUZZ_PG_URL
    app = create_app(s, background=False)
    with TestClient(app) as client:
        c = Ctx(client, s)
        admin = c.user("root", "admin")
        c.user("lab", "labeler")
        p = make_project(c, admin, name="fuzz", n_images=6)
        make_project(c, admin, name="other", n_images=2)
        pid = p["id"]
        items = client.get(f"/api/v1/projects/{pid}/items", headers=admin).json()["data"]
        iid = items[0]["id"]
        assert client.post(f"/api/v1/items/{iid}/annotations", json={"labels": ["cat"]},
                           headers=admin).status_code == 201
        lease = client.post(f"/api/v1/projects/{pid}/queue/next", headers=admin).json()
        tokens = client.get("/api/v1/auth/tokens", headers=admin).json()
        spare = client.post("/api/v1/auth/tokens", json={"name": "spare"}, headers=admin).json()
        with Session(c.engine) as sess:
            job = enqueue(sess, kind="sleep", project_id=pid, payload={"steps": 1, "seconds": 0})
            sess.commit()
            job_id = job.id
        ThreadExecutor(c.engine, s).run_pending()  # finished: its SSE stream ends at once
        ids = {
            "project_id": [pid, pid, pid, 999_999],
            "item_id": [iid, items[1]["id"], items[2]["id"], 999_999],
            "class_id": [p["classes"][0]["id"], p["classes"][1]["id"], 999_999],
            "lease_id": [lease["lease_id"], 999_999],
            "job_id": [job_id, 999_999],
            "token_id": [spare["id"], 999_999],
        }
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        yield {"schema": schema, "headers": admin, "ids": ids, "own_token": tokens[0]["id"], "settings": s,
               "client": client}


def _fix_ids(case: Any, ids: dict[str, list[int]], pick: int, world: dict[str, Any]) -> None:
    """Point integer path ids at real rows (most of the time)."""
    params = case.path_parameters or {}
    for name, value in list(params.items()):
        if name in ids and isinstance(value, int) and not isinstance(value, bool):
            choices = ids[name]
            if pick % (len(choices) + 1) < len(choices):  # else keep the generated number
                params[name] = choices[pick % (len(choices) + 1)]
    label = case.operation.label
    if label.endswith("/events") and params.get("job_id") not in ids["job_id"]:
        params["job_id"] = ids["job_id"][0]  # a job that is not finished would stream forever
    if "token_id" in params and params["token_id"] == world["own_token"]:
        params["token_id"] = ids["token_id"][0]  # keep the fuzzer's own token alive


@pytest.mark.parametrize("label", LABELS)
def test_operation_conforms(world: dict[str, Any], label: str) -> None:
    schema = world["schema"]
    op = schema.find_operation_by_label(label)
    assert op is not None, label
    strategy = st.one_of(op.as_strategy(GenerationMode.POSITIVE), op.as_strategy(GenerationMode.NEGATIVE))

    @given(case=strategy, pick=st.integers(0, 11))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case: Any, pick: int) -> None:
        _fix_ids(case, world["ids"], pick, world)
        try:
            response = case.call(headers=world["headers"])
        except Exception as exc:  # noqa: BLE001  (the app raised: a 500 for a real client)
            if _known_crash(exc):
                return
            raise AssertionError(f"server error {type(exc).__name__}: {str(exc)[:300]}\n"
                                 f"{case.as_curl_command(headers=world['headers'])[:600]}") from None
        checks = CHECKS
        if case.media_type == "multipart/form-data":
            # any value in a multipart part arrives as a file, so "wrong type" cannot be sent
            checks = [c for c in CHECKS if c is not negative_data_rejection]
        try:
            case.validate_response(response, checks=checks, headers=world["headers"])
        except FailureGroup as group:
            if not all(_known_failure(f, response) for f in group.exceptions):
                raise
        except Failure as failure:
            if not _known_failure(failure, response):
                raise

    run()


# -- hostile text: lone surrogates and NUL ------------------------------------------------------

HOSTILE_TEXT = ("\ud800", "\x00", "\udfff", "a\x00b", "\ud83d", "\x00\ud800\x00")
NOT_UTF8 = "\ud800".encode("utf-8", "surrogatepass")  # b"\xed\xa0\x80": sent as %ED%A0%80
HOSTILE_QUERY = ("\x00", NOT_UTF8, b"x" + NOT_UTF8, "a\x00b")
MAX_SPLICES = 50  # strings changed per request (each costs draws)


def _splice(value: Any, spoil: Callable[[Any], Any]) -> Any:
    """``value`` (JSON) with ``spoil`` applied to its strings, dict keys included."""
    if isinstance(value, str):
        return spoil(value)
    if isinstance(value, dict):
        return {(spoil(k) if isinstance(k, str) else k): _splice(v, spoil) for k, v in value.items()}
    if isinstance(value, list):
        return [_splice(v, spoil) for v in value]
    return value


def _spoiler(data: st.DataObject, choices: tuple[Any, ...]) -> Callable[[Any], Any]:
    """A function that keeps a string, or puts a hostile piece before, after or instead of it."""
    budget = [MAX_SPLICES]

    def spoil(text: Any) -> Any:
        if budget[0] <= 0:
            return text
        budget[0] -= 1
        how = data.draw(st.sampled_from(["keep", "before", "after", "instead"]))
        if how == "keep":
            return text
        bad = data.draw(st.sampled_from(choices))
        if isinstance(bad, bytes):
            raw = text.encode() if isinstance(text, str) else text
            return {"before": bad + raw, "after": raw + bad, "instead": bad}[how]
        return {"before": bad + text, "after": text + bad, "instead": bad}[how]

    return spoil


def _hostile_request(case: Any, data: st.DataObject) -> dict[str, Any]:
    """``case`` as keyword arguments for ``TestClient.request``, hostile text spliced into its JSON
    body (keys too), query values and string path parameters. Sent by the test client itself:
    schemathesis' own client validates a case again and cannot encode a lone surrogate."""
    spoil_path = _spoiler(data, ("\x00", "a\x00b"))
    params = {k: quote(str(spoil_path(v) if isinstance(v, str) else v), safe="")
              for k, v in (case.path_parameters or {}).items()}
    url = re.sub(r"{(\w+)}", lambda m: params[m.group(1)], case.path)
    if case.query:  # values only: a changed name is just an unknown parameter
        spoil = _spoiler(data, HOSTILE_QUERY)
        url += "?" + urlencode({k: _splice(v, spoil) for k, v in case.query.items()}, doseq=True)
    out: dict[str, Any] = {"method": case.method, "url": url}
    if not isinstance(case.body, NotSet):
        body = _splice(case.body, _spoiler(data, HOSTILE_TEXT))
        out["content"] = json.dumps(body)  # ASCII: a lone surrogate travels as its \u escape
        out["headers"] = {"Content-Type": "application/json"}
    return out


@pytest.mark.parametrize("label", LABELS)
def test_hostile_text_never_makes_a_server_error(world: dict[str, Any], label: str) -> None:
    op = world["schema"].find_operation_by_label(label)
    assert op is not None, label
    if any(b.media_type != "application/json" for b in op.body):
        pytest.skip("multipart bodies carry files (hostile file names: tests/system/security/test_hardening.py)")

    @given(case=op.as_strategy(GenerationMode.POSITIVE), pick=st.integers(0, 11), data=st.data())
    @settings(max_examples=HOSTILE_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case: Any, pick: int, data: st.DataObject) -> None:
        _fix_ids(case, world["ids"], pick, world)
        request = _hostile_request(case, data)
        request["headers"] = {**request.get("headers", {}), **world["headers"]}
        try:
            response = world["client"].request(**request)
        except Exception as exc:  # noqa: BLE001  (the app raised: a 500 for a real client)
            if _known_crash(exc):
                return
            raise AssertionError(f"server error {type(exc).__name__}: {str(exc)[:300]}\n{request!r:.600}") from None
        assert response.status_code < 500, (response.status_code, response.text[:300], f"{request!r:.600}")

    run()
