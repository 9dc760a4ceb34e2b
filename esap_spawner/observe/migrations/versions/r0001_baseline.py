"""The esap tables as esap-spawner wrote them before it had migrations.

A database written then has these tables and no version table: ``esap-spawner db upgrade``
stamps it at this revision and upgrades it from here.

Revision ID: 0001
Revises:
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IN_FLIGHT = sa.text("finished_at IS NULL")


def upgrade() -> None:
    op.create_table(
        "esap_settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "esap_spawns",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=False),
        sa.Column("duration_seconds", sa.Float(), nullable=False),
        sa.Column("profile", sa.String(length=63), nullable=False),
        sa.Column("user_hash", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("failure_reason", sa.Text(), nullable=True),
        sa.Column("validate_seconds", sa.Float(), nullable=True),
        sa.Column("staging_seconds", sa.Float(), nullable=True),
        sa.Column("scheduling_seconds", sa.Float(), nullable=True),
        sa.Column("image_seconds", sa.Float(), nullable=True),
        sa.Column("startup_seconds", sa.Float(), nullable=True),
        sa.Column("datasets", sa.Integer(), nullable=False),
        sa.Column("pod_name", sa.String(length=253), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_esap_spawns_started_at", "esap_spawns", ["started_at"])
    op.create_index(
        "ix_esap_spawns_profile_outcome", "esap_spawns", ["profile", "outcome", "started_at"]
    )
    op.create_table(
        "esap_staging",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("spawn_id", sa.Integer(), nullable=True),
        sa.Column("user_hash", sa.String(length=64), nullable=False),
        sa.Column("did", sa.String(length=512), nullable=False),
        sa.Column("destination_rse", sa.String(length=255), nullable=False),
        sa.Column("rule_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=True),
        sa.Column("files_total", sa.Integer(), nullable=False),
        sa.Column("files_done", sa.Integer(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["spawn_id"], ["esap_spawns.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_esap_staging_created_at", "esap_staging", ["created_at"])
    op.create_index("ix_esap_staging_rule_id", "esap_staging", ["rule_id"])
    op.create_index(
        "uq_esap_staging_in_flight",
        "esap_staging",
        ["user_hash", "did", "destination_rse"],
        unique=True,
        sqlite_where=IN_FLIGHT,
        postgresql_where=IN_FLIGHT,
    )
    op.create_index(
        "uq_esap_staging_rule_in_flight",
        "esap_staging",
        ["rule_id"],
        unique=True,
        sqlite_where=IN_FLIGHT,
        postgresql_where=IN_FLIGHT,
    )
    op.create_table(
        "esap_availability",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("profile", sa.String(length=63), nullable=False),
        sa.Column("can_start_now", sa.Integer(), nullable=True),
        sa.Column("running", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_esap_availability_profile_time", "esap_availability", ["profile", "time"])


def downgrade() -> None:
    for table in ("esap_availability", "esap_staging", "esap_spawns", "esap_settings"):
        op.drop_table(table)
