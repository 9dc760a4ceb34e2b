"""A staging rule is unique per user among requests in flight, not across users.

The site's Rucio account holds one rule per DID and RSE, so two users staging one DID wait
on the same rule; the index on ``rule_id`` alone made the second user's row lose its rule
id (security review finding 9). The new index is on (``user_hash``, ``rule_id``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IN_FLIGHT = sa.text("finished_at IS NULL")


def upgrade() -> None:
    op.drop_index("uq_esap_staging_rule_in_flight", table_name="esap_staging")
    op.create_index(
        "uq_esap_staging_user_rule_in_flight",
        "esap_staging",
        ["user_hash", "rule_id"],
        unique=True,
        sqlite_where=IN_FLIGHT,
        postgresql_where=IN_FLIGHT,
    )


def downgrade() -> None:
    op.drop_index("uq_esap_staging_user_rule_in_flight", table_name="esap_staging")
    op.create_index(
        "uq_esap_staging_rule_in_flight",
        "esap_staging",
        ["rule_id"],
        unique=True,
        sqlite_where=IN_FLIGHT,
        postgresql_where=IN_FLIGHT,
    )
