"""Quarantine: a released address cools down before another owner may take it.

* ``addresses.state`` gains ``quarantined``; ``quarantined_until`` says until when, and is set
  exactly in that state. The row keeps its ``owner_key`` (so the same owner can take it back
  at once, and the owner-iff-taken check holds) and has no pod UID (pod-iff-allocated holds).
* ``ix_addresses_quarantined (quarantined_until) WHERE state = 'quarantined'`` serves the
  sweep and the allocator's "any quarantine over in this pool?" probe without touching the
  free-row index of the allocation hot path.
* ``pools.quarantine_seconds``: the entry's ``quarantineSeconds``; NULL means the service's
  default (``IPAM_QUARANTINE_SECONDS``). Not in the pools trigger's column list: filter does
  not read it, the release statement does.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-20
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UPGRADE: list[str] = [
    "ALTER TABLE addresses ADD COLUMN quarantined_until timestamptz",
    "ALTER TABLE addresses DROP CONSTRAINT ck_addresses_state_known",
    """
    ALTER TABLE addresses ADD CONSTRAINT ck_addresses_state_known
        CHECK (state IN ('free', 'allocated', 'kept', 'reserved', 'quarantined'))
    """,
    """
    ALTER TABLE addresses ADD CONSTRAINT ck_addresses_until_iff_quarantined
        CHECK ((state = 'quarantined') = (quarantined_until IS NOT NULL))
    """,
    """
    CREATE INDEX ix_addresses_quarantined ON addresses (pool_id, quarantined_until)
        WHERE state = 'quarantined'
    """,
    """
    ALTER TABLE pools ADD COLUMN quarantine_seconds integer
        CONSTRAINT ck_pools_quarantine_seconds CHECK (quarantine_seconds >= 0)
    """,
]

DOWNGRADE: list[str] = [
    "ALTER TABLE pools DROP COLUMN quarantine_seconds",
    "DROP INDEX ix_addresses_quarantined",
    "ALTER TABLE addresses DROP CONSTRAINT ck_addresses_until_iff_quarantined",
    # Quarantine ends now: the rows go back to free, as the older schema knows no cooling down.
    """
    UPDATE addresses SET state = 'free', owner_key = NULL, policy = NULL, pod_namespace = NULL,
        pod_name = NULL, node = NULL, slot = 0, kept_ttl_seconds = NULL, note = NULL,
        kept_since = NULL, quarantined_until = NULL, updated_at = now()
    WHERE state = 'quarantined'
    """,
    "ALTER TABLE addresses DROP CONSTRAINT ck_addresses_state_known",
    """
    ALTER TABLE addresses ADD CONSTRAINT ck_addresses_state_known
        CHECK (state IN ('free', 'allocated', 'kept', 'reserved'))
    """,
    "ALTER TABLE addresses DROP COLUMN quarantined_until",
]


def upgrade() -> None:
    # asyncpg runs one statement per call.
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for statement in DOWNGRADE:
        op.execute(statement)
