"""`ipam ips list|reserve|release` through the REST API of the real service."""

from __future__ import annotations

import json
import shlex
from typing import Any

import httpx
import pytest
import yaml

import ipam.cli.watch
from tests.api.rest_conftest import ADMIN, READ, bind
from tests.cli.conftest import Cli, error_line
from tests.service_harness import RunningService

POOL = "10.11.128.0/21"
OWNER = "deploy/default/test-busybox"


async def state_of(svc: RunningService, address: str) -> Any:
    resp = await svc.client.get(f"/v1/addresses/{address}", headers=READ)
    assert resp.status_code == 200, resp.text
    return resp.json()["state"]


async def test_list_in_every_format_with_filters(
        cli: Cli, rest: RunningService, rest_seed_pod: dict[str, Any]) -> None:
    await bind(rest, rest_seed_pod)
    pod = f"default/{rest_seed_pod['metadata']['name']}"
    uid = rest_seed_pod["metadata"]["uid"]

    table = await cli("ips", "list", "--state", "allocated")
    assert table.code == 0, table
    header, row = table.stdout.splitlines()
    assert header.split() == ["ADDRESS", "POOL", "STATE", "OWNER", "POD", "NODE"]
    assert row.split() == ["10.11.128.1", POOL, "allocated", OWNER, pod, "node-0"]

    wide = (await cli("ips", "list", "--state", "allocated", "-o", "wide")).stdout.splitlines()
    assert wide[0].split()[6:] == ["VLAN", "GATEWAY", "POLICY", "POD-UID", "UPDATED", "NOTE"]
    assert wide[1].split()[6:10] == ["1200", "10.11.135.254", "never", uid]
    assert wide[1].split()[-1] == "<none>"

    as_json = json.loads((await cli("ips", "list", "--state", "allocated", "-o", "json")).stdout)
    as_yaml = yaml.safe_load(
        (await cli("ips", "list", "--state", "allocated", "-o", "yaml")).stdout)
    assert as_json == as_yaml
    assert [(i["address"], i["pod_uid"]) for i in as_json["items"]] == [("10.11.128.1", uid)]

    async def addresses(*filters: str) -> list[str]:
        run = await cli("ips", "list", *filters, "-o", "json")
        assert run.code == 0, run
        return [i["address"] for i in json.loads(run.stdout)["items"]]

    assert await addresses("-n", "default") == ["10.11.128.1"]
    assert await addresses("--owner", "deploy/default/*") == ["10.11.128.1"]
    assert await addresses("--node", "node-0", "--pool", POOL) == ["10.11.128.1"]
    assert await addresses("--node", "node-1") == []
    assert await addresses("--subnet", "10.11.135.248/30") == ["10.11.135.248", "10.11.135.249",
                                                                "10.11.135.250", "10.11.135.251"]
    empty = await cli("ips", "list", "--node", "node-1")
    assert (empty.code, empty.stdout) == (0, "")
    assert "no matching items" in empty.stderr

    cut = await cli("ips", "list", "--state", "free", "--limit", "3")
    assert [line.split()[0] for line in cut.stdout.splitlines()[1:]] == [
        "10.11.128.2", "10.11.128.3", "10.11.128.4"]
    assert "showing 3; more match" in cut.stderr
    # Pages of 1,000 followed by cursor: all 2,045, then a limit across a page boundary.
    every = json.loads((await cli("ips", "list", "--limit", "0", "-o", "json")).stdout)["items"]
    assert len(every) == 2045 and len({i["address"] for i in every}) == 2045
    assert every[-1]["address"] == "10.11.135.253"
    assert json.loads((await cli("ips", "list", "--all", "-o", "json")).stdout)["items"] == every
    some = await cli("ips", "list", "--limit", "1500", "-o", "json")
    assert len(json.loads(some.stdout)["items"]) == 1500 and "more match" in some.stderr

    bad_state = await cli("ips", "list", "--state", "lost")
    assert bad_state.code == 2
    bad_subnet = await cli("ips", "list", "--subnet", "10.11/33")
    assert bad_subnet.code == 2
    assert error_line(bad_subnet) == ("error: subnet: '10.11/33' is not a CIDR "
                                      "(422 invalid)")


