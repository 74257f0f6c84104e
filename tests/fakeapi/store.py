"""Thread-safe in-memory object store with a global resourceVersion and watch fan-out.

Stored objects are treated as immutable: every write builds a new dict, so
readers may serialise them outside the lock. One RLock serialises all writes,
which gives a total order of events (RV order) to every watcher; each watcher
has its own queue so slow consumers never block writers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import strategy
from .errors import (
    OPTIMISTIC_LOCK_MSG,
    ApiError,
    already_exists,
    bad_request,
    conflict,
    expired,
    invalid,
    namespace_not_found,
    not_found,
)
from .jsonutil import clone, dumps, loads
from .patching import json_patch, merge_patch, strategic_merge_patch
from .resources import ALL_RESOURCES, NAMESPACES, PODS, ResourceType
from .schema import format_time, normalize
from .selection import FieldSelector, LabelSelector

JSON = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, APPLY_PATCH)
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass
class Settings:
    """Tunables; defaults mimic a real apiserver except where tests need speed."""

    history_size: int = 1000
    """Watch events kept per resource; older RVs get 410 Expired."""
    bookmark_interval: float = 60.0
    """Seconds between periodic BOOKMARKs on watches with allowWatchBookmarks."""
    default_watch_timeout: float = 1800.0
    """Server-side watch timeout when the client sends no timeoutSeconds."""
    graceful_pod_deletion: bool = False
    """If True, deleting a bound pod with a grace period only sets deletionTimestamp
    (like a real kubelet-backed cluster); use ``finalize_pod`` to play the kubelet."""
    enforce_namespaces: bool = False
    """If True, creates in a non-existent namespace fail with 404 like NamespaceLifecycle."""
    create_default_namespaces: bool = True
    record_requests: bool = True


def now() -> str:
    return format_time(datetime.now(UTC))


@dataclass(slots=True)
class _Event:
    type: str
    rv: int
    rt: ResourceType
    key: Key
    obj: JSON
    prev: JSON | None = None
    _bytes: bytes | None = None

    def obj_bytes(self) -> bytes:
        if self._bytes is None:
            self._bytes = dumps(self.obj)
        return self._bytes


def _event_line(etype: str, obj_bytes: bytes) -> bytes:
    return b'{"type":"' + etype.encode() + b'","object":' + obj_bytes + b"}\n"


class Watcher:
    """One open watch stream. Mutated under the store lock; drained by the HTTP handler."""

    def __init__(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        bookmarks: bool,
        loop: asyncio.AbstractEventLoop | None,
    ) -> None:
        self.rt = rt
        self.namespace = namespace
        self.labels = labels
        self.fields = fields
        self.bookmarks = bookmarks
        self.loop = loop
        self.loop_thread = threading.get_ident()
        self.queue: list[bytes] = []
        self.wake = asyncio.Event()
        self.closed = False
        self.abort = False
        self._pending = False

    def matches(self, obj: JSON | None) -> bool:
        if obj is None:
            return False
        meta = obj["metadata"]
        if self.namespace and meta.get("namespace") != self.namespace:
            return False
        return self.labels.matches(meta.get("labels")) and self.fields.matches(obj)

    def offer(self, ev: _Event) -> None:
        new = self.matches(ev.obj)
        if ev.type == "MODIFIED":
            old = self.matches(ev.prev)
            if new and old:
                etype = "MODIFIED"
            elif new:
                etype = "ADDED"
            elif old:
                etype = "DELETED"
            else:
                return
        elif new:
            etype = ev.type
        else:
            return
        self.push(_event_line(etype, ev.obj_bytes()))

    def push(self, line: bytes) -> None:
        self.queue.append(line)
        self._notify()

    def push_bookmark(self, rv: int, annotations: dict[str, str] | None = None) -> None:
        meta: JSON = {"resourceVersion": str(rv), "creationTimestamp": None}
        if annotations:
            meta["annotations"] = annotations
        obj = {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": meta}
        self.push(_event_line("BOOKMARK", dumps(obj)))

    def close(self, abrupt: bool = False) -> None:
        self.closed = True
        self.abort = self.abort or abrupt
        self._notify()

    def drain(self) -> list[bytes]:
        lines, self.queue = self.queue, []
        self._pending = False
        self.wake.clear()
        return lines

    def _notify(self) -> None:
        if self._pending or self.loop is None:
            return
        self._pending = True
        if threading.get_ident() == self.loop_thread:
            self.wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # loop closed: server shutting down
                self.loop.call_soon_threadsafe(self.wake.set)


@dataclass
class ListResult:
    body: JSON
    items: list[JSON] = field(default_factory=list)


def _gen_suffix() -> str:
    return "".join(random.choices(_GENERATE_ALPHABET, k=5))


def _meta(obj: JSON) -> JSON:
    m = obj.get("metadata")
    if not isinstance(m, dict):
        raise bad_request("metadata must be an object")
    return m


def _without_rv(obj: JSON) -> JSON:
    o = dict(obj)
    m = dict(o.get("metadata") or {})
    m.pop("resourceVersion", None)
    o["metadata"] = m
    return o


def _encode_continue(rv: int, start: Key) -> str:
    raw = dumps({"v": "meta.k8s.io/v1", "rv": rv, "start": f"{start[0]}/{start[1]}\x00"})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, Key]:
    try:
        data = loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        ns, _, name = str(data["start"]).rstrip("\x00").partition("/")
        return int(data["rv"]), (ns, name)
    except (ValueError, KeyError, TypeError) as e:
        raise bad_request(f"continue key is not valid: {e}") from e


class Store:
    """All API state. Methods raise :class:`ApiError` exactly where the apiserver would."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._rv = 0
        self._objects: dict[ResourceType, dict[Key, JSON]] = {rt: {} for rt in ALL_RESOURCES}
        self._history: dict[ResourceType, deque[_Event]] = {rt: deque() for rt in ALL_RESOURCES}
        self._compacted: dict[ResourceType, int] = dict.fromkeys(ALL_RESOURCES, 0)
        self._watchers: dict[ResourceType, set[Watcher]] = {rt: set() for rt in ALL_RESOURCES}
        self._uids: dict[str, tuple[ResourceType, Key]] = {}
        self._dependents: dict[str, set[tuple[ResourceType, Key]]] = {}
        if self.settings.create_default_namespaces:
            for ns in DEFAULT_NAMESPACES:
                self.create(NAMESPACES, None, {"metadata": {"name": ns}}, raw=True)

    # ------------------------------------------------------------------ basics
    @property
    def resource_version(self) -> int:
        return self._rv

    def _key(self, rt: ResourceType, namespace: str | None, name: str) -> Key:
        return (namespace or "", name) if rt.namespaced else ("", name)

    def _commit(self, rt: ResourceType, key: Key, etype: str, obj: JSON, prev: JSON | None) -> JSON:
        """Assign the next RV, store (or remove) and fan out. Caller holds the lock."""
        self._rv += 1
        rv = self._rv
        obj = dict(obj)
        obj["metadata"] = meta = dict(obj["metadata"])
        meta["resourceVersion"] = str(rv)
        table = self._objects[rt]
        uid = meta.get("uid", "")
        old_refs = {
            r.get("uid") for r in ((prev or {}).get("metadata", {}).get("ownerReferences") or [])
        }
        new_refs = (
            {r.get("uid") for r in (meta.get("ownerReferences") or [])}
            if etype != "DELETED"
            else set()
        )
        for ref in old_refs - new_refs:
            deps = self._dependents.get(ref)
            if deps is not None:
                deps.discard((rt, key))
                if not deps:
                    del self._dependents[ref]
        for ref in new_refs - old_refs:
            self._dependents.setdefault(ref, set()).add((rt, key))
        if etype == "DELETED":
            table.pop(key, None)
            self._uids.pop(uid, None)
        else:
            table[key] = obj
            self._uids[uid] = (rt, key)
        ev = _Event(etype, rv, rt, key, obj, prev)
        hist = self._history[rt]
        hist.append(ev)
        while len(hist) > self.settings.history_size:
            self._compacted[rt] = hist.popleft().rv
        for w in self._watchers[rt]:
            w.offer(ev)
        return obj

    def _decode(
        self, rt: ResourceType, body: Any, field_validation: str | None
    ) -> tuple[JSON, list[str]]:
        if not isinstance(body, dict):
            raise bad_request(f"the body of the request is not a {rt.kind} object")
        if body.get("kind") not in (None, "", rt.kind):
            raise bad_request(
                f"the kind of the object ({body['kind']}) does not match the expected kind "
                f"({rt.kind})"
            )
        if body.get("apiVersion") not in (None, "", rt.api_version):
            raise bad_request(
                f"the API version in the data ({body['apiVersion']}) does not match the expected "
                f"API version ({rt.api_version})"
            )
        decoded, warnings = normalize(rt, body, field_validation)
        obj: JSON = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {}}
        obj.update((k, v) for k, v in decoded.items() if k not in ("kind", "apiVersion"))
        return obj, warnings

    def _check_namespace(self, rt: ResourceType, namespace: str | None, meta: JSON) -> None:
        if not rt.namespaced:
            meta.pop("namespace", None)
            return
        body_ns = meta.get("namespace")
        if body_ns and namespace and body_ns != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        ns = namespace or body_ns
        if not ns:
            raise bad_request("the namespace of the provided object is empty")
        meta["namespace"] = ns

    # ------------------------------------------------------------------ reads
    def get(self, rt: ResourceType, namespace: str | None, name: str) -> JSON:
        obj = self._objects[rt].get(self._key(rt, namespace, name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def find(self, rt: ResourceType, namespace: str | None, name: str) -> JSON | None:
        return self._objects[rt].get(self._key(rt, namespace, name))

    def _snapshot(self, rt: ResourceType, rv: int) -> dict[Key, JSON]:
        """The collection as it was at ``rv``, rebuilt by undoing (newest first) every event
        after it. A real apiserver serves every continue page from etcd's snapshot at the first
        page's revision, so a paged list is consistent however writes interleave. Caller holds
        the lock and has checked ``rv`` is not compacted (the history covers what follows)."""
        history = self._history[rt]
        if not history or history[-1].rv <= rv:
            return self._objects[rt]
        table = dict(self._objects[rt])
        for ev in reversed(history):
            if ev.rv <= rv:
                break
            if ev.prev is None:
                table.pop(ev.key, None)
            else:
                table[ev.key] = ev.prev
        return table

    def _select(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        table: dict[Key, JSON] | None = None,
    ) -> list[tuple[Key, JSON]]:
        if table is None:
            table = self._objects[rt]
        pinned = fields.value_of("metadata.name")
        if pinned is not None and (namespace or not rt.namespaced):
            obj = table.get(self._key(rt, namespace, pinned))
            candidates: Iterable[tuple[Key, JSON]] = (
                [(self._key(rt, namespace, pinned), obj)] if obj else []
            )
        else:
            candidates = table.items()
        out = [
            (k, o)
            for k, o in candidates
            if (not namespace or k[0] == namespace)
            and labels.matches(o["metadata"].get("labels"))
            and fields.matches(o)
        ]
        out.sort(key=lambda kv: kv[0])
        return out

    def list_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
        *,
        limit: int | None = None,
        continue_token: str | None = None,
        resource_version: str | None = None,
        resource_version_match: str | None = None,
    ) -> JSON:
        """Collection as the apiserver returns it (items without kind/apiVersion)."""
        labels = labels or LabelSelector()
        fields = fields or FieldSelector()
        with self._lock:
            list_rv = self._rv
            if continue_token:
                token_rv, start = _decode_continue(continue_token)
                if token_rv < self._compacted[rt]:
                    raise expired(
                        "The provided continue parameter is too old to display a consistent list "
                        "result. "
                        "You can start a new list without the continue parameter, or use the "
                        "continue token "
                        "in this response to retrieve the remainder of the results. Continuing "
                        "with the provided "
                        "token results in an inconsistent list - objects that were created, "
                        "modified, or deleted "
                        "between the time the first chunk was returned and now may show up in the "
                        "list."
                    )
                list_rv = token_rv
                snapshot = self._snapshot(rt, token_rv)
                selected = [
                    kv for kv in self._select(rt, namespace, labels, fields, snapshot)
                    if kv[0] > start
                ]
            else:
                if resource_version_match == "Exact" and resource_version:
                    try:
                        want = int(resource_version)
                    except ValueError as e:
                        raise bad_request(f"invalid resource version: {resource_version}") from e
                    if want < self._compacted[rt]:
                        raise expired(
                            f"too old resource version: {want} ({self._compacted[rt] + 1})"
                        )
                selected = self._select(rt, namespace, labels, fields)
        meta: JSON = {"resourceVersion": str(list_rv)}
        if limit and limit > 0 and len(selected) > limit:
            rest = len(selected) - limit
            selected = selected[:limit]
            meta["continue"] = _encode_continue(list_rv, selected[-1][0])
            if labels.empty and fields.empty:
                meta["remainingItemCount"] = rest
        items = [
            {k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for _, o in selected
        ]
        return {
            "kind": rt.list_kind,
            "apiVersion": rt.api_version,
            "metadata": meta,
            "items": items,
        }

    # ------------------------------------------------------------------ create
    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        body: Any,
        *,
        raw: bool = False,
        dry_run: bool = False,
        field_validation: str | None = None,
    ) -> tuple[JSON, list[str]]:
        obj, warnings = self._decode(rt, body, field_validation)
        meta = obj["metadata"]
        self._check_namespace(rt, namespace, meta)
        if not meta.get("name") and not meta.get("generateName"):
            raise invalid(
                rt,
                "",
                [
                    (
                        "metadata.name",
                        "FieldValueRequired",
                        "Required value: name or generateName is required",
                    )
                ],
            )
        for k in (
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
            "managedFields",
        ):
            meta.pop(k, None)
        if not raw:
            meta.pop("uid", None)
        with self._lock:
            if (
                self.settings.enforce_namespaces
                and rt.namespaced
                and ("", meta["namespace"]) not in self._objects[NAMESPACES]
            ):
                raise namespace_not_found(meta["namespace"])
            if not meta.get("name"):
                for _ in range(100):
                    candidate = meta["generateName"] + _gen_suffix()
                    if self._key(rt, meta.get("namespace"), candidate) not in self._objects[rt]:
                        meta["name"] = candidate
                        break
            strategy.validate_metadata(rt, meta)
            strategy.prepare_create(rt, obj, raw=raw)
            key = self._key(rt, meta.get("namespace"), meta["name"])
            if key in self._objects[rt]:
                raise already_exists(rt, meta["name"])
            meta.setdefault("uid", str(uuid.uuid4()))
            meta["creationTimestamp"] = now()
            meta["generation"] = 1
            if dry_run:
                return obj, warnings
            return self._commit(rt, key, "ADDED", obj, None), warnings

    # ------------------------------------------------------------------ update
    def _check_preconditions(
        self, rt: ResourceType, cur: JSON, uid: str | None, rv: str | None
    ) -> None:
        cm = cur["metadata"]
        if uid and uid != cm.get("uid"):
            raise conflict(
                rt,
                cm["name"],
                f"Precondition failed: UID in precondition: {uid}, UID in object meta: "
                f"{cm.get('uid')}",
            )
        if rv and rv != cm.get("resourceVersion"):
            raise conflict(rt, cm["name"], OPTIMISTIC_LOCK_MSG)

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        *,
        subresource: str | None = None,
        raw: bool = False,
        dry_run: bool = False,
        field_validation: str | None = None,
    ) -> tuple[JSON, bool, list[str]]:
        """PUT. Returns (object, created, warnings)."""
        obj, warnings = self._decode(rt, body, field_validation)
        meta = obj["metadata"]
        if meta.get("name") != name:
            raise bad_request(
                f"the name of the object ({meta.get('name', '')}) does not match the name on the "
                f"URL ({name})"
            )
        self._check_namespace(rt, namespace, meta)
        with self._lock:
            cur = self._objects[rt].get(self._key(rt, namespace, name))
            if cur is None:
                if not rt.allow_create_on_update or subresource:
                    raise not_found(rt, name)
                created, _ = self.create(rt, namespace, obj, raw=raw, dry_run=dry_run)
                return created, True, warnings
            if not meta.get("resourceVersion") and not rt.allow_unconditional_update and not raw:
                raise invalid(
                    rt,
                    name,
                    [
                        (
                            "metadata.resourceVersion",
                            "FieldValueInvalid",
                            "Invalid value: 0x0: must be specified for an update",
                        )
                    ],
                )
            self._check_preconditions(rt, cur, meta.get("uid"), meta.get("resourceVersion"))
            return self._finish_update(rt, cur, obj, subresource, raw, dry_run), False, warnings

    def _finish_update(
        self,
        rt: ResourceType,
        cur: JSON,
        new: JSON,
        subresource: str | None,
        raw: bool,
        dry_run: bool,
    ) -> JSON:
        cm = cur["metadata"]
        nm = new.setdefault("metadata", {})
        for k in (
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if k in cm:
                nm[k] = cm[k]
            else:
                nm.pop(k, None)
        nm.pop("selfLink", None)
        new["kind"], new["apiVersion"] = rt.kind, rt.api_version
        strategy.validate_metadata(rt, nm)
        if not raw:
            strategy.check_finalizers_on_terminating(rt, cur, new)
        out = strategy.prepare_update(rt, cur, new, subresource, raw=raw)
        if (out.get("spec") != cur.get("spec")) and subresource is None:
            out["metadata"] = dict(out["metadata"], generation=cm.get("generation", 1) + 1)
        if _without_rv(out) == _without_rv(cur):
            return (
                cur  # no-op writes do not bump the resourceVersion (GuaranteedUpdate short-circuit)
            )
        if dry_run:
            return out
        key = self._key(rt, cm.get("namespace"), cm["name"])
        om = out["metadata"]
        if (
            om.get("deletionTimestamp")
            and om.get("deletionGracePeriodSeconds", 0) == 0
            and not om.get("finalizers")
        ):
            final = self._commit(rt, key, "DELETED", out, cur)
            self._collect_garbage(cm["uid"], "Background")
            return final
        return self._commit(rt, key, "MODIFIED", out, cur)

    # ------------------------------------------------------------------ patch
    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        patch_type: str,
        patch: Any,
        *,
        subresource: str | None = None,
        raw: bool = False,
        dry_run: bool = False,
        field_validation: str | None = None,
        field_manager: str | None = None,
    ) -> tuple[JSON, bool, list[str]]:
        """PATCH with any of PATCH_TYPES. Returns (object, created, warnings)."""
        if patch_type == APPLY_PATCH and not field_manager:
            raise ApiError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: is '
                "required for apply patch",
            )
        with self._lock:
            cur = self._objects[rt].get(self._key(rt, namespace, name))
            if cur is None:
                if patch_type != APPLY_PATCH or subresource:
                    raise not_found(rt, name)
                if not isinstance(patch, dict):
                    raise bad_request("apply patch must be an object")
                body = dict(patch)
                body["metadata"] = dict(body.get("metadata") or {}, name=name)
                created, warnings = self.create(
                    rt, namespace, body, raw=raw, dry_run=dry_run, field_validation=field_validation
                )
                return created, True, warnings
            base = clone(cur)
            if patch_type == JSON_PATCH:
                patched = json_patch(base, patch)
            elif patch_type == MERGE_PATCH:
                if not isinstance(patch, dict):
                    raise bad_request(
                        "json: cannot unmarshal array into Go value of type map[string]interface {}"
                    )
                patched = merge_patch(base, patch)
            elif patch_type in (STRATEGIC_PATCH, APPLY_PATCH):
                patched = strategic_merge_patch(base, patch)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(PATCH_TYPES)}",
                )
            pm_raw = patched.get("metadata")
            pm: JSON = pm_raw if isinstance(pm_raw, dict) else {}
            if pm.get("name", name) != name:
                raise bad_request(
                    f"the name of the object ({pm.get('name')}) does not match the name on the "
                    f"URL ({name})"
                )
            self._check_preconditions(rt, cur, pm.get("uid"), pm.get("resourceVersion"))
            obj, warnings = self._decode(rt, patched, field_validation)
            return self._finish_update(rt, cur, obj, subresource, raw, dry_run), False, warnings

    # ------------------------------------------------------------------ delete
    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        options: JSON | None = None,
        *,
        dry_run: bool = False,
    ) -> JSON:
        """DELETE; returns the response body (object or Status) like the real registry."""
        options = options or {}
        pre = options.get("preconditions") or {}
        with self._lock:
            cur = self.get(rt, namespace, name)
            cm = cur["metadata"]
            if pre.get("uid") and pre["uid"] != cm.get("uid"):
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: "
                    f"{cm.get('uid')}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != cm.get("resourceVersion"):
                raise conflict(
                    rt,
                    name,
                    "Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, "
                    f"ResourceVersion in object meta: {cm.get('resourceVersion')}",
                )
            if dry_run:
                return cur if rt.return_deleted_object else self._delete_status(rt, cur)
            return self._delete_locked(rt, cur, options)

    def _delete_status(self, rt: ResourceType, obj: JSON) -> JSON:
        details: JSON = {"name": obj["metadata"]["name"]}
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
        details["uid"] = obj["metadata"].get("uid")
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": details,
        }

    def _propagation(self, options: JSON) -> str:
        policy = options.get("propagationPolicy")
        if policy:
            if policy not in ("Orphan", "Background", "Foreground"):
                raise bad_request(
                    "DeleteOptions.meta.k8s.io is invalid: propagationPolicy: Unsupported value: "
                    f"{policy!r}"
                )
            return str(policy)
        if options.get("orphanDependents") is True:
            return "Orphan"
        return "Background"

    def _delete_locked(self, rt: ResourceType, cur: JSON, options: JSON) -> JSON:
        cm = cur["metadata"]
        key = self._key(rt, cm.get("namespace"), cm["name"])
        grace = options.get("gracePeriodSeconds")
        propagation = self._propagation(options)
        if (
            rt is PODS
            and self.settings.graceful_pod_deletion
            and (cur.get("spec") or {}).get("nodeName")
            and (cur.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ):
            period = (
                grace
                if grace is not None
                else (cur.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            )
            if period and period > 0:
                if (
                    cm.get("deletionTimestamp")
                    and cm.get("deletionGracePeriodSeconds", 0) <= period
                ):
                    return cur
                meta = dict(cm)
                meta["deletionTimestamp"] = format_time(
                    datetime.now(UTC) + timedelta(seconds=period)
                )
                meta["deletionGracePeriodSeconds"] = period
                meta["generation"] = cm.get("generation", 1) + 1
                return self._commit(rt, key, "MODIFIED", dict(cur, metadata=meta), cur)
        if cm.get("finalizers"):
            if cm.get("deletionTimestamp") and cm.get("deletionGracePeriodSeconds", 0) == 0:
                return cur
            meta = dict(cm)
            meta["deletionTimestamp"] = cm.get("deletionTimestamp") or now()
            meta["deletionGracePeriodSeconds"] = 0
            if not cm.get("deletionTimestamp"):
                meta["generation"] = cm.get("generation", 1) + 1
            return self._commit(rt, key, "MODIFIED", dict(cur, metadata=meta), cur)
        if rt is NAMESPACES:
            for other in ALL_RESOURCES:
                if other.namespaced:
                    for (ns, _), obj in sorted(self._objects[other].items()):
                        if ns == cm["name"]:
                            self._delete_locked(other, obj, {"propagationPolicy": "Background"})
        if propagation == "Foreground":
            self._collect_garbage(cm["uid"], propagation)
        final = self._commit(rt, key, "DELETED", cur, cur)
        if propagation != "Foreground":
            self._collect_garbage(cm["uid"], propagation)
        return final if rt.return_deleted_object else self._delete_status(rt, final)

    def _collect_garbage(self, owner_uid: str, propagation: str) -> None:
        """Synchronous stand-in for the garbage collector controller."""
        for drt, dkey in sorted(
            self._dependents.get(owner_uid, set()), key=lambda d: (d[0].key, d[1])
        ):
            dep = self._objects[drt].get(dkey)
            if dep is None:
                continue
            refs = dep["metadata"].get("ownerReferences") or []
            others_alive = any(
                r.get("uid") != owner_uid and r.get("uid") in self._uids for r in refs
            )
            if propagation == "Orphan" or others_alive:
                meta = dict(dep["metadata"])
                remaining = [r for r in refs if r.get("uid") != owner_uid]
                if remaining:
                    meta["ownerReferences"] = remaining
                else:
                    meta.pop("ownerReferences", None)
                self._commit(drt, dkey, "MODIFIED", dict(dep, metadata=meta), dep)
            else:
                self._delete_locked(drt, dep, {"propagationPolicy": "Background"})

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        options: JSON | None = None,
        *,
        dry_run: bool = False,
    ) -> JSON:
        with self._lock:
            deleted = []
            for _, obj in self._select(rt, namespace, labels, fields):
                if dry_run:
                    deleted.append(obj)
                    continue
                current = self._objects[rt].get(
                    self._key(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
                )
                if current is not None:
                    out = self._delete_locked(rt, current, options or {})
                    deleted.append(out if out.get("kind") != "Status" else current)
            rv = self._rv
        items = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in deleted]
        return {
            "kind": rt.list_kind,
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(rv)},
            "items": items,
        }

    # ------------------------------------------------------------------ pods/*
    def bind(self, namespace: str, name: str, binding: Any, *, dry_run: bool = False) -> JSON:
        """pods/binding semantics from pkg/registry/core/pod/storage (BindingREST)."""
        if not isinstance(binding, dict):
            raise bad_request(f"not a Binding object: {binding!r}")
        meta = binding.get("metadata") or {}
        if meta.get("name", "") != name:
            raise bad_request("name in URL does not match name in Binding object")
        if meta.get("namespace") and meta["namespace"] != namespace:
            raise bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        target = binding.get("target") or {}
        errs = []
        if target.get("kind") not in (None, "", "Node"):
            errs.append(
                f'target.kind: Unsupported value: "{target.get("kind")}": supported values: '
                '"Node", "<empty>"'
            )
        if not target.get("name"):
            errs.append("target.name: Required value")
        if errs:
            # ValidatePodBinding returns a plain aggregate error: the apiserver reports it as 500.
            raise ApiError(500, "", errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]")
        annotations = meta.get("annotations") or {}
        if not all(isinstance(v, str) for v in annotations.values()):
            raise bad_request(
                'Binding in version "v1" cannot be handled as a Binding: json: cannot unmarshal '
                "number into Go struct field ObjectMeta.metadata.annotations of type string"
            )
        with self._lock:
            pod = self.get(PODS, namespace, name)
            pm = pod["metadata"]
            if meta.get("uid") and meta["uid"] != pm["uid"]:
                raise conflict(
                    PODS,
                    name,
                    f"Precondition failed: UID in precondition: {meta['uid']}, UID in object "
                    f"meta: {pm['uid']}",
                )

            def binding_conflict(msg: str) -> ApiError:
                return conflict(PODS, name, msg, qualified="pods/binding")

            if pm.get("deletionTimestamp"):
                raise binding_conflict(f"pod {name} is being deleted, cannot be assigned to a host")
            if meta.get("resourceVersion") and meta["resourceVersion"] != pm["resourceVersion"]:
                raise conflict(PODS, name, OPTIMISTIC_LOCK_MSG)
            spec = pod.get("spec") or {}
            if spec.get("nodeName"):
                raise binding_conflict(
                    f'pod {name} is already assigned to node "{spec["nodeName"]}"'
                )
            if spec.get("schedulingGates"):
                raise binding_conflict(f"pod {name} has non-empty .spec.schedulingGates")
            new = clone(pod)
            new["spec"]["nodeName"] = target["name"]
            if annotations:
                new["metadata"]["annotations"] = {
                    **(new["metadata"].get("annotations") or {}),
                    **annotations,
                }
            status = new.setdefault("status", {})
            conds = status.setdefault("conditions", [])
            existing = next((c for c in conds if c.get("type") == "PodScheduled"), None)
            if existing is None:
                conds.append(
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}
                )
            elif existing.get("status") != "True":
                existing.update(status="True", lastTransitionTime=now())
                existing.pop("reason", None)
                existing.pop("message", None)
            if not dry_run:
                self._commit(PODS, self._key(PODS, namespace, name), "MODIFIED", new, pod)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    def evict(self, namespace: str, name: str, eviction: Any, *, dry_run: bool = False) -> JSON:
        """pods/eviction without PodDisruptionBudgets: deletes the pod."""
        if not isinstance(eviction, dict):
            raise bad_request("not an Eviction object")
        if (eviction.get("metadata") or {}).get("name", name) != name:
            raise bad_request("name in URL does not match name in Eviction object")
        self.delete(PODS, namespace, name, eviction.get("deleteOptions") or {}, dry_run=dry_run)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    # ------------------------------------------------------------------ watch
    def open_watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        resource_version: str | None,
        *,
        bookmarks: bool = False,
        send_initial_events: bool = False,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> Watcher:
        """Register a watcher pre-loaded with initial/replayed events, atomically w.r.t. writes."""
        w = Watcher(rt, namespace, labels, fields, bookmarks, loop)
        with self._lock:
            if send_initial_events or resource_version in (None, "", "0"):
                for _, obj in self._select(rt, namespace, labels, fields):
                    w.push(_event_line("ADDED", dumps(obj)))
                if send_initial_events:
                    w.push_bookmark(self._rv, {"k8s.io/initial-events-end": "true"})
            else:
                try:
                    start = int(resource_version)
                except ValueError as e:
                    raise bad_request(f"invalid resource version: {resource_version!r}") from e
                if start < self._compacted[rt]:
                    err = expired(f"too old resource version: {start} ({self._compacted[rt] + 1})")
                    w.push(_event_line("ERROR", dumps(err.status())))
                    w.closed = True
                    return w
                for ev in self._history[rt]:
                    if ev.rv > start:
                        w.offer(ev)
            self._watchers[rt].add(w)
            self._cond.notify_all()
        return w

    def close_watch(self, w: Watcher) -> None:
        with self._lock:
            self._watchers[w.rt].discard(w)
            self._cond.notify_all()

    def drain(self, w: Watcher) -> list[bytes]:
        with self._lock:
            return w.drain()

    def bookmark(self, w: Watcher) -> None:
        with self._lock:
            w.push_bookmark(self._rv)

    def watchers(self, rt: ResourceType | None = None) -> list[Watcher]:
        with self._lock:
            if rt is not None:
                return list(self._watchers[rt])
            return [w for ws in self._watchers.values() for w in ws]

    def wait_for_watchers(
        self,
        rt: ResourceType,
        count: int = 1,
        timeout: float = 5.0,
        predicate: Callable[[Watcher], bool] | None = None,
    ) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: (
                    sum(
                        1
                        for w in self._watchers[rt]
                        if not w.closed and (predicate is None or predicate(w))
                    )
                    >= count
                ),
                timeout,
            )

    def close_watches(self, rt: ResourceType | None = None, *, abrupt: bool = True) -> int:
        with self._lock:
            ws = self.watchers(rt)
            for w in ws:
                w.close(abrupt)
            return len(ws)

    def send_bookmarks(self) -> None:
        with self._lock:
            for ws in self._watchers.values():
                for w in ws:
                    if w.bookmarks:
                        w.push_bookmark(self._rv)

    def compact(self, rt: ResourceType | None = None) -> int:
        """Drop watch history so any watch from an RV below the current one gets 410."""
        with self._lock:
            for r in [rt] if rt is not None else ALL_RESOURCES:
                self._history[r].clear()
                self._compacted[r] = self._rv
            return self._rv
