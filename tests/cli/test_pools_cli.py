"""`ipam pools import|list|show` through the REST API of the real service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import ipam.cli.watch
from tests.api.rest_conftest import ADMIN, bind
from tests.cli.conftest import Cli, error_line
from tests.service_harness import RunningService

SEED_POOL = "10.11.128.0/21"
TWO_POOLS = [
    {"routableSubnet": "10.10.100.0/24",
     "ips": ["10.11.128.1~10.11.128.10", "10.11.129.1~10.11.129.5"],
     "subnet": "10.11.128.0/21", "gateway": "10.11.135.254", "vlan": 1200},
    {"routableSubnet": "10.10.100.0/24", "ips": ["10.12.0.1~10.12.0.4"],
     "subnet": "10.12.0.0/24", "gateway": "10.12.0.254", "vlan": 1200},
]


def columns(line: str) -> list[str]:
    return line.split()


async def test_list_and_show_in_every_format(cli: Cli) -> None:
    run = await cli("pools", "list")
    assert run.code == 0, run
    header, row = run.stdout.splitlines()
    assert columns(header) == ["NAME", "SUBNET", "VLAN", "TOTAL", "USED", "USED%", "FREE"]
    assert columns(row) == [SEED_POOL, SEED_POOL, "1200", "2045", "0", "0%", "2045"]

    wide = await cli("pools", "list", "-o", "wide")
    assert columns(wide.stdout.splitlines()[0])[7:] == [
        "GATEWAY", "ALLOCATED", "KEPT", "RESERVED", "NODE-SUBNETS", "RANGES"]
    assert columns(wide.stdout.splitlines()[1])[7:] == [
        "10.11.135.254", "0", "0", "0", "10.10.100.0/24", "10.11.128.1~10.11.135.253"]

    as_json = json.loads((await cli("pools", "list", "-o", "json")).stdout)
    as_yaml = yaml.safe_load((await cli("pools", "list", "-o", "yaml")).stdout)
    assert as_json == as_yaml
    assert [(p["name"], p["total"]) for p in as_json["items"]] == [(SEED_POOL, 2045)]
    assert as_json["vlans"][0]["vlan"] == 1200

    show = await cli("pools", "show", SEED_POOL)
    assert show.code == 0, show
    assert "Gateway:      10.11.135.254" in show.stdout
    assert "Addresses:    2045 total, 0 used (0 allocated, 0 kept, 0 reserved), 2045 free" \
        in show.stdout
    ranges = show.stdout.split("Ranges:\n")[1].splitlines()
    assert columns(ranges[0])[-1] == "USED%"
    assert columns(ranges[1]) == ["10.11.128.1~10.11.135.253", "2045", "0", "0", "0", "2045",
                                  "0%"]
    assert f"VLAN 1200 (pools {SEED_POOL}):" in show.stdout

    missing = await cli("pools", "show", "nope")
    assert missing.code == 6
    assert error_line(missing) == f"error: pool 'nope' does not exist (pools: {SEED_POOL})"


async def test_import_dry_run_shows_the_diff_and_changes_nothing(
        cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "pools.json"
    config.write_text(json.dumps(TWO_POOLS))

    dry = await cli("pools", "import", "--dry-run", str(config))
    assert dry.code == 0, dry
    diff = json.loads(dry.stdout)
    assert diff["dry_run"] is True and diff["added"] == ["10.12.0.0/24"]
    assert diff["changed"][SEED_POOL]["ips"]["to"] == TWO_POOLS[0]["ips"]
    listed = json.loads((await cli("pools", "list", "-o", "json")).stdout)
    assert [p["name"] for p in listed["items"]] == [SEED_POOL]

    applied = await cli("pools", "import", str(config), "-o", "yaml")
    assert applied.code == 0, applied
    assert yaml.safe_load(applied.stdout)["dry_run"] is False
    again = await cli("pools", "import", str(config))
    assert json.loads(again.stdout)["empty"] is True

    show = await cli("pools", "show", SEED_POOL, "-o", "json")
    pool: dict[str, Any] = json.loads(show.stdout)
    assert [(r["range"], r["total"]) for r in pool["ranges"]] == [
        ("10.11.128.1~10.11.128.10", 10), ("10.11.129.1~10.11.129.5", 5)]
    assert pool["vlan_usage"]["pools"] == [SEED_POOL, "10.12.0.0/24"]
    assert pool["vlan_usage"]["total"] == 19


async def test_import_refusals_are_one_line_with_their_exit_code(
        cli: Cli, rest: RunningService, rest_seed_pod: dict[str, Any], tmp_path: Path) -> None:
    await bind(rest, rest_seed_pod)  # 10.11.128.1 allocated
    shrink = tmp_path / "shrink.json"
    shrink.write_text(json.dumps([{**TWO_POOLS[0], "ips": ["10.11.128.100~10.11.128.110"]}]))
    refused = await cli("pools", "import", str(shrink))
    assert refused.code == 3, refused
    line = error_line(refused)
    assert "10.11.128.1" in line and line.endswith("(409 conflict)")

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{**TWO_POOLS[0], "ips": ["10.11.128.0/24"]}]))
    invalid = await cli("pools", "import", str(bad))
    assert invalid.code == 2
    assert "entry 0, field 'ips[0]'" in error_line(invalid)

    missing = await cli("pools", "import", str(tmp_path / "nope.yaml"))
    assert missing.code == 2
    assert "cannot read" in error_line(missing)


async def test_used_percent_wherever_usage_is_tabulated(
        cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rest: RunningService) -> None:
    config = tmp_path / "pools.json"
    config.write_text(json.dumps(TWO_POOLS))
    assert (await cli("pools", "import", str(config))).code == 0
    small = "10.12.0.0/24"  # 4 addresses
    frames: list[int] = []

    def reserve_between_frames(seconds: float) -> None:
        frames.append(1)
        resp = httpx.post(f"{rest.url}/v1/addresses/10.12.0.{len(frames)}/reserve",
                          headers=ADMIN)
        assert resp.status_code == 200, resp.text

    monkeypatch.setattr(ipam.cli.watch, "pause", reserve_between_frames)
    run = await cli("pools", "list", "--watch", "--count", "3")
    assert run.code == 0, run
    tables = run.stdout.split("\n\n")
    assert len(tables) == 3 and all(t.startswith("NAME") for t in tables)
    used = [next(columns(r)[4:6] for r in t.splitlines() if r.startswith(small))
            for t in tables]
    assert used == [["0", "0%"], ["1", "25%"], ["2", "50%"]]
    seed = next(columns(r) for r in tables[0].splitlines() if r.startswith(SEED_POOL))
    assert seed[4:7] == ["0", "0%", "15"]

    await rest.client.post("/v1/addresses/10.11.128.1/reserve", headers=ADMIN)
    show = await cli("pools", "show", SEED_POOL)
    ranges = show.stdout.split("Ranges:\n")[1].split("\n\n")[0].splitlines()
    assert [columns(r)[-1] for r in ranges] == ["USED%", "10%", "0%"]
    vlan = show.stdout.split("(pools ")[1].splitlines()
    assert columns(vlan[1])[-1] == "USED%" and columns(vlan[2])[-1] == "15%"  # 3 of 19