async def test_reserve_then_release(cli: Cli, rest: RunningService) -> None:
    reserved = await cli("ips", "reserve", "10.11.128.9", "--reason", "licence server")
    assert (reserved.code, reserved.stdout) == (0, "reserved 10.11.128.9 (owner "
                                                   "reserved/alice)\n"), reserved
    assert await state_of(rest, "10.11.128.9") == "reserved"

    taken = await cli("ips", "reserve", "10.11.128.9")
    assert taken.code == 3
    assert error_line(taken) == ("error: 10.11.128.9 is not free: reserved for reserved/alice "
                                 "(409 conflict)")

    released = await cli("ips", "release", "10.11.128.9", "--reason", "moved")
    assert (released.code, released.stdout) == (0, "released 10.11.128.9\n"), released
    assert await state_of(rest, "10.11.128.9") == "free"
    again = await cli("ips", "release", "10.11.128.9")
    assert (again.code, again.stdout) == (0, "10.11.128.9 was already free\n")

    outside = await cli("ips", "release", "192.0.2.1")
    assert outside.code == 6
    assert error_line(outside) == ("error: 192.0.2.1 is in no configured pool "
                                   "(404 not_found)")
    for args in (["ips", "reserve", "10.11.128"], ["ips", "release"],
                 ["ips", "release", "10.11.128.9", "--owner", "reserved/alice"]):
        run = await cli(*args)
        assert run.code == 2, (args, run)
        error_line(run)


async def test_release_of_a_live_pods_address_needs_force(
        cli: Cli, rest: RunningService, rest_seed_pod: dict[str, Any]) -> None:
    await bind(rest, rest_seed_pod)
    pod = f"default/{rest_seed_pod['metadata']['name']}"

    refused = await cli("ips", "release", "10.11.128.1")
    assert refused.code == 3
    assert error_line(refused) == (f"error: 10.11.128.1 is allocated to {pod}; pass --force to "
                                   "release it anyway (409 conflict)")
    assert await state_of(rest, "10.11.128.1") == "allocated"

    by_owner = await cli("ips", "release", "--owner", OWNER)
    assert by_owner.code == 3
    assert "pass --force to release it anyway" in error_line(by_owner)

    forced = await cli("ips", "release", "10.11.128.1", "--force")
    assert (forced.code, forced.stdout) == (0, "released 10.11.128.1\n"), forced
    assert await state_of(rest, "10.11.128.1") == "free"


async def test_release_by_owner_frees_all_of_them(cli: Cli, rest: RunningService) -> None:
    for address in ("10.11.128.21", "10.11.128.20"):
        assert (await cli("ips", "reserve", address)).code == 0
    released = await cli("ips", "release", "--owner", "reserved/alice")
    assert released.code == 0, released
    assert released.stdout == ("released 2 address(es) of reserved/alice: 10.11.128.20, "
                               "10.11.128.21\n")
    assert await state_of(rest, "10.11.128.20") == "free"
    none_left = await cli("ips", "release", "--owner", "reserved/alice")
    assert none_left.code == 6
    assert error_line(none_left) == ("error: owner reserved/alice holds no address "
                                     "(404 not_found)")


# -- issue 16: one page by default, the next page's command, --watch, --reason everywhere -----
def next_page_command(stderr: str) -> list[str]:
    """The arguments of the command the note says lists the next page (program name dropped)."""
    note = stderr.split("Next page: ", 1)[1].split("   (--all", 1)[0]
    words = shlex.split(note)
    return words[words.index("ips"):]


