"""The hub's reservations, shared with the advertising service (one capacity authority).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "esap_reservations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("profile", sa.String(length=63), nullable=False),
        sa.Column("namespace", sa.String(length=253), nullable=True),
        sa.Column("pod_name", sa.String(length=253), nullable=True),
        sa.Column("node", sa.String(length=253), nullable=True),
        sa.Column("requests", sa.Text(), nullable=False),
        sa.Column("holds_quota", sa.Boolean(), nullable=False),
        sa.Column("holds_node", sa.Boolean(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.Column("published_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("esap_reservations")
