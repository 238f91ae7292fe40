"""reduction_claims: on SQLite, the devices whose pending reports a reducer claimed before reducing
them, so that two reducers (the scoring processes' catch-up, the reducer process) reduce different
devices' reports at once instead of both preparing the same batch and one throwing it away
(farmwatch/collector/rollups.py).

A new table only; nothing to copy: a claim lives for the few seconds a batch takes.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reduction_claims",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("claimed_until", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_index(op.f("ix_reduction_claims_holder"), "reduction_claims", ["holder"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_reduction_claims_holder"), table_name="reduction_claims")
    op.drop_table("reduction_claims")
