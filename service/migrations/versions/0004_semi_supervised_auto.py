"""policy semi_supervised: null (the algorithm's default) replaces the old default false

Before, ``semi_supervised`` only applied to ``precise`` and defaulted to false, so every
stored policy says false. It now also applies to ``fast`` and null means "on for fast,
off for precise": false becomes null, which keeps ``precise`` projects as they were and
gives ``fast`` projects the new default.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 10:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_project = sa.table('project', sa.column('id', sa.Integer), sa.column('policy', sa.JSON))


def _replace(old: object, new: object) -> None:
    bind = op.get_bind()
    for pid, policy in bind.execute(sa.select(_project.c.id, _project.c.policy)).all():
        if isinstance(policy, dict) and policy.get('semi_supervised', new) is old:
            bind.execute(_project.update().where(_project.c.id == pid)
                         .values(policy={**policy, 'semi_supervised': new}))


def upgrade() -> None:
    _replace(False, None)


def downgrade() -> None:
    _replace(None, False)
