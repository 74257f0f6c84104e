"""galaxy's floatingips config: read verbatim, refused with one clear error when wrong."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from ipam.engine.pool_config import load_document, parse_pool_config
from ipam.errors import ConfigError

SEED = Path(__file__).parents[1] / "fixtures/galaxy/floatingip-config.yaml"


def entry(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "routableSubnet": "10.10.100.0/24",
        "ips": ["10.11.128.1~10.11.135.253"],
        "subnet": "10.11.128.0/21",
        "gateway": "10.11.135.254",
        "vlan": 1200,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def test_seed_configmap_is_read_verbatim() -> None:
    config = parse_pool_config(load_document(SEED.read_text()))
    (pool,) = config.pools
    assert pool.name == "10.11.128.0/21"
    assert pool.node_subnets == (ipaddress.ip_network("10.10.100.0/24"),)
    assert pool.gateway == ipaddress.ip_address("10.11.135.254")
    assert pool.vlan == 1200
    assert pool.size == 2045  # 10.11.128.1 .. 10.11.135.253
    assert pool.to_galaxy() == json.loads(
        '{"routableSubnet":"10.10.100.0/24","ips":["10.11.128.1~10.11.135.253"],'
        '"subnet":"10.11.128.0/21","gateway":"10.11.135.254","vlan":1200}')


def test_json_list_and_configmap_give_the_same_config() -> None:
    doc = load_document(SEED.read_text())
    assert parse_pool_config(load_document(json.dumps(doc))) == parse_pool_config(doc)


def test_fallback_entries_for_one_node_subnet_keep_config_order() -> None:
    config = parse_pool_config([
        entry(),
        entry(ips=["10.12.0.1~10.12.0.9"], subnet="10.12.0.0/24", gateway="10.12.0.254",
              vlan=1201),
    ])
    node = ipaddress.ip_address("10.10.100.7")
    assert [p.name for p in config.pools_for_node(node)] == ["10.11.128.0/21", "10.12.0.0/24"]
    assert config.pools_for_node(ipaddress.ip_address("10.20.0.5")) == []


def test_same_subnet_twice_gets_distinct_names() -> None:
    config = parse_pool_config([
        entry(ips=["10.11.128.1~10.11.128.9"]),
        entry(routableSubnet="10.10.101.0/24", ips=["10.11.129.1~10.11.129.9"]),
    ])
    assert [p.name for p in config.pools] == ["10.11.128.0/21", "10.11.128.0/21-2"]


def test_ipv6_slash_64_pool() -> None:
    config = parse_pool_config([{
        "nodeSubnets": ["2001:db8:ff::/64", "10.10.100.0/24"],
        "ips": ["2001:db8:1::1~2001:db8:1::ffff:ffff:ffff:fffe"],
        "subnet": "2001:db8:1::/64", "gateway": "2001:db8:1::ffff:ffff:ffff:ffff",
    }])
    assert config.pools[0].size == 2**64 - 2
    assert config.pools[0].vlan is None


def test_host_bits_in_subnets_are_masked_with_a_warning_like_galaxy() -> None:
    """galaxy reads ``10.0.1.2/24`` as ``10.0.1.0/24``; its files must load unchanged."""
    config = parse_pool_config([
        entry(),
        entry(routableSubnet="10.10.101.77/24", subnet="10.12.0.9/24", gateway="10.12.0.254",
              ips=["10.12.0.1~10.12.0.9"], vlan=None),
        {"nodeSubnets": ["2001:db8:ff::1/64"], "ips": ["2001:db8:1::1~2001:db8:1::9"],
         "subnet": "2001:db8:1::5/64"},
    ])
    masked, v6 = config.pools[1], config.pools[2]
    assert masked.node_subnets == (ipaddress.ip_network("10.10.101.0/24"),)
    assert masked.subnet == ipaddress.ip_network("10.12.0.0/24")
    assert masked.name == "10.12.0.0/24"
    assert v6.node_subnets == (ipaddress.ip_network("2001:db8:ff::/64"),)
    assert v6.subnet == ipaddress.ip_network("2001:db8:1::/64")
    assert config.warnings == (
        "entry 1, field routableSubnet: 10.10.101.77/24 has host bits set; read as "
        "10.10.101.0/24, as galaxy does (write 10.10.101.0/24 to silence this)",
        "entry 1, field subnet: 10.12.0.9/24 has host bits set; read as 10.12.0.0/24, as "
        "galaxy does (write 10.12.0.0/24 to silence this)",
        "entry 2, field nodeSubnets[0]: 2001:db8:ff::1/64 has host bits set; read as "
        "2001:db8:ff::/64, as galaxy does (write 2001:db8:ff::/64 to silence this)",
        "entry 2, field subnet: 2001:db8:1::5/64 has host bits set; read as 2001:db8:1::/64, "
        "as galaxy does (write 2001:db8:1::/64 to silence this)",
    )
    # The same pools as the clean spelling: only the warnings tell them apart.
    clean = parse_pool_config([
        entry(),
        entry(routableSubnet="10.10.101.0/24", subnet="10.12.0.0/24", gateway="10.12.0.254",
              ips=["10.12.0.1~10.12.0.9"], vlan=None),
        {"nodeSubnets": ["2001:db8:ff::/64"], "ips": ["2001:db8:1::1~2001:db8:1::9"],
         "subnet": "2001:db8:1::/64"},
    ])
    assert clean == config
    assert clean.warnings == ()


def test_masked_subnet_is_still_checked_like_any_other() -> None:
    """Masking happens first; the ranges and gateway are then checked against the network."""
    with pytest.raises(ConfigError, match=r"not inside subnet 10\.11\.128\.0/24") as info:
        parse_pool_config([entry(subnet="10.11.128.9/24", gateway="10.11.128.254",
                                 ips=["10.11.128.1~10.11.129.5"])])
    assert info.value.details["field"] == "ips[0]"


@pytest.mark.parametrize(
    ("entries", "field", "message"),
    [
        ([entry(ips=["10.11.127.1~10.11.128.5"])], "ips[0]", "not inside subnet"),
        ([entry(gateway="10.12.0.1")], "gateway", "outside subnet"),
        ([entry(ips=["10.11.128.1~10.11.135.254"])], "ips[0]", "includes the gateway"),
        ([entry(ips=["10.11.128.0~10.11.128.9"])], "ips[0]", "network address"),
        ([entry(ips=["10.11.135.255"], gateway=None)], "ips[0]", "broadcast address"),
        ([entry(vlan=5000)], "vlan", "outside 0-4094"),
        ([entry(vlan="1200")], "vlan", "write 1200, not \"1200\""),
        ([entry(ips=["10.11.128.0/24"])], "ips[0]", "is a CIDR"),
        ([entry(gateway="10.11.135.254/21")], "gateway", "is a CIDR"),
        ([entry(routableSubnet="10.10.100.0/33")], "routableSubnet", "valid CIDR"),
        ([entry(subnet="10.11.128.1")], "subnet", "not a CIDR"),
        ([entry(subnet="10.11.128.300/21")], "subnet", "valid CIDR"),
        ([entry(routableSubnet=None)], "routableSubnet", "missing"),
        ([entry(subnet=None)], "subnet", "required"),
        ([entry(ips=[])], "ips", "non-empty"),
        ([entry(ips=["10.11.128.1~10.11.128.9", "10.11.128.5"])], "ips", "overlap"),
        ([entry(), entry(ips=["10.11.130.1~10.11.130.2"])], "ips", "belong to one entry"),
        ([entry(extra=1)], None, "unknown key"),
        ([entry(nodeSubnets=["10.0.0.0/8"])], None, "not both"),
    ],
)
def test_bad_config_names_entry_and_field(
    entries: list[dict[str, Any]], field: str | None, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_pool_config(entries)
    assert info.value.details["field"] == field
    assert info.value.details["entry"] == len(entries) - 1
    assert f"entry {len(entries) - 1}" in info.value.message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[{", "not valid JSON"),
        ("kind: ConfigMap\ndata: {}\n", "no data.floatingips"),
        ("kind: ConfigMap\ndata:\n  floatingips: '[oops'\n", "not valid JSON"),
        ("{a: [", "not valid YAML"),
        ('{"routableSubnet": "10.0.0.0/24"}', "expected a JSON list"),
    ],
)
def test_unreadable_documents(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_pool_config(load_document(text))


@pytest.mark.parametrize("text", [
    '[{"routableSubnet": "10.0.0.0/24", "vlan": ' + "9" * 5000 + "}]",
    "data:\n  floatingips: '[{\"vlan\": " + "9" * 5000 + "}]'\n",
    "- vlan: " + "9" * 5000 + "\n",
])
def test_an_integer_past_the_digit_limit_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_pool_config(load_document(text))
