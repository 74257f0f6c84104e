"""kube-scheduler's extender verbs on the wire: ``/v1/filter``, ``/v1/prioritize``, ``/v1/bind``.

Field names are those of k8s.io/kube-scheduler/extender/v1 (Go structs without json tags, so
capitalised); nil pointers go out as ``null``. A body that is not an ExtenderArgs is a 400; a
failure of ours is a 200 with ``Error`` set, which fails just this scheduling attempt; "no node
fits" is a 200 with ``FailedNodes``.

ExtenderArgs are decoded by msgspec without building the node objects: a 5,000-node
full-object request is ~20 MB, ~10^6 Python objects through ``orjson.loads``. Each node stays a
byte span of the body, from which only ``metadata.name`` and ``status.addresses`` are read,
and the reply echoes the spans of the nodes that passed. Anything the typed decode does not
take (bad shapes, odd but accepted ones) goes through ``_args_from_doc`` on the orjson-parsed
body, which is the reference for what is accepted and for every 400 message.
"""

from __future__ import annotations

import codecs
import gc
import logging
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from ipam.api.deps import runtime_of, shared_of
from ipam.api.errors import error_body
from ipam.api.extender_wire import (
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderError,
    ExtenderFilterResult,
    HostPriority,
    documented,
)
from ipam.api.responses import JsonBytesResponse, OrjsonResponse, SplicedJsonResponse
from ipam.engine.node import first_internal_ip, internal_ip, node_name
from ipam.engine.pod import PodFacts, PodShapeError, pod_facts
from ipam.errors import IpamError
from ipam.logs import request_id as current_request_id
from ipam.services.placement import Candidate, Placement
from ipam.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["scheduler extender"])


class _GcPause:
    """No cyclic garbage collection while an extender body is decoded.

    Through ``orjson.loads`` (the reference path, and bind), a full-node body parses into
    ~10^6 acyclic objects, freed by reference counting when the handler returns; with the
    collector on, allocating them triggers collections that walk them again and again (14-40%
    of a 5,000-node filter under py-spy --native, before the typed decode). The pause covers
    the synchronous decode only, never an await: a process-wide pause held across the
    placement's database round trips let the cyclic garbage of every other request pile up
    (eight 1 MiB REST bodies rejected meanwhile took the process from 103 to 303 MB).
    """

    depth = 0
    resume = False

    def __enter__(self) -> None:
        if _GcPause.depth == 0:
            _GcPause.resume = gc.isenabled()
            gc.disable()
        _GcPause.depth += 1

    def __exit__(self, *exc: object) -> None:
        _GcPause.depth -= 1
        if _GcPause.depth == 0 and _GcPause.resume:
            gc.enable()


def gc_paused() -> _GcPause:
    return _GcPause()


class WireError(ValueError):
    """The body is not what kube-scheduler sends."""


def _placement(request: Request) -> Placement:
    return runtime_of(request).placement


async def _body(request: Request) -> dict[str, Any]:
    return _loads(await request.body())


def _loads(raw: Body) -> dict[str, Any]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise WireError("body must be a JSON object")
    return doc


@dataclass(frozen=True, slots=True)
class _Args:
    """An ExtenderArgs: the pod, and the candidate nodes in the form the request used."""

    pod: PodFacts
    #: nodeCacheCapable: the names only. Kept as plain strings: building an object per node
    #: cost more than the rest of a 5,000-node filter.
    names: list[str] | None = None
    #: Full mode: each node object's JSON as sent (echoed back) and what was read from it.
    spans: list[bytes] | None = None
    candidates: list[Candidate] | None = None

    def node_names(self) -> list[str]:
        return self.names if self.names is not None else [c.name for c in self.candidates or ()]

    def as_candidates(self, placement: Placement) -> list[Candidate]:
        if self.candidates is not None:
            return self.candidates
        ips = placement.nodes.addresses()
        return [Candidate(n, ips.get(n), n in ips) for n in self.names or ()]


