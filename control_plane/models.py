"""The control plane's tables: APIs (working copies), their revisions, and where those run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

#: JSONB on PostgreSQL (indexable, compact), plain JSON text elsewhere.
JsonDocument = JSON().with_variant(JSONB(), "postgresql")

#: Constraint names are fixed so that migrations can refer to them on every database.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Api(Base):
    """The working copy of an API as the publisher last saved it."""

    __tablename__ = "apis"
    __table_args__ = (
        UniqueConstraint("context", "version"),
        UniqueConstraint("name", "version"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255))
    context: Mapped[str] = mapped_column(String(255))
    version: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(255))
    lifecycle_status: Mapped[str] = mapped_column(String(32))
    #: The whole API as WSO2 publisher JSON (schemas.ApiBody), the source of every snapshot.
    definition: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    revisions: Mapped[list[ApiRevision]] = relationship(
        back_populates="api",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="ApiRevision.number",
    )


class ApiRevision(Base):
    """An immutable snapshot of an API: what actually gets deployed to gateways."""

    __tablename__ = "api_revisions"
    __table_args__ = (UniqueConstraint("api_id", "number"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    api_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apis.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    description: Mapped[str] = mapped_column(Text, default="")
    definition: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    api: Mapped[Api] = relationship(back_populates="revisions")
    deployments: Mapped[list[RevisionDeployment]] = relationship(
        back_populates="revision",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="RevisionDeployment.environment",
    )


class RevisionDeployment(Base):
    """One revision running on one gateway environment.

    ``api_id`` is repeated here so that the database itself guarantees at most one revision of
    an API per environment.
    """

    __tablename__ = "revision_deployments"
    __table_args__ = (UniqueConstraint("api_id", "environment"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    api_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apis.id", ondelete="CASCADE"))
    revision_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_revisions.id", ondelete="CASCADE"), index=True
    )
    environment: Mapped[str] = mapped_column(String(255))
    vhost: Mapped[str] = mapped_column(String(255))
    display_on_devportal: Mapped[bool] = mapped_column(Boolean, default=True)
    deployed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    revision: Mapped[ApiRevision] = relationship(back_populates="deployments")


# --- admin: throttling policies and gateway environments --------------------------------------


class ThrottlingPolicy(Base):
    """A tier: ``count`` messages (WebSocket frames) per ``unit_time`` ``time_unit``.

    ``kind`` is ``subscription``, ``application`` or ``api`` (WSO2's "advanced" policies);
    names are unique per kind. A ``count`` of 0 means unlimited.
    """

    __tablename__ = "throttling_policies"
    __table_args__ = (UniqueConstraint("kind", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    #: EVENTCOUNTLIMIT or REQUESTCOUNTLIMIT (both count WebSocket messages here).
    limit_type: Mapped[str] = mapped_column(String(32))
    count: Mapped[int] = mapped_column(BigInteger)
    unit_time: Mapped[int] = mapped_column(Integer)
    time_unit: Mapped[str] = mapped_column(String(8))
    stop_on_quota_reach: Mapped[bool] = mapped_column(Boolean, default=True)


class Environment(Base):
    """A gateway environment (a gateway label) revisions deploy to."""

    __tablename__ = "environments"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    #: ``[{"host": ..., "wsPort": ..., "wssPort": ...}, ...]``
    vhosts: Mapped[list[dict[str, Any]]] = mapped_column(JsonDocument)
    read_only: Mapped[bool] = mapped_column(Boolean, default=False)


# --- developer portal: applications, subscriptions, keys ---------------------------------------


class Application(Base):
    __tablename__ = "applications"
    __table_args__ = (UniqueConstraint("owner", "name"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100))
    owner: Mapped[str] = mapped_column(String(255), index=True)
    throttling_policy: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    attributes: Mapped[dict[str, str]] = mapped_column(JsonDocument)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    subscriptions: Mapped[list[Subscription]] = relationship(
        back_populates="application",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="Subscription.created_at",
    )
    keys: Mapped[list[KeyMapping]] = relationship(
        back_populates="application",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="KeyMapping.key_type",
    )
    api_keys: Mapped[list[ApiKey]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, order_by="ApiKey.issued_at"
    )


class Subscription(Base):
    """An application subscribed to an API on a tier; ``api_id`` keeps the API from being
    deleted while the subscription exists."""

    __tablename__ = "subscriptions"
    __table_args__ = (UniqueConstraint("application_id", "api_id"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    application_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    api_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("apis.id"), index=True)
    tier: Mapped[str] = mapped_column(String(255))
    #: UNBLOCKED, BLOCKED or PROD_ONLY_BLOCKED.
    state: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    application: Mapped[Application] = relationship(back_populates="subscriptions")
    api: Mapped[Api] = relationship()


class KeyMapping(Base):
    """An application's OAuth2 client for one key type; the secret is kept only as a hash."""

    __tablename__ = "key_mappings"
    __table_args__ = (UniqueConstraint("application_id", "key_type"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    application_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE")
    )
    key_type: Mapped[str] = mapped_column(String(16))
    consumer_key: Mapped[str] = mapped_column(String(64), unique=True)
    secret_hash: Mapped[str] = mapped_column(String(255))
    grant_types: Mapped[list[str]] = mapped_column(JsonDocument)
    validity_time: Mapped[int] = mapped_column(Integer)
    callback_url: Mapped[str] = mapped_column(String(1024), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    application: Mapped[Application] = relationship(back_populates="keys")


class RevokedToken(Base):
    """A revoked access token's ``jti``, kept until the token would have expired anyway."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


class ApiKey(Base):
    """An API key minted for an application and key type (the key itself is not kept: it is
    a signed JWT whose ``jti`` this is). Kept so that the key can be revoked."""

    __tablename__ = "api_keys"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    application_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("applications.id", ondelete="CASCADE"), index=True
    )
    key_type: Mapped[str] = mapped_column(String(16))
    issued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    #: Epoch seconds; None for a key that never expires.
    expires_at: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
