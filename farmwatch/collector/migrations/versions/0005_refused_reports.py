"""refused_reports: stored reports the reducer refused (a time outside the contract's bounds,
unreadable JSON), kept as their device's own error evidence (farmwatch/collector/rollups.py).

A new table only. Reports reduced before it existed and skipped then are not revisited.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "refused_reports",
        sa.Column("report_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False,
                  nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.Column("batch", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("report_id"),
    )
    op.create_index(op.f("ix_refused_reports_device_id"), "refused_reports", ["device_id"], unique=False)
    op.create_index(op.f("ix_refused_reports_received_at"), "refused_reports", ["received_at"], unique=False)
    op.create_index(op.f("ix_refused_reports_batch"), "refused_reports", ["batch"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_refused_reports_batch"), table_name="refused_reports")
    op.drop_index(op.f("ix_refused_reports_received_at"), table_name="refused_reports")
    op.drop_index(op.f("ix_refused_reports_device_id"), table_name="refused_reports")
    op.drop_table("refused_reports")
