"""people: one-time invite links, archived classes

``invite`` holds the sha256 of each sign-up link's token with its role, expiry and the
user who used it (:mod:`service.crud.users`). ``label_class.archived`` hides a class from
labelling while the labels that use it keep it (:mod:`service.crud.classes`); every
existing class stays active.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 07:15:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = ('labeler', 'reviewer', 'manager', 'admin')
# the type exists since 0001 (PostgreSQL): use it, do not create it again
ROLE = sa.Enum(*ROLES, name='role').with_variant(postgresql.ENUM(*ROLES, name='role', create_type=False),
                                                 'postgresql')


def upgrade() -> None:
    op.create_table('invite',
    sa.Column('role', ROLE, nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('used_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('used_by', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['user.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['used_by'], ['user.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('invite', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_invite_token_hash'), ['token_hash'], unique=True)
    with op.batch_alter_table('label_class', schema=None) as batch_op:
        batch_op.add_column(sa.Column('archived', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('label_class', schema=None) as batch_op:
        batch_op.drop_column('archived')
    with op.batch_alter_table('invite', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_invite_token_hash'))
    op.drop_table('invite')
