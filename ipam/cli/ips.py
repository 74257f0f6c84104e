"""``ipam ips list|reserve|release``: addresses, looked at and changed by hand.

``list`` shows one page (50 addresses) by default and, when more match, prints the command for
the next page: the REST API's own ``next_cursor`` as ``--cursor``. ``--all`` follows every page.
``reserve`` and ``release`` take the operator's ``--reason``, kept in the audit trail
(``--note``, its old name on ``reserve``, still works and says so).
"""

from __future__ import annotations

import enum
import shlex
from typing import Annotated, Any

import typer

from ipam.cli.connection import api, root_words
from ipam.cli.exits import CliError, fail, warning_line
from ipam.cli.inputs import address_of
from ipam.cli.output import (
    Column,
    Output,
    OutputOpt,
    dump,
    err,
    pick,
    pod,
    print_items,
    short_time,
)
from ipam.cli.watch import CountOpt, WatchableCommand, WatchOpt, watch

#: Addresses per page of ``ips list``: a screenful or two.
PAGE_SIZE = 50

ips_app = typer.Typer(help="Addresses: list, reserve, release.", no_args_is_help=True)


class State(enum.StrEnum):
    free = "free"
    reserved = "reserved"
    allocated = "allocated"
    kept = "kept"
    quarantined = "quarantined"


ADDRESS_COLUMNS: list[Column] = [
    ("ADDRESS", lambda a: a["address"]), ("POOL", lambda a: a["pool"]),
    ("STATE", lambda a: a["state"]), ("OWNER", lambda a: a["owner"]), ("POD", pod),
    ("NODE", lambda a: a["node"])]
ADDRESS_WIDE: list[Column] = [
    ("VLAN", lambda a: a["vlan"]), ("GATEWAY", lambda a: a["gateway"]),
    ("POLICY", lambda a: a["policy"]), ("POD-UID", lambda a: a["pod_uid"]),
    ("UPDATED", lambda a: short_time(a["updated_at"])), ("NOTE", lambda a: a["note"])]

ReasonOpt = Annotated[str | None, typer.Option(
    "--reason", help="Why (kept in the audit trail).", show_default=False)]
#: The old name of ``--reason`` (``ips reserve`` had it); hidden, still accepted.
NoteOpt = Annotated[str | None, typer.Option("--note", hidden=True)]


def _reason(reason: str | None, note: str | None) -> str | None:
    if note is None:
        return reason
    warning_line("--note is deprecated; use --reason (the same text in the audit trail)")
    if reason is not None and reason != note:
        fail("--note is the old name of --reason; give one of them")
    return note


@ips_app.command("list", cls=WatchableCommand)
def ips_list(
    ctx: typer.Context,
    pool: Annotated[str | None, typer.Option("--pool", help="Pool name.")] = None,
    subnet: Annotated[str | None, typer.Option("--subnet", help="Addresses in this CIDR.")]
    = None,
    node: Annotated[str | None, typer.Option("--node", help="Node name.")] = None,
    namespace: Annotated[str | None, typer.Option("-n", "--namespace", help="Pod namespace.")]
    = None,
    owner: Annotated[str | None, typer.Option(
        "--owner", help="Owner key (deploy/NS/NAME, sts/NS/NAME/ORDINAL, reserved/TOKEN, ...); "
                        "a trailing * matches a prefix.")] = None,
    state: Annotated[State | None, typer.Option("--state", help="Only this state.")] = None,
    limit: Annotated[int | None, typer.Option(
        "--limit", min=0, show_default=False,
        help=f"At most this many, one page (default {PAGE_SIZE}; pages of the API are "
             "followed); 0: all.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Every match, not one page.")] = False,
    cursor: Annotated[str | None, typer.Option(
        "--cursor", metavar="CURSOR", show_default=False,
        help="Start where the previous page ended (the command it printed says which).")]
    = None,
    output: OutputOpt = Output.table,
    watch_seconds: WatchOpt = None,
    count: CountOpt = None,
) -> None:
    """Addresses in address order, free ones included unless a filter leaves them out.

    One page of 50 by default; when more match, stderr says the command for the next page.
    """
    if every and limit not in (None, 0):
        fail("--all lists every address; --limit would cut it (give one of them)")
    size = None if every or limit == 0 else (limit or PAGE_SIZE)
    params = {"pool": pool, "subnet": subnet, "node": node, "namespace": namespace,
              "owner": owner, "state": state.value if state else None}

    def draw() -> None:
        with api(ctx) as client:
            listing = client.list_all("/v1/addresses", params, limit=size, cursor=cursor)
        if output in (Output.json, Output.yaml):
            typer.echo(dump({"items": listing.items, "next_cursor": listing.next_cursor},
                            output.value))
        else:
            print_items(listing.items, output, pick(output, ADDRESS_COLUMNS, ADDRESS_WIDE))
        if listing.next_cursor is not None:
            again = _next_page(ctx, params, limit, output, listing.next_cursor)
            err.print(f"showing {len(listing.items)}; more match. Next page: {again}   "
                      "(--all for every one)")

    watch(draw, seconds=watch_seconds, count=count, title="ipam ips list",
          separator="---" if output is Output.yaml else "")


