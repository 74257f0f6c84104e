"""Table definitions shared by the repositories and the Alembic migrations.

Addresses are materialised lazily: a row exists only for an address that was handed out
once (or sits in the next small chunk waiting to be), so a /64 costs what it is used for.
``pools.materialized_upto`` is the high-water mark of that walk. See docs/design.md.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, CIDR, INET, JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ADDRESS_STATES = ("free", "allocated", "kept", "reserved")

pools = Table(
    "pools",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text, nullable=False, unique=True),
    Column("position", Integer, nullable=False),
    Column("family", SmallInteger, nullable=False),
    Column("subnet", CIDR, nullable=False),
    Column("gateway", INET, nullable=True),
    Column("vlan", Integer, nullable=True),
    Column("node_subnets", ARRAY(CIDR), nullable=False),
    #: Total addresses of all ranges; numeric because an IPv6 /64 overflows bigint.
    Column("size", Numeric, nullable=False),
    Column("materialized_upto", INET, nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint("vlan IS NULL OR vlan BETWEEN 0 AND 4094", name="vlan_range"),
)

ranges = Table(
    "ranges",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("pool_id", Integer, ForeignKey("pools.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("first", INET, nullable=False),
    Column("last", INET, nullable=False),
    Column("size", Numeric, nullable=False),
    CheckConstraint('"first" <= "last"', name="ordered"),
    Index("ix_ranges_pool_first", "pool_id", "first", unique=True),
)

addresses = Table(
    "addresses",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("pool_id", Integer, ForeignKey("pools.id", ondelete="RESTRICT"), nullable=False),
    #: The one fact the database guards above all: an address exists once.
    Column("address", INET, nullable=False, unique=True),
    Column("state", Text, nullable=False, server_default=text("'free'")),
    Column("owner_key", Text, nullable=True),
    Column("policy", Text, nullable=True),
    Column("pod_namespace", Text, nullable=True),
    Column("pod_name", Text, nullable=True),
    Column("pod_uid", Text, nullable=True),
    Column("node", Text, nullable=True),
    #: Position of this address in a multi-address pod (request_ip_range order).
    Column("slot", SmallInteger, nullable=False, server_default=text("0")),
    Column("kept_ttl_seconds", Integer, nullable=True),
    Column("note", Text, nullable=True),
    Column("allocated_at", DateTime(timezone=True), nullable=True),
    #: Set once the pod's Binding was created; unbound allocations are the reconciler's.
    Column("bound_at", DateTime(timezone=True), nullable=True),
    Column("kept_since", DateTime(timezone=True), nullable=True),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(f"state IN {ADDRESS_STATES!r}", name="state_known"),
    CheckConstraint(
        "(state = 'free') = (owner_key IS NULL)", name="owner_iff_taken"
    ),
    CheckConstraint(
        "(state = 'allocated') = (pod_uid IS NOT NULL)", name="pod_iff_allocated"
    ),
    # Allocation picks the lowest free address of a pool through this index.
    Index("ix_addresses_free", "pool_id", "address", postgresql_where=text("state = 'free'")),
    Index("ix_addresses_owner", "owner_key", postgresql_where=text("owner_key IS NOT NULL")),
    Index("ix_addresses_pod_uid", "pod_uid", postgresql_where=text("pod_uid IS NOT NULL")),
    Index("ix_addresses_pod", "pod_namespace", "pod_name",
          postgresql_where=text("pod_name IS NOT NULL")),
    Index("ix_addresses_taken", "pool_id", "state", postgresql_where=text("state <> 'free'")),
)

audit = Table(
    "audit",
    metadata,
    Column("id", BigInteger, primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False,
           server_default=text("clock_timestamp()")),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("address", INET, nullable=True),
    Column("pool", Text, nullable=True),
    Column("owner_key", Text, nullable=True),
    Column("pod_namespace", Text, nullable=True),
    Column("pod_name", Text, nullable=True),
    Column("pod_uid", Text, nullable=True),
    Column("before", JSONB, nullable=True),
    Column("after", JSONB, nullable=True),
    Column("reason", Text, nullable=True),
    Column("request_id", Text, nullable=True),
    Index("ix_audit_at", "at"),
    Index("ix_audit_address", "address"),
    Index("ix_audit_pod_uid", "pod_uid"),
    Index("ix_audit_owner", "owner_key"),
)
