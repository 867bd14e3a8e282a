"""queue indexes: claims read the next items from an index instead of sorting the pool
(strategy stream), and find open audits without scanning every prediction

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 04:00:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.create_index('ix_item_strategy', ['project_id', 'status', 'query_score', 'queue_rank'], unique=False)
        batch_op.create_index('ix_item_rank', ['project_id', 'queue_rank'], unique=False)
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.create_index('ix_prediction_open_audit', ['project_id', 'audit', 'audit_correct'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('prediction', schema=None) as batch_op:
        batch_op.drop_index('ix_prediction_open_audit')
    with op.batch_alter_table('item', schema=None) as batch_op:
        batch_op.drop_index('ix_item_rank')
        batch_op.drop_index('ix_item_strategy')
