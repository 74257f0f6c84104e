"""The service's database role (append-only audit by grant) and galaxy's named pools.

``ipam_app`` is a NOLOGIN group role: the service should log in as a role that is a member of
it, while migrations run as the owner of the tables. It may read and change pools, ranges,
addresses and named pools, and only read and append to ``audit``: UPDATE, DELETE and
TRUNCATE on ``audit`` are revoked, so the database refuses them as a permission error before
the append-only trigger of 0001 even runs. Roles are cluster-wide: the role is created only
when missing, and a migrating user without CREATEROLE gets a notice instead of a failure
(an administrator then creates ``ipam_app`` and migrates again to apply the grants).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE: list[str] = [
    """
    CREATE TABLE named_pools (
        name text CONSTRAINT pk_named_pools PRIMARY KEY,
        size integer NOT NULL CONSTRAINT ck_named_pools_size CHECK (size >= 0),
        pre_allocate_ip boolean NOT NULL DEFAULT false,
        created_at timestamptz NOT NULL DEFAULT now(),
        updated_at timestamptz NOT NULL DEFAULT now()
    )
    """,
    """
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ipam_app') THEN
            BEGIN
                CREATE ROLE ipam_app NOLOGIN;
            EXCEPTION
                WHEN insufficient_privilege THEN
                    RAISE NOTICE 'cannot create role ipam_app (no CREATEROLE): create it and '
                                 'migrate again to grant it its privileges';
                WHEN duplicate_object OR unique_violation THEN
                    NULL;  -- another database's migration created it just now
            END;
        END IF;
    END
    $$
    """,
    """
    DO $$
    DECLARE
        schema_name text := current_schema();
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ipam_app') THEN
            RETURN;
        END IF;
        BEGIN
            EXECUTE format('GRANT USAGE ON SCHEMA %I TO ipam_app', schema_name);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'cannot grant usage on schema %', schema_name;
        END;
        GRANT SELECT, INSERT, UPDATE, DELETE ON pools, ranges, addresses, named_pools
            TO ipam_app;
        GRANT SELECT, INSERT ON audit TO ipam_app;
        REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit FROM ipam_app;
        GRANT SELECT ON alembic_version TO ipam_app;
        GRANT USAGE, SELECT ON SEQUENCE pools_id_seq, ranges_id_seq, addresses_id_seq,
            audit_id_seq TO ipam_app;
    END
    $$
    """,
]

DOWNGRADE: list[str] = [
    """
    DO $$
    BEGIN
        IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ipam_app') THEN
            REVOKE ALL ON pools, ranges, addresses, audit, alembic_version FROM ipam_app;
            REVOKE ALL ON SEQUENCE pools_id_seq, ranges_id_seq, addresses_id_seq, audit_id_seq
                FROM ipam_app;
            EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM ipam_app', current_schema());
        END IF;
    END
    $$
    """,
    "DROP TABLE named_pools",
]


def upgrade() -> None:
    # asyncpg runs one statement per call.
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
