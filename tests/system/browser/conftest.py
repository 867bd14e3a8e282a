"""Browser tests: the real app under uvicorn on a free port, driven by Debian's Chromium.

Skipped (with the reason) where /usr/bin/chromium or Playwright is missing. One
browser per session; a fresh app, data dir and database per test.

Every test leaves a screenshot of each page it still has open when it ends, passed or
failed, as a test artifact: ``$LABELLOOP_ARTIFACTS/browser/<file>--<test>/final-N.png``
(default ``test-artifacts/browser/...`` in the checkout, a folder that ignores itself in
git), with ``result.txt`` giving the outcome and each screenshot's URL.

The README's screenshots (:func:`shot`) go to ``<artifacts>/screenshots/NAME.png`` too, so
running the suite never rewrites the committed ``docs/screenshots``;
``scripts/refresh_screenshots.sh`` runs the tests that take them and copies them there.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import Session

from service.config import Settings
from service.main import create_app
from tests.conftest import make_settings, serve_app

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
PASSWORD = "correct-horse-1"


def artifacts_root() -> Path:
    """Where test artifacts go: $LABELLOOP_ARTIFACTS, else test-artifacts/ in the checkout."""
    env = os.environ.get("LABELLOOP_ARTIFACTS")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "test-artifacts"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Keep each phase's report on the test item (rep_setup, rep_call) for the artifacts."""
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


class Artifacts:
    """Final screenshots of a test's pages (see the module docstring)."""

    def __init__(self, node: pytest.Item) -> None:
        self.node = node
        name = re.sub(r"[^\w.-]+", "_", f"{node.path.stem}--{node.name}")
        self.dir = artifacts_root() / "browser" / name
        shutil.rmtree(self.dir, ignore_errors=True)  # no stale shots from an earlier run
        self.contexts: list[Any] = []
        self.lines: list[str] = []

    def watch(self, ctx: Any) -> None:
        self.contexts.append(ctx)

    def outcome(self) -> str:
        for when in ("call", "setup"):
            rep = getattr(self.node, f"rep_{when}", None)
            if rep is not None and (when == "call" or not rep.passed):
                return f"{rep.outcome} ({when})" if when == "setup" else rep.outcome
        return "unknown"

    def capture(self) -> None:
        """Screenshot every open page of the watched contexts (once), then write result.txt."""
        contexts, self.contexts = self.contexts, []
        for ctx in contexts:
            try:
                pages = list(ctx.pages)
            except Exception:  # noqa: BLE001 - a closed or crashed context has nothing to show
                continue
            for page in pages:
                path = self.dir / f"final-{len(self.lines) + 1}.png"
                try:
                    self.dir.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(path), full_page=True, timeout=10_000)
                    self.lines.append(f"{path.name}\t{page.url}")
                except Exception as e:  # noqa: BLE001 - an artifact must never fail the test
                    self.lines.append(f"(no screenshot: {type(e).__name__}: {e})\t{page.url}")
        if self.lines:
            root = artifacts_root()
            ignore = root / ".gitignore"
            if not ignore.exists():
                ignore.write_text("# test artifacts (browser screenshots): never committed\n*\n")
            (self.dir / "result.txt").write_text(
                f"test: {self.node.nodeid}\noutcome: {self.outcome()}\n" + "\n".join(self.lines) + "\n")


@pytest.fixture(autouse=True)
def artifacts(request: pytest.FixtureRequest) -> Iterator[Artifacts]:
    """Every browser test: screenshots of its final page(s), whether it passed or failed.

    new_page captures its contexts just before closing them; whatever is still watched
    here (a context a test made some other way and registered) is captured at the end.
    """
    a = Artifacts(request.node)
    yield a
    a.capture()




@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need the playwright Python package")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        yield b
        b.close()


