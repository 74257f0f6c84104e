"""galaxy's ``k8s.v1.cni.galaxy.io/args`` annotation: requested ranges in, ipinfos out.

In: ``{"request_ip_range": [["10.0.0.5"], ["10.0.0.9~10.0.0.20"]]}`` - one address from each
inner list, all or nothing. Out: the same JSON with ``common.ipinfos`` filled, the shape
galaxy's CNI reads (``{"ip": "10.11.128.7/21", "vlan": 1200, "gateway": "10.11.135.254"}``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ipam.engine.ip_ranges import IPAddress, IpRange, RangeSyntaxError
from ipam.engine.pod import CNI_ARGS_ANNOTATION, PodFacts

MAX_REQUESTED = 16


class ArgsError(ValueError):
    """The args annotation cannot be read; the message says which part."""


@dataclass(frozen=True, slots=True)
class IpInfo:
    address: IPAddress
    prefix_length: int
    gateway: IPAddress | None
    vlan: int | None

    def to_galaxy(self) -> dict[str, Any]:
        return {
            "ip": f"{self.address}/{self.prefix_length}",
            "vlan": self.vlan or 0,
            "gateway": str(self.gateway) if self.gateway is not None else "",
        }


def requested_ranges(pod: PodFacts) -> list[list[IpRange]]:
    """One list of candidate ranges per address the pod asks for; ``[]`` = one of any pool."""
    raw = pod.annotations.get(CNI_ARGS_ANNOTATION)
    if not raw:
        return []
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ArgsError(f"{CNI_ARGS_ANNOTATION} is not valid JSON: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise ArgsError(f"{CNI_ARGS_ANNOTATION} must be a JSON object")
    groups = doc.get("request_ip_range")
    if groups is None:
        return []
    if not isinstance(groups, list) or not all(isinstance(g, list) and g for g in groups):
        raise ArgsError("request_ip_range must be a list of non-empty lists of 'a~b' strings")
    if len(groups) > MAX_REQUESTED:
        raise ArgsError(f"request_ip_range asks for {len(groups)} addresses; at most "
                        f"{MAX_REQUESTED} per pod")
    out: list[list[IpRange]] = []
    for i, group in enumerate(groups):
        try:
            out.append([IpRange.parse(item) for item in group])
        except RangeSyntaxError as exc:
            raise ArgsError(f"request_ip_range[{i}]: {exc}") from None
    return out


def annotation_with_ipinfos(pod: PodFacts, infos: Sequence[IpInfo]) -> str:
    """The args annotation the Binding carries: the pod's own args plus ``common.ipinfos``."""
    doc: dict[str, Any] = {}
    raw = pod.annotations.get(CNI_ARGS_ANNOTATION)
    if raw:
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            doc = parsed
    common = doc.get("common")
    if not isinstance(common, dict):
        common = {}
    common["ipinfos"] = [info.to_galaxy() for info in infos]
    doc["common"] = common
    return json.dumps(doc, separators=(",", ":"))


def annotated_addresses(pod: PodFacts) -> list[IPAddress]:
    """Addresses the pod's args annotation says it was given (``common.ipinfos``)."""
    import ipaddress

    raw = pod.annotations.get(CNI_ARGS_ANNOTATION)
    if not raw:
        return []
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        return []
    common = doc.get("common") if isinstance(doc, dict) else None
    infos = common.get("ipinfos") if isinstance(common, dict) else None
    out: list[IPAddress] = []
    for info in infos if isinstance(infos, list) else []:
        ip = info.get("ip") if isinstance(info, dict) else None
        if isinstance(ip, str):
            try:
                out.append(ipaddress.ip_interface(ip).ip)
            except ValueError:
                continue
    return out
