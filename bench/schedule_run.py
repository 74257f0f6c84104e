"""Section 3: a scheduling run shaped like Spiderpool's published IPAM comparison.

10 nodes, 100 Deployments x 10 replicas, exactly as many addresses as pods. Filter calls go
one at a time, as kube-scheduler's serial scheduling cycle makes them; each bind starts as
soon as its pod is assumed and runs in parallel with the next filters, as the binding cycle
does. At the end every pod must be bound with its own address.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from bench import workload
from bench.httpclient import Connection, HttpError, Pool
from bench.infra import FakeApi, allocated_counts, fresh_database, running_service
from bench.lab import Lab
from bench.report import Section, Target
from bench.stats import Latency

TOTAL_LIMIT_S = 10.0
ARGS_ANNOTATION = "k8s.v1.cni.galaxy.io/args"


async def create_workloads(api: FakeApi, deployments: int, replicas: int
                           ) -> list[dict[str, Any]]:
    """Deployments, their ReplicaSets and pods (owner references set), as stored."""
    deps = await api.create_many("deployments", workload.deployments(deployments, replicas))
    sets = await api.create_many("replicasets", [workload.replicaset_for(d) for d in deps])
    pods = [pod for rs in sets for pod in workload.pods_of(rs, replicas)]
    return await api.create_many("pods", pods)


async def bound_addresses(api: FakeApi) -> tuple[int, list[str]]:
    """(pods bound to a node, their addresses from the galaxy args annotation)."""
    listing = await api.get(f"/api/v1/namespaces/{workload.NAMESPACE}/pods")
    bound, addresses = 0, []
    for pod in listing["items"]:
        if pod["spec"].get("nodeName"):
            bound += 1
        args = (pod["metadata"].get("annotations") or {}).get(ARGS_ANNOTATION)
        if args:
            for info in orjson.loads(args)["common"]["ipinfos"]:
                addresses.append(info["ip"].split("/")[0])
    return bound, addresses


@dataclass(frozen=True, slots=True)
class Scheduled:
    elapsed: float
    filter: Latency
    bind: Latency
    peak_in_flight: int


async def schedule(url: str, pods: list[dict[str, Any]], filter_body: Callable[[int], bytes]
                   ) -> Scheduled:
    """Filter pod i with ``filter_body(i)`` one at a time, as the scheduling cycle does, and
    bind it to a passing node while the next filters run, as the binding cycle does; raises
    on any error."""
    conn = await Connection.open(url)
    binders = Pool(url)
    filter_s: list[float] = []
    bind_s: list[float] = []
    errors: list[str] = []
    in_flight = peak = 0

    async def bind(pod: dict[str, Any], node: str) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        start = time.perf_counter()
        status, data = await binders.request("POST", "/v1/bind", workload.bind_body(pod, node))
        bind_s.append(time.perf_counter() - start)
        in_flight -= 1
        if status != 200 or orjson.loads(data) != {"Error": ""}:
            errors.append(f"bind {pod['metadata']['name']}: {data[:200]!r}")

    tasks: list[asyncio.Task[None]] = []
    started = time.perf_counter()
    try:
        for i, pod in enumerate(pods):
            body = filter_body(i)
            t0 = time.perf_counter()
            status, data = await conn.request("POST", "/v1/filter", body)
            filter_s.append(time.perf_counter() - t0)
            passed = orjson.loads(data)["NodeNames"] if status == 200 else None
            if not passed:
                errors.append(f"filter {pod['metadata']['name']}: {data[:200]!r}")
                continue
            tasks.append(asyncio.create_task(bind(pod, passed[i % len(passed)])))
            # The scheduling cycle continues while binds run: let them start.
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    finally:
        await conn.close()
        await binders.close()
    if errors:
        raise HttpError(f"{len(errors)} scheduling errors, first: {errors[:3]}")
    return Scheduled(elapsed, Latency.of(filter_s), Latency.of(bind_s), peak)


async def run(lab: Lab) -> Section:
    sizes = lab.sizes
    total = sizes.schedule_deployments * sizes.schedule_replicas
    api = await lab.fake_api(sizes.schedule_nodes)
    names = api.nodes
    pods = await create_workloads(api, sizes.schedule_deployments, sizes.schedule_replicas)
    work = lab.workdir("schedule")
    pools = workload.write_pools(work / "pools.json",
                                 [workload.pool_entry("10.40.0.0/16", count=total)])
    filters = [workload.filter_names_body(pod, names) for pod in pods]
    section = Section("schedule", f"3. Scheduling run: {total:,} pods, "
                      f"{sizes.schedule_deployments} Deployments x {sizes.schedule_replicas}, "
                      f"{len(names)} nodes, {total:,} addresses", [
                          "total s", "pods/s", "filter p50 ms", "filter p99 ms", "bind p50 ms",
                          "bind p99 ms", "max binds in flight", "bound", "distinct addresses"])
    async with fresh_database(lab.pg, "schedule") as database:
        async with running_service(lab.pg, database, api, pools, work) as (svc, _):
            done = await schedule(svc.url, pods, lambda i: filters[i])
        bound, addresses = await bound_addresses(api)
        rows, distinct_rows = await allocated_counts(lab.pg, database)
    elapsed, peak = done.elapsed, done.peak_in_flight
    distinct = len(set(addresses))
    all_distinct = bound == total and len(addresses) == total and distinct == total \
        and rows == total and distinct_rows == total
    f, b = done.filter, done.bind
    section.rows.append([elapsed, total / elapsed, f.p50, f.p99, b.p50, b.p99, peak, bound,
                         distinct])
    section.figures.update({
        "pods": total, "nodes": len(names), "total_seconds": elapsed,
        "pods_per_second": total / elapsed, "filter": f.to_dict(), "bind": b.to_dict(),
        "max_binds_in_flight": peak, "bound": bound, "annotated_addresses": len(addresses),
        "distinct_addresses": distinct, "db_allocated": rows, "db_distinct": distinct_rows,
        "all_distinct": all_distinct})
    section.targets.append(Target(f"{total:,}-pod run, total time", elapsed, TOTAL_LIMIT_S,
                                  "s"))
    section.targets.append(Target("pods bound with distinct addresses", float(distinct),
                                  float(total), "pods", "ge"))
    section.notes.append(
        f"bound pods {bound}/{total}; addresses in annotations {len(addresses)} "
        f"({distinct} distinct); allocated rows {rows} ({distinct_rows} distinct).")
    return section
