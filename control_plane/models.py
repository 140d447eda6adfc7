"""The control plane's tables: APIs (working copies), their revisions, and where those run."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
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
