"""job kinds: one ``train`` and one ``infer`` job for every task

Detection and segmentation projects used to run ``train_detector`` / ``infer_detector``
jobs; every task now runs ``train`` and ``infer`` through its pipeline
(:mod:`service.pipelines`). Existing rows are renamed so that the retraining check and
"due after the last inference" see one history per project. The hard-example scan keeps
its kind (``hard_examples``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 07:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_job = sa.table('job', sa.column('id', sa.Integer), sa.column('kind', sa.String),
                sa.column('project_id', sa.Integer))
_project = sa.table('project', sa.column('id', sa.Integer), sa.column('task', sa.String))

RENAMED = {'train_detector': 'train', 'infer_detector': 'infer'}
DETECTION_TASKS = ('detection', 'segmentation')


def upgrade() -> None:
    for old, new in RENAMED.items():
        op.execute(_job.update().where(_job.c.kind == old).values(kind=new))


def downgrade() -> None:
    # only detection and segmentation projects ran the old kinds
    detection = sa.select(_project.c.id).where(sa.cast(_project.c.task, sa.String).in_(DETECTION_TASKS))
    for old, new in RENAMED.items():
        op.execute(_job.update().where(_job.c.kind == new, _job.c.project_id.in_(detection)).values(kind=old))
