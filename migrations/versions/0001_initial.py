"""Initial schema: pools, ranges, addresses and the append-only audit trail.

Written as plain DDL so this revision stays what it was when later ones change the tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


UPGRADE: list[str] = [
    """
    CREATE TABLE pools (
        id serial CONSTRAINT pk_pools PRIMARY KEY,
        name text NOT NULL CONSTRAINT uq_pools_name UNIQUE,
        position integer NOT NULL,
        family smallint NOT NULL,
        subnet cidr NOT NULL,
        gateway inet,
        vlan integer CONSTRAINT ck_pools_vlan_range CHECK (vlan IS NULL OR vlan BETWEEN 0 AND 4094),
        node_subnets cidr[] NOT NULL,
        size numeric NOT NULL,
        materialized_upto inet,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    CREATE TABLE ranges (
        id serial CONSTRAINT pk_ranges PRIMARY KEY,
        pool_id integer NOT NULL
            CONSTRAINT fk_ranges_pool_id_pools REFERENCES pools (id) ON DELETE CASCADE,
        position integer NOT NULL,
        "first" inet NOT NULL,
        "last" inet NOT NULL,
        size numeric NOT NULL,
        CONSTRAINT ck_ranges_ordered CHECK ("first" <= "last")
    )
    """,
    """
    CREATE UNIQUE INDEX ix_ranges_pool_first ON ranges (pool_id, "first")
    """,
    """
    CREATE TABLE addresses (
        id bigserial CONSTRAINT pk_addresses PRIMARY KEY,
        pool_id integer NOT NULL
            CONSTRAINT fk_addresses_pool_id_pools REFERENCES pools (id) ON DELETE RESTRICT,
        address inet NOT NULL CONSTRAINT uq_addresses_address UNIQUE,
        state text NOT NULL DEFAULT 'free',
        owner_key text,
        policy text,
        pod_namespace text,
        pod_name text,
        pod_uid text,
        node text,
        slot smallint NOT NULL DEFAULT 0,
        kept_ttl_seconds integer,
        note text,
        allocated_at timestamptz,
        bound_at timestamptz,
        kept_since timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now(),
        CONSTRAINT ck_addresses_state_known
            CHECK (state IN ('free', 'allocated', 'kept', 'reserved')),
        CONSTRAINT ck_addresses_owner_iff_taken CHECK ((state = 'free') = (owner_key IS NULL)),
        CONSTRAINT ck_addresses_pod_iff_allocated
            CHECK ((state = 'allocated') = (pod_uid IS NOT NULL))
    )
    """,
    """
    CREATE INDEX ix_addresses_free ON addresses (pool_id, address) WHERE state = 'free'
    """,
    """
    CREATE INDEX ix_addresses_owner ON addresses (owner_key) WHERE owner_key IS NOT NULL
    """,
    """
    CREATE INDEX ix_addresses_pod_uid ON addresses (pod_uid) WHERE pod_uid IS NOT NULL
    """,
    """
    CREATE INDEX ix_addresses_pod ON addresses (pod_namespace, pod_name)
        WHERE pod_name IS NOT NULL
    """,
    """
    CREATE INDEX ix_addresses_taken ON addresses (pool_id, state) WHERE state <> 'free'
    """,
    """
    CREATE TABLE audit (
        id bigserial CONSTRAINT pk_audit PRIMARY KEY,
        at timestamptz NOT NULL DEFAULT clock_timestamp(),
        actor text NOT NULL,
        action text NOT NULL,
        address inet,
        pool text,
        owner_key text,
        pod_namespace text,
        pod_name text,
        pod_uid text,
        before jsonb,
        after jsonb,
        reason text,
        request_id text
    )
    """,
    """
    CREATE INDEX ix_audit_at ON audit (at)
    """,
    """
    CREATE INDEX ix_audit_address ON audit (address)
    """,
    """
    CREATE INDEX ix_audit_pod_uid ON audit (pod_uid)
    """,
    """
    CREATE INDEX ix_audit_owner ON audit (owner_key)
    """,
    """
    -- Append-only, whoever connects: grants bind ordinary roles, this trigger binds owners.
    CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'audit is append-only: % refused', TG_OP
            USING ERRCODE = 'insufficient_privilege';
    END;
    $$
    """,
    """
    CREATE TRIGGER audit_no_update_delete BEFORE UPDATE OR DELETE ON audit
        FOR EACH ROW EXECUTE FUNCTION audit_is_append_only()
    """,
    """
    CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit
        FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only()
    """,
    """
    REVOKE UPDATE, DELETE, TRUNCATE ON audit FROM PUBLIC
    """,
]


def upgrade() -> None:
    # asyncpg runs one statement per call.
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for table in ("audit", "addresses", "ranges", "pools"):
        op.execute(f"DROP TABLE {table}")
    op.execute("DROP FUNCTION audit_is_append_only()")
