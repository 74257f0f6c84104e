"""Operator endpoints on addresses: list and filter, look one up, reserve, release.

Lists are keyset-paginated by address (``cursor`` is opaque; ``next_cursor`` is null on the
last page) and include free addresses that have no row yet. Mutations need an ``admin``
token, are audited as ``operator:<token name>`` with the request's id, and refuse (409) to
take an address from a live pod unless ``force=true``.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Literal, cast

from fastapi import APIRouter, Body, Depends, Path, Query, Request
from pydantic import BaseModel, Field, JsonValue

from ipam.api.auth import Admin, Reader, actor_of
from ipam.api.deps import RuntimeDep
from ipam.api.errors import error_responses
from ipam.errors import InvalidInput
from ipam.services.address_changes import AddressChanges
from ipam.services.address_reads import AddressReads, AddressView
from ipam.storage.records import AddressRecord

router = APIRouter(prefix="/v1", tags=["addresses"])

State = Literal["free", "allocated", "kept", "reserved", "quarantined"]
#: Documents the address parameters precisely, so schema-driven clients send real addresses.
IP_SCHEMA: dict[str, JsonValue] = {"anyOf": [{"type": "string", "format": "ipv4"},
                                 {"type": "string", "format": "ipv6"}]}
AddressPath = Annotated[str, Path(max_length=64, description="An IPv4 or IPv6 address",
                                  json_schema_extra=IP_SCHEMA)]
Force = Annotated[bool, Query(description="Release even while a live pod holds it")]


class AddressOut(BaseModel):
    address: str
    pool: str
    prefix_length: int
    gateway: str | None
    vlan: int | None
    state: State
    owner: str | None = Field(description="Owner key: deploy/ns/name, sts/ns/name/ordinal, "
                                          "pool/name, pod/ns/name, reserved/token, ...")
    policy: str | None
    pod_namespace: str | None
    pod_name: str | None
    pod_uid: str | None
    node: str | None
    note: str | None
    allocated_at: datetime | None
    kept_since: datetime | None
    updated_at: datetime | None = Field(description="null for a free address without a row")
    quarantined_until: datetime | None = Field(
        default=None, description="In state quarantined: until when only its owner (`owner`) "
                                  "may take it back; then it is free")


class AddressList(BaseModel):
    items: list[AddressOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page")


class ReserveBody(BaseModel):
    note: str | None = Field(default=None, max_length=1000, description="Why, for the audit")


class ReleaseBody(BaseModel):
    reason: str | None = Field(default=None, max_length=1000)


class OwnerReleaseBody(BaseModel):
    owner: str = Field(min_length=1, max_length=512, description="Owner key, e.g. "
                                                                 "deploy/default/web")
    reason: str | None = Field(default=None, max_length=1000)


class Released(BaseModel):
    released: list[AddressOut] = Field(description="The addresses this call freed")


def _out(view: AddressView) -> AddressOut:
    return AddressOut(
        address=str(view.address), pool=view.pool, prefix_length=view.prefix_length,
        gateway=str(view.gateway) if view.gateway is not None else None, vlan=view.vlan,
        state=cast(State, view.state),
        owner=view.owner, policy=view.policy, pod_namespace=view.pod_namespace,
        pod_name=view.pod_name, pod_uid=view.pod_uid, node=view.node, note=view.note,
        allocated_at=view.allocated_at, kept_since=view.kept_since, updated_at=view.updated_at,
        quarantined_until=view.quarantined_until)


def _outs(rows: list[AddressRecord]) -> list[AddressOut]:
    return [_out(AddressView.of(r)) for r in rows]


def parse_address(value: str, field: str = "address") -> ipaddress.IPv4Address | \
        ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise InvalidInput(f"{field}: {value!r} is not an IP address", field=field) from None


def parse_subnet(value: str, field: str = "subnet") -> ipaddress.IPv4Network | \
        ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise InvalidInput(f"{field}: {value!r} is not a CIDR", field=field) from None


def _reads(runtime: RuntimeDep) -> AddressReads:
    return AddressReads(runtime)


def _changes(runtime: RuntimeDep) -> AddressChanges:
    return AddressChanges(runtime)


ReadsDep = Annotated[AddressReads, Depends(_reads)]
ChangesDep = Annotated[AddressChanges, Depends(_changes)]


@router.get("/addresses", response_model=AddressList,
            responses=error_responses(401, 403, 422, 503))
async def list_addresses(
    reads: ReadsDep, _: Reader,
    pool: Annotated[str | None, Query(max_length=253)] = None,
    subnet: Annotated[str | None, Query(max_length=64, description="CIDR")] = None,
    node: Annotated[str | None, Query(max_length=253)] = None,
    namespace: Annotated[str | None, Query(max_length=253)] = None,
    owner: Annotated[str | None, Query(max_length=512, description="Owner key; a trailing "
                                                                   "* matches a prefix")] = None,
    state: State | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> AddressList:
    """Addresses in address order (IPv4 first), free ones included unless filtered out."""
    page = await reads.list_addresses(
        pool=pool, subnet=parse_subnet(subnet) if subnet else None, node=node,
        namespace=namespace, owner=owner, state=state, limit=limit, cursor=cursor)
    return AddressList(items=[_out(v) for v in page.items], next_cursor=page.next_cursor)


@router.get("/addresses/{address}", response_model=AddressOut,
            responses=error_responses(401, 403, 404, 422, 503))
async def get_address(address: AddressPath, reads: ReadsDep, _: Reader) -> AddressOut:
    """One address of a configured pool, whatever its state."""
    return _out(await reads.get(parse_address(address)))


@router.post("/addresses/{address}/reserve", response_model=AddressOut,
             responses=error_responses(401, 403, 404, 409, 422, 503))
async def reserve_address(address: AddressPath, request: Request, principal: Admin,
                          changes: ChangesDep,
                          body: Annotated[ReserveBody | None, Body()] = None) -> AddressOut:
    """Keep a free address out of allocation (owner ``reserved/<token name>``)."""
    record = await changes.reserve(
        parse_address(address), holder_name=principal.name,
        note=body.note if body is not None else None, actor=actor_of(request, principal))
    return _out(AddressView.of(record))


@router.post("/addresses/{address}/release", response_model=Released,
             responses=error_responses(401, 403, 404, 409, 422, 503))
async def release_address(address: AddressPath, request: Request, principal: Admin,
                          changes: ChangesDep,
                          force: Force = False,
                          body: Annotated[ReleaseBody | None, Body()] = None) -> Released:
    """Free an address (reserved, kept, or allocated with force); idempotent."""
    rows = await changes.release(
        parse_address(address), force=force, actor=actor_of(request, principal),
        reason=body.reason if body is not None else None)
    return Released(released=_outs(rows))


@router.post("/owners/release", response_model=Released,
             responses=error_responses(401, 403, 404, 409, 422, 503))
async def release_owner(body: OwnerReleaseBody, request: Request, principal: Admin,
                        changes: ChangesDep, force: Force = False) -> Released:
    """Free every address of an owner, all or none (409 while a live pod holds one)."""
    rows = await changes.release_owner(
        body.owner, force=force, actor=actor_of(request, principal), reason=body.reason)
    return Released(released=_outs(rows))
