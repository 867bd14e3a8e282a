"""grid pages in their own table (and their skips) instead of cluster jobs' result JSON

Before, a ``cluster`` job stored its pages in ``job.result["pages"]`` (``{"4": [...],
"6": [...], "9": [...]}``) and whether a page was closed was recovered from the
audit log (``grid.confirm`` closes a page for everyone, ``grid.skip`` for the one
who skipped it). Upgrade moves every stored page into ``grid_page``, its state from
the audit log into ``confirmed_at`` / ``confirmed_by`` and ``grid_page_skip``, and
leaves ``n_pages`` per size in the result. Downgrade puts the pages back into the
results (the audit log still holds their state) and drops the tables.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 07:00:00
"""
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_job = sa.table('job', sa.column('id', sa.Integer), sa.column('project_id', sa.Integer),
                sa.column('kind', sa.String), sa.column('result', sa.JSON), sa.column('created_at', sqlmodel.sql.sqltypes.UTCDateTime))
_audit = sa.table('auditlog', sa.column('at', sqlmodel.sql.sqltypes.UTCDateTime), sa.column('user_id', sa.Integer),
                  sa.column('action', sa.String), sa.column('detail', sa.JSON))
_user = sa.table('user', sa.column('id', sa.Integer))
PAGE_FIELDS = ('cluster', 'item_ids', 'cohesion', 'suggested_class', 'confidence', 'agreement', 'holdout_ids')


def _create_tables() -> None:
    op.create_table('grid_page',
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('cluster', sa.Integer(), nullable=False),
    sa.Column('cohesion', sa.Float(), nullable=False),
    sa.Column('suggested_class', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('agreement', sa.Float(), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('item_ids', sa.JSON(), nullable=False),
    sa.Column('holdout_ids', sa.JSON(), nullable=False),
    sa.Column('confirmed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('confirmed_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['confirmed_by'], ['user.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['job_id'], ['job.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'size', 'position')
    )
    with op.batch_alter_table('grid_page', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_grid_page_job_id'), ['job_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_grid_page_project_id'), ['project_id'], unique=False)
    op.create_table('grid_page_skip',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('page_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['page_id'], ['grid_page.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['user.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('page_id', 'user_id')
    )
    with op.batch_alter_table('grid_page_skip', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_grid_page_skip_page_id'), ['page_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_grid_page_skip_user_id'), ['user_id'], unique=False)


def _pages_table() -> sa.TableClause:
    when = sqlmodel.sql.sqltypes.UTCDateTime
    return sa.table('grid_page', sa.column('id', sa.Integer), sa.column('job_id', sa.Integer),
                    sa.column('project_id', sa.Integer), sa.column('size', sa.Integer),
                    sa.column('position', sa.Integer), sa.column('created_at', when),
                    sa.column('confirmed_at', when), sa.column('confirmed_by', sa.Integer),
                    sa.column('cluster', sa.Integer), sa.column('item_ids', sa.JSON), sa.column('cohesion', sa.Float),
                    sa.column('suggested_class', sa.String), sa.column('confidence', sa.Float),
                    sa.column('agreement', sa.Float), sa.column('holdout_ids', sa.JSON))


def _position(page: dict[str, Any], index: int) -> int:
    """The ``<index>`` of a page id ``"<job>-<size>-<index>"`` (its list index if malformed)."""
    try:
        return int(str(page.get('id', '')).split('-')[2])
    except (IndexError, ValueError):
        return index


def upgrade() -> None:
    _create_tables()
    bind = op.get_bind()
    pages = _pages_table()
    skips = sa.table('grid_page_skip', sa.column('page_id', sa.Integer), sa.column('user_id', sa.Integer),
                     sa.column('created_at', sqlmodel.sql.sqltypes.UTCDateTime))
    users = {int(u) for u in bind.execute(sa.select(_user.c.id)).scalars()}
    closing: dict[str, list[tuple[str, Any, int | None]]] = {}  # page id -> [(action, at, user)]
    for at, user_id, action, detail in bind.execute(
            sa.select(_audit.c.at, _audit.c.user_id, _audit.c.action, _audit.c.detail)
            .where(_audit.c.action.in_(['grid.confirm', 'grid.skip'])).order_by(_audit.c.at)).all():
        if isinstance(detail, dict) and detail.get('page_id') is not None:
            closing.setdefault(str(detail['page_id']), []).append((action, at, user_id))
    rows = bind.execute(sa.select(_job.c.id, _job.c.project_id, _job.c.result, _job.c.created_at)
                        .where(_job.c.kind == 'cluster').order_by(_job.c.id)).all()
    for job_id, project_id, result, created_at in rows:
        if not isinstance(result, dict) or not isinstance(result.get('pages'), dict) or project_id is None:
            continue
        counts: dict[str, int] = {}
        for size, listed in result['pages'].items():
            counts[str(size)] = len(listed)
            for n, page in enumerate(listed):
                position = _position(page, n)
                events = closing.get(f'{job_id}-{int(size)}-{position}', [])
                confirm = next(((at, u) for a, at, u in events if a == 'grid.confirm'), None)
                new_id = bind.execute(pages.insert().returning(pages.c.id).values(
                    job_id=job_id, project_id=project_id, size=int(size), position=position, created_at=created_at,
                    confirmed_at=confirm[0] if confirm else None,
                    confirmed_by=confirm[1] if confirm and confirm[1] in users else None,
                    cluster=int(page.get('cluster', 0)), item_ids=list(page.get('item_ids', [])),
                    cohesion=float(page.get('cohesion', 0.0)), suggested_class=page.get('suggested_class'),
                    confidence=page.get('confidence'), agreement=page.get('agreement'),
                    holdout_ids=list(page.get('holdout_ids', [])))).scalar_one()
                skipped = {u: at for a, at, u in events if a == 'grid.skip' and u in users}
                for user_id, at in skipped.items():
                    bind.execute(skips.insert().values(page_id=new_id, user_id=user_id, created_at=at))
        rest = {k: v for k, v in result.items() if k != 'pages'}
        bind.execute(_job.update().where(_job.c.id == job_id).values(result={**rest, 'n_pages': counts}))


def downgrade() -> None:
    bind = op.get_bind()
    pages = _pages_table()
    by_job: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for row in bind.execute(sa.select(*(pages.c[c] for c in ('job_id', 'size', 'position', *PAGE_FIELDS)))
                            .order_by(pages.c.job_id, pages.c.size, pages.c.position)).mappings():
        page = {'id': f"{row['job_id']}-{row['size']}-{row['position']}", **{f: row[f] for f in PAGE_FIELDS}}
        by_job.setdefault(int(row['job_id']), {}).setdefault(str(row['size']), []).append(page)
    for job_id, result in bind.execute(sa.select(_job.c.id, _job.c.result).where(_job.c.kind == 'cluster')).all():
        if not isinstance(result, dict) or ('n_pages' not in result and job_id not in by_job):
            continue
        rest = {k: v for k, v in result.items() if k != 'n_pages'}
        listed = {str(s): by_job.get(job_id, {}).get(str(s), []) for s in (result.get('n_pages') or {})}
        listed.update(by_job.get(job_id, {}))
        bind.execute(_job.update().where(_job.c.id == job_id).values(result={**rest, 'pages': listed}))
    op.drop_table('grid_page_skip')
    op.drop_table('grid_page')
