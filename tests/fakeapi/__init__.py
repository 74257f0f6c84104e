"""In-repo fake kube-apiserver for tests and benchmarks (real HTTP, real watch streams).

See :class:`FakeApiServer` for the Python control API and ``python -m tests.fakeapi``
for running it as a separate process.
"""

from .errors import ApiError
from .faults import FaultInjector, FaultRule
from .objects import (
    ENI_IP_RESOURCE,
    make_configmap,
    make_deployment,
    make_lease,
    make_node,
    make_pod,
    make_replicaset,
    make_statefulset,
    owner_reference,
)
from .resources import ALL_RESOURCES, ResourceType, resolve
from .server import FakeApiServer, RequestRecord
from .store import Settings

__all__ = [
    "ALL_RESOURCES",
    "ENI_IP_RESOURCE",
    "ApiError",
    "FakeApiServer",
    "FaultInjector",
    "FaultRule",
    "RequestRecord",
    "ResourceType",
    "Settings",
    "make_configmap",
    "make_deployment",
    "make_lease",
    "make_node",
    "make_pod",
    "make_replicaset",
    "make_statefulset",
    "owner_reference",
    "resolve",
]