# The typed decode: only what is read. Unknown fields are skipped without building anything;
# a mistyped field fails the decode and the body goes the reference way (``_args_from_doc``).
class _Meta(msgspec.Struct, gc=False):
    name: str


class _Address(msgspec.Struct, gc=False):
    type: str = ""
    address: str = ""


class _Status(msgspec.Struct, gc=False):
    addresses: list[_Address] | None = None


class _Node(msgspec.Struct, gc=False):
    metadata: _Meta
    status: _Status | None = None


class _NodeList(msgspec.Struct, gc=False):
    items: list[msgspec.Raw]


class _Wire(msgspec.Struct, gc=False):
    """ExtenderArgs with the pod and every node left as byte spans of the body."""

    Pod: msgspec.Raw = msgspec.Raw(b"null")
    Nodes: _NodeList | None = None
    #: A span too: its size is checked before its strings are built.
    NodeNames: msgspec.Raw = msgspec.Raw(b"null")


_decode_wire = msgspec.json.Decoder(_Wire).decode
_decode_node = msgspec.json.Decoder(_Node).decode
_decode_names = msgspec.json.Decoder(list[str] | None).decode


class NamesTooLarge(Exception):
    """A NodeNames body over ``Settings.max_names_body_bytes``: refused before decoding
    (600,000 names became ~250 MB of strings and failure reasons)."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes, the limit for NodeNames "
                         "(nodeCacheCapable: true); full node objects may be larger")
        self.limit = limit


class _NotTyped(Exception):
    """The typed decode cannot vouch for the body; the reference path decides."""


#: The reference decode builds every JSON value of the body (~6x its size in memory): past
#: this size a body the typed decode refuses is refused with the typed decoder's reason.
#: kube-scheduler's own bodies always take the typed way.
REFERENCE_MAX_BYTES = 4 << 20

Body = bytes | bytearray
#: Bodies over this are worked on one at a time (``_one_large_at_a_time``).
LARGE_WORK_BYTES = 256 << 10


def _args(raw: Body, names_limit: int | None = None) -> _Args:
    """The fast decode when it applies, else the reference one (same results, same errors).
    A NodeNames body over ``names_limit`` raises ``NamesTooLarge`` either way."""
    try:
        return _typed_args(raw, names_limit)
    except (_NotTyped, msgspec.MsgspecError, ValueError, RecursionError) as exc:
        # ValueError: also a PodShapeError or a bad UTF-8 byte; RecursionError: msgspec's
        # nesting limit (below orjson's 1024, so nothing orjson refuses gets through).
        if names_limit is not None and _names_too_large(raw, names_limit):
            raise NamesTooLarge(names_limit) from None
        if len(raw) > REFERENCE_MAX_BYTES:
            raise WireError(_typed_refusal(exc)) from None
        return _args_from_doc(_loads(raw))


def _typed_refusal(exc: Exception) -> str:
    if isinstance(exc, PodShapeError):
        return f"Pod: {exc}"
    if isinstance(exc, UnicodeDecodeError):
        return f"body is not valid JSON: {exc}"
    if isinstance(exc, _NotTyped):
        return "Nodes: an item has no metadata.name, or neither NodeNames nor Nodes is set"
    if isinstance(exc, RecursionError):
        return "body is nested too deeply"
    return f"body is not an ExtenderArgs: {exc}"


class _Mode(msgspec.Struct, gc=False):
    """Only whether NodeNames is set: decoded as a span, nothing is built."""

    NodeNames: msgspec.Raw = msgspec.Raw(b"null")


_decode_mode = msgspec.json.Decoder(_Mode).decode


def _is_null(span: msgspec.Raw) -> bool:
    return len(span) == 4 and bytes(span) == b"null"  # without copying a long span


def _names_too_large(raw: Body, limit: int) -> bool:
    """Whether a body the typed decode refused is a NodeNames body over ``limit``."""
    if len(raw) <= limit:
        return False
    try:
        return not _is_null(_decode_mode(raw).NodeNames)
    except (msgspec.MsgspecError, RecursionError):
        return False  # not JSON: the decode's 400 says why


def _too_large(exc: NamesTooLarge) -> OrjsonResponse:
    return OrjsonResponse(error_body("too_large", str(exc), max_bytes=exc.limit),
                          status_code=413)


@asynccontextmanager
async def _one_large_at_a_time(request: Request, raw: Body) -> AsyncIterator[None]:
    """Work on one body over 256 KiB at a time (per process; both listeners share the app's
    state). Decoding and answering cost a multiple of the body (up to ~25x for NodeNames of
    unknown nodes); kube-scheduler sends one pod's filter, then its prioritize, so it never
    waits here (5,000 names are ~150 KiB)."""
    if len(raw) <= LARGE_WORK_BYTES:
        yield
        return
    async with shared_of(request.app.state).large_work:
        yield


async def _read(request: Request) -> bytearray:
    """The body in one buffer grown in place: ``Request.body()`` joins its chunks into a
    second copy, which for a 30 MiB full-node body was 30 MiB more at the peak."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
    return body


