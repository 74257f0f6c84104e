"""kube-scheduler's extender verbs on the wire: ``/v1/filter``, ``/v1/prioritize``, ``/v1/bind``.

Field names are those of k8s.io/kube-scheduler/extender/v1 (Go structs without json tags, so
capitalised); nil pointers go out as ``null``. Bodies are parsed with orjson straight from
bytes: a 5,000-node full-object request is ~20 MB and pydantic would dominate the latency.
A body that is not an ExtenderArgs is a 400; a failure of ours is a 200 with ``Error`` set,
which fails just this scheduling attempt; "no node fits" is a 200 with ``FailedNodes``.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Request

from ipam.api.extender_wire import (
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderError,
    ExtenderFilterResult,
    HostPriority,
    documented,
)
from ipam.api.responses import OrjsonResponse
from ipam.engine.node import internal_ip, node_name
from ipam.engine.pod import PodFacts, PodShapeError, pod_facts
from ipam.errors import IpamError
from ipam.logs import request_id as current_request_id
from ipam.services.placement import Candidate, Placement

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["scheduler extender"])


class _GcPause:
    """No cyclic garbage collection while an extender request is in flight.

    A full-node body parses into ~10^6 acyclic objects, freed by reference counting when the
    handler returns; with the collector on, allocating them triggers collections that walk
    them again and again (14-40% of a 5,000-node filter under py-spy --native). Nested and
    interleaved requests share one pause; the collector resumes when the last one ends.
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
    placement: Placement = request.app.state.runtime.placement
    return placement


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
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
    #: Full mode: the node objects as sent (echoed back) and what was read from them.
    items: list[Any] | None = None
    candidates: list[Candidate] | None = None

    def node_names(self) -> list[str]:
        return self.names if self.names is not None else [c.name for c in self.candidates or ()]

    def as_candidates(self, placement: Placement) -> list[Candidate]:
        if self.candidates is not None:
            return self.candidates
        ips = placement.nodes.addresses()
        return [Candidate(n, ips.get(n), n in ips) for n in self.names or ()]


def _args(doc: Mapping[str, Any]) -> _Args:
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
        candidates = []
        for i, item in enumerate(items):
            name = node_name(item)
            if name is None:
                raise WireError(f"Nodes.items[{i}].metadata.name is missing")
            candidates.append(Candidate(name, internal_ip(item)))
        return _Args(pod, items=items, candidates=candidates)
    raise WireError("neither NodeNames nor Nodes is set")


def _bad_request(message: str) -> OrjsonResponse:
    return OrjsonResponse({"Error": message}, status_code=400)


Outcome = tuple[OrjsonResponse, str]


def _observe(request: Request, verb: str, started: float, outcome: Outcome) -> OrjsonResponse:
    response, label = outcome
    request.app.state.runtime.metrics.extender_seconds.labels(verb, label).observe(
        time.perf_counter() - started)
    return response


@router.post("/filter", **documented(ExtenderFilterResult, ExtenderArgs))
async def filter_nodes(request: Request) -> OrjsonResponse:
    """ExtenderArgs in, ExtenderFilterResult out (same node field as the request used)."""
    started = time.perf_counter()
    with gc_paused():
        outcome = await _filter(request)  # the parsed body is freed when _filter returns
    return _observe(request, "filter", started, outcome)


async def _filter(request: Request) -> Outcome:
    placement = _placement(request)
    try:
        args = _args(await _body(request))
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
    if args.items is None:
        nodes_out, names_out = None, passed
    else:
        keep = set(passed)
        nodes_out = {"metadata": {}, "items": [i for i in args.items if node_name(i) in keep]}
        names_out = None
    return OrjsonResponse({"Nodes": nodes_out, "NodeNames": names_out, "FailedNodes": failed,
                           "FailedAndUnresolvableNodes": unresolvable, "Error": ""}), "ok"


@router.post("/prioritize", **documented(list[HostPriority], ExtenderArgs))
async def prioritize_nodes(request: Request) -> OrjsonResponse:
    """ExtenderArgs in, HostPriorityList (``[{"Host", "Score"}]``, 0-10) out."""
    started = time.perf_counter()
    with gc_paused():
        outcome = await _prioritize(request)
    return _observe(request, "prioritize", started, outcome)


async def _prioritize(request: Request) -> Outcome:
    placement = _placement(request)
    try:
        args = _args(await _body(request))
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
async def bind_pod(request: Request) -> OrjsonResponse:
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
