"""Section 1: filter latency, one request at a time as the scheduler's serial cycle sends them.

Both ``nodeCacheCapable`` modes, at two cluster sizes. Next to each figure, the time
``orjson.loads`` takes on the very same body in this process: the parsing floor no
implementation that reads the body can beat.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench import workload
from bench.httpclient import Connection, HttpError, timed
from bench.infra import fresh_database, running_service
from bench.lab import Lab
from bench.report import Section, Target
from bench.stats import Latency

P99_NAMES_LIMIT_MS = 5.0
FULL_FLOOR_RATIO_LIMIT = 2.0


def full_body_parts(node_json: bytes) -> tuple[bytes, bytes]:
    """What follows the pod in ExtenderArgs (Go field order: Pod, Nodes, NodeNames): the
    NodeList is encoded once, not per request."""
    return b'{"Pod":', b',"Nodes":{"metadata":{},"items":' + node_json + b'},"NodeNames":null}'


_FLOOR_SCRIPT = """
import gc, sys, time, orjson
body = open(sys.argv[1], "rb").read()
out = {}
for label in ("gc_on", "gc_off"):
    if label == "gc_off":
        gc.disable()
    samples = []
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter()
        doc = orjson.loads(body)
        samples.append(time.perf_counter() - start)
        del doc
    out[label] = sorted(samples)[len(samples) // 2]
print(orjson.dumps(out).decode())
"""


def parse_floor(body: bytes, repeats: int, scratch: Path) -> dict[str, float]:
    """Median seconds of ``orjson.loads(body)`` in a fresh interpreter, with the garbage
    collector on (as any Python service runs) and off. A fresh process, because in this one
    the collector would also walk the benchmark's own large heap and inflate the floor."""
    path = scratch / "floor-body.json"
    path.write_bytes(body)
    done = subprocess.run([sys.executable, "-c", _FLOOR_SCRIPT, str(path), str(repeats)],
                          capture_output=True, check=True, timeout=600)
    path.unlink()
    result: dict[str, float] = orjson.loads(done.stdout)
    return result


async def client_floor(conn: Connection, count: int) -> Latency:
    samples = []
    for _ in range(count):
        seconds, status, _ = await timed(conn, "GET", "/healthz")
        if status != 200:
            raise HttpError(f"/healthz answered {status}")
        samples.append(seconds)
    return Latency.of(samples)


async def measure(conn: Connection, body_of: Callable[[int], bytes], count: int, warmup: int,
                  expect: int, full: bool,
                  sent: list[dict[str, Any]] | None = None) -> tuple[Latency, int]:
    """Send ``warmup + count`` filters, request i carrying ``body_of(i)`` (built before the
    clock starts); check the first reply passes all ``expect`` nodes, and (full mode) that it
    carries the very node objects sent (the service splices them from the request bytes).
    (latency, reply size)"""
    samples: list[float] = []
    size = 0
    for i in range(warmup + count):
        body = body_of(i)
        seconds, status, data = await timed(conn, "POST", "/v1/filter", body)
        if status != 200:
            raise HttpError(f"filter answered {status}: {data[:300]!r}")
        if i == 0:
            reply = orjson.loads(data)
            passed = reply["Nodes"]["items"] if full else reply["NodeNames"]
            if reply.get("Error") or len(passed) != expect:
                raise HttpError(f"filter passed {len(passed)} of {expect} nodes: "
                                f"{reply.get('Error')} {str(reply.get('FailedNodes'))[:300]}")
            if sent is not None and passed != sent:
                raise HttpError("the reply's node objects differ from the ones sent")
            size = len(data)
        if i >= warmup:
            samples.append(seconds)
    return Latency.of(samples), size


async def run(lab: Lab) -> Section:
    sizes = lab.sizes
    biggest = max(sizes.filter_nodes)
    api = await lab.fake_api(biggest)
    node_objects = lab.node_objects[biggest]
    pods = await api.create_many("pods", workload.plain_pods("filter", sizes.inflight_pods))
    work = lab.workdir("filter")
    pools = workload.write_pools(work / "pools.json",
                                 [workload.pool_entry("172.20.0.0/16")])
    section = Section("filter", "1. Filter latency (serial, keep-alive)", [
        "mode", "nodes", "body KB", "p50 ms", "p99 ms", "req/s", "loads p50 ms",
        "p50 / loads", "reply KB"])
    async with fresh_database(lab.pg, "filter") as database, \
            running_service(lab.pg, database, api, pools, work) as (svc, _):
        conn = await Connection.open(svc.url)
        try:
            floor = await client_floor(conn, sizes.healthz_requests)
            section.figures["client_floor_healthz"] = floor.to_dict()
            section.rows.append(["GET /healthz (client floor)", "-", 0.0, floor.p50, floor.p99,
                                 floor.rps, float("nan"), float("nan"), float("nan")])
            for count in sizes.filter_nodes:
                names = api.nodes[:count]
                bodies = [workload.filter_names_body(pod, names) for pod in pods]
                lat, reply = await measure(conn, lambda i, b=bodies: b[i % len(b)],  # type: ignore[misc]
                                           sizes.filter_requests_names[count],
                                           sizes.filter_warmup, count, full=False)
                floors = await asyncio.to_thread(parse_floor, bodies[0], sizes.floor_repeats * 5,
                                                 work)
                loads = floors["gc_on"]
                key = f"names_{count}"
                section.figures[key] = {**lat.to_dict(), "body_bytes": len(bodies[0]),
                                        "loads_p50_ms": loads * 1000, "reply_bytes": reply}
                section.rows.append(["NodeNames (cache)", count, len(bodies[0]) / 1024,
                                     lat.p50, lat.p99, lat.rps, loads * 1000,
                                     lat.p50 / (loads * 1000), reply / 1024])
                if count == biggest:
                    section.targets.append(Target(
                        f"filter p99, {count} node names", lat.p99, P99_NAMES_LIMIT_MS, "ms"))
            pod_json = [orjson.dumps(p) for p in pods]
            for count in sizes.filter_nodes:
                prefix, suffix = full_body_parts(orjson.dumps(node_objects[:count]))

                def body(i: int, prefix: bytes = prefix, suffix: bytes = suffix) -> bytes:
                    return b"".join((prefix, pod_json[i % len(pod_json)], suffix))

                sample = body(0)
                floors = await asyncio.to_thread(parse_floor, sample, sizes.floor_repeats, work)
                loads = floors["gc_on"]
                lat, reply = await measure(conn, body, sizes.filter_requests_full[count],
                                           max(2, sizes.filter_warmup // 5), count, full=True,
                                           sent=node_objects[:count])
                ratio = lat.p50 / (loads * 1000)
                section.figures[f"full_{count}"] = {**lat.to_dict(), "body_bytes": len(sample),
                                                    "loads_p50_ms": loads * 1000,
                                                    "loads_gc_off_p50_ms":
                                                        floors["gc_off"] * 1000,
                                                    "ratio_to_loads": ratio,
                                                    "reply_bytes": reply}
                section.rows.append(["Nodes (full v1.Node)", count, len(sample) / 1024,
                                     lat.p50, lat.p99, lat.rps, loads * 1000, ratio,
                                     reply / 1024])
                section.targets.append(Target(
                    f"full-node filter p50 / orjson.loads p50, {count} nodes", ratio,
                    FULL_FLOOR_RATIO_LIMIT, "x"))
        finally:
            await conn.close()
        mem = svc.memory()
    section.figures["service_memory_mb"] = mem
    section.notes.append(
        f"{sizes.inflight_pods} distinct pods cycle through filter (each holds one promise, "
        "like pods whose binds are in flight); the pool routes every node, so all pass.")
    section.notes.append(
        f"service RSS after this section {mem.get('VmRSS', 0):.0f} MB, peak (VmHWM) "
        f"{mem.get('VmHWM', 0):.0f} MB (full-node bodies are kept as bytes: node objects are "
        "read in place and echoed as sent).")
    return section