def _typed_args(raw: Body, names_limit: int | None = None) -> _Args:
    """``_args_from_doc(orjson.loads(raw))`` without the node objects, or an exception.

    It only succeeds where the reference would accept with the same result. msgspec checks
    the syntax of what it skips but not its UTF-8, hence ``_check_utf8`` (orjson refuses bad
    UTF-8 anywhere). The one difference left: a number beyond float64 range in a node field
    that is never read passes through as written, where orjson refuses the body.
    """
    _check_utf8(raw)
    wire = _decode_wire(raw)
    names: list[str] | None = None
    if not _is_null(wire.NodeNames):
        if names_limit is not None and len(raw) > names_limit:
            raise NamesTooLarge(names_limit)
        names = _decode_names(wire.NodeNames)
    pod = pod_facts(orjson.loads(memoryview(wire.Pod)))
    if names is not None:
        return _Args(pod, names=names)
    if wire.Nodes is None:
        raise _NotTyped
    spans = wire.Nodes.items
    candidates = []
    for span in spans:
        node = _decode_node(span)
        name = node.metadata.name
        if not name:
            raise _NotTyped
        status = node.status
        addresses = status.addresses if status is not None else None
        candidates.append(Candidate(name, first_internal_ip(addresses) if addresses else None))
    return _Args(pod, spans=list(spans), candidates=candidates)


def _check_utf8(raw: Body) -> None:
    """Raise ``UnicodeDecodeError`` where orjson would refuse the bytes. In 1 MiB steps, so a
    20 MB body with one emoji does not become an 80 MB string."""
    if raw.isascii():
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(raw)
    for start in range(0, len(view), 1 << 20):
        decoder.decode(view[start:start + (1 << 20)])
    decoder.decode(b"", final=True)


def _args_from_doc(doc: Mapping[str, Any]) -> _Args:
    """The reference decode of a parsed ExtenderArgs: what is accepted, and every message."""
    try:
        pod = pod_facts(doc.get("Pod"))
    except PodShapeError as exc:
        raise WireError(f"Pod: {exc}") from None
    names, nodes = doc.get("NodeNames"), doc.get("Nodes")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise WireError("NodeNames must be a list of strings or null")
        return _Args(pod, names=names)
    if nodes is not None:
        items = nodes.get("items") if isinstance(nodes, dict) else None
        if not isinstance(items, list):
            raise WireError("Nodes must be a NodeList object with an items list, or null")
        candidates, spans = [], []
        for i, item in enumerate(items):
            name = node_name(item)
            if name is None:
                raise WireError(f"Nodes.items[{i}].metadata.name is missing")
            candidates.append(Candidate(name, internal_ip(item)))
            try:
                # msgspec, not orjson: orjson.dumps stops at 254 levels, orjson.loads at 1024.
                spans.append(msgspec.json.encode(item))
            except RecursionError:
                raise WireError(f"Nodes.items[{i}] is nested too deeply") from None
        return _Args(pod, spans=spans, candidates=candidates)
    raise WireError("neither NodeNames nor Nodes is set")