def _next_page(ctx: typer.Context, params: dict[str, Any], limit: int | None, output: Output,
               cursor: str) -> str:
    """The command line that lists the next page: this one's filters and format, the
    service's ``next_cursor``. Never the token itself (``--token-file`` is repeated)."""
    flags = {"pool": "--pool", "subnet": "--subnet", "node": "--node",
             "namespace": "--namespace", "owner": "--owner", "state": "--state"}
    words = [*root_words(ctx), "ips", "list"]
    for key, flag in flags.items():
        if params[key] is not None:
            words += [flag, str(params[key])]
    if limit is not None:
        words += ["--limit", str(limit)]
    if output is not Output.table:
        words += ["-o", output.value]
    words += ["--cursor", cursor]
    program = ctx.find_root().info_name or "ipam"
    return f"{program} {shlex.join(words)}"


@ips_app.command("reserve")
def ips_reserve(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="A free address of a pool.")],
    reason: ReasonOpt = None,
    note: NoteOpt = None,
) -> None:
    """Keep a free address out of allocation (owner reserved/<token name>). Exit 3 if taken."""
    from ipam.cli.client import path_segment

    why = _reason(reason, note)
    ip = address_of(address)
    with api(ctx) as client:
        row = client.post(f"/v1/addresses/{path_segment(ip)}/reserve",
                          json={"note": why} if why else None)
    typer.echo(f"reserved {row['address']} (owner {row['owner']})")


@ips_app.command("release")
def ips_release(
    ctx: typer.Context,
    address: Annotated[str | None, typer.Argument(help="The address to free.",
                                                  show_default=False)] = None,
    owner: Annotated[str | None, typer.Option(
        "--owner", help="Free every address of this owner key instead (all or none).")]
    = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Even while a live pod uses it (that pod keeps running with it).")]
    = False,
    reason: ReasonOpt = None,
    note: NoteOpt = None,
) -> None:
    """Free an address (reserved, kept, or allocated with --force), or all of an owner's.

    Exit 3 (nothing freed) while a live pod holds one and --force is not given.
    """
    from ipam.cli.client import path_segment

    why = _reason(reason, note)
    if (address is None) == (owner is None):
        fail("give an ADDRESS or --owner KEY (one of them)")
    ip = address_of(address) if address is not None else None
    try:
        with api(ctx) as client:
            if ip is not None:
                done = client.post(f"/v1/addresses/{path_segment(ip)}/release",
                                   params={"force": force},
                                   json={"reason": why} if why else None)
            else:
                done = client.post("/v1/owners/release", params={"force": force},
                                   json={"owner": owner, "reason": why})
    except CliError as exc:
        raise _with_force_hint(exc) from None
    released = [row["address"] for row in done["released"]]
    if ip is None:
        typer.echo(f"released {len(released)} address(es) of {owner}: {', '.join(released)}")
    elif released:
        typer.echo(f"released {released[0]}")
    else:
        typer.echo(f"{ip} was already free")


def _with_force_hint(exc: CliError) -> CliError:
    """The service's 409 for a live pod, in the CLI's terms (``--force``, not ``force=true``)."""
    live = exc.details.get("addresses")
    if exc.status != 409 or not isinstance(live, list) or not live:
        return exc
    held = "; ".join(f"{a.get('address')} is allocated to {a.get('pod')}" for a in live
                     if isinstance(a, dict))
    them = "it" if len(live) == 1 else "them"
    return CliError(f"{held}; pass --force to release {them} anyway", exc.exit_code,
                    status=exc.status, code=exc.code, details=exc.details)
