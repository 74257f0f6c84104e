"""``ipam pools import|list|show``: galaxy's floatingips config and how full each pool is.

``import`` validates the file here first (a wrong entry fails without a service), then the
service applies it in one transaction. ``list`` and ``show`` tabulate ``GET /v1/pools``; every
usage table has a USED% column (used = allocated + kept + reserved + quarantined).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated

import typer

from ipam.cli.connection import api
from ipam.cli.exits import CliError, ExitCode, fail
from ipam.cli.output import (
    Column,
    Document,
    Output,
    OutputOpt,
    cell,
    dump,
    pick,
    print_items,
    print_table,
    spinner,
)
from ipam.cli.watch import CountOpt, WatchableCommand, WatchOpt, watch

MAX_CONFIG_BYTES = 16 * 1024 * 1024
#: A pool import runs in one transaction on the service; give it longer than a plain read.
IMPORT_TIMEOUT = 300.0

pools_app = typer.Typer(help="Pools: galaxy's floatingips config and its usage.",
                        no_args_is_help=True)


def used_percent(used: int, total: int) -> str | None:
    """``37%``, rounded down so that a pool shows 100% only when it is full; ``<1%`` for a
    few addresses of a large pool (0% would read as empty); None for an empty range."""
    if total <= 0:
        return None
    percent = math.floor(used * 100 / total)
    if percent == 0 and used > 0:
        return "<1%"
    return f"{percent}%"


def _used_percent(counts: dict[str, object]) -> str | None:
    used, total = counts.get("used"), counts.get("total")
    if not isinstance(total, int):
        return None
    if not isinstance(used, int):  # a range of an older service: no "used"
        free = counts.get("free")
        if not isinstance(free, int):
            return None
        used = total - free
    return used_percent(used, total)


POOL_COLUMNS: list[Column] = [
    ("NAME", lambda p: p["name"]), ("SUBNET", lambda p: p["subnet"]),
    ("VLAN", lambda p: p["vlan"]), ("TOTAL", lambda p: p["total"]),
    ("USED", lambda p: p["used"]), ("USED%", _used_percent), ("FREE", lambda p: p["free"])]
POOL_WIDE: list[Column] = [
    ("GATEWAY", lambda p: p["gateway"]), ("ALLOCATED", lambda p: p["allocated"]),
    ("KEPT", lambda p: p["kept"]), ("RESERVED", lambda p: p["reserved"]),
    ("NODE-SUBNETS", lambda p: p["node_subnets"]), ("RANGES", lambda p: p["ips"])]
COUNT_COLUMNS: list[Column] = [
    ("TOTAL", lambda c: c["total"]), ("ALLOCATED", lambda c: c["allocated"]),
    ("KEPT", lambda c: c["kept"]), ("RESERVED", lambda c: c["reserved"]),
    ("FREE", lambda c: c["free"]), ("USED%", _used_percent)]


@pools_app.command("import")
def pools_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="JSON list or the floatingip-config ConfigMap "
                                              "YAML; - for stdin.", allow_dash=True)],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the diff only.")] = False,
    output: Annotated[Document, typer.Option("-o", "--output", help="json or yaml.")]
    = Document.json,
) -> None:
    """Load a galaxy floatingips config (idempotent; refuses to drop addresses in use).

    The file is validated here first (a wrong entry fails without a service), then the service
    applies it in one transaction and prints the diff. Exit 3 when it would strand addresses
    in use.
    """
    from ipam.engine.pool_config import load_document, parse_pool_config

    source = "stdin" if str(file) == "-" else str(file)
    text = _read_stdin() if str(file) == "-" else _read(file)
    config = parse_pool_config(load_document(text))  # ConfigError: exit 2, entry and field
    size = sum(p.size for p in config.pools)
    what = "diffing" if dry_run else "importing"
    content_type = "application/json" if text.lstrip().startswith("[") else "application/yaml"
    with api(ctx, at_least=IMPORT_TIMEOUT) as client, spinner(
            f"{what} {len(config.pools)} pool(s), {size} addresses from {source}"):
        diff = client.post("/v1/pools/import", params={"dry_run": dry_run}, content=text,
                           content_type=content_type)
    typer.echo(dump(diff, output.value))


@pools_app.command("list", cls=WatchableCommand)
def pools_list(ctx: typer.Context, output: OutputOpt = Output.table,
               watch_seconds: WatchOpt = None, count: CountOpt = None) -> None:
    """Pools in config order with their usage (USED%: allocated, kept, reserved and
    quarantined addresses of the total)."""

    def draw() -> None:
        with api(ctx) as client:
            body = client.get("/v1/pools")
        if output in (Output.json, Output.yaml):
            typer.echo(dump(body, output.value))
            return
        print_items(body["items"], output, pick(output, POOL_COLUMNS, POOL_WIDE))

    watch(draw, seconds=watch_seconds, count=count, title="ipam pools list",
          separator="---" if output is Output.yaml else "")


@pools_app.command("show")
def pools_show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Pool name (see `ipam pools list`).")],
    output: Annotated[Document | None, typer.Option("-o", "--output", help="json or yaml.")]
    = None,
) -> None:
    """One pool: its config, and usage in total, per range and for its VLAN."""
    with api(ctx) as client:
        body = client.get("/v1/pools")
    pool = next((p for p in body["items"] if p["name"] == name), None)
    if pool is None:
        names = ", ".join(p["name"] for p in body["items"]) or "none"
        raise CliError(f"pool {name!r} does not exist (pools: {names})", ExitCode.NOT_FOUND)
    vlan = next((v for v in body["vlans"] if name in v["pools"]), None)
    if output is not None:
        typer.echo(dump({**pool, "vlan_usage": vlan}, output.value))
        return
    fields = [("Name", pool["name"]), ("Subnet", pool["subnet"]),
              ("Gateway", cell(pool["gateway"])), ("VLAN", cell(pool["vlan"])),
              ("Node subnets", cell(pool["node_subnets"])),
              ("Addresses", f"{pool['total']} total, {pool['used']} used "
                            f"({pool['allocated']} allocated, {pool['kept']} kept, "
                            f"{pool['reserved']} reserved), {pool['free']} free")]
    typer.echo("\n".join(f"{label + ':':<14}{value}" for label, value in fields))
    typer.echo("\nRanges:")
    print_table(pool["ranges"], [("RANGE", lambda r: r["range"]), *COUNT_COLUMNS])
    if vlan is not None:
        typer.echo(f"\nVLAN {cell(vlan['vlan'])} (pools {', '.join(vlan['pools'])}):")
        print_table([vlan], COUNT_COLUMNS)


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            fail(f"{path} is larger than 16 MiB; not a pool config")
        return path.read_text()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except UnicodeDecodeError:
        fail(f"{path} is not UTF-8 text; not a pool config")


def _read_stdin() -> str:
    text = sys.stdin.read(MAX_CONFIG_BYTES + 1)
    if len(text) > MAX_CONFIG_BYTES:
        fail("stdin holds more than 16 MiB; not a pool config")
    return text
