"""`ipam audit`: filters, newest first, and --follow printing rows as they are written."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
import yaml

from ipam.cli.client import ApiClient, Listing
from tests.api.rest_conftest import ADMIN
from tests.cli.conftest import Cli, client_env, error_line, invoke
from tests.service_harness import RunningService


async def operator_changes(cli: Cli) -> None:
    """reserve .9, reserve .8, release .9: three rows by operator:alice."""
    for args in (("reserve", "10.11.128.9", "--reason", "n9"), ("reserve", "10.11.128.8"),
                 ("release", "10.11.128.9", "--reason", "done")):
        run = await cli("ips", *args)
        assert run.code == 0, run


async def test_filters_newest_first_in_every_format(cli: Cli) -> None:
    await operator_changes(cli)
    table = await cli("audit", "--actor", "operator:alice")
    assert table.code == 0, table
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "AT", "ACTOR", "ACTION", "ADDRESS", "OWNER", "POD",
                                "REASON"]
    assert [(c[2], c[3], c[4]) for c in (line.split() for line in lines[1:])] == [
        ("operator:alice", "release", "10.11.128.9"), ("operator:alice", "reserve", "10.11.128.8"),
        ("operator:alice", "reserve", "10.11.128.9")]
    assert lines[1].endswith("done")

    wide = (await cli("audit", "--action", "release", "-o", "wide")).stdout.splitlines()
    assert wide[0].split()[-5:] == ["POOL", "POD-UID", "REQUEST-ID", "CHANGE", "REASON"]
    *_, request_id, change, reason = wide[1].split()
    assert (change, reason) == ("reserved->free", "done") and request_id.startswith("cli-")

    rows = json.loads((await cli("audit", "--address", "10.11.128.9", "-o", "json")).stdout)
    assert [r["action"] for r in rows["items"]] == ["release", "reserve"]
    assert rows["items"][1]["reason"] == "n9"
    ids = [r["id"] for r in rows["items"]]
    assert ids == sorted(ids, reverse=True)
    as_yaml = yaml.safe_load(
        (await cli("audit", "--address", "10.11.128.9", "-o", "yaml")).stdout)
    assert as_yaml == rows

    async def actions(*filters: str) -> list[str]:
        run = await cli("audit", "-o", "json", *filters)
        assert run.code == 0, run
        return [r["action"] for r in json.loads(run.stdout)["items"]]

    assert await actions("--owner", "reserved/alice", "--action", "reserve") == ["reserve"] * 2
    assert await actions("--actor", "operator:alice", "--since", "10m") == [
        "release", "reserve", "reserve"]
    assert await actions("--actor", "operator:alice", "--until", "2000-01-01") == []
    assert await actions("--actor", "operator:alice", "--since", "2000-01-01T00:00:00Z",
                         "--until", "1h") == []
    assert await actions("--pod", "nobody", "-n", "default") == []
    limited = await cli("audit", "--actor", "operator:alice", "--limit", "1")
    assert len(limited.stdout.splitlines()) == 2 and "showing the first 1" in limited.stderr

    bad = await cli("audit", "--since", "yesterday")
    assert bad.code == 2
    assert "--since 'yesterday': give a duration" in error_line(bad)


async def test_follow_prints_rows_written_after_it_started(
        cli: Cli, rest: RunningService, monkeypatch: pytest.MonkeyPatch) -> None:
    await operator_changes(cli)
    listed = threading.Event()
    original = ApiClient.list_all

    def list_all(self: ApiClient, path: str, params: Any, *, limit: int | None,
                 cursor: str | None = None) -> Listing:
        out = original(self, path, params, limit=limit, cursor=cursor)
        listed.set()
        return out

    monkeypatch.setattr(ApiClient, "list_all", list_all)
    env = client_env(rest.url)
    following = asyncio.ensure_future(invoke(
        env, "audit", "-f", "--actor", "operator:alice", "--limit", "2", "--max-seconds", "3",
        "--interval", "0.2", "-o", "json"))
    assert await asyncio.to_thread(listed.wait, 10)  # the command has printed its history
    resp = await rest.client.post("/v1/addresses/10.11.128.30/reserve", headers=ADMIN,
                                  json={"note": "while following"})
    assert resp.status_code == 200, resp.text
    run = await following
    assert run.code == 0, run
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    # History oldest first (two of three, --limit 2), then the new row, each exactly once.
    assert [(r["action"], r["address"]) for r in rows] == [
        ("reserve", "10.11.128.8"), ("release", "10.11.128.9"), ("reserve", "10.11.128.30")]
    assert rows[-1]["reason"] == "while following"


async def test_follow_table_keeps_its_columns(cli: Cli) -> None:
    await operator_changes(cli)
    run = await cli("audit", "--follow", "--action", "reserve", "--max-seconds", "0.3",
                    "--interval", "0.1")
    assert run.code == 0, run
    header, *rows = run.stdout.splitlines()
    assert header.split()[:4] == ["ID", "AT", "ACTOR", "ACTION"]
    assert [r.split()[4] for r in rows] == ["10.11.128.9", "10.11.128.8"]  # oldest first
    assert len({r.index("reserve") for r in [header.replace("ACTION", "reserve"), *rows]}) == 1