@dataclass
class Live:
    """A running app: its URL, engine, and helpers to make users, projects and API calls."""

    url: str
    app: Any
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def engine(self) -> Any:
        return self.app.state.engine

    def has_route(self, method: str, path: str) -> bool:
        """Whether the API offers ``method path`` (path after /api/v1, as in OpenAPI)."""
        paths = self.app.openapi().get("paths", {})
        return method.lower() in paths.get("/api/v1" + path, {})

    def user(self, name: str, role: str = "labeler") -> str:
        from service.crud.users import create_user
        from service.models import Role
        from service.security import issue_token

        with Session(self.engine) as s:
            u = create_user(s, name=name, role=Role(role), password=PASSWORD)
            _, tok, _ = issue_token(s, u, name="test")
            s.commit()
        self.tokens[name] = tok
        return tok

    def member(self, project_id: int, name: str, role: str) -> None:
        from service.crud.projects import set_member
        from service.models import Project, Role

        with Session(self.engine) as s:
            p = s.get(Project, project_id)
            assert p is not None
            set_member(s, project=p, user_name=name, role=Role(role), by=None)  # type: ignore[arg-type]
            s.commit()

    def model_version(self, project_id: int, version: int = 1, **kw: Any) -> int:
        """A ready model version row (as a training would leave it); returns its id."""
        from service.crud.classes import class_names
        from service.models import ModelVersion

        with Session(self.engine) as s:
            mv = ModelVersion(project_id=project_id, version=version, status="ready", is_current=True,
                              classes=class_names(s, project_id), **kw)
            s.add(mv)
            s.commit()
            assert mv.id is not None
            return mv.id

    def propose(self, project_id: int, mv_id: int, proposals: list[tuple[int, str, float]],
                flags: dict[int, str] | None = None) -> list[int]:
        """Proposed pre-labels ``(item_id, label, score)`` (+ open hard-example flags); prediction ids."""
        from service.models import Item, ItemStatus, Prediction, ReviewFlag

        ids = []
        with Session(self.engine) as s:
            for item_id, label, score in proposals:
                p = Prediction(item_id=item_id, project_id=project_id, model_version_id=mv_id, label=label,
                               score=score, state="proposed", data={"labels": [label]})
                s.add(p)
                item = s.get(Item, item_id)
                assert item is not None
                item.status = ItemStatus.proposed
                s.add(item)
                s.flush()
                assert p.id is not None
                ids.append(p.id)
            for item_id, kind in (flags or {}).items():
                s.add(ReviewFlag(project_id=project_id, item_id=item_id, model_version_id=mv_id, kind=kind,
                                 score=0.9))
            s.commit()
        return ids

    def flag(self, project_id: int, item_id: int, kind: str, score: float, **detail: Any) -> int:
        """An open hard-example flag (as a scan would leave it); returns its id."""
        from service.models import ReviewFlag

        with Session(self.engine) as s:
            f = ReviewFlag(project_id=project_id, item_id=item_id, kind=kind, score=score, detail=detail)
            s.add(f)
            s.commit()
            assert f.id is not None
            return f.id

    def grid_pages(self, project_id: int, pages: dict[int, list[dict[str, Any]]]) -> int:
        """A succeeded ``cluster`` job that cut ``pages`` (by size, fields as GridPage's); its id."""
        from tests.factories import cluster_job

        with Session(self.engine) as s:
            job_id = cluster_job(s, project_id, pages)
            s.commit()
            return job_id

    def api(self, name: str) -> httpx.Client:
        return httpx.Client(base_url=self.url + "/api/v1", timeout=30,
                            headers={"Authorization": f"Bearer {self.tokens[name]}"})

    def project(self, owner: str, *, name: str = "pets", classes: list[str] | None = None,
                task: str = "multiclass", n_images: int = 12, size: tuple[int, int] = (64, 48)) -> dict:
        with self.api(owner) as c:
            classes = classes or ["circle", "square", "triangle"]
            r = c.post("/projects", json={"name": name, "task": task, "classes": classes})
            assert r.status_code == 201, r.text
            p = r.json()
            if n_images:
                files = [("files", (f"img_{i:03d}.png", shape_png(i, size), "image/png"))
                         for i in range(n_images)]
                r = c.post(f"/projects/{p['id']}/items", files=files)
                assert r.status_code == 201, r.text
                assert len(r.json()["created"]) == n_images
        return p


@pytest.fixture
def live_settings() -> dict[str, Any]:
    """Extra Settings for the app under test (a test module may override this fixture)."""
    return {}