async def test_list_is_one_page_and_says_how_to_get_the_next(cli: Cli) -> None:
    first = await cli("ips", "list", "--state", "free", "--pool", POOL)
    assert first.code == 0, first
    rows = [line.split()[0] for line in first.stdout.splitlines()[1:]]
    assert len(rows) == 50 and rows[0] == "10.11.128.1" and rows[-1] == "10.11.128.50"
    assert first.stderr.startswith("showing 50; more match. Next page: ")
    again = next_page_command(first.stderr)
    assert again[:6] == ["ips", "list", "--pool", POOL, "--state", "free"]
    assert again[6] == "--cursor" and len(again) == 8
    second = await cli(*again)
    assert [line.split()[0] for line in second.stdout.splitlines()[1:]][:2] == [
        "10.11.128.51", "10.11.128.52"]
    # json carries the API's cursor; the last page has none and no note.
    doc = json.loads((await cli("ips", "list", "--limit", "2", "-o", "json")).stdout)
    tail = await cli("ips", "list", "--cursor", doc["next_cursor"], "--all", "-o", "json")
    items = json.loads(tail.stdout)
    assert len(items["items"]) == 2043 and items["next_cursor"] is None and tail.stderr == ""
    both = await cli("ips", "list", "--all", "--limit", "5")
    assert both.code == 2 and "--all" in error_line(both)


async def test_watch_redraws_until_interrupted(
        cli: Cli, rest: RunningService, monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []

    def reserve_then_stop(seconds: float) -> None:
        """Between frames: the first pause reserves an address, the second is Ctrl-C."""
        pauses.append(seconds)
        if len(pauses) == 2:
            raise KeyboardInterrupt
        resp = httpx.post(f"{rest.url}/v1/addresses/10.11.128.7/reserve", headers=ADMIN)
        assert resp.status_code == 200, resp.text

    monkeypatch.setattr(ipam.cli.watch, "pause", reserve_then_stop)
    run = await cli("ips", "list", "--state", "reserved", "--watch")
    assert run.code == 0, run
    assert pauses == [2.0, 2.0]  # --watch alone: every 2 s
    assert run.stderr.count("no matching items") == 1  # frame 1: nothing reserved yet
    # Frame 2 (into a pipe: after a blank line) has the address reserved between the frames.
    assert run.stdout.startswith("\n")
    assert run.stdout.split()[::6] == ["ADDRESS", "10.11.128.7"]  # 6 columns a row

    pauses.clear()
    monkeypatch.setattr(ipam.cli.watch, "pause", pauses.append)
    counted = await cli("ips", "list", "--state", "reserved", "--watch", "0.5", "--count", "3")
    assert counted.code == 0, counted
    assert pauses == [0.5, 0.5] and counted.stdout.count("ADDRESS") == 3


async def test_reason_is_the_one_name_and_note_still_works(cli: Cli) -> None:
    run = await cli("ips", "reserve", "10.11.128.11", "--reason", "db vip")
    assert run.code == 0, run
    old = await cli("ips", "reserve", "10.11.128.12", "--note", "old script")
    assert old.code == 0, old
    assert old.stderr.startswith("warning: --note is deprecated; use --reason")
    released = await cli("ips", "release", "10.11.128.11", "--reason", "moved")
    assert released.code == 0, released
    rows = json.loads((await cli("audit", "-o", "json", "--actor", "operator:alice")).stdout)
    assert [(r["action"], r["address"], r["reason"]) for r in rows["items"]] == [
        ("release", "10.11.128.11", "moved"), ("reserve", "10.11.128.12", "old script"),
        ("reserve", "10.11.128.11", "db vip")]
    clash = await cli("ips", "release", "10.11.128.12", "--reason", "a", "--note", "b")
    assert clash.code == 2 and "old name of --reason" in clash.stderr
    for command in ("reserve", "release"):
        shown = await cli("ips", command, "--help")
        assert "--reason" in shown.stdout and "--note" not in shown.stdout
