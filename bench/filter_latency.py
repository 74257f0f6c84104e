"""Section 1: filter latency, one request at a time as the scheduler's serial cycle sends them.

Both ``nodeCacheCapable`` modes, at two cluster sizes. Next to each figure, the time
``orjson.loads`` takes on the very same body in this process: the parsing floor no
implementation that reads the body can beat. Then the largest names-mode filter again while
another replica commits address changes (issue 18, target 2 counts the cost of that truth:
every change reaches this replica's filter through its change feed as it commits).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench import workload
from bench.httpclient import Connection, HttpError, timed
from bench.infra import PgServer, fresh_database, migrate, running_service
from bench.lab import Lab
from bench.report import Section, Target
from bench.stats import Latency

P99_NAMES_LIMIT_MS = 5.0
FULL_FLOOR_RATIO_LIMIT = 2.0
#: Issue 18, target 2: names-mode filter at 5,000 nodes, with the cross-replica accounting on.
P50_REPLICA_LIMIT_MS, P99_REPLICA_LIMIT_MS = 1.0, 2.5
#: Address changes per second the other replica commits (a busy one: ~250 binds and 250
#: releases a second), each its own transaction like a bind.
OTHER_REPLICA_CHANGES_PER_SECOND = 500


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


@contextlib.asynccontextmanager
async def other_replica(pg: PgServer, database: str, rate: float) -> AsyncIterator[list[int]]:
    """Another writer committing ``rate`` address changes a second (one row taken, then
    freed, in turn) while the block runs; yields a one-item list: changes committed."""
    # Without waiting for each commit's WAL flush: one connection keeps the pace, and what the
    # measured replica sees (one notification per commit) is the same.
    conn = await asyncpg.connect(**pg.connect_kwargs(database),
                                 server_settings={"synchronous_commit": "off"})
    done = [0]
    address = await conn.fetchval(
        "SELECT host(broadcast(subnet) - 2) FROM pools ORDER BY position LIMIT 1")
    await conn.execute(
        "INSERT INTO addresses (pool_id, address) SELECT id, $1::inet FROM pools "
        "ORDER BY position LIMIT 1 ON CONFLICT (address) DO NOTHING", address)
    take = ("UPDATE addresses SET state = 'allocated', owner_key = 'bench/other-replica', "
            "pod_uid = 'other-replica' WHERE address = $1::inet")
    free = ("UPDATE addresses SET state = 'free', owner_key = NULL, pod_uid = NULL "
            "WHERE address = $1::inet")

    async def write() -> None:
        start = time.perf_counter()
        while True:
            status = await conn.execute(take if done[0] % 2 == 0 else free, address)
            if status != "UPDATE 1":
                raise RuntimeError(f"the other replica's change did not apply: {status}")
            done[0] += 1
            ahead = start + done[0] / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)

    task = asyncio.create_task(write())
    try:
        yield done
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task  # a failed write raises here
        await conn.close()


async def feed_applied(conn: Connection) -> float | None:
    """Notifications the service's change feed applied so far (``None``: no feed)."""
    _, status, data = await timed(conn, "GET", "/metrics")
    found = re.search(rb'^ipam_change_feed_notifications_total\{result="applied"\} (\S+)$',
                      data, re.MULTILINE) if status == 200 else None
    return float(found.group(1)) if found else None


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
    async with fresh_database(lab.pg, "filter") as database:
        # As a deployment does: migrations first, as the tables' owner, then serve.
        await migrate(lab.pg, database)
        async with running_service(lab.pg, database, api, pools, work) as (svc, _):
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
                    floors = await asyncio.to_thread(parse_floor, bodies[0],
                                                     sizes.floor_repeats * 5, work)
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
                names = api.nodes[:biggest]
                bodies = [workload.filter_names_body(pod, names) for pod in pods]
                before = await feed_applied(conn)
                async with other_replica(lab.pg, database, OTHER_REPLICA_CHANGES_PER_SECOND) as n:
                    lat, reply = await measure(conn, lambda i, b=bodies: b[i % len(b)],  # type: ignore[misc]
                                               sizes.filter_requests_names[biggest],
                                               sizes.filter_warmup, biggest, full=False)
                after = await feed_applied(conn)
                applied = after - before if after is not None and before is not None else None
                section.figures[f"names_{biggest}_other_replica"] = {
                    **lat.to_dict(), "other_replica_changes": n[0],
                    "other_replica_changes_per_second": OTHER_REPLICA_CHANGES_PER_SECOND,
                    "feed_notifications_applied": applied}
                section.rows.append([f"NodeNames, other replica {OTHER_REPLICA_CHANGES_PER_SECOND}"
                                     " changes/s", biggest, len(bodies[0]) / 1024, lat.p50,
                                     lat.p99, lat.rps, float("nan"), float("nan"), reply / 1024])
                section.targets.append(Target(
                    f"filter p50, {biggest} names, another replica committing",
                    lat.p50, P50_REPLICA_LIMIT_MS, "ms"))
                section.targets.append(Target(
                    f"filter p99, {biggest} names, another replica committing",
                    lat.p99, P99_REPLICA_LIMIT_MS, "ms"))
                section.notes.append(
                    f"other replica: {n[0]} changes committed during the run; the change feed "
                    f"applied {applied if applied is not None else 'none (no change feed)'} of "
                    "them by the end of the run.")
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
