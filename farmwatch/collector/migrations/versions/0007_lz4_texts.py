"""PostgreSQL: reports.record and rollups.windows compressed with lz4 instead of pglz, where the server has it.

Both texts are over PostgreSQL's ~2 KB compression threshold (a report ~2.2 KB; a device's latest
rollup hour grows by ~0.7 KB a report and is rewritten whole by each reduction batch that adds to
it), so every stored report cost a compression of each. Server CPU per text, measured on this
machine's PostgreSQL 15 (5,000 fixture reports; 100 rollup rows grown to 12 windows): storing a
report 24-28 -> 8-12 us, rewriting a rollup row 33-42 -> 8-25 us (issue 13).

Only values written from now on are compressed so; older ones stay as they are and read the same
(https://www.postgresql.org/docs/15/sql-altertable.html, SET COMPRESSION). A server built without
lz4 (``default_toast_compression`` does not offer it) or older than PostgreSQL 14 keeps pglz.
SQLite does not compress: nothing to do there.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COMPRESSED = (("reports", "record"), ("rollups", "windows"))


def _has_lz4() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    return bool(bind.execute(sa.text(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")).scalar())


def upgrade() -> None:
    if _has_lz4():
        for table, column in COMPRESSED:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")


def downgrade() -> None:
    if _has_lz4():
        for table, column in COMPRESSED:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION default")
