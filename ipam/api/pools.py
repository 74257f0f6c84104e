"""Operator view of pools: config and usage per pool, range and VLAN; config import.

``POST /v1/pools/import`` takes galaxy's floatingips exactly as galaxy users keep it: the
JSON list, or the whole ``floatingip-config`` ConfigMap YAML. ``dry_run=true`` shows the
diff and changes nothing. A config that would strand addresses in use is refused (409,
listing them); a wrong entry is 422 naming the entry and field.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from ipam.api.auth import Admin, Reader, actor_of
from ipam.api.deps import RuntimeDep
from ipam.api.errors import error_responses
from ipam.errors import InvalidInput
from ipam.services.pool_import import PoolImport
from ipam.services.pool_usage import Counts, PoolUsageReads

router = APIRouter(prefix="/v1", tags=["pools"])


class UsageCounts(BaseModel):
    total: int
    allocated: int
    kept: int
    reserved: int
    quarantined: int = Field(0, description="Released, cooling down before reuse")
    used: int = Field(description="allocated + kept + reserved + quarantined")
    free: int


class RangeUsage(UsageCounts):
    range: str = Field(description="first~last, or one address")


class PoolOut(UsageCounts):
    name: str
    position: int
    family: int
    subnet: str
    gateway: str | None
    vlan: int | None
    node_subnets: list[str]
    ips: list[str]
    quarantine_seconds: int | None = Field(
        None, description="The entry's quarantineSeconds; null: the service's default "
                          "(IPAM_QUARANTINE_SECONDS)")
    ranges: list[RangeUsage]


class VlanOut(UsageCounts):
    vlan: int | None = Field(description="null: pools without a VLAN")
    pools: list[str]


class PoolList(BaseModel):
    items: list[PoolOut] = Field(description="In config order")
    vlans: list[VlanOut]


class ConfigDiffOut(BaseModel):
    added: list[str]
    removed: list[str]
    changed: dict[str, dict[str, Any]] = Field(description="pool -> field -> {from, to}")
    moved_addresses: int
    dropped_free_rows: int
    dry_run: bool
    empty: bool
    warnings: list[str] = Field(
        default_factory=list,
        description="Accepted but written loosely, e.g. a subnet with host bits (masked as "
                    "galaxy does)")


def _counts(c: Counts) -> dict[str, int]:
    return {"total": c.total, "allocated": c.allocated, "kept": c.kept, "reserved": c.reserved,
            "quarantined": c.quarantined, "used": c.used, "free": c.free}


@router.get("/pools", response_model=PoolList, responses=error_responses(401, 403, 503))
async def list_pools(runtime: RuntimeDep, _: Reader) -> PoolList:
    """Pools in config order with usage in total, per range and per VLAN."""
    report = await PoolUsageReads(runtime).pool_usage_detail()
    items = [
        PoolOut(**detail.usage.to_dict(),
                ranges=[RangeUsage(range=name, **_counts(c)) for name, c in detail.ranges])
        for detail in report.pools
    ]
    vlans = [VlanOut(vlan=v.vlan, pools=v.pools, **_counts(v.counts)) for v in report.vlans]
    return PoolList(items=items, vlans=vlans)


#: One entry of galaxy's floatingips list (addresses and CIDRs are checked by the service).
_ENTRY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "routableSubnet": {"type": "string", "description": "Node subnet (CIDR)"},
        "nodeSubnets": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "ips": {"type": "array", "items": {"type": "string"}, "minItems": 1,
                "description": "Addresses or first~last ranges"},
        "subnet": {"type": "string", "description": "The pods' subnet (CIDR)"},
        "gateway": {"type": "string"},
        "vlan": {"type": "integer", "minimum": 0, "maximum": 4094},
        "name": {"type": "string", "minLength": 1},
        "quarantineSeconds": {"type": "integer", "minimum": 0, "maximum": 604800,
                              "description": "Cool-down of a released address before another "
                                             "owner may take it; 0: none"},
    },
    "required": ["ips", "subnet"],
    "oneOf": [{"required": ["routableSubnet"]}, {"required": ["nodeSubnets"]}],
    "additionalProperties": False,
}
_IMPORT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "galaxy's floatingips: the JSON list, or the ConfigMap YAML",
        "content": {
            "application/json": {"schema": {"type": "array", "items": _ENTRY}},
            "application/yaml": {"schema": {"type": "string"}},
            "text/plain": {"schema": {"type": "string"}},
        },
    }
}


@router.post("/pools/import", response_model=ConfigDiffOut, openapi_extra=_IMPORT_BODY,
             responses=error_responses(401, 403, 409, 413, 422, 503))
async def import_pools(request: Request, principal: Admin, runtime: RuntimeDep,
                       dry_run: Annotated[bool, Query(description="Diff only")] = False
                       ) -> ConfigDiffOut:
    """Replace the pool config (idempotent); refuses to strand addresses in use."""
    raw = await request.body()
    try:
        document = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("body: the pool config is not UTF-8 text", field="body") from None
    if not document.strip():
        raise InvalidInput("body: send the floatingips JSON list or the ConfigMap YAML",
                           field="body")
    try:
        diff = await PoolImport(runtime).import_pools(
            document, dry_run=dry_run, actor=actor_of(request, principal))
    except ValueError as exc:
        # The JSON and YAML decoders refuse an integer of more than 4,300 digits with a plain
        # ValueError, which the engine's load_document lets through.
        raise InvalidInput(f"body: a number is too long: {str(exc).split(';')[0]}",
                           field="body") from None
    return ConfigDiffOut(**diff.to_dict())