@pytest.fixture
def live(tmp_path: Path, live_settings: dict[str, Any]) -> Iterator[Live]:
    settings = make_settings(tmp_path, **{"login_attempts_per_minute": 1000, **live_settings})
    app = create_app(settings, background=False)
    with serve_app(app) as url:
        yield Live(url, app, settings)


@pytest.fixture
def new_page(browser: Any, live: Live, artifacts: Artifacts) -> Iterator[Callable[..., Any]]:
    """new_page(user) -> a signed-in page in its own browser context (own cookies and storage).

    At the end of the test every page still open in these contexts (also pages a test opened
    with ``page.context.new_page()``) is screenshotted into the test's artifacts.
    """
    contexts: list[Any] = []

    def make(user: str | None = None, *, viewport: dict | None = None) -> Any:
        ctx = browser.new_context(viewport=viewport or {"width": 1280, "height": 800}, base_url=live.url)
        ctx.set_default_timeout(60_000)  # a wait gives up only then: generous for a loaded machine
        contexts.append(ctx)
        artifacts.watch(ctx)
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" and "Failed to load" not in m.text
                and "net::" not in m.text else None)
        page.js_errors = errors  # type: ignore[attr-defined]
        if user is not None:
            sign_in(page, user)
        return page

    yield make
    artifacts.capture()
    for c in contexts:
        c.close()


def shape_png(i: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small distinct picture: a circle, square or triangle on a tinted background."""
    import io

    from PIL import Image, ImageDraw

    w, h = size
    bg = [(236, 240, 247), (250, 240, 228), (232, 245, 236), (244, 234, 246)][i % 4]
    im = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(im)
    color = [(214, 69, 65), (52, 120, 246), (46, 160, 90), (240, 170, 40), (140, 80, 200)][(i // 3) % 5]
    cx, cy, r = w * (0.3 + 0.4 * ((i * 7) % 5) / 4), h * (0.35 + 0.3 * ((i * 3) % 4) / 3), min(w, h) * 0.28
    kind = i % 3
    if kind == 0:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
    elif kind == 1:
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=color)
    else:
        d.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=color)
    d.point((i % w, (i // w) % h), fill=(i % 256, 3, 5))  # every file distinct
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def sign_in(page: Any, user: str, password: str = PASSWORD) -> None:
    page.goto("/web/#/login")
    page.get_by_test_id("login-name").fill(user)
    page.get_by_test_id("login-password").fill(password)
    page.get_by_test_id("login-submit").click()
    page.get_by_test_id("whoami").wait_for()


def screenshots_dir() -> Path:
    """Where :func:`shot` saves: ``<artifacts>/screenshots`` (ignored by git)."""
    return artifacts_root() / "screenshots"


def shot(page: Any, name: str) -> None:
    """Save a screenshot for the README as ``screenshots_dir() / NAME.png``
    (``scripts/refresh_screenshots.sh`` copies them into docs/screenshots)."""
    folder = screenshots_dir()
    folder.mkdir(parents=True, exist_ok=True)
    ignore = artifacts_root() / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# test artifacts (browser screenshots): never committed\n*\n")
    page.wait_for_timeout(150)
    page.screenshot(path=str(folder / f"{name}.png"))


def item_ids(live: Live, pid: int) -> list[int]:
    with live.api("boss") as c:
        return [it["id"] for it in c.get(f"/projects/{pid}/items?limit=100").json()["data"]]


def current_item(page: Any) -> int:
    return int(page.get_by_test_id("item-id").inner_text())


def wait_new_item(page: Any, old: int) -> int:
    page.wait_for_function(
        "old => { const el = document.querySelector('[data-testid=item-id]');"
        " return el && Number(el.textContent) !== old; }", arg=old)
    return current_item(page)


def image_point(page: Any, x: float, y: float) -> tuple[float, float]:
    """Screen position of image pixel (x, y) on the stage."""
    box = page.get_by_test_id("stage-image").bounding_box()
    w = float(page.get_by_test_id("stage-image").evaluate("e => parseFloat(e.style.width)"))
    k = box["width"] / w
    return box["x"] + x * k, box["y"] + y * k
