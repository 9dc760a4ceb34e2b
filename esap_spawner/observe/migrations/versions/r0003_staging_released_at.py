"""When the server a staging request brought data to stopped: ``esap_staging.released_at``.

``remove_staging_rules_on_stop`` removes a rule only when no other request still needs it:
none in flight, and none done for a server that is still running (``released_at`` unset;
security review finding 4). Rows written before this revision have no such moment: they
count as in use, so their rules are left to expire.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("esap_staging") as batch:
        batch.add_column(sa.Column("released_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("esap_staging") as batch:
        batch.drop_column("released_at")
