"""The hold-out stream samples every item no person has labelled, Pending's pre-labelled ones
included, so the hold-out set is not tilted towards what the model finds hard; the strategy
stream never serves a pre-labelled item unless its strategy is ``random``; open audits come first."""

from __future__ import annotations

import random

from sqlmodel import Session, col, select

from service.crud.queue import holdout_counts, next_item
from service.models import Item, ItemStatus, Lease, ModelVersion, Prediction, Project, User
from tests.conftest import Ctx, make_project


class Always(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def _setup(ctx: Ctx, n: int = 12) -> tuple[int, list[int]]:
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=n)["id"]
    with Session(ctx.engine) as s:
        items = list(s.exec(select(Item).where(Item.project_id == pid).order_by(Item.queue_rank)).all())
        proposed = [int(i.id or 0) for i in items[: n // 2]]  # the lowest ranks are pre-labelled
        for it in items[: n // 2]:
            it.status = ItemStatus.proposed
            s.add(it)
        s.commit()
    return pid, proposed


def _claim(ctx: Ctx, pid: int, rng: random.Random) -> tuple[int, str]:
    with Session(ctx.engine) as s:
        project = s.get(Project, pid)
        user = s.exec(select(User).where(User.name == "root")).one()
        assert project is not None
        got = next_item(s, project=project, user=user, ttl_seconds=60, rng=rng)
        assert got is not None
        s.commit()
        return int(got.item.id or 0), got.reason


def test_holdout_draws_pre_labelled_items_in_random_order(ctx: Ctx) -> None:
    pid, proposed = _setup(ctx)
    item, reason = _claim(ctx, pid, Always(0.0))  # 0.0 < holdout_share: the hold-out stream
    assert reason == "holdout" and item == proposed[0]


def test_strategy_stream_skips_pre_labelled_items(ctx: Ctx) -> None:
    pid, proposed = _setup(ctx)
    item, reason = _claim(ctx, pid, Always(0.99))
    assert reason == "random" and item not in proposed  # no model scores yet: random order


def test_random_strategy_draws_pre_labelled_items_too(ctx: Ctx) -> None:
    """Random sampling proper: every item no person labelled is equally likely, Pending's too
    (leaving them out would make the draws depend on what the model is sure of)."""
    pid, proposed = _setup(ctx)
    with Session(ctx.engine) as s:
        project = s.get(Project, pid)
        assert project is not None
        project.policy = {**(project.policy or {}), "strategy": "random"}
        s.add(project)
        s.commit()
    assert _claim(ctx, pid, Always(0.99)) == (proposed[0], "random")
    with Session(ctx.engine) as s:  # asking again renews that lease: the item still has no label
        project = s.get(Project, pid)
        user = s.exec(select(User).where(User.name == "root")).one()
        assert project is not None
        again = next_item(s, project=project, user=user, ttl_seconds=60, rng=Always(0.99))
        assert again is not None and again.renewed and again.item.id == proposed[0]


def test_open_audits_come_first(ctx: Ctx) -> None:
    pid, _ = _setup(ctx)
    with Session(ctx.engine) as s:
        last = s.exec(select(Item).where(Item.project_id == pid).order_by(Item.queue_rank.desc())).first()  # type: ignore[attr-defined]
        assert last is not None and last.id is not None
        last.status = ItemStatus.labelled
        s.add(last)
        mv = ModelVersion(project_id=pid, version=1, name="v1", algorithm="fast", status="ready",
                          classes=["cat", "dog"])
        s.add(mv)
        s.flush()
        s.add(Prediction(item_id=last.id, project_id=pid, model_version_id=int(mv.id or 0), label="cat", score=0.99,
                         state="auto", audit=True, data={"labels": ["cat"]}))
        s.commit()
        audited = last.id
    assert _claim(ctx, pid, Always(0.99)) == (audited, "audit")


def test_random_seed_replays_queue_ranks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # a simulation sets random_seed: the same images get the same places in the random
    # streams on every replay; the service's default (unset) stays unpredictable
    from sqlmodel import Session, col, select

    from service.crud.items import ingest
    from service.crud.projects import create_project
    from service.crud.users import create_user
    from service.db import engine_from_settings, upgrade_schema
    from service.models import Item, ProjectCreate, Role
    from tests.conftest import make_settings, png_bytes

    def ranks(name: str, seed: int | None) -> list[float]:
        settings = make_settings(tmp_path / name, random_seed=seed)
        settings.ensure_dirs()
        engine = engine_from_settings(settings)
        upgrade_schema(engine)
        with Session(engine) as s:
            owner = create_user(s, name="o", role=Role.admin, password=None)
            project = create_project(s, user=owner, data=ProjectCreate(name="p", classes=["a", "b"]))
            ingest(s, project=project, files=[(f"{i}.png", png_bytes(seed=i + 1)) for i in range(6)],
                   settings=settings, thumbnails=False)
            s.commit()
            got = [float(r) for r in s.exec(select(Item.queue_rank).order_by(col(Item.sha256))).all()]
        engine.dispose()
        return got

    first, again, other, unset = ranks("a", 7), ranks("b", 7), ranks("c", 8), ranks("d", None)
    assert first == again and len(set(first)) == 6
    assert first != other and first != unset


def _scored_holdout(
    ctx: Ctx, admin: dict[str, str], pid: int, n: int, scores: list[float]
) -> tuple[list[int], list[int]]:
    """Label the first ``n`` items as hold-out items and give every item a ``query_score``, as
    an inference job leaves them; returns (hold-out ids, pool ids)."""
    with Session(ctx.engine) as s:
        ids = [int(i.id or 0) for i in s.exec(select(Item).where(Item.project_id == pid).order_by(col(Item.id))).all()]
    ghosts, pool = ids[:n], ids[n:]
    for iid in ghosts:
        r = ctx.client.post(f"/api/v1/items/{iid}/annotations", json={"labels": ["cat"]}, headers=admin)
        assert r.status_code == 201, r.text
    with Session(ctx.engine) as s:
        for iid, score in zip(ids, scores, strict=True):
            item = s.get(Item, iid)
            assert item is not None
            item.is_holdout = item.id in ghosts
            item.query_score = score
            s.add(item)
        s.commit()
    return ghosts, pool


def test_strategy_stream_takes_holdout_items_scored_above_what_it_serves(ctx: Ctx) -> None:
    """Hold-out items keep their place in the pool (service/crud/holdout.py)."""
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=8)["id"]
    ghosts, pool = _scored_holdout(ctx, admin, pid, 3, [0.9, 0.5, 0.1, 0.7, 0.3, 0.3, 0.3, 0.3])

    def taken() -> list[str | None]:
        with Session(ctx.engine) as s:
            return [s.get(Item, i).holdout_taken_by for i in ghosts]  # type: ignore[union-attr]

    assert _claim(ctx, pid, Always(0.99)) == (pool[0], "strategy")
    # the 0.9 item would have been served before the 0.7 one; 0.5 and 0.1 would still wait
    assert taken() == ["strategy", None, None]
    stats = ctx.client.get(f"/api/v1/projects/{pid}/stats", headers=admin).json()["queue"]
    assert stats["holdout_labels"] == 3 and stats["holdout_calibrating"] == 2
    assert stats["holdout_taken_by"] == {"strategy": 1}
    ready = ctx.client.get(f"/api/v1/projects/{pid}/readiness", headers=admin).json()
    assert ready["holdout_labels"]["cat"] == 2 and ready["human_labels"]["cat"] == 1
    assert ctx.client.post(f"/api/v1/items/{pool[0]}/skip", headers=admin).status_code in (200, 204)
    assert _claim(ctx, pid, Always(0.99))[1] == "strategy"  # a 0.3 item
    assert taken() == ["strategy", "strategy", None]


def test_random_strategy_stream_leaves_the_holdout_whole(ctx: Ctx) -> None:
    """An order that ignores the images thins pool and hold-out alike: nothing is taken."""
    admin = ctx.user("root", "admin")
    pid = make_project(ctx, admin, n_images=6)["id"]
    r = ctx.client.put(f"/api/v1/projects/{pid}/policy", json={"strategy": "random"}, headers=admin)
    assert r.status_code == 200, r.text
    ghosts, pool = _scored_holdout(ctx, admin, pid, 2, [0.9, 0.8, 0.1, 0.2, 0.3, 0.4])
    with Session(ctx.engine) as s:
        first = min(pool, key=lambda i: s.get(Item, i).queue_rank)  # type: ignore[union-attr]
    assert _claim(ctx, pid, Always(0.99)) == (first, "random")  # the random order, not the scores
    with Session(ctx.engine) as s:
        assert [s.get(Item, i).holdout_taken_by for i in ghosts] == [None, None]  # type: ignore[union-attr]
    stats = ctx.client.get(f"/api/v1/projects/{pid}/stats", headers=admin).json()["queue"]
    assert stats["holdout_calibrating"] == 2 and stats["holdout_taken_by"] == {}


def _set_policy(ctx: Ctx, pid: int, **values: object) -> None:
    with Session(ctx.engine) as s:
        project = s.get(Project, pid)
        assert project is not None
        project.policy = {**(project.policy or {}), **values}
        s.add(project)
        for lease in s.exec(select(Lease)).all():  # the next claim draws afresh
            s.delete(lease)
        s.commit()


def _label(ctx: Ctx, pid: int, n: int, *, holdout: bool, taken: int = 0) -> None:
    """Give the ``n`` highest-ranked unlabelled items a label (hold-out ones, ``taken`` of
    them taken by the strategy stream)."""
    with Session(ctx.engine) as s:
        items = list(s.exec(select(Item).where(Item.project_id == pid, Item.status == ItemStatus.unlabelled)
                            .order_by(col(Item.queue_rank).desc())).all())[:n]
        for k, it in enumerate(items):
            it.status, it.is_holdout = ItemStatus.labelled, holdout
            it.holdout_taken_by = "strategy" if k < taken else None
            s.add(it)
        s.commit()


def test_first_holdout_min_hold_out_labels_are_drawn_sooner(ctx: Ctx) -> None:
    """A draw of 0.25 goes to the hold-out stream while fewer than ``holdout_min`` hold-out
    labels calibrate (share 0.2 raised to 0.3); then hold-out draws pause until the labels
    reach holdout_min / share, and from there the share is 0.2 again."""
    pid, _ = _setup(ctx, n=24)
    _set_policy(ctx, pid, holdout_share=0.2, holdout_min=2)  # front-loads until 10 labels
    assert _claim(ctx, pid, Always(0.25))[1] == "holdout"
    _set_policy(ctx, pid, holdout_min=0)  # 0: plain share
    assert _claim(ctx, pid, Always(0.25))[1] == "random"  # the strategy stream (no scores yet)
    _label(ctx, pid, 3, holdout=True, taken=1)  # two calibrate
    with Session(ctx.engine) as s:
        project = s.get(Project, pid)
        assert project is not None
        project.policy = {**(project.policy or {}), "holdout_min": 5}
        assert holdout_counts(s, project) == (2, 3)
        project.policy = {**project.policy, "holdout_min": 0}
        assert holdout_counts(s, project) is None
    _set_policy(ctx, pid, holdout_min=3)  # two of three: still short
    assert _claim(ctx, pid, Always(0.25))[1] == "holdout"
    _set_policy(ctx, pid, holdout_min=2)  # enough, 3 of 10 labels: paused
    assert _claim(ctx, pid, Always(0.0))[1] == "random"
    _set_policy(ctx, pid, holdout_share=0.4, holdout_min=3)  # raised to 0.5 at most
    assert _claim(ctx, pid, Always(0.49))[1] == "holdout"
    _set_policy(ctx, pid, holdout_share=0.4, holdout_min=3)
    assert _claim(ctx, pid, Always(0.51))[1] == "random"
    _label(ctx, pid, 7, holdout=False)  # 10 labels: 0.2 of them make 2
    _set_policy(ctx, pid, holdout_share=0.2, holdout_min=2)
    with Session(ctx.engine) as s:
        project = s.get(Project, pid)
        assert project is not None and holdout_counts(s, project) is None
    assert _claim(ctx, pid, Always(0.1))[1] == "holdout"
    _set_policy(ctx, pid, holdout_share=0.2, holdout_min=2)
    assert _claim(ctx, pid, Always(0.25))[1] == "random"
