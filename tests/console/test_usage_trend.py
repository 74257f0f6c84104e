"""Usage over time rebuilt from the audit trail (``ipam.api.usage.rebuild``), on made-up rows."""

from __future__ import annotations

import ipaddress
import itertools
from datetime import UTC, datetime, timedelta

from ipam.api.usage import instants, rebuild
from ipam.storage.records import AuditEntry, AuditRecord

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
IP = ipaddress.ip_address("10.0.0.5")


def snap(state: str | None) -> dict[str, str] | None:
    return {"state": state} if state is not None else None


def row(i: int, minutes_ago: float, before: str | None, after: str | None, pool: str = "a"
        ) -> AuditRecord:
    return AuditRecord(i, NOW - timedelta(minutes=minutes_ago), AuditEntry(
        actor="t", action="x", address=IP, pool=pool, before=snap(before), after=snap(after)))


def test_instants_are_evenly_spaced_and_end_now() -> None:
    at = instants(NOW, timedelta(hours=1), 5)
    assert at[0] == NOW - timedelta(hours=1) and at[-1] == NOW
    assert {b - a for a, b in itertools.pairwise(at)} == {timedelta(minutes=15)}


def test_changes_are_undone_newest_first_to_give_the_counts_at_each_instant() -> None:
    at = instants(NOW, timedelta(hours=1), 5)  # -60, -45, -30, -15, 0 minutes
    rows = [  # newest first, as the audit query returns them
        row(5, 5, "allocated", "kept"),
        row(4, 20, None, "allocated"),       # a row created allocated (no "before")
        row(3, 20, "free", "reserved"),
        row(2, 40, "free", "allocated"),
        row(1, 50, "allocated", "allocated"),  # reuse: no change in counts
        row(0, 50, "free", "allocated", pool="gone"),  # a pool that no longer exists
    ]
    current = {"a": {"allocated": 1, "kept": 1, "reserved": 1}}
    series, known = rebuild(current, rows, at, complete=True)
    used = [None if c is None else sum(c.values()) for c in series["a"]]
    assert used == [0, 0, 1, 3, 3]  # keeping an address does not change "used"
    assert series["a"][-1] == current["a"]
    assert series["a"][3] == {"allocated": 2, "kept": 0, "reserved": 1}
    assert known == at[0]


def test_an_instant_exactly_at_a_change_counts_the_change() -> None:
    at = instants(NOW, timedelta(minutes=30), 3)  # -30, -15, 0
    series, _ = rebuild({"a": {"allocated": 1, "kept": 0, "reserved": 0}},
                        [row(1, 15, "free", "allocated")], at, complete=True)
    assert [c["allocated"] for c in series["a"] if c is not None] == [0, 1, 1]


def test_instants_older_than_the_rows_read_are_unknown_when_the_read_stopped_early() -> None:
    at = instants(NOW, timedelta(hours=1), 5)
    rows = [row(9, 5, "free", "allocated"), row(8, 25, "free", "allocated")]
    series, known = rebuild({"a": {"allocated": 2, "kept": 0, "reserved": 0}}, rows, at,
                            complete=False)
    # -30 min is older than the oldest row read (-25): rows between them may be unread.
    assert [None if c is None else c["allocated"] for c in series["a"]] == [None, None, None, 1,
                                                                            2]
    assert known == at[3]
