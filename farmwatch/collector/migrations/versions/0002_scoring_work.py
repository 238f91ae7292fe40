"""scoring_work: the devices that need scoring, claimed in batches by whichever replica gets them.

Issue 12 (no single leased scorer): ingest marks a device here, every replica claims disjoint
batches (farmwatch/collector/scoring_work.py). Nothing to copy from the previous schema: each
collector marks the devices whose verdicts are stale when its scoring loop starts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scoring_work',
    sa.Column('device_id', sa.String(length=128), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('dirtied_at', sa.DateTime(), nullable=False),
    sa.Column('claimed_by', sa.String(length=128), nullable=True),
    sa.Column('claimed_until', sa.DateTime(), nullable=True),
    sa.Column('claimed_version', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('device_id')
    )
    op.create_index(op.f('ix_scoring_work_dirtied_at'), 'scoring_work', ['dirtied_at'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_scoring_work_dirtied_at'), table_name='scoring_work')
    op.drop_table('scoring_work')
