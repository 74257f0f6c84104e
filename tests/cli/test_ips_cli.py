"""`ipam ips list|reserve|release` through the REST API of the real service."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.api.rest_conftest import READ, bind
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
    assert "showing the first 3; more match" in cut.stderr
    # Pages of 1,000 followed by cursor: all 2,045, then a limit across a page boundary.
    every = json.loads((await cli("ips", "list", "--limit", "0", "-o", "json")).stdout)["items"]
    assert len(every) == 2045 and len({i["address"] for i in every}) == 2045
    assert every[-1]["address"] == "10.11.135.253"
    some = await cli("ips", "list", "--limit", "1500", "-o", "json")
    assert len(json.loads(some.stdout)["items"]) == 1500 and "more match" in some.stderr

    bad_state = await cli("ips", "list", "--state", "lost")
    assert bad_state.code == 2
    bad_subnet = await cli("ips", "list", "--subnet", "10.11/33")
    assert bad_subnet.code == 2
    assert error_line(bad_subnet) == ("error: subnet: '10.11/33' is not a CIDR "
                                      "(422 invalid)")


async def test_reserve_then_release(cli: Cli, rest: RunningService) -> None:
    reserved = await cli("ips", "reserve", "10.11.128.9", "--note", "licence server")
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
