"""Blocks that outlive their subscription, and shared scopes (issue 12).

Revision ID: 0004_i12_hostile
Revises: 0003_i8_api_keys
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_i12_hostile"
down_revision: str | None = "0003_i8_api_keys"
branch_labels: str | None = None
depends_on: str | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "subscription_blocks",
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("api_id", sa.Uuid(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("blocked_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name="fk_subscription_blocks_application_id_applications",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["api_id"],
            ["apis.id"],
            name="fk_subscription_blocks_api_id_apis",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("application_id", "api_id", name="pk_subscription_blocks"),
    )
    # blocks in place before this revision stay blocks
    op.execute(
        "INSERT INTO subscription_blocks (application_id, api_id, state, blocked_at)"
        " SELECT application_id, api_id, state, created_at FROM subscriptions"
        " WHERE state <> 'UNBLOCKED'"
    )
    op.create_table(
        "shared_scopes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("bindings", JSON_DOCUMENT, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_shared_scopes"),
        sa.UniqueConstraint("name", name="uq_shared_scopes_name"),
    )


def downgrade() -> None:
    op.drop_table("shared_scopes")
    op.drop_table("subscription_blocks")
