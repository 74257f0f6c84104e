"""Section 5: restart with 100,000 allocations and 5,000 nodes: spawn-to-ready and memory.

The clock starts when ``python -m ipam serve`` is spawned (interpreter start and imports
count: that is what a rolling update waits for) and stops at the first ``/readyz`` 200, which
needs the database, the schema at head, the pools file applied and the node watcher synced.
The service's own CPU seconds at that moment are reported too: on a shared machine the wall
time moves with everything else running, its CPU time much less.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

import asyncpg
import orjson

from bench import workload
from bench.bind_throughput import prefilter
from bench.httpclient import Connection, HttpError
from bench.infra import PgServer, Service, fresh_database, proc_cpu_seconds, running_service
from bench.lab import Lab
from bench.report import Section, Target

READY_LIMIT_S = 3.0
RSS_LIMIT_MB = 250.0
POOL_SUBNET = "172.16.0.0/12"


async def seed_allocations(pg: PgServer, database: str, count: int, nodes: int) -> None:
    """``count`` allocated addresses with their audit rows, as ``count`` binds leave them."""
    conn = await asyncpg.connect(**pg.connect_kwargs(database))
    try:
        pool_id, name = await conn.fetchrow("SELECT id, name FROM pools ORDER BY id LIMIT 1")
        await conn.execute(
            "INSERT INTO addresses (pool_id, address, state, owner_key, policy, pod_namespace,"
            " pod_name, pod_uid, node, allocated_at, bound_at, updated_at)"
            " SELECT $1, '172.16.0.0'::inet + g, 'allocated', 'pod/bench/seed-' || g,"
            " 'pod-delete', 'bench', 'seed-' || g, 'seed-uid-' || g,"
            " 'node-' || lpad((g % $3)::text, 5, '0'), now(), now(), now()"
            " FROM generate_series(1, $2) g", pool_id, count, nodes)
        await conn.execute(
            "UPDATE pools SET materialized_upto = '172.16.0.0'::inet + $2 WHERE id = $1",
            pool_id, count)
        await conn.execute(
            "INSERT INTO audit (actor, action, address, pool, owner_key, pod_namespace,"
            " pod_name, pod_uid, after)"
            " SELECT 'scheduler', 'allocate', address, $2, owner_key, pod_namespace, pod_name,"
            " pod_uid, jsonb_build_object('state', state, 'owner_key', owner_key, 'policy',"
            " policy, 'pod_namespace', pod_namespace, 'pod_name', pod_name, 'pod_uid', pod_uid,"
            " 'node', node, 'note', note) FROM addresses WHERE pool_id = $1", pool_id, name)
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


async def load(svc: Service, pods: list[dict[str, Any]], names: list[str]) -> None:
    """Some steady-state work (5,000-name filters, then binds) before memory is read again."""
    conn = await Connection.open(svc.url)
    try:
        body = workload.filter_names_body(pods[0], names)
        for _ in range(len(pods)):
            status, _ = await conn.request("POST", "/v1/filter", body)
            if status != 200:
                raise HttpError(f"filter answered {status}")
        targets = [names[i % len(names)] for i in range(len(pods))]
        await prefilter(conn, pods, targets)
        for pod, node in zip(pods, targets, strict=True):
            status, data = await conn.request("POST", "/v1/bind",
                                              workload.bind_body(pod, node))
            if status != 200 or orjson.loads(data) != {"Error": ""}:
                raise HttpError(f"bind answered {status}: {data[:200]!r}")
    finally:
        await conn.close()


async def run(lab: Lab) -> Section:
    sizes = lab.sizes
    # Its own API server: pods left by other sections would be listed by the pod watcher.
    api = await lab.fake_api(sizes.restart_nodes, fresh=True)
    names = api.nodes
    work = lab.workdir("restart")
    pools = workload.write_pools(work / "pools.json", [workload.pool_entry(POOL_SUBNET)])
    pods = await api.create_many("pods", workload.plain_pods("restart",
                                                             sizes.restart_load_filters))
    section = Section("restart", f"5. Restart: {sizes.restart_allocations:,} allocations, "
                      f"{len(names):,} nodes", [
                          "start", "spawn to /readyz s", "CPU s to /readyz", "load avg",
                          "RSS at ready MB", "RSS after load MB", "peak RSS MB"])
    ready_times: list[float] = []
    cpu_times: list[float] = []
    rss: list[float] = []
    peaks: list[float] = []
    async with fresh_database(lab.pg, "restart") as database:
        async with running_service(lab.pg, database, api, pools, work) as (svc, cold):
            cold_cpu = proc_cpu_seconds(svc.proc.pid)
            mem = svc.memory()
        section.rows.append(["first (empty database: migrate, import pools)", cold, cold_cpu,
                             os.getloadavg()[0], mem.get("VmRSS", 0.0), float("nan"),
                             mem.get("VmHWM", 0.0)])
        await seed_allocations(lab.pg, database, sizes.restart_allocations, len(names))
        for rep in range(sizes.restart_repeats):
            async with running_service(lab.pg, database, api, pools, work) as (svc, ready):
                cpu = proc_cpu_seconds(svc.proc.pid)
                load_avg = os.getloadavg()[0]
                at_ready = svc.memory()
                after = at_ready
                if rep == 0:
                    await load(svc, pods, names)
                    after = svc.memory()
            ready_times.append(ready)
            cpu_times.append(cpu)
            rss.append(max(at_ready.get("VmRSS", 0.0), after.get("VmRSS", 0.0)))
            peaks.append(after.get("VmHWM", 0.0))
            section.rows.append([f"restart {rep + 1}", ready, cpu, load_avg,
                                 at_ready.get("VmRSS", 0.0),
                                 after.get("VmRSS", 0.0) if rep == 0 else float("nan"),
                                 after.get("VmHWM", 0.0)])
            section.figures[f"restart_{rep + 1}"] = {
                "ready_seconds": ready, "cpu_seconds_at_ready": cpu, "loadavg_1m": load_avg,
                "at_ready": at_ready, "after_load": after}
    median = statistics.median(ready_times)
    section.figures.update({"first_start_seconds": cold, "first_start_cpu_seconds": cold_cpu,
                            "ready_median_seconds": median,
                            "ready_cpu_median_seconds": statistics.median(cpu_times),
                            "rss_mb": max(rss), "peak_rss_mb": max(peaks),
                            "allocations": sizes.restart_allocations, "nodes": len(names)})
    section.targets.append(Target("restart: spawn to /readyz (median)", median,
                                  READY_LIMIT_S, "s"))
    section.targets.append(Target("resident memory (max of at ready / after load)", max(rss),
                                  RSS_LIMIT_MB, "MB"))
    # A container memory limit must hold the peak, not only the steady state.
    section.targets.append(Target("peak resident memory (VmHWM, start-up and load)",
                                  max(peaks), RSS_LIMIT_MB, "MB"))
    section.notes.append(
        f"load after the first restart: {len(pods)} filters with {len(names):,} node names, "
        f"then {len(pods)} filter+bind pairs. Audit rows seeded with the allocations.")
    return section
