"""What the CNI plugin (``ipam.cni``) calls: a pod's allocation, and its DEL report.

``GET /v1/pods/{namespace}/{name}/ips`` answers 404 ``not_found`` when the pod holds no
address and 404 ``not_managed`` when the pod is known not to request the extended resource;
any other 404 (``route_not_found``) means the plugin's URL is wrong. A DEL report is audited
and changes nothing: the pod watcher releases by policy, and a sandbox is also deleted when
it is re-created for the same pod.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from ipam.api.auth import CniReporter, PodReader, actor_of
from ipam.api.deps import RuntimeDep
from ipam.api.errors import error_responses
from ipam.services.cni_reports import CniReports
from ipam.storage.records import AddressRecord

router = APIRouter(prefix="/v1", tags=["cni"])

Namespace = Annotated[str, Path(min_length=1, max_length=253, description="Pod namespace")]
PodName = Annotated[str, Path(min_length=1, max_length=253, description="Pod name")]


class RouteOut(BaseModel):
    dst: str = Field(description="0.0.0.0/0 or ::/0")
    gw: str


class PodIp(BaseModel):
    address: str
    prefix_length: int
    cidr: str = Field(description="address/prefix_length")
    gateway: str | None
    vlan: int | None
    pool: str
    family: Literal[4, 6]
    routes: list[RouteOut] = Field(description="The default route via the gateway, if any")


class PodIps(BaseModel):
    namespace: str
    name: str
    uid: str | None
    ips: list[PodIp]


class ContainerDeleted(BaseModel):
    container_id: str = Field(min_length=1, max_length=256)
    uid: str | None = Field(default=None, max_length=128)


class DeleteAck(BaseModel):
    action: Literal["none"] = Field(
        description="What the service did: none (the pod watcher releases by policy)")
    addresses: list[str]


def _ip(row: AddressRecord) -> PodIp:
    gateway = str(row.gateway) if row.gateway is not None else None
    default = "0.0.0.0/0" if row.address.version == 4 else "::/0"
    return PodIp(
        address=str(row.address), prefix_length=row.prefix_length,
        cidr=f"{row.address}/{row.prefix_length}", gateway=gateway, vlan=row.vlan,
        pool=row.pool, family=4 if row.address.version == 4 else 6,
        routes=[RouteOut(dst=default, gw=gateway)] if gateway is not None else [])


@router.get("/pods/{namespace}/{name}/ips", response_model=PodIps,
            responses=error_responses(401, 403, 404, 422, 503))
async def pod_ips(namespace: Namespace, name: PodName, runtime: RuntimeDep,
                  _: PodReader) -> PodIps:
    """The pod's addresses in slot order, with prefix, gateway, VLAN, pool and routes."""
    rows = await CniReports(runtime).pod_allocation(namespace, name)
    return PodIps(namespace=namespace, name=name, uid=rows[0].pod_uid,
                  ips=[_ip(r) for r in rows])


@router.post("/pods/{namespace}/{name}/container-deleted", status_code=202,
             response_model=DeleteAck, responses=error_responses(401, 403, 404, 422, 503))
async def container_deleted(namespace: Namespace, name: PodName, body: ContainerDeleted,
                            request: Request, principal: CniReporter,
                            runtime: RuntimeDep) -> DeleteAck:
    """CNI DEL of a pod's sandbox: audited (action ``cni.del``); addresses stay."""
    rows = await CniReports(runtime).container_deleted(
        namespace, name, body.container_id, body.uid, actor_of(request, principal))
    return DeleteAck(action="none", addresses=[str(r.address) for r in rows])