def _nodes_reply(args: _Args, passed: list[str], failed: dict[str, str] | None,
                 unresolvable: dict[str, str] | None) -> Response:
    """The full-mode ExtenderFilterResult, with the passing nodes' spans spliced in as sent.

    Same JSON as encoding ``{"Nodes": {"metadata": {}, "items": [...]}, ...}`` with the
    parsed items. The envelope is glued onto the first and last span, and the spans go out
    in batches: the (up to ~32 MiB) node bytes are never copied whole.
    """
    spans, names = args.spans or [], args.node_names()
    if passed != names:
        keep = set(passed)
        spans = [span for span, name in zip(spans, names, strict=True) if name in keep]
    head = b'{"Nodes":{"metadata":{},"items":['
    tail = b"".join((b']},"NodeNames":null,"FailedNodes":', _dumps(failed),
                     b',"FailedAndUnresolvableNodes":', _dumps(unresolvable), b',"Error":""}'))
    if not spans:
        return JsonBytesResponse(head + tail)
    parts: list[Any] = list(spans)
    parts[0] = head + parts[0]
    parts[-1] = b"".join((parts[-1], tail))  # a msgspec.Raw has no ``+``
    return SplicedJsonResponse(parts)


def _dumps(value: object) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def _bad_request(message: str) -> OrjsonResponse:
    return OrjsonResponse({"Error": message}, status_code=400)


Outcome = tuple[Response, str]


def _observe(request: Request, verb: str, started: float, outcome: Outcome) -> Response:
    response, label = outcome
    runtime_of(request).metrics.extender_seconds.labels(verb, label).observe(
        time.perf_counter() - started)
    return response


def elsewhere(settings: Settings) -> APIRouter:
    """The verbs' paths on a REST port that does not serve them
    (``Settings.serves_extender_on_api_port``): a refusal that says where they are, so that
    nobody reaches ``bind`` without kube-scheduler's identity."""
    if settings.extender_port is not None:
        status, code = 404, "route_not_found"
        why = (f"the scheduler extender is served on its own listener, port "
               f"{settings.extender_port}")
    else:
        status, code = 403, "forbidden"
        why = ("the scheduler extender is not served on this port: its callers need a token, "
               "which kube-scheduler cannot send. Serve it on IPAM_EXTENDER_PORT with TLS and "
               "a client CA (docs/security.md), or set IPAM_EXTENDER_ON_API_PORT=true to "
               "serve it here without authentication")
    refusals = APIRouter(prefix="/v1", include_in_schema=False)

    async def refuse(request: Request) -> Response:
        return OrjsonResponse(error_body(code, f"POST {request.url.path}: {why}"),
                              status_code=status)

    for verb in ("filter", "prioritize", "bind"):
        refusals.add_api_route(f"/{verb}", refuse, methods=["POST"])
    return refusals


@router.post("/filter", **documented(ExtenderFilterResult, ExtenderArgs))
async def filter_nodes(request: Request) -> Response:
    """ExtenderArgs in, ExtenderFilterResult out (same node field as the request used)."""
    started = time.perf_counter()
    raw = await _read(request)
    async with _one_large_at_a_time(request, raw):
        outcome = await _filter(request, raw)  # the decoded body is freed on return
    return _observe(request, "filter", started, outcome)


