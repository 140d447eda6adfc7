"""API keys minted in the developer portal (issue 8): one row per key, for revocation.

An API's securityScheme and corsConfiguration need no schema change: they live in the API's
JSON definition (apis.definition, api_revisions.definition) like every other publisher field,
and definitions stored before this revision read as securityScheme ["oauth2"] and CORS
disabled (WSO2's defaults).

Revision ID: 0003_i8_api_keys
Revises: 0002_api_manager
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003_i8_api_keys"
down_revision: str | None = "0002_api_manager"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=True),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name="fk_api_keys_application_id_applications",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("jti", name="pk_api_keys"),
    )
    op.create_index("ix_api_keys_application_id", "api_keys", ["application_id"])


def downgrade() -> None:
    op.drop_index("ix_api_keys_application_id", table_name="api_keys")
    op.drop_table("api_keys")
