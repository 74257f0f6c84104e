"""``ipam audit``: who changed which address, when and why; newest first, or followed.

``--follow`` polls ``GET /v1/audit`` and prints the rows it has not printed yet, oldest first.
It re-reads a window behind the newest row it saw (``FOLLOW_WINDOW``) because audit ids are
taken when a transaction starts, not when it commits.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ipam.cli.connection import api
from ipam.cli.inputs import address_of, time_of
from ipam.cli.output import (
    Column,
    Output,
    OutputOpt,
    dump,
    line,
    more_note,
    pick,
    pod,
    print_items,
    rows,
    short_time,
    widths,
)

if TYPE_CHECKING:
    from ipam.cli.client import ApiClient

#: ``--follow`` re-reads rows this much older than the newest it saw (by the rows' own server
#: timestamps): a transaction that took its audit id early but committed late still shows up.
FOLLOW_WINDOW = timedelta(seconds=30)
def _at(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["at"])


def _change(row: dict[str, Any]) -> str | None:
    """``reserved->free``: the address's state before and after, when the row has them."""
    before = (row.get("before") or {}).get("state")
    after = (row.get("after") or {}).get("state")
    if before is None and after is None:
        return None
    return f"{before or '-'}->{after or '-'}"


AUDIT_COLUMNS: list[Column] = [
    ("ID", lambda r: r["id"]), ("AT", lambda r: short_time(r["at"])),
    ("ACTOR", lambda r: r["actor"]), ("ACTION", lambda r: r["action"]),
    ("ADDRESS", lambda r: r["address"]), ("OWNER", lambda r: r["owner"]), ("POD", pod)]
#: Free text last, so the columns before it split on whitespace.
AUDIT_REASON: Column = ("REASON", lambda r: r["reason"])
AUDIT_WIDE: list[Column] = [
    ("POOL", lambda r: r["pool"]), ("POD-UID", lambda r: r["pod_uid"]),
    ("REQUEST-ID", lambda r: r["request_id"]), ("CHANGE", _change)]


def _audit_columns(output: Output) -> list[Column]:
    return [*pick(output, AUDIT_COLUMNS, AUDIT_WIDE), AUDIT_REASON]


def audit(
    ctx: typer.Context,
    address: Annotated[str | None, typer.Option("--address", help="One address.")] = None,
    namespace: Annotated[str | None, typer.Option("-n", "--namespace", help="Pod namespace.")]
    = None,
    pod: Annotated[str | None, typer.Option("--pod", help="Pod name.")] = None,
    owner: Annotated[str | None, typer.Option("--owner", help="Owner key.")] = None,
    actor: Annotated[str | None, typer.Option(
        "--actor", help="scheduler, reconciler, operator:<token>, cni:<token>, ...")] = None,
    action: Annotated[str | None, typer.Option(
        "--action", help="allocate, release, keep, reserve, pools.import, ...")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Rows at or after: 30m, 2h, 7d ago, or an ISO time.")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="Rows before: a duration ago or an ISO time.")] = None,
    limit: Annotated[int, typer.Option(
        "--limit", min=0, help="At most this many (newest); 0: all.")] = 100,
    follow: Annotated[bool, typer.Option(
        "-f", "--follow", help="Then print new rows as they come, until interrupted.")]
    = False,
    max_seconds: Annotated[float | None, typer.Option(
        "--max-seconds", min=0, help="Stop following after this long (scripts, tests).")]
    = None,
    interval: Annotated[float, typer.Option("--interval", min=0.1, hidden=True)] = 1.0,
    output: OutputOpt = Output.table,
) -> None:
    """The audit trail: who changed which address, when and why; newest first.

    With --follow the rows come oldest first, the newest last, and new rows are appended as
    they are written (polled every second; json prints one object per line).
    """
    started = time.monotonic()
    params: dict[str, Any] = {
        "address": address_of(address) if address else None, "namespace": namespace,
        "pod": pod, "owner": owner, "actor": actor, "action": action,
        "until": _iso(time_of(until, "--until"))}
    since_at = time_of(since, "--since")
    with api(ctx) as client:
        listing = client.list_all("/v1/audit", {**params, "since": _iso(since_at)},
                               limit=limit or None)
        columns = _audit_columns(output)
        if not follow:
            print_items(listing.items, output, columns)
            if listing.more:
                more_note(len(listing.items))
            return
        stream = _Stream(output, columns, listing.items)
        stream.emit(sorted(listing.items, key=lambda r: r["id"]))
        deadline = None if max_seconds is None else started + max_seconds
        try:
            _follow(client, params, since_at, listing, stream, interval, deadline)
        except KeyboardInterrupt:
            return


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


class _Stream:
    """Rows printed as they arrive: table columns sized by the first batch, one JSON object
    per line, or one YAML document each."""

    def __init__(self, output: Output, columns: Sequence[Column],
                 first: Sequence[dict[str, Any]]) -> None:
        self.output, self.columns = output, columns
        headers = [name for name, _ in columns]
        self.widths = widths(headers, rows(first, columns))
        if output in (Output.table, Output.wide):
            typer.echo(line(headers, self.widths))

    def emit(self, batch: Sequence[dict[str, Any]]) -> None:
        for row in batch:
            if self.output is Output.json:
                import orjson

                typer.echo(orjson.dumps(row).decode())
            elif self.output is Output.yaml:
                typer.echo("---\n" + dump(row, "yaml"))
            else:
                typer.echo(line(rows([row], self.columns)[0], self.widths))


def _follow(client: ApiClient, params: dict[str, Any], since_at: datetime | None,
            first: Any, stream: _Stream, interval: float, deadline: float | None) -> None:
    """Poll for rows not printed yet (by id) and print them oldest first.

    Each poll asks for the rows from ``FOLLOW_WINDOW`` before the newest one seen (so late
    commits are caught) and drops the ids already printed. When the first listing was cut by
    ``--limit``, rows below its oldest id are history that was left out, not news.
    """
    seen: dict[int, datetime] = {r["id"]: _at(r) for r in first.items}
    floor = min(seen) if first.more and seen else 0
    while True:
        pause = interval if deadline is None else min(interval, deadline - time.monotonic())
        if pause <= 0:
            return
        time.sleep(pause)
        window = max(seen.values()) - FOLLOW_WINDOW if seen else None
        start = max((t for t in (window, since_at) if t is not None), default=None)
        found = client.list_all("/v1/audit", {**params, "since": _iso(start)},
                                limit=None).items
        fresh = sorted((r for r in found if r["id"] not in seen and r["id"] > floor),
                       key=lambda r: r["id"])
        stream.emit(fresh)
        seen.update((r["id"], _at(r)) for r in fresh)
        if seen:  # rows older than the window never come back: forget them
            horizon = max(seen.values()) - FOLLOW_WINDOW
            for old in [i for i, t in seen.items() if t < horizon]:
                del seen[old]