async def _filter(request: Request, raw: Body) -> Outcome:
    placement = _placement(request)
    try:
        with gc_paused():  # the decode only: never across an await (issue 14, item 9)
            args = _args(raw, runtime_of(request).settings.max_names_body_bytes)
    except NamesTooLarge as exc:
        return _too_large(exc), "too_large"
    except WireError as exc:
        return _bad_request(str(exc)), "bad_request"
    pod = args.pod
    if not pod.managed:
        passed, failed, unresolvable = args.node_names(), {}, None
    else:
        try:
            if args.names is not None:
                outcome = await placement.filter_names(pod, args.names)
            else:
                outcome = await placement.filter(pod, args.as_candidates(placement))
        except IpamError as exc:
            log.warning("filter %s failed: %s", pod.key, exc.message)
            return OrjsonResponse({"Nodes": None, "NodeNames": None, "FailedNodes": None,
                                   "FailedAndUnresolvableNodes": None,
                                   "Error": exc.message}), "error"
        passed, failed, unresolvable = outcome.passed, outcome.failed, outcome.unresolvable
    if args.spans is not None:
        return _nodes_reply(args, passed, failed, unresolvable), "ok"
    return OrjsonResponse({"Nodes": None, "NodeNames": passed, "FailedNodes": failed,
                           "FailedAndUnresolvableNodes": unresolvable, "Error": ""}), "ok"


@router.post("/prioritize", **documented(list[HostPriority], ExtenderArgs))
async def prioritize_nodes(request: Request) -> Response:
    """ExtenderArgs in, HostPriorityList (``[{"Host", "Score"}]``, 0-10) out."""
    started = time.perf_counter()
    raw = await _read(request)
    async with _one_large_at_a_time(request, raw):
        outcome = await _prioritize(request, raw)
    return _observe(request, "prioritize", started, outcome)


async def _prioritize(request: Request, raw: Body) -> Outcome:
    placement = _placement(request)
    try:
        with gc_paused():  # the decode only: never across an await (issue 14, item 9)
            args = _args(raw, runtime_of(request).settings.max_names_body_bytes)
    except NamesTooLarge as exc:
        return _too_large(exc), "too_large"
    except WireError as exc:
        return _bad_request(str(exc)), "bad_request"
    pod, candidates = args.pod, args.as_candidates(placement)
    if not pod.managed:
        return OrjsonResponse([{"Host": c.name, "Score": 0} for c in candidates]), "ok"
    try:
        scores = await placement.prioritize(pod, candidates)
    except IpamError as exc:
        # A HostPriorityList has no Error field; the scheduler ignores a failed prioritize.
        return OrjsonResponse({"Error": exc.message}, status_code=503), "error"
    return OrjsonResponse([{"Host": host, "Score": score} for host, score in scores]), "ok"


@router.post("/bind", **documented(ExtenderError, ExtenderBindingArgs))
async def bind_pod(request: Request) -> Response:
    """ExtenderBindingArgs in, ExtenderBindingResult (``{"Error": ""}``) out."""
    started = time.perf_counter()
    return _observe(request, "bind", started, await _bind(request))


async def _bind(request: Request) -> Outcome:
    try:
        doc = await _body(request)
    except WireError as exc:
        return _bad_request(str(exc)), "bad_request"
    fields = {}
    for key in ("PodName", "PodNamespace", "PodUID", "Node"):
        value = doc.get(key)
        if not isinstance(value, str) or not value:
            return _bad_request(f"{key} must be a non-empty string"), "bad_request"
        fields[key] = value
    try:
        await _placement(request).bind(
            fields["PodNamespace"], fields["PodName"], fields["PodUID"], fields["Node"],
            request_id=current_request_id.get())
    except IpamError as exc:
        log.warning("bind %s/%s to %s failed: %s", fields["PodNamespace"], fields["PodName"],
                    fields["Node"], exc.message)
        return OrjsonResponse({"Error": exc.message}), "error"
    return OrjsonResponse({"Error": ""}), "ok"
