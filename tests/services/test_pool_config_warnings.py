"""A galaxy file with host bits in a subnet imports, and says what it read (issue 13, item 5)."""

from __future__ import annotations

import logging

import pytest

from ipam.engine.pool_config import parse_pool_config
from ipam.services.allocation import Actor
from ipam.services.pool_config import PoolConfigService

GALAXY_STYLE = [{"routableSubnet": "10.10.100.9/24", "ips": ["10.0.1.10~10.0.1.20"],
                 "subnet": "10.0.1.2/24", "gateway": "10.0.1.1", "vlan": 2}]


async def test_dry_run_and_import_return_the_warning_and_log_it(
    pool_service: PoolConfigService, actor: Actor, caplog: pytest.LogCaptureFixture,
) -> None:
    config = parse_pool_config(GALAXY_STYLE)
    with caplog.at_level(logging.WARNING, logger="ipam.services.pool_config"):
        dry = await pool_service.apply(config, actor=actor, dry_run=True)
    assert dry.dry_run and dry.added == ["10.0.1.0/24"]
    assert [w.split(":")[0] for w in dry.to_dict()["warnings"]] == [
        "entry 0, field routableSubnet", "entry 0, field subnet"]
    assert "10.0.1.2/24 has host bits set; read as 10.0.1.0/24" in dry.warnings[1]
    assert [r.getMessage() for r in caplog.records] == [
        f"pool config: {w}" for w in config.warnings]
    assert await pool_service.current() == []

    applied = await pool_service.apply(config, actor=actor)
    assert applied.added == ["10.0.1.0/24"] and applied.warnings == dry.warnings
    (pool,) = await pool_service.current()
    assert (str(pool.subnet), [str(n) for n in pool.node_subnets]) == (
        "10.0.1.0/24", ["10.10.100.0/24"])
    # The file re-applied unchanged (every start does): still no change, still the warning.
    again = await pool_service.apply(config, actor=actor)
    assert again.empty and again.warnings == dry.warnings
