"""Initial schema: apis, api_revisions, revision_deployments.

Revision ID: 0001_initial
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "apis",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("context", sa.String(255), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("provider", sa.String(255), nullable=False),
        sa.Column("lifecycle_status", sa.String(32), nullable=False),
        sa.Column("definition", JSON_DOCUMENT, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_apis"),
        sa.UniqueConstraint("context", "version", name="uq_apis_context_version"),
        sa.UniqueConstraint("name", "version", name="uq_apis_name_version"),
    )
    op.create_table(
        "api_revisions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("api_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("definition", JSON_DOCUMENT, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_id"], ["apis.id"], name="fk_api_revisions_api_id_apis", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_revisions"),
        sa.UniqueConstraint("api_id", "number", name="uq_api_revisions_api_id_number"),
    )
    op.create_index("ix_api_revisions_api_id", "api_revisions", ["api_id"])
    op.create_table(
        "revision_deployments",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("api_id", sa.Uuid(), nullable=False),
        sa.Column("revision_id", sa.Uuid(), nullable=False),
        sa.Column("environment", sa.String(255), nullable=False),
        sa.Column("vhost", sa.String(255), nullable=False),
        sa.Column("display_on_devportal", sa.Boolean(), nullable=False),
        sa.Column("deployed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["api_id"],
            ["apis.id"],
            name="fk_revision_deployments_api_id_apis",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["revision_id"],
            ["api_revisions.id"],
            name="fk_revision_deployments_revision_id_api_revisions",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_revision_deployments"),
        sa.UniqueConstraint(
            "api_id", "environment", name="uq_revision_deployments_api_id_environment"
        ),
    )
    op.create_index("ix_revision_deployments_revision_id", "revision_deployments", ["revision_id"])


def downgrade() -> None:
    op.drop_index("ix_revision_deployments_revision_id", table_name="revision_deployments")
    op.drop_table("revision_deployments")
    op.drop_index("ix_api_revisions_api_id", table_name="api_revisions")
    op.drop_table("api_revisions")
    op.drop_table("apis")
