"""rollups: incremental features (issue 12): per-device hourly rollups of reduced reports, network
sightings, the reducer's progress and exactly-once markers, and the stored fleet baselines.

New tables only (farmwatch/collector/rollups.py, incremental.py). Nothing to copy: the reducer
starts at report id 0 and reduces every stored report once.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollups",
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("layout", sa.String(length=16), nullable=False),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("last_window_end", sa.DateTime(), nullable=False),
        sa.Column("windows", sa.Text(), nullable=False),
        sa.Column("batch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "hour"),
    )
    op.create_index(op.f("ix_rollups_batch"), "rollups", ["batch"], unique=False)
    op.create_table(
        "rollup_layouts",
        sa.Column("layout", sa.String(length=16), nullable=False),
        sa.Column("columns", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("layout"),
    )
    op.create_table(
        "sightings",
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("identity", sa.String(length=128), nullable=False),
        sa.Column("hour", sa.BigInteger(), nullable=False),
        sa.Column("device_id", sa.String(length=128), nullable=False),
        sa.Column("batch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "identity", "hour", "device_id"),
    )
    op.create_index(op.f("ix_sightings_batch"), "sightings", ["batch"], unique=False)
    op.create_index(op.f("ix_sightings_device_id"), "sightings", ["device_id"], unique=False)
    op.create_table(
        "reduced_reports",
        sa.Column("report_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=False,
                  nullable=False),
        sa.Column("batch", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("report_id"),
    )
    op.create_table(
        "rollup_progress",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("batch", sa.BigInteger(), nullable=False),
        sa.Column("floor_report_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "fleet_baselines",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("computed_at", sa.DateTime(), nullable=False),
        sa.Column("params", sa.String(length=16), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("fleet_baselines")
    op.drop_table("rollup_progress")
    op.drop_table("reduced_reports")
    op.drop_index(op.f("ix_sightings_device_id"), table_name="sightings")
    op.drop_index(op.f("ix_sightings_batch"), table_name="sightings")
    op.drop_table("sightings")
    op.drop_table("rollup_layouts")
    op.drop_index(op.f("ix_rollups_batch"), table_name="rollups")
    op.drop_table("rollups")
