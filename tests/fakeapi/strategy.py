"""Per-resource create/update rules (defaults, validation, immutability).

A subset of pkg/registry/*/strategy.go and pkg/apis/*/validation chosen for the
behaviour a scheduler extender / IPAM controller can trip over: pod spec
immutability (spec.nodeName can only be set through pods/binding), extended
resource requests==limits, status reset on create, label syntax.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from .errors import invalid
from .resources import (
    DAEMONSETS,
    DEPLOYMENTS,
    NAMESPACES,
    PODS,
    REPLICASETS,
    SECRETS,
    STATEFULSETS,
    ResourceType,
)
from .selection import selector_from_label_selector_object

JSON = dict[str, Any]

_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_SUBDOMAIN_RE = re.compile(f"^{_SUBDOMAIN}$")
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_QNAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_MAX_ANNOTATIONS = 256 * 1024
_WORKLOADS = (DEPLOYMENTS, REPLICASETS, STATEFULSETS, DAEMONSETS)
_POD_MUTABLE_MSG = (
    "pod updates may not change fields other than "
    "`spec.containers[*].image`,`spec.initContainers[*].image`,"
    "`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),"
    "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
)

Cause = tuple[str, str, str]
_WORKLOAD_STATUS_ZEROES: dict[str, JSON] = {
    "ReplicaSet": {"replicas": 0},
    "StatefulSet": {"replicas": 0, "availableReplicas": 0},
    "DaemonSet": {
        "currentNumberScheduled": 0,
        "numberMisscheduled": 0,
        "desiredNumberScheduled": 0,
        "numberReady": 0,
    },
}


def _qualified_name_ok(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _SUBDOMAIN_RE.match(prefix)):
        return False
    return 0 < len(name) <= 63 and bool(_QNAME_RE.match(name))


def validate_metadata(rt: ResourceType, meta: JSON) -> None:
    name = meta.get("name", "")
    causes: list[Cause] = []
    if rt is NAMESPACES:
        if len(name) > 63 or not _LABEL_RE.match(name):
            causes.append(
                (
                    "metadata.name",
                    "FieldValueInvalid",
                    f'Invalid value: "{name}": a lowercase RFC 1123 label must consist of lower '
                    "case alphanumeric characters or '-', and must start and end with an "
                    "alphanumeric character",
                )
            )
    elif len(name) > 253 or not _SUBDOMAIN_RE.match(name):
        causes.append(
            (
                "metadata.name",
                "FieldValueInvalid",
                f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower '
                "case alphanumeric characters, '-' or '.', and must start and end with an "
                "alphanumeric character (e.g. 'example.com', regex used for validation is "
                f"'{_SUBDOMAIN}')",
            )
        )
    for k, v in (meta.get("labels") or {}).items():
        if not _qualified_name_ok(k):
            causes.append(
                (
                    "metadata.labels",
                    "FieldValueInvalid",
                    f'Invalid value: "{k}": name part must consist of alphanumeric characters, '
                    "'-', '_' or '.', and must start and end with an alphanumeric character",
                )
            )
        if len(v) > 63 or not _LABEL_VALUE_RE.match(v):
            causes.append(
                (
                    "metadata.labels",
                    "FieldValueInvalid",
                    f'Invalid value: "{v}": a valid label must be an empty string or consist of '
                    "alphanumeric characters, '-', '_' or '.', and must start and end with an "
                    "alphanumeric character",
                )
            )
    annotations = meta.get("annotations") or {}
    size = 0
    for k, v in annotations.items():
        if not _qualified_name_ok(k.lower()):
            causes.append(
                (
                    "metadata.annotations",
                    "FieldValueInvalid",
                    f'Invalid value: "{k}": name part must consist of alphanumeric characters',
                )
            )
        size += len(k) + len(v)
    if size > _MAX_ANNOTATIONS:
        causes.append(
            (
                "metadata.annotations",
                "FieldValueTooLong",
                f"Too long: must have at most {_MAX_ANNOTATIONS} bytes",
            )
        )
    if causes:
        raise invalid(rt, name, causes)


def _is_extended(resource: str) -> bool:
    if "/" not in resource:
        return False
    domain = resource.split("/", 1)[0]
    return not (
        domain == "kubernetes.io"
        or domain.endswith(".kubernetes.io")
        or resource.startswith("requests.")
    )


def _containers(spec: JSON) -> list[tuple[str, JSON]]:
    out: list[tuple[str, JSON]] = []
    for fld in ("initContainers", "containers"):
        for i, c in enumerate(spec.get(fld) or []):
            out.append((f"spec.{fld}[{i}]", c))
    return out


def _qos(spec: JSON) -> str:
    requests_any = False
    guaranteed = True
    for _, c in _containers(spec):
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for r in ("cpu", "memory"):
            if r in req or r in lim:
                requests_any = True
            if r not in lim or req.get(r, lim.get(r)) != lim.get(r):
                guaranteed = False
    if not requests_any:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def default_pod(pod: JSON) -> None:
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("serviceAccountName", spec.get("serviceAccount", "default"))
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
        if not any(t.get("key") == key for t in tolerations):
            tolerations.append(
                {"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
            )
    for _, c in _containers(spec):
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        image = c.get("image", "")
        tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
        c.setdefault(
            "imagePullPolicy",
            "IfNotPresent" if tagged and not image.endswith(":latest") else "Always",
        )
        res = c.setdefault("resources", {})
        limits = res.get("limits") or {}
        if limits:
            requests = res.setdefault("requests", {})
            for k, v in limits.items():
                requests.setdefault(k, v)
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")


def validate_pod(pod: JSON) -> None:
    name = pod["metadata"].get("name", "")
    spec = pod.get("spec") or {}
    causes: list[Cause] = []
    if not spec.get("containers"):
        causes.append(("spec.containers", "FieldValueRequired", "Required value"))
    seen: set[str] = set()
    for path, c in _containers(spec):
        cname = c.get("name", "")
        if not cname:
            causes.append((f"{path}.name", "FieldValueRequired", "Required value"))
        elif cname in seen:
            causes.append((f"{path}.name", "FieldValueDuplicate", f'Duplicate value: "{cname}"'))
        seen.add(cname)
        if not c.get("image"):
            causes.append((f"{path}.image", "FieldValueRequired", "Required value"))
        res = c.get("resources") or {}
        req, lim = res.get("requests") or {}, res.get("limits") or {}
        for r in sorted(set(req) | set(lim)):
            if not _is_extended(r):
                continue
            if r not in lim:
                causes.append(
                    (
                        f"{path}.resources.limits",
                        "FieldValueRequired",
                        "Required value: Limit must be set for non overcommitable resources",
                    )
                )
            elif r in req and req[r] != lim[r]:
                causes.append(
                    (
                        f"{path}.resources.requests[{r}]",
                        "FieldValueInvalid",
                        f'Invalid value: "{req[r]}": must be equal to {r} limit of {lim[r]}',
                    )
                )
            if r in req and not re.fullmatch(r"\d+", req[r]):
                causes.append(
                    (
                        f"{path}.resources.requests[{r}]",
                        "FieldValueInvalid",
                        f'Invalid value: "{req[r]}": must be an integer',
                    )
                )
    if causes:
        raise invalid(PODS, name, causes)


def _validate_workload(rt: ResourceType, obj: JSON) -> None:
    name = obj["metadata"].get("name", "")
    spec = obj.get("spec") or {}
    sel = spec.get("selector")
    if not sel:
        raise invalid(rt, name, [("spec.selector", "FieldValueRequired", "Required value")])
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    if not selector_from_label_selector_object(sel).matches(labels):
        raise invalid(
            rt,
            name,
            [
                (
                    "spec.template.metadata.labels",
                    "FieldValueInvalid",
                    f"Invalid value: {labels}: `selector` does not match template `labels`",
                )
            ],
        )


def prepare_create(rt: ResourceType, obj: JSON, *, raw: bool) -> None:
    """Defaults + validation on create. ``raw`` (test-side writes) keeps status."""
    if rt is PODS:
        default_pod(obj)
        if not raw:
            obj["status"] = {"phase": "Pending", "qosClass": _qos(obj["spec"])}
        else:
            obj.setdefault("status", {}).setdefault("phase", "Pending")
        validate_pod(obj)
    elif rt in _WORKLOADS:
        spec = obj.setdefault("spec", {})
        if rt is not DAEMONSETS:
            spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        if rt is DEPLOYMENTS:
            spec.setdefault("progressDeadlineSeconds", 600)
            spec.setdefault(
                "strategy",
                {
                    "type": "RollingUpdate",
                    "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
                },
            )
        if rt is STATEFULSETS:
            spec.setdefault("podManagementPolicy", "OrderedReady")
        _validate_workload(rt, obj)
        # Non-omitempty int fields of the Go status structs always serialise.
        status = obj.get("status")
        given: JSON = status if raw and isinstance(status, dict) else {}
        obj["status"] = {**_WORKLOAD_STATUS_ZEROES.get(rt.kind, {}), **given}
    elif rt is NAMESPACES:
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
    elif rt.has_status and not raw and rt is not PODS and rt.kind != "Node":
        obj["status"] = {}
    if rt is SECRETS:
        _fold_string_data(obj)
        obj.setdefault("type", "Opaque")


def _fold_string_data(secret: JSON) -> None:
    string_data = secret.pop("stringData", None)
    if string_data:
        data = secret.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(v.encode()).decode()


def _masked_pod_spec(spec: JSON) -> JSON:
    s = {
        k: v
        for k, v in spec.items()
        if k
        not in (
            "activeDeadlineSeconds",
            "tolerations",
            "schedulingGates",
            "terminationGracePeriodSeconds",
        )
    }
    for fld in ("containers", "initContainers"):
        if fld in s:
            s[fld] = [{k: v for k, v in c.items() if k != "image"} for c in s[fld]]
    return s


def prepare_update(
    rt: ResourceType, old: JSON, new: JSON, subresource: str | None, *, raw: bool
) -> JSON:
    """Apply update strategy; returns the object to persist (``new`` may be mutated)."""
    if subresource == "status":
        out = dict(old)
        out["status"] = {**_WORKLOAD_STATUS_ZEROES.get(rt.kind, {}), **(new.get("status") or {})}
        return out
    if rt is SECRETS:
        _fold_string_data(new)
    if raw:
        return new
    if rt.has_status:
        if "status" in old:
            new["status"] = old["status"]
        else:
            new.pop("status", None)
    if rt is PODS:
        default_pod(new)
        old_spec, new_spec = old.get("spec") or {}, new.get("spec") or {}
        name = old["metadata"]["name"]
        if _masked_pod_spec(old_spec) != _masked_pod_spec(new_spec):
            raise invalid(
                PODS, name, [("spec", "FieldValueForbidden", f"Forbidden: {_POD_MUTABLE_MSG}")]
            )
        old_tol = old_spec.get("tolerations") or []
        if any(t not in (new_spec.get("tolerations") or []) for t in old_tol):
            raise invalid(
                PODS,
                name,
                [
                    (
                        "spec.tolerations",
                        "FieldValueForbidden",
                        "Forbidden: existing toleration can not be modified except its "
                        "tolerationSeconds",
                    )
                ],
            )
        if any(
            g not in (old_spec.get("schedulingGates") or [])
            for g in new_spec.get("schedulingGates") or []
        ):
            raise invalid(
                PODS,
                name,
                [
                    (
                        "spec.schedulingGates",
                        "FieldValueForbidden",
                        "Forbidden: only deletion is allowed, but found new scheduling gate",
                    )
                ],
            )
        validate_pod(new)
    elif rt in _WORKLOADS:
        _validate_workload(rt, new)
        if (old.get("spec") or {}).get("selector") != (new.get("spec") or {}).get("selector"):
            raise invalid(
                rt,
                old["metadata"]["name"],
                [("spec.selector", "FieldValueInvalid", "Invalid value: field is immutable")],
            )
    return new


def check_finalizers_on_terminating(rt: ResourceType, old: JSON, new: JSON) -> None:
    if not old["metadata"].get("deletionTimestamp"):
        return
    before = set(old["metadata"].get("finalizers") or [])
    added = [f for f in new["metadata"].get("finalizers") or [] if f not in before]
    if added:
        raise invalid(
            rt,
            old["metadata"]["name"],
            [
                (
                    "metadata.finalizers",
                    "FieldValueForbidden",
                    "Forbidden: no new finalizers can be added if the object is being deleted, "
                    f"found new finalizers {added}",
                )
            ],
        )
