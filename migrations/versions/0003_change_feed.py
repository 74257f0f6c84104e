"""Change feed: every change of pool usage or pool config is announced on a NOTIFY channel.

Each replica's filter counts taken addresses per pool in memory (``PoolCatalog``); without
this, allocations by another replica or by ``ipam check --repair`` stayed invisible until the
next periodic recount, and filter offered nodes that bind then refused as exhausted.

* ``addresses``: one statement-level trigger per event, with transition tables, sends the
  statement's taken-count delta per pool (``a|origin|nonce|pool:delta:since_us,...``), where
  ``since_us`` is the transaction's start (``now()``, microseconds): its commit came later,
  which is what lets a reader tell whether a recount it made already includes the change.
  Connections that set ``ipam.publisher`` (the service's own, see ``ipam.storage.change_feed``)
  are skipped: the service announces its changes itself right after commit. A NOTIFY in the
  writing transaction takes a database-wide lock held through the commit's WAL flush; in
  every bind it cut commits to a third at 8 clients and a fifth at 32 (pgbench, here).
* ``pools`` (config columns, not the materialisation mark) and ``ranges``: ``p``, so every
  replica re-reads the pools.

Payloads stay under the 8,000-byte NOTIFY limit (chunked), and each one in a transaction is
distinct (PostgreSQL folds identical payloads of one transaction into one).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-12
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE: list[str] = [
    """
    CREATE FUNCTION ipam_addresses_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE
        pools integer[];
        deltas bigint[];
        since bigint;
        seq integer;
        part text;
        body text := '';
        chunk integer := 0;
    BEGIN
        IF coalesce(current_setting('ipam.publisher', true), '') <> '' THEN
            RETURN NULL;  -- the service announces its own changes after commit
        END IF;
        IF TG_OP = 'INSERT' THEN
            SELECT array_agg(pool_id), array_agg(n) INTO pools, deltas FROM (
                SELECT pool_id, count(*) AS n FROM new_rows WHERE state <> 'free'
                GROUP BY pool_id) c;
        ELSIF TG_OP = 'DELETE' THEN
            SELECT array_agg(pool_id), array_agg(n) INTO pools, deltas FROM (
                SELECT pool_id, -count(*) AS n FROM old_rows WHERE state <> 'free'
                GROUP BY pool_id) c;
        ELSE
            SELECT array_agg(pool_id), array_agg(n) INTO pools, deltas FROM (
                SELECT pool_id, sum(d) AS n FROM (
                    SELECT pool_id, -1 AS d FROM old_rows WHERE state <> 'free'
                    UNION ALL
                    SELECT pool_id, 1 AS d FROM new_rows WHERE state <> 'free') t
                GROUP BY pool_id HAVING sum(d) <> 0) c;
        END IF;
        IF pools IS NULL THEN
            RETURN NULL;
        END IF;
        since := (extract(epoch FROM now()) * 1000000)::bigint;
        seq := coalesce(nullif(current_setting('ipam.feed_seq', true), ''), '0')::integer + 1;
        PERFORM set_config('ipam.feed_seq', seq::text, true);
        FOR i IN 1 .. array_length(pools, 1) LOOP
            part := pools[i] || ':' || deltas[i] || ':' || since;
            IF length(body) + length(part) > 7000 THEN
                chunk := chunk + 1;
                PERFORM pg_notify('ipam_changes', 'a||' || seq || '.' || chunk || '|' || body);
                body := '';
            END IF;
            body := body || CASE WHEN body = '' THEN '' ELSE ',' END || part;
        END LOOP;
        chunk := chunk + 1;
        PERFORM pg_notify('ipam_changes', 'a||' || seq || '.' || chunk || '|' || body);
        RETURN NULL;
    END;
    $$
    """,
    """
    CREATE TRIGGER addresses_inserted AFTER INSERT ON addresses
        REFERENCING NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION ipam_addresses_changed()
    """,
    """
    CREATE TRIGGER addresses_updated AFTER UPDATE ON addresses
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION ipam_addresses_changed()
    """,
    """
    CREATE TRIGGER addresses_deleted AFTER DELETE ON addresses
        REFERENCING OLD TABLE AS old_rows
        FOR EACH STATEMENT EXECUTE FUNCTION ipam_addresses_changed()
    """,
    """
    CREATE FUNCTION ipam_pools_changed() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_notify('ipam_changes', 'p');
        RETURN NULL;
    END;
    $$
    """,
    """
    CREATE TRIGGER pools_changed
        AFTER INSERT OR DELETE OR UPDATE OF name, position, family, subnet, gateway, vlan,
            node_subnets, size ON pools
        FOR EACH STATEMENT EXECUTE FUNCTION ipam_pools_changed()
    """,
    """
    CREATE TRIGGER ranges_changed AFTER INSERT OR DELETE OR UPDATE ON ranges
        FOR EACH STATEMENT EXECUTE FUNCTION ipam_pools_changed()
    """,
]

DOWNGRADE: list[str] = [
    "DROP TRIGGER ranges_changed ON ranges",
    "DROP TRIGGER pools_changed ON pools",
    "DROP FUNCTION ipam_pools_changed()",
    "DROP TRIGGER addresses_deleted ON addresses",
    "DROP TRIGGER addresses_updated ON addresses",
    "DROP TRIGGER addresses_inserted ON addresses",
    "DROP FUNCTION ipam_addresses_changed()",
]


def upgrade() -> None:
    # asyncpg runs one statement per call.
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
