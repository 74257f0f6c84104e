"""The operator and CNI use cases under one name, for callers that want them all.

Each use case lives in the module named for it: ``address_reads`` (one address, pages,
taken rows), ``pool_usage`` (usage per pool, range and VLAN), ``cni_reports`` (the CNI
plugin's lookups and reports), ``address_changes`` (reserve and release), ``named_pools``
(galaxy's ``/v1/pool``), ``pool_import`` (config import with dry run), and ``pod_lookup``
(finding pods the service did not see itself).
"""

from __future__ import annotations

from ipam.services.address_changes import RESERVED_PREFIX, AddressChanges, Refusal
from ipam.services.address_reads import (
    ADDRESS_STATES,
    MAX_LIMIT,
    AddressPage,
    AddressReads,
    AddressView,
)
from ipam.services.cni_reports import CniReports
from ipam.services.named_pools import NamedPools, NamedPoolState
from ipam.services.pod_lookup import POD_LOOKUP_SECONDS, UNKNOWN, PodLookup, PodState
from ipam.services.pool_import import PoolImport
from ipam.services.pool_usage import Counts, PoolDetail, PoolUsageReads, UsageReport, VlanUsage

__all__ = ["ADDRESS_STATES", "MAX_LIMIT", "POD_LOOKUP_SECONDS", "RESERVED_PREFIX", "UNKNOWN",
           "AddressAdmin", "AddressPage", "AddressView", "Counts", "NamedPoolState",
           "PodLookup", "PodState", "PoolDetail", "Refusal", "UsageReport", "VlanUsage"]


class AddressAdmin(AddressReads, PoolUsageReads, CniReports, AddressChanges, NamedPools,
                   PoolImport):
    """Every operator and CNI use case on one object (they share ``RuntimeUseCase``)."""
