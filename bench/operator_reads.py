"""Section 6: what operators read at scale - galaxy's ``GET /v1/ip`` and our address listing
with 100,000 allocations (issue 18, target 5: p99 <= 50 ms per page).

Pages are read the way a console or a script reads them: galaxy's numbered pages (default
size 10, and 100) at random page numbers across the whole set, its keyword search and a sort
by pod name; our ``GET /v1/addresses`` walked by cursor (taken addresses, and everything in
a pool, free ones included) and filtered by namespace. Each page is one request on a
keep-alive connection; the seeded rows carry their audit trail as binds leave them.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from urllib.parse import urlencode

import orjson

from bench import workload
from bench.httpclient import Connection, HttpError, timed
from bench.infra import fresh_database, running_service
from bench.lab import Lab
from bench.report import Section, Target
from bench.restart import POOL_SUBNET, seed_allocations
from bench.stats import Latency

#: The seeded holders are not pods in the fake API server: without a long grace the
#: reconciler would (rightly) free them as leaked in the middle of the run.
SEEDED_ENV = {"IPAM_RECONCILER__GRACE_SECONDS": "86400",
              "IPAM_RECONCILER__UNBOUND_GRACE_SECONDS": "86400"}
P99_PAGE_LIMIT_MS = 50.0


async def galaxy_pages(conn: Connection, query: Callable[[int], dict[str, str]], count: int,
                       expect_total: int | None) -> Latency:
    """``count`` galaxy pages, request i asking ``query(i)``; checks each answer's shape and
    (when given) that it counts every seeded allocation."""
    samples = []
    for i in range(count):
        seconds, status, data = await timed(conn, "GET", "/v1/ip?" + urlencode(query(i)))
        if status != 200:
            raise HttpError(f"GET /v1/ip answered {status}: {data[:300]!r}")
        doc = orjson.loads(data)
        if expect_total is not None and doc["totalElements"] != expect_total:
            raise HttpError(f"GET /v1/ip counted {doc['totalElements']}, not {expect_total}")
        samples.append(seconds)
    return Latency.of(samples)


async def cursor_walk(conn: Connection, params: dict[str, str], pages: int) -> Latency:
    """Up to ``pages`` pages of ``GET /v1/addresses`` following ``next_cursor``."""
    samples = []
    cursor: str | None = None
    for _ in range(pages):
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        seconds, status, data = await timed(conn, "GET", "/v1/addresses?" + urlencode(query))
        if status != 200:
            raise HttpError(f"GET /v1/addresses answered {status}: {data[:300]!r}")
        doc = orjson.loads(data)
        if not doc["items"]:
            raise HttpError(f"GET /v1/addresses returned an empty page for {query}")
        samples.append(seconds)
        cursor = doc.get("next_cursor")
        if cursor is None:
            break
    return Latency.of(samples)


async def run(lab: Lab) -> Section:
    sizes = lab.sizes
    count = sizes.reads_allocations
    api = await lab.fake_api(sizes.schedule_nodes)
    work = lab.workdir("reads")
    pools = workload.write_pools(work / "pools.json", [workload.pool_entry(POOL_SUBNET)])
    section = Section("reads", f"6. Operator reads, {count:,} allocations", [
        "read", "pages", "p50 ms", "p99 ms", "max ms", "pages/s"])
    rng = random.Random(18)
    pages = sizes.reads_pages
    last_page = max(1, count // 10 - 1)
    async with fresh_database(lab.pg, "reads") as database:
        # Started once to import the pools, then seeded and restarted: as after a busy day.
        async with running_service(lab.pg, database, api, pools, work, SEEDED_ENV):
            pass
        await seed_allocations(lab.pg, database, count, len(api.nodes))
        async with running_service(lab.pg, database, api, pools, work, SEEDED_ENV) as (svc, _):
            conn = await Connection.open(svc.url)
            try:
                runs: list[tuple[str, Latency]] = [
                    ("galaxy /v1/ip, size 10, random page", await galaxy_pages(
                        conn, lambda i: {"page": str(rng.randint(0, last_page))}, pages,
                        count)),
                    ("galaxy /v1/ip, size 100, random page", await galaxy_pages(
                        conn, lambda i: {"page": str(rng.randint(0, count // 100 - 1)),
                                         "size": "100"}, pages, count)),
                    ("galaxy /v1/ip, keyword (pod name), size 10", await galaxy_pages(
                        conn, lambda i: {"keyword": f"seed-{rng.randint(1, count)}"}, pages,
                        None)),
                    ("galaxy /v1/ip, sort podname desc, random page", await galaxy_pages(
                        conn, lambda i: {"page": str(rng.randint(0, last_page)),
                                         "sort": "podname desc"}, pages, count)),
                    ("/v1/addresses?state=allocated, cursor walk, 100/page", await cursor_walk(
                        conn, {"state": "allocated", "limit": "100"}, pages)),
                    ("/v1/addresses (all states), cursor walk, 1000/page", await cursor_walk(
                        conn, {"limit": "1000"}, max(2, pages // 10))),
                    ("/v1/addresses?namespace=bench, 100/page", await cursor_walk(
                        conn, {"namespace": "bench", "limit": "100"}, pages)),
                ]
            finally:
                await conn.close()
    for name, lat in runs:
        section.rows.append([name, lat.n, lat.p50, lat.p99, lat.max, lat.rps])
        section.figures[name] = lat.to_dict()
    galaxy = max(lat.p99 for name, lat in runs if name.startswith("galaxy"))
    ours = max(lat.p99 for name, lat in runs if name.startswith("/v1/addresses"))
    section.targets.append(Target("galaxy GET /v1/ip, worst p99 per page", galaxy,
                                  P99_PAGE_LIMIT_MS, "ms"))
    section.targets.append(Target("GET /v1/addresses, worst p99 per page", ours,
                                  P99_PAGE_LIMIT_MS, "ms"))
    section.notes.append(
        f"{count:,} allocated addresses (one pool, one namespace), each with its audit row; "
        "random page numbers span the whole set (seeded, the same every run).")
    return section
