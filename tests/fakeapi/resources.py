"""Registry of the API resources the fake serves.

Each entry carries the per-resource behaviour that the real registry strategies
encode (status subresource, create-on-update, what DELETE returns), so the
store can stay generic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class ResourceType:
    """Static description of one group/version/resource."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    model: str
    singular: str = ""
    short_names: tuple[str, ...] = ()
    subresources: frozenset[str] = field(default_factory=frozenset)
    allow_create_on_update: bool = False
    allow_unconditional_update: bool = True
    return_deleted_object: bool = False
    extra_field_selectors: frozenset[str] = field(default_factory=frozenset)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """Name used in error messages, e.g. ``deployments.apps``."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    @property
    def key(self) -> str:
        return f"{self.api_version}/{self.plural}"

    def __str__(self) -> str:
        return self.key


_STATUS = frozenset({"status"})
_POD_FIELDS = frozenset(
    {
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    }
)
_EVENT_FIELDS = frozenset(
    {
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    }
)

PODS = ResourceType(
    "",
    "v1",
    "pods",
    "Pod",
    True,
    "V1Pod",
    "pod",
    ("po",),
    frozenset({"status", "binding", "eviction"}),
    return_deleted_object=True,
    extra_field_selectors=_POD_FIELDS,
)
NODES = ResourceType(
    "",
    "v1",
    "nodes",
    "Node",
    False,
    "V1Node",
    "node",
    ("no",),
    _STATUS,
    extra_field_selectors=frozenset({"spec.unschedulable"}),
)
NAMESPACES = ResourceType(
    "",
    "v1",
    "namespaces",
    "Namespace",
    False,
    "V1Namespace",
    "namespace",
    ("ns",),
    _STATUS,
    return_deleted_object=True,
    extra_field_selectors=frozenset({"status.phase"}),
)
CONFIGMAPS = ResourceType(
    "", "v1", "configmaps", "ConfigMap", True, "V1ConfigMap", "configmap", ("cm",)
)
SECRETS = ResourceType(
    "",
    "v1",
    "secrets",
    "Secret",
    True,
    "V1Secret",
    "secret",
    extra_field_selectors=frozenset({"type"}),
)
EVENTS = ResourceType(
    "",
    "v1",
    "events",
    "Event",
    True,
    "CoreV1Event",
    "event",
    ("ev",),
    allow_create_on_update=True,
    extra_field_selectors=_EVENT_FIELDS,
)
EVENTS_V1 = ResourceType(
    "events.k8s.io",
    "v1",
    "events",
    "Event",
    True,
    "EventsV1Event",
    "event",
    ("ev",),
    allow_create_on_update=True,
)
DEPLOYMENTS = ResourceType(
    "apps",
    "v1",
    "deployments",
    "Deployment",
    True,
    "V1Deployment",
    "deployment",
    ("deploy",),
    _STATUS,
)
REPLICASETS = ResourceType(
    "apps",
    "v1",
    "replicasets",
    "ReplicaSet",
    True,
    "V1ReplicaSet",
    "replicaset",
    ("rs",),
    _STATUS,
    extra_field_selectors=frozenset({"status.replicas"}),
)
STATEFULSETS = ResourceType(
    "apps",
    "v1",
    "statefulsets",
    "StatefulSet",
    True,
    "V1StatefulSet",
    "statefulset",
    ("sts",),
    _STATUS,
)
DAEMONSETS = ResourceType(
    "apps", "v1", "daemonsets", "DaemonSet", True, "V1DaemonSet", "daemonset", ("ds",), _STATUS
)
LEASES = ResourceType(
    "coordination.k8s.io",
    "v1",
    "leases",
    "Lease",
    True,
    "V1Lease",
    "lease",
    allow_create_on_update=True,
    allow_unconditional_update=False,
)

ALL_RESOURCES: tuple[ResourceType, ...] = (
    PODS,
    NODES,
    NAMESPACES,
    CONFIGMAPS,
    SECRETS,
    EVENTS,
    EVENTS_V1,
    DEPLOYMENTS,
    REPLICASETS,
    STATEFULSETS,
    DAEMONSETS,
    LEASES,
)

_BY_PATH: dict[tuple[str, str, str], ResourceType] = {
    (r.group, r.version, r.plural): r for r in ALL_RESOURCES
}


def by_path(group: str, version: str, plural: str) -> ResourceType | None:
    """Resolve a URL's group/version/resource, or None when not served."""
    return _BY_PATH.get((group, version, plural))


def resolve(name: str | ResourceType) -> ResourceType:
    """Resolve a loose test-side name.

    Accepts ``pods``, ``po``, ``Pod``, ``deployments.apps``, ``apps/v1/deployments``.

    A bare ``events`` means core/v1 events (as kubectl resolves it).
    """
    if isinstance(name, ResourceType):
        return name
    for r in ALL_RESOURCES:
        if name in (r.key, r.qualified, f"{r.plural}.{r.version}.{r.group}"):
            return r
    for r in ALL_RESOURCES:
        if name in (r.plural, r.singular, r.kind) or name in r.short_names:
            return r
    raise KeyError(f"unknown resource {name!r}")


def groups() -> dict[str, list[str]]:
    """group -> versions, for discovery (core group is "")."""
    out: dict[str, list[str]] = {}
    for r in ALL_RESOURCES:
        versions = out.setdefault(r.group, [])
        if r.version not in versions:
            versions.append(r.version)
    return out


def in_group_version(group: str, version: str) -> Iterable[ResourceType]:
    return (r for r in ALL_RESOURCES if r.group == group and r.version == version)
