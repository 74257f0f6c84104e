"""PATCH semantics: JSON merge patch (RFC 7386), strategic merge patch, JSON patch (RFC 6902).

The python client sends dict bodies as *strategic* merge patches by default, so
strategic merge is implemented for the list fields that carry a patchMergeKey
in the Kubernetes API types the fake serves (containers by name, conditions by
type, ownerReferences by uid, ...). Every other list is replaced, exactly as
in the real apiserver.
"""

from __future__ import annotations

import copy
from typing import Any, cast

import jsonpatch  # type: ignore[import-untyped]

from .errors import ApiError, bad_request

JSON = dict[str, Any]

_PRIMITIVE = ""  # marker: list of scalars merged as a set (patchStrategy=merge, no key)

# (parent field, list field) -> patchMergeKey, from the Go struct tags.
MERGE_KEYS: dict[tuple[str, str], str] = {
    ("metadata", "ownerReferences"): "uid",
    ("metadata", "finalizers"): _PRIMITIVE,
    ("spec", "containers"): "name",
    ("spec", "initContainers"): "name",
    ("spec", "ephemeralContainers"): "name",
    ("spec", "volumes"): "name",
    ("spec", "imagePullSecrets"): "name",
    ("spec", "resourceClaims"): "name",
    ("spec", "schedulingGates"): "name",
    ("spec", "hostAliases"): "ip",
    ("spec", "topologySpreadConstraints"): "topologyKey",
    ("spec", "podCIDRs"): _PRIMITIVE,
    ("status", "conditions"): "type",
    ("status", "podIPs"): "ip",
    ("status", "hostIPs"): "ip",
    ("status", "addresses"): "type",
    ("status", "resourceClaimStatuses"): "name",
}
for _c in ("containers", "initContainers", "ephemeralContainers"):
    MERGE_KEYS[(_c, "env")] = "name"
    MERGE_KEYS[(_c, "ports")] = "containerPort"
    MERGE_KEYS[(_c, "volumeMounts")] = "mountPath"
    MERGE_KEYS[(_c, "volumeDevices")] = "devicePath"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: JSON = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            result.pop(k, None)
        else:
            result[k] = merge_patch(result.get(k), v)
    return result


def _strip_directives(value: Any) -> Any:
    """Drop ``$patch``-style directive keys and nulls (used where content replaces)."""
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and v is not None
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _smp_map(orig: JSON, patch: JSON, parent: str) -> JSON:
    directive = patch.get("$patch")
    if directive == "replace":
        return cast(JSON, _strip_directives(patch))
    if directive not in (None, "merge", "delete"):
        raise bad_request(f"Unknown patch type: {directive}")
    result: JSON = dict(orig)
    deletions: list[tuple[str, list[Any]]] = []
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            if not isinstance(v, list):
                raise bad_request("invalid $deleteFromPrimitiveList directive")
            deletions.append((k.split("/", 1)[1], v))
            continue
        if v is None:
            result.pop(k, None)
            continue
        cur = result.get(k)
        if isinstance(v, dict):
            if v.get("$patch") == "delete":
                result.pop(k, None)
            else:
                result[k] = _smp_map(cur if isinstance(cur, dict) else {}, v, k)
        elif isinstance(v, list):
            result[k] = _smp_list(cur if isinstance(cur, list) else [], v, parent, k)
        else:
            result[k] = v
    for fld, values in deletions:
        if isinstance(result.get(fld), list):
            result[fld] = [x for x in result[fld] if x not in values]
    retain = patch.get("$retainKeys")
    if isinstance(retain, list):
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _smp_list(orig: list[Any], patch: list[Any], parent: str, fld: str) -> list[Any]:
    key = MERGE_KEYS.get((parent, fld))
    if key is None:
        return cast(list[Any], _strip_directives(patch))
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [
            _strip_directives(x)
            for x in patch
            if not (isinstance(x, dict) and x.get("$patch") == "replace")
        ]
    if key == _PRIMITIVE:
        result = list(orig)
        for x in patch:
            if x not in result:
                result.append(x)
        return result
    result = [dict(x) if isinstance(x, dict) else x for x in orig]
    for item in patch:
        if not isinstance(item, dict):
            raise bad_request(f"strategic merge patch: element of {fld} must be an object")
        kv = item.get(key)
        idx = next(
            (i for i, r in enumerate(result) if isinstance(r, dict) and r.get(key) == kv), -1
        )
        if item.get("$patch") == "delete":
            result = [r for r in result if not (isinstance(r, dict) and r.get(key) == kv)]
        elif idx >= 0:
            result[idx] = _smp_map(result[idx], item, fld)
        else:
            result.append(_smp_map({}, item, fld))
    return result


def strategic_merge_patch(target: JSON, patch: Any) -> JSON:
    """Strategic merge patch for built-in types (see MERGE_KEYS)."""
    if not isinstance(patch, dict):
        raise bad_request(
            "json: cannot unmarshal array into Go value of type map[string]interface {}"
        )
    return _smp_map(target, patch, "")


def json_patch(target: JSON, ops: Any) -> JSON:
    """RFC 6902 via the ``jsonpatch`` library; failures map to the apiserver's codes."""
    if not isinstance(ops, list):
        raise bad_request("json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    try:
        patch = jsonpatch.JsonPatch(ops)
    except (jsonpatch.InvalidJsonPatch, TypeError, KeyError) as e:
        raise bad_request(str(e)) from e
    try:
        result = patch.apply(target)
    except jsonpatch.InvalidJsonPatch as e:
        raise bad_request(str(e)) from e
    except (
        jsonpatch.JsonPatchException,
        jsonpatch.JsonPointerException,
        TypeError,
        KeyError,
        IndexError,
    ) as e:
        raise ApiError(422, "Invalid", str(e) or type(e).__name__) from e
    if not isinstance(result, dict):
        raise bad_request("json patch result is not an object")
    return result
