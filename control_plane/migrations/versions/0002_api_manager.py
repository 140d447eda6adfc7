"""API Manager model: throttling policies, environments, applications, subscriptions, keys,
revoked tokens; seeds the default tiers and the Default environment.

Revision ID: 0002_api_manager
Revises: 0001_initial
Create Date: 2026-11-23
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002_api_manager"
down_revision: str | None = "0001_initial"
branch_labels: str | None = None
depends_on: str | None = None

JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

#: (kind, name, limit type, messages, unit time, time unit, description); 0 = unlimited.
#: Counts are WebSocket messages (frames) in either direction.
DEFAULT_POLICIES = [
    ("subscription", "AsyncGold", "EVENTCOUNTLIMIT", 5000, 1, "min", "5000 messages a minute"),
    ("subscription", "AsyncSilver", "EVENTCOUNTLIMIT", 2000, 1, "min", "2000 messages a minute"),
    ("subscription", "AsyncBronze", "EVENTCOUNTLIMIT", 1000, 1, "min", "1000 messages a minute"),
    ("subscription", "AsyncUnlimited", "EVENTCOUNTLIMIT", 0, 1, "min", "No limit"),
    ("subscription", "Gold", "REQUESTCOUNTLIMIT", 5000, 1, "min", "5000 messages a minute"),
    ("subscription", "Silver", "REQUESTCOUNTLIMIT", 2000, 1, "min", "2000 messages a minute"),
    ("subscription", "Bronze", "REQUESTCOUNTLIMIT", 1000, 1, "min", "1000 messages a minute"),
    ("subscription", "Unlimited", "REQUESTCOUNTLIMIT", 0, 1, "min", "No limit"),
    ("application", "10PerMin", "REQUESTCOUNTLIMIT", 10, 1, "min", "10 messages a minute"),
    ("application", "20PerMin", "REQUESTCOUNTLIMIT", 20, 1, "min", "20 messages a minute"),
    ("application", "50PerMin", "REQUESTCOUNTLIMIT", 50, 1, "min", "50 messages a minute"),
    ("application", "Unlimited", "REQUESTCOUNTLIMIT", 0, 1, "min", "No limit"),
    ("api", "10KPerMin", "REQUESTCOUNTLIMIT", 10000, 1, "min", "10000 messages a minute"),
    ("api", "20KPerMin", "REQUESTCOUNTLIMIT", 20000, 1, "min", "20000 messages a minute"),
    ("api", "50KPerMin", "REQUESTCOUNTLIMIT", 50000, 1, "min", "50000 messages a minute"),
    ("api", "Unlimited", "REQUESTCOUNTLIMIT", 0, 1, "min", "No limit"),
]


def upgrade() -> None:
    policies = op.create_table(
        "throttling_policies",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("limit_type", sa.String(32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("unit_time", sa.Integer(), nullable=False),
        sa.Column("time_unit", sa.String(8), nullable=False),
        sa.Column("stop_on_quota_reach", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_throttling_policies"),
        sa.UniqueConstraint("kind", "name", name="uq_throttling_policies_kind_name"),
    )
    environments = op.create_table(
        "environments",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("display_name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("vhosts", JSON_DOCUMENT, nullable=False),
        sa.Column("read_only", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_environments"),
        sa.UniqueConstraint("name", name="uq_environments_name"),
    )
    op.create_table(
        "applications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("throttling_policy", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("attributes", JSON_DOCUMENT, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_applications"),
        sa.UniqueConstraint("owner", "name", name="uq_applications_owner_name"),
    )
    op.create_index("ix_applications_owner", "applications", ["owner"])
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("api_id", sa.Uuid(), nullable=False),
        sa.Column("tier", sa.String(255), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name="fk_subscriptions_application_id_applications",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["api_id"], ["apis.id"], name="fk_subscriptions_api_id_apis"),
        sa.PrimaryKeyConstraint("id", name="pk_subscriptions"),
        sa.UniqueConstraint(
            "application_id", "api_id", name="uq_subscriptions_application_id_api_id"
        ),
    )
    op.create_index("ix_subscriptions_application_id", "subscriptions", ["application_id"])
    op.create_index("ix_subscriptions_api_id", "subscriptions", ["api_id"])
    op.create_table(
        "key_mappings",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("application_id", sa.Uuid(), nullable=False),
        sa.Column("key_type", sa.String(16), nullable=False),
        sa.Column("consumer_key", sa.String(64), nullable=False),
        sa.Column("secret_hash", sa.String(255), nullable=False),
        sa.Column("grant_types", JSON_DOCUMENT, nullable=False),
        sa.Column("validity_time", sa.Integer(), nullable=False),
        sa.Column("callback_url", sa.String(1024), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["application_id"],
            ["applications.id"],
            name="fk_key_mappings_application_id_applications",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_key_mappings"),
        sa.UniqueConstraint("consumer_key", name="uq_key_mappings_consumer_key"),
        sa.UniqueConstraint(
            "application_id", "key_type", name="uq_key_mappings_application_id_key_type"
        ),
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("jti", name="pk_revoked_tokens"),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])

    op.bulk_insert(
        policies,
        [
            {
                "id": uuid.uuid4(),
                "kind": kind,
                "name": name,
                "display_name": name,
                "description": description,
                "limit_type": limit_type,
                "count": count,
                "unit_time": unit_time,
                "time_unit": time_unit,
                "stop_on_quota_reach": True,
            }
            for kind, name, limit_type, count, unit_time, time_unit, description in DEFAULT_POLICIES
        ],
    )
    op.bulk_insert(
        environments,
        [
            {
                "id": uuid.uuid4(),
                "name": "Default",
                "display_name": "Default",
                "description": "The gateway environment every router and enforcer joins "
                "unless told otherwise (WSGATE_LABEL).",
                "vhosts": [{"host": "localhost", "wsPort": 9090, "wssPort": 9095}],
                "read_only": True,
            }
        ],
    )


def downgrade() -> None:
    op.drop_index("ix_revoked_tokens_expires_at", table_name="revoked_tokens")
    op.drop_table("revoked_tokens")
    op.drop_table("key_mappings")
    op.drop_index("ix_subscriptions_api_id", table_name="subscriptions")
    op.drop_index("ix_subscriptions_application_id", table_name="subscriptions")
    op.drop_table("subscriptions")
    op.drop_index("ix_applications_owner", table_name="applications")
    op.drop_table("applications")
    op.drop_table("environments")
    op.drop_table("throttling_policies")
