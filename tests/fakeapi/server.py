"""aiohttp front end: URL routing, request log, fault injection, watch streaming.

aiohttp's low-level ``web.Server`` is used (no router/middleware) to keep the
per-request overhead small; watches are chunked ``StreamResponse``s fed from
the store's per-watcher queues.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import yaml
from aiohttp import web
from kubernetes.client import ApiClient

from . import errors
from .errors import ApiError, bad_request
from .faults import FaultInjector
from .jsonutil import clone, clone_obj, dumps, loads
from .resources import ALL_RESOURCES, PODS, ResourceType, by_path, groups, in_group_version, resolve
from .selection import FieldSelector, LabelSelector, parse_field_selector, parse_label_selector
from .store import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    PATCH_TYPES,
    STRATEGIC_PATCH,
    Settings,
    Store,
)

JSON = dict[str, Any]
log = logging.getLogger(__name__)

_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_NS_SUBRESOURCES = frozenset({"status", "finalize"})
_PATCH_ALIASES = {
    "merge": MERGE_PATCH,
    "strategic": STRATEGIC_PATCH,
    "json": JSON_PATCH,
    "apply": APPLY_PATCH,
}
_SUBRESOURCE_KINDS = {"binding": "Binding", "eviction": "Eviction"}


@dataclass
class RequestRecord:
    """One API request as seen by the server (``/_fake/*`` control calls are not logged)."""

    method: str
    path: str
    query: dict[str, str]
    verb: str = ""
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str | None = None
    name: str | None = None
    status: int = 0
    #: The ``Authorization`` header as sent (clients' credentials are checked by tests).
    authorization: str | None = None

    def __iter__(self) -> Iterator[Any]:
        """Unpacks as ``(method, path, query)``."""
        return iter((self.method, self.path, self.query))

    @property
    def rbac_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(slots=True)
class _Route:
    rt: ResourceType | None
    namespace: str | None
    name: str | None
    subresource: str | None
    legacy_watch: bool = False
    discovery: JSON | None = None
    text: str | None = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when installed (roughly 30% more requests/s), else the stdlib loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _bool(value: str | None) -> bool:
    return value in _TRUE


def _int(value: str | None, field: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError as e:
        raise bad_request(f"invalid value for {field}: {value!r}") from e


def _version_info() -> JSON:
    return {
        "major": "1",
        "minor": "37",
        "gitVersion": "v1.37.0-fakeapi",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _verbs(rt: ResourceType) -> list[str]:
    return ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def _resource_list(group: str, version: str) -> JSON:
    gv = f"{group}/{version}" if group else version
    resources: list[JSON] = []
    for rt in in_group_version(group, version):
        entry: JSON = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": _verbs(rt),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        resources.append(entry)
        for sub in sorted(rt.subresources):
            kind = _SUBRESOURCE_KINDS.get(sub, rt.kind)
            verbs = ["create"] if sub in _SUBRESOURCE_KINDS else ["get", "patch", "update"]
            resources.append(
                {
                    "name": f"{rt.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rt.namespaced,
                    "kind": kind,
                    "verbs": verbs,
                }
            )
    if not group:
        resources.append(
            {
                "name": "bindings",
                "singularName": "binding",
                "namespaced": True,
                "kind": "Binding",
                "verbs": ["create"],
            }
        )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }


def _api_group(name: str, versions: list[str]) -> JSON:
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": vs, "preferredVersion": vs[0]}


def parse_route(path: str) -> _Route:
    """Map a URL path to (resource, namespace, name, subresource) or a discovery document."""
    path = path.rstrip("/") or "/"
    if path in ("/healthz", "/livez", "/readyz"):
        return _Route(None, None, None, None, text="ok")
    if path == "/version":
        return _Route(None, None, None, None, discovery=_version_info())
    segs = [s for s in path.split("/") if s]
    if not segs:
        raise errors.no_such_path()
    if segs[0] == "api":
        if len(segs) == 1:
            return _Route(
                None,
                None,
                None,
                None,
                discovery={
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [],
                },
            )
        group, version, rest = "", segs[1], segs[2:]
    elif segs[0] == "apis":
        gs = groups()
        if len(segs) == 1:
            return _Route(
                None,
                None,
                None,
                None,
                discovery={
                    "kind": "APIGroupList",
                    "apiVersion": "v1",
                    "groups": [_api_group(g, vs) for g, vs in gs.items() if g],
                },
            )
        if len(segs) == 2:
            if segs[1] not in gs or not segs[1]:
                raise errors.no_such_path()
            return _Route(
                None,
                None,
                None,
                None,
                discovery=dict(_api_group(segs[1], gs[segs[1]]), kind="APIGroup", apiVersion="v1"),
            )
        group, version, rest = segs[1], segs[2], segs[3:]
    else:
        raise errors.no_such_path()
    if not rest:
        if version not in groups().get(group, []):
            raise errors.no_such_path()
        return _Route(None, None, None, None, discovery=_resource_list(group, version))
    legacy_watch = False
    if rest[0] == "watch":
        legacy_watch, rest = True, rest[1:]
    namespace: str | None = None
    if (
        rest
        and rest[0] == "namespaces"
        and len(rest) >= 3
        and not (len(rest) == 3 and rest[2] in _NS_SUBRESOURCES)
    ):
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        raise errors.no_such_path()
    plural = rest[0]
    if not group and plural == "bindings" and namespace and len(rest) == 1:
        return _Route(PODS, namespace, None, "binding")
    rt = by_path(group, version, plural)
    if rt is None:
        raise errors.no_such_path()
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else None
    if namespace is not None and not rt.namespaced:
        raise errors.no_such_path()
    if name is not None and rt.namespaced and namespace is None:
        raise errors.no_such_path()
    if sub is not None and sub not in rt.subresources:
        raise errors.no_such_path()
    return _Route(rt, namespace, name, sub, legacy_watch)


def _verb(method: str, route: _Route, query: Mapping[str, str]) -> str:
    if method == "GET":
        if route.legacy_watch or _bool(query.get("watch")):
            return "watch"
        return "get" if route.name else "list"
    if method == "POST":
        return "create"
    if method == "PUT":
        return "update"
    if method == "PATCH":
        return "patch"
    if method == "DELETE":
        return "delete" if route.name else "deletecollection"
    return method.lower()


def _json_response(
    body: JSON, status: int = 200, warnings: list[str] | None = None
) -> web.Response:
    resp = web.Response(body=dumps(body), status=status, content_type="application/json")
    for w in warnings or ():
        resp.headers.add("Warning", '299 - "' + w.replace('"', '\\"') + '"')
    return resp


def _error_response(err: ApiError) -> web.Response:
    resp = web.Response(body=dumps(err.status()), status=err.code, content_type="application/json")
    for k, v in err.headers.items():
        resp.headers[k] = v
    return resp


class FakeApiServer:
    """A kube-apiserver stand-in on 127.0.0.1 speaking real HTTP to real clients.

    Use ``start()``/``stop()`` (or a ``with`` block) to run it on a background
    thread, or ``run_forever()`` to serve from the current thread. The
    ``create/get/list/update/patch/delete`` helpers write straight to the
    store like an etcd-level write (status kept, no update strategy) and emit
    watch events like any other write.
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, settings: Settings | None = None
    ) -> None:
        self.host = host
        self.port = port
        self.settings = settings or Settings()
        self.store = Store(self.settings)
        self.faults = FaultInjector()
        self.requests: list[RequestRecord] = []
        self._requests_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.ServerRunner | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._sanitizer = ApiClient()

    # ------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _startup(self) -> None:
        server = web.Server(
            self._handle, handler_cancellation=True, access_log=None, keepalive_timeout=75.0
        )
        self._runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=2048)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._stop_event = asyncio.Event()

    async def _shutdown(self) -> None:
        self.store.close_watches(abrupt=False)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def serve(self) -> None:
        """Serve on the running loop until ``stop()`` is called."""
        self._loop = asyncio.get_running_loop()
        await self._startup()
        self._ready.set()
        assert self._stop_event is not None
        try:
            await self._stop_event.wait()
        finally:
            await self._shutdown()

    def _run_thread(self) -> None:
        loop = new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.serve())
        except BaseException as e:
            self._startup_error = e
            self._ready.set()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def start(self, timeout: float = 10.0) -> FakeApiServer:
        """Start serving on a daemon thread; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("already started")
        self._thread = threading.Thread(target=self._run_thread, name="fake-apiserver", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("fake apiserver did not start")
        if self._startup_error is not None:
            raise RuntimeError("fake apiserver failed to start") from self._startup_error
        self._thread.name = f"fake-apiserver:{self.port}"
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close watches and connections, stop the loop and join the thread."""
        loop, ev = self._loop, self._stop_event
        if loop is not None and ev is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(ev.set)
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError("fake apiserver thread did not stop")
            self._thread = None

    @property
    def ready(self) -> bool:
        """True once the listening socket is bound (``port`` is then final)."""
        return self._ready.is_set()

    def stop_from_loop(self) -> None:
        """Stop request issued on the server's own loop (signal handlers)."""
        if self._stop_event is not None:
            self._stop_event.set()

    def run_forever(self) -> None:
        """Blocking serve from the current thread (``python -m tests.fakeapi``)."""
        asyncio.run(self.serve())

    # ------------------------------------------------------------ HTTP
    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_fake/"):
            try:
                return await self._control(request)
            except ApiError as e:
                return _error_response(e)
        method = request.method
        query = dict(request.query.items())
        record = RequestRecord(method, path, query,
                               authorization=request.headers.get("Authorization"))
        if self.settings.record_requests:
            with self._requests_lock:
                self.requests.append(record)
        try:
            route = parse_route(path)
            if route.rt is not None:
                record.verb = _verb(method, route, query)
                record.api_group = route.rt.group
                if (
                    route.subresource == "binding" and route.name is None
                ):  # POST .../namespaces/{ns}/bindings
                    record.resource = "bindings"
                else:
                    record.resource = route.rt.plural
                    record.subresource = route.subresource or ""
                record.namespace = route.namespace
                record.name = route.name
            rule = self.faults.match(
                method, f"{path}?{request.query_string}" if request.query_string else path
            )
            if rule is not None:
                if rule.action == "hang":
                    await asyncio.sleep(rule.seconds)
                elif rule.action == "reset":
                    if request.transport is not None:
                        request.transport.abort()
                    record.status = -1
                    return web.Response(status=500)  # never sent: transport is gone
                else:
                    err = errors.from_code(rule.status, rule.message, rule.reason)
                    if rule.retry_after is not None:
                        err.headers["Retry-After"] = str(rule.retry_after)
                    raise err
            if route.text is not None:
                resp: web.StreamResponse = web.Response(text=route.text)
            elif route.discovery is not None:
                resp = _json_response(route.discovery)
            else:
                resp = await self._dispatch(request, route, query)
        except ApiError as e:
            resp = _error_response(e)
        record.status = resp.status
        return resp

    async def _body(self, request: web.BaseRequest, *, optional: bool = False) -> Any:
        raw = await request.read()
        if not raw.strip():
            if optional:
                return None
            raise bad_request("the body of the request was empty")
        ctype = (request.content_type or "application/json").lower()
        try:
            if "yaml" in ctype:
                return yaml.safe_load(raw)
            return loads(raw)
        except (ValueError, yaml.YAMLError) as e:
            raise bad_request(f"couldn't get version/kind; json parse error: {e}") from e

    async def _dispatch(
        self, request: web.BaseRequest, route: _Route, query: dict[str, str]
    ) -> web.StreamResponse:
        rt = route.rt
        assert rt is not None
        method = request.method
        ns, name, sub = route.namespace, route.name, route.subresource
        dry_run = query.get("dryRun") == "All"
        if "dryRun" in query and not dry_run:
            raise ApiError(
                422,
                "Invalid",
                f'dryRun: Unsupported value: "{query["dryRun"]}": supported values: "All"',
            )
        fv = query.get("fieldValidation")
        if method == "GET":
            if route.legacy_watch or _bool(query.get("watch")):
                fields = parse_field_selector(query.get("fieldSelector"), rt)
                if name is not None:
                    fields = FieldSelector((*fields.terms, ("metadata.name", True, name)))
                return await self._watch(
                    request, rt, ns, parse_label_selector(query.get("labelSelector")), fields, query
                )
            if name is None:
                body = self.store.list_collection(
                    rt,
                    ns,
                    parse_label_selector(query.get("labelSelector")),
                    parse_field_selector(query.get("fieldSelector"), rt),
                    limit=_int(query.get("limit"), "limit"),
                    continue_token=query.get("continue") or None,
                    resource_version=query.get("resourceVersion"),
                    resource_version_match=query.get("resourceVersionMatch"),
                )
                return _json_response(body)
            return _json_response(self.store.get(rt, ns, name))
        if method == "POST":
            if sub == "binding":
                body = await self._body(request)
                if name is None:  # POST /api/v1/namespaces/{ns}/bindings
                    name = (
                        ((body or {}).get("metadata") or {}).get("name", "")
                        if isinstance(body, dict)
                        else ""
                    )
                assert ns is not None and name is not None
                return _json_response(self.store.bind(ns, name, body, dry_run=dry_run), 201)
            if sub == "eviction":
                assert ns is not None and name is not None
                return _json_response(
                    self.store.evict(ns, name, await self._body(request), dry_run=dry_run), 201
                )
            if name is not None:
                raise errors.method_not_allowed()
            obj, warnings = self.store.create(
                rt, ns, await self._body(request), dry_run=dry_run, field_validation=fv
            )
            return _json_response(obj, 201, warnings)
        if name is None:
            if method == "DELETE":
                options = await self._delete_options(request, query)
                body = self.store.delete_collection(
                    rt,
                    ns,
                    parse_label_selector(query.get("labelSelector")),
                    parse_field_selector(query.get("fieldSelector"), rt),
                    options,
                    dry_run=dry_run,
                )
                return _json_response(body)
            raise errors.method_not_allowed()
        if method == "PUT":
            obj, created, warnings = self.store.update(
                rt,
                ns,
                name,
                await self._body(request),
                subresource=sub,
                dry_run=dry_run,
                field_validation=fv,
            )
            return _json_response(obj, 201 if created else 200, warnings)
        if method == "PATCH":
            ctype = (request.content_type or "").lower()
            if ctype not in PATCH_TYPES:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    "the body of the request was in an unknown format - accepted media types "
                    f"include: {', '.join(PATCH_TYPES)}",
                )
            obj, created, warnings = self.store.patch(
                rt,
                ns,
                name,
                ctype,
                await self._body(request),
                subresource=sub,
                dry_run=dry_run,
                field_validation=fv,
                field_manager=query.get("fieldManager"),
            )
            return _json_response(obj, 201 if created else 200, warnings)
        if method == "DELETE":
            if sub is not None:
                raise errors.method_not_allowed()
            options = await self._delete_options(request, query)
            return _json_response(self.store.delete(rt, ns, name, options, dry_run=dry_run))
        raise errors.method_not_allowed()

    async def _delete_options(self, request: web.BaseRequest, query: Mapping[str, str]) -> JSON:
        body = await self._body(request, optional=True)
        options: JSON = dict(body) if isinstance(body, dict) else {}
        if (g := _int(query.get("gracePeriodSeconds"), "gracePeriodSeconds")) is not None:
            options["gracePeriodSeconds"] = g
        if query.get("propagationPolicy"):
            options["propagationPolicy"] = query["propagationPolicy"]
        if "orphanDependents" in query:
            options["orphanDependents"] = _bool(query["orphanDependents"])
        return options

    async def _watch(
        self,
        request: web.BaseRequest,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
        query: Mapping[str, str],
    ) -> web.StreamResponse:
        timeout = _int(query.get("timeoutSeconds"), "timeoutSeconds")
        bookmarks = _bool(query.get("allowWatchBookmarks"))
        send_initial = _bool(query.get("sendInitialEvents"))
        if send_initial:
            if query.get("resourceVersionMatch") != "NotOlderThan":
                raise ApiError(
                    422,
                    "Invalid",
                    'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                )
            if not bookmarks:
                raise ApiError(
                    422,
                    "Invalid",
                    'ListOptions.meta.k8s.io "" is invalid: allowWatchBookmarks: Required value: '
                    "sendInitialEvents requires setting allowWatchBookmarks to true",
                )
        elif query.get("resourceVersionMatch"):
            raise ApiError(
                422,
                "Invalid",
                'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            )
        loop = asyncio.get_running_loop()
        watcher = self.store.open_watch(
            rt,
            namespace,
            labels,
            fields,
            query.get("resourceVersion"),
            bookmarks=bookmarks,
            send_initial_events=send_initial,
            loop=loop,
        )
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "application/json", "Cache-Control": "no-cache, private"},
        )
        resp.enable_chunked_encoding()
        aborted = False
        try:
            await resp.prepare(request)
            start = loop.time()
            deadline = start + (
                timeout
                if timeout is not None and timeout > 0
                else self.settings.default_watch_timeout
            )
            interval = self.settings.bookmark_interval
            next_bookmark = start + interval
            while True:
                lines = self.store.drain(watcher)
                if watcher.abort:
                    aborted = True
                    if request.transport is not None:
                        request.transport.abort()
                    break
                if lines:
                    await resp.write(b"".join(lines))
                if watcher.closed:
                    break
                t = loop.time()
                if t >= deadline:
                    if bookmarks:
                        self.store.bookmark(watcher)
                        await resp.write(b"".join(self.store.drain(watcher)))
                    break
                if bookmarks and t >= next_bookmark:
                    self.store.bookmark(watcher)
                    next_bookmark = t + interval
                    continue
                wake_at = min(deadline, next_bookmark) if bookmarks else deadline
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wake_at - t):
                        await watcher.wake.wait()
        finally:
            self.store.close_watch(watcher)
        if not aborted:  # an aborted transport makes aiohttp skip write_eof quietly
            await resp.write_eof()
        return resp

    # ------------------------------------------------------------ HTTP control plane (subprocess)
    async def _control(self, request: web.BaseRequest) -> web.StreamResponse:
        action = request.path[len("/_fake/") :]
        method = request.method
        body = await self._body(request, optional=True)
        if action == "state" and method == "GET":
            return _json_response(
                {
                    "resourceVersion": self.store.resource_version,
                    "watches": len(self.store.watchers()),
                    "requests": len(self.requests),
                }
            )
        if action == "compact" and method == "POST":
            return _json_response({"resourceVersion": self.store.compact()})
        if action == "drop-watches" and method == "POST":
            n = self.store.close_watches(abrupt=request.query.get("abrupt", "true") != "false")
            return _json_response({"dropped": n})
        if action == "bookmarks" and method == "POST":
            self.store.send_bookmarks()
            return _json_response({})
        if action == "faults":
            if method == "DELETE":
                self.faults.clear()
                return _json_response({})
            if method == "POST" and isinstance(body, dict):
                kind = body.get("action", "fail")
                if kind == "hang":
                    self.faults.hang(
                        body["path_regex"],
                        float(body.get("seconds", 30)),
                        method=body.get("method"),
                        count=body.get("count", 1),
                    )
                elif kind == "reset":
                    self.faults.reset(
                        body["path_regex"], method=body.get("method"), count=body.get("count", 1)
                    )
                else:
                    self.faults.fail_next(
                        body.get("method"),
                        body["path_regex"],
                        int(body.get("status", 503)),
                        body.get("count", 1),
                        reason=body.get("reason"),
                        message=body.get("message"),
                        retry_after=body.get("retry_after"),
                    )
                return _json_response({"rules": len(self.faults.rules)})
        if action == "requests":
            if method == "DELETE":
                self.reset_requests()
                return _json_response({})
            if method == "GET":
                with self._requests_lock:
                    return _json_response({"items": [asdict(r) for r in self.requests]})
        if action.startswith("objects/") and method == "POST":
            return _json_response(self.create(action.split("/", 1)[1], body), 201)
        raise errors.no_such_path()

    # ------------------------------------------------------------ Python-side API
    def _sanitize(self, obj: Any) -> Any:
        return clone(self._sanitizer.sanitize_for_serialization(obj))  # type: ignore[no-untyped-call]

    def _ns(self, rt: ResourceType, namespace: str | None, obj: Any = None) -> str | None:
        if not rt.namespaced:
            return None
        if namespace:
            return namespace
        if isinstance(obj, dict):
            ns = (obj.get("metadata") or {}).get("namespace")
            if ns:
                return str(ns)
        return "default"

    @property
    def resource_version(self) -> int:
        """Current global resourceVersion."""
        return self.store.resource_version

    def create(
        self, resource: str | ResourceType, obj: Any, *, namespace: str | None = None
    ) -> JSON:
        """Create directly in the store (status kept, defaults applied); emits ADDED."""
        rt = resolve(resource)
        body = self._sanitize(obj)
        created, _ = self.store.create(rt, self._ns(rt, namespace, body), body, raw=True)
        return clone_obj(created)

    def get(
        self, resource: str | ResourceType, name: str, *, namespace: str | None = None
    ) -> JSON | None:
        """The stored object (a copy), or None if it does not exist."""
        rt = resolve(resource)
        obj = self.store.find(rt, self._ns(rt, namespace), name)
        return clone_obj(obj) if obj is not None else None

    def list(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[JSON]:
        """Stored objects (copies, with kind/apiVersion), all namespaces unless ``namespace``."""
        rt = resolve(resource)
        body = self.store.list_collection(
            rt,
            namespace,
            parse_label_selector(label_selector),
            parse_field_selector(field_selector, rt),
        )
        return [dict(clone_obj(i), kind=rt.kind, apiVersion=rt.api_version) for i in body["items"]]

    def update(
        self, resource: str | ResourceType, obj: Any, *, subresource: str | None = None
    ) -> JSON:
        """Replace an object (RV-checked if ``metadata.resourceVersion`` is set); emits MODIFIED."""
        rt = resolve(resource)
        body = self._sanitize(obj)
        name = (body.get("metadata") or {}).get("name", "")
        out, _, _ = self.store.update(
            rt, self._ns(rt, None, body), name, body, subresource=subresource, raw=True
        )
        return clone_obj(out)

    def patch(
        self,
        resource: str | ResourceType,
        name: str,
        patch: Any,
        *,
        namespace: str | None = None,
        patch_type: str = "merge",
        subresource: str | None = None,
    ) -> JSON:
        """Patch directly in the store.

        ``patch_type`` is merge|strategic|json|apply or a full content type.
        """
        rt = resolve(resource)
        ptype = _PATCH_ALIASES.get(patch_type, patch_type)
        out, _, _ = self.store.patch(
            rt,
            self._ns(rt, namespace),
            name,
            ptype,
            self._sanitize(patch),
            subresource=subresource,
            raw=True,
            field_manager="fakeapi",
        )
        return clone_obj(out)

    def delete(
        self,
        resource: str | ResourceType,
        name: str,
        *,
        namespace: str | None = None,
        propagation_policy: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> JSON | None:
        """Delete (with GC of dependents); returns None if it did not exist."""
        rt = resolve(resource)
        options: JSON = {}
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if grace_period_seconds is not None:
            options["gracePeriodSeconds"] = grace_period_seconds
        try:
            return clone_obj(self.store.delete(rt, self._ns(rt, namespace), name, options))
        except ApiError as e:
            if e.code == 404:
                return None
            raise

    def bind(
        self,
        namespace: str,
        name: str,
        node_name: str,
        annotations: Mapping[str, str] | None = None,
    ) -> JSON:
        """Bind like the scheduler does (same checks as pods/binding); returns the pod."""
        meta: JSON = {"name": name, "namespace": namespace}
        if annotations:
            meta["annotations"] = dict(annotations)
        self.store.bind(
            namespace, name, {"metadata": meta, "target": {"kind": "Node", "name": node_name}}
        )
        return clone_obj(self.store.get(PODS, namespace, name))

    def set_pod_status(self, namespace: str, name: str, **status: Any) -> JSON:
        """Merge ``status`` fields (e.g. ``phase="Running", podIP="10.0.0.5"``) via pods/status."""
        return self.patch(
            PODS,
            name,
            {"status": status},
            namespace=namespace,
            patch_type="strategic",
            subresource="status",
        )

    def finalize_pod(self, namespace: str, name: str) -> JSON | None:
        """Play the kubelet for a terminating pod: delete with grace period 0."""
        return self.delete(PODS, name, namespace=namespace, grace_period_seconds=0)

    # ------------------------------------------------------------ watches / history
    def compact(self, resource: str | ResourceType | None = None) -> int:
        """Forget watch history: watches from any RV older than now get ERROR 410 Expired."""
        return self.store.compact(resolve(resource) if resource is not None else None)

    def drop_watches(
        self, resource: str | ResourceType | None = None, *, abrupt: bool = True
    ) -> int:
        """Close open watch streams: ``abrupt`` resets the TCP connection mid-stream
        (client sees a protocol error); otherwise the chunked stream is ended cleanly."""
        return self.store.close_watches(
            resolve(resource) if resource is not None else None, abrupt=abrupt
        )

    def send_bookmarks(self) -> None:
        """Push a BOOKMARK at the current RV to every watch that allowed bookmarks."""
        self.store.send_bookmarks()

    def watch_count(self, resource: str | ResourceType | None = None) -> int:
        return len(self.store.watchers(resolve(resource) if resource is not None else None))

    def wait_for_watchers(
        self,
        resource: str | ResourceType,
        count: int = 1,
        *,
        namespace: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        """Block until ``count`` watches on ``resource`` are open (avoids sleep-based races)."""
        rt = resolve(resource)
        pred = (lambda w: w.namespace == namespace) if namespace is not None else None
        if not self.store.wait_for_watchers(rt, count, timeout, pred):
            raise TimeoutError(f"{count} watch(es) on {rt.key} not established within {timeout}s")

    # ------------------------------------------------------------ request log
    def reset_requests(self) -> None:
        with self._requests_lock:
            self.requests.clear()

    def request_count(
        self,
        method: str | None = None,
        path_regex: str | None = None,
        *,
        verb: str | None = None,
        resource: str | None = None,
    ) -> int:
        """How many logged requests match all given filters."""
        pat = re.compile(path_regex) if path_regex else None
        with self._requests_lock:
            return sum(
                1
                for r in self.requests
                if (method is None or r.method == method.upper())
                and (pat is None or pat.search(r.path))
                and (verb is None or r.verb == verb)
                and (resource is None or r.rbac_resource == resource)
            )

    def api_calls(self) -> set[tuple[str, str, str]]:
        """Distinct (apiGroup, resource[/subresource], verb) triples, for RBAC comparisons."""
        with self._requests_lock:
            return {(r.api_group, r.rbac_resource, r.verb) for r in self.requests if r.resource}


__all__ = ["ALL_RESOURCES", "FakeApiServer", "RequestRecord", "parse_route"]
