"""seq_conflicts: per device, how many reports the store refused because their seq was taken.

Issue 16 (tampering is evidence): a sequence that restarts shows only as reports refused with 409
(the agent renumbers and re-sends them), so the collector counts them here and stamps the count on
every stored record (farmwatch/collector/agent_history.py). One row per device: bounded. Nothing to
copy: earlier refusals were not kept.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('seq_conflicts',
    sa.Column('device_id', sa.String(length=128), nullable=False),
    sa.Column('conflicts', sa.BigInteger(), nullable=False),
    sa.Column('first_at', sa.DateTime(), nullable=False),
    sa.Column('last_at', sa.DateTime(), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.device_id'], ),
    sa.PrimaryKeyConstraint('device_id')
    )


def downgrade() -> None:
    op.drop_table('seq_conflicts')
