"""Section 7: ten times the restart section's scale (issue 18, target 6).

1,000,000 allocations and 10,000 nodes: spawn to ``/readyz``, resident memory, filter
latency with all 10,000 node names, then a 10,000-pod scheduling run (1,000 Deployments x 10)
on the same database and cluster, which must give every pod its own address.

In the scheduling run each filter carries the node names kube-scheduler itself would send:
1.20 stops looking for feasible nodes after ``max(100, adaptive% of the nodes)`` (50% minus
one point per 125 nodes, at least 5%: 500 names at 10,000 nodes), starting where the previous
cycle stopped. The 10,000-name figure is measured on its own, as the issue asks.
"""

from __future__ import annotations

import os

import orjson

from bench import workload
from bench.filter_latency import measure
from bench.httpclient import Connection
from bench.infra import allocated_counts, fresh_database, proc_cpu_seconds, running_service
from bench.lab import Lab
from bench.operator_reads import SEEDED_ENV
from bench.report import Section, Target
from bench.restart import POOL_SUBNET, READY_LIMIT_S, RSS_LIMIT_MB, seed_allocations
from bench.schedule_run import bound_addresses, create_workloads, schedule

FILTER_P99_LIMIT_MS = 5.0


def feasible_to_find(nodes: int) -> int:
    """kube-scheduler 1.20's ``numFeasibleNodesToFind`` with the default
    percentageOfNodesToScore (0 = adaptive)."""
    if nodes < 100:
        return nodes
    percent = max(5, 50 - nodes // 125)
    return max(100, nodes * percent // 100)


async def run(lab: Lab) -> Section:
    sizes = lab.sizes
    total = sizes.scale_deployments * sizes.scale_replicas
    api = await lab.fake_api(sizes.scale_nodes, fresh=True)
    names = api.nodes
    pods = await create_workloads(api, sizes.scale_deployments, sizes.scale_replicas)
    probes = await api.create_many("pods", workload.plain_pods("scale-filter", 32))
    work = lab.workdir("scale")
    pools = workload.write_pools(work / "pools.json", [workload.pool_entry(POOL_SUBNET)])
    window = feasible_to_find(len(names))
    section = Section("scale", f"7. Ten times the scale: {sizes.scale_allocations:,} "
                      f"allocations, {len(names):,} nodes, {total:,} pods scheduled", [
                          "step", "value", "unit", "notes"])
    async with fresh_database(lab.pg, "scale") as database:
        async with running_service(lab.pg, database, api, pools, work, SEEDED_ENV):
            pass  # migrate and import the pools once, as the first start does
        await seed_allocations(lab.pg, database, sizes.scale_allocations, len(names))
        async with running_service(lab.pg, database, api, pools, work, SEEDED_ENV) as (svc, ready):
            cpu = proc_cpu_seconds(svc.proc.pid)
            at_ready = svc.memory()
            load_avg = os.getloadavg()[0]
            conn = await Connection.open(svc.url)
            try:
                bodies = [workload.filter_names_body(p, names) for p in probes]
                lat, _ = await measure(conn, lambda i: bodies[i % len(bodies)],
                                       sizes.scale_filters, sizes.filter_warmup, len(names),
                                       full=False)
            finally:
                await conn.close()
            names_json = [orjson.dumps(n) for n in names]

            def body(i: int) -> bytes:
                start = i * window % len(names)
                chosen = (names_json[start:start + window]
                          + names_json[:max(0, start + window - len(names))])
                return b"".join((b'{"Pod":', orjson.dumps(pods[i]),
                                 b',"Nodes":null,"NodeNames":[', b",".join(chosen), b"]}"))

            done = await schedule(svc.url, pods, body)
            after = svc.memory()
        bound, addresses = await bound_addresses(api)
        rows, distinct_rows = await allocated_counts(lab.pg, database)
    distinct = len(set(addresses))
    expected_rows = sizes.scale_allocations + total
    all_distinct = (bound == total and len(addresses) == total and distinct == total
                    and rows == distinct_rows == expected_rows)
    rss = max(at_ready.get("VmRSS", 0.0), after.get("VmRSS", 0.0))
    peak = after.get("VmHWM", 0.0)
    section.rows += [
        ["spawn to /readyz", ready, "s", f"{cpu:.2f} CPU s, load {load_avg:.1f}"],
        ["RSS at ready / after the run", rss, "MB",
         f"{at_ready.get('VmRSS', 0.0):.0f} / {after.get('VmRSS', 0.0):.0f}"],
        ["peak RSS (VmHWM)", peak, "MB", ""],
        [f"filter p50, {len(names):,} names", lat.p50, "ms", f"{lat.n} requests"],
        [f"filter p99, {len(names):,} names", lat.p99, "ms", ""],
        [f"{total:,}-pod run", done.elapsed, "s",
         f"{total / done.elapsed:.0f} pods/s, {window} names per filter"],
        ["run: filter p50 / p99", done.filter.p50, "ms", f"p99 {done.filter.p99:.2f}"],
        ["run: bind p50 / p99", done.bind.p50, "ms", f"p99 {done.bind.p99:.2f}"],
        ["distinct addresses", distinct, "pods",
         f"bound {bound}, allocated rows {rows} ({distinct_rows} distinct)"],
    ]
    section.figures.update({
        "allocations": sizes.scale_allocations, "nodes": len(names), "pods": total,
        "ready_seconds": ready, "cpu_seconds_at_ready": cpu, "at_ready": at_ready,
        "after_run": after, "rss_mb": rss, "peak_rss_mb": peak,
        "filter_all_names": lat.to_dict(), "names_per_filter_in_run": window,
        "run_seconds": done.elapsed, "run_filter": done.filter.to_dict(),
        "run_bind": done.bind.to_dict(), "bound": bound, "distinct_addresses": distinct,
        "db_allocated": rows, "db_distinct": distinct_rows, "all_distinct": all_distinct})
    section.targets += [
        Target("10x: spawn to /readyz", ready, READY_LIMIT_S, "s"),
        Target("10x: resident memory (max of at ready / after the run)", rss, RSS_LIMIT_MB,
               "MB"),
        Target(f"10x: filter p99, {len(names):,} names", lat.p99, FILTER_P99_LIMIT_MS, "ms"),
        Target(f"10x: {total:,}-pod run, pods with distinct addresses",
               float(distinct if all_distinct else 0), float(total), "pods", "ge"),
    ]
    return section
