"""CPU of the Kubernetes transport per list page, per GET and per watch event, and the
process's threads and memory, against the in-repo fake API server in its own process.

``python3 -m tests.k8s.transport_bench [--nodes 5000] [--events 5000]`` prints one JSON
object. Only this process's CPU is counted (``time.process_time``: every thread, so a thread
pool or a watch reader thread is included); the fake API server and the process writing the
watched changes run apart. Not a test: docs/benchmarks.md, "Kubernetes transport (session 4)",
has the figures and how they were taken.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlsplit

PAGE = 500


def _status() -> dict[str, int]:
    """Threads, and resident / peak resident memory in KiB, from /proc."""
    out: dict[str, int] = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Threads", "VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def _connection(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    return http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port)


def seed(url: str, nodes: int) -> None:
    from tests.fakeapi.objects import make_node

    conn = _connection(url)
    for i in range(nodes):
        body = json.dumps(make_node(f"n-{i:05d}", internal_ip=f"10.{i // 250 % 250}.{i % 250}.1"))
        conn.request("POST", "/_fake/objects/nodes", body,
                     {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 201, response.status


def patch(url: str, nodes: int, events: int) -> None:
    conn = _connection(url)
    for i in range(events):
        body = json.dumps({"metadata": {"labels": {"bench/round": str(i)}}})
        conn.request("PATCH", f"/api/v1/nodes/n-{i % nodes:05d}", body,
                     {"Content-Type": "application/merge-patch+json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200, response.status


async def measure(url: str, nodes: int, events: int, rounds: int, gets: int) -> dict[str, Any]:
    from kubernetes.client import Configuration

    from ipam.k8s.client import KubeClient
    from ipam.k8s.cluster import KubeCluster
    from ipam.k8s.informer import Informer, ListStats, list_pages
    from ipam.k8s.nodes import NodeController
    from ipam.services.placement_state import NodeDirectory
    from ipam.services.runtime import Readiness

    cfg = Configuration(host=url)
    cfg.proxy = None
    kube = KubeClient(cfg)
    result: dict[str, Any] = {"at_start": _status()}
    try:
        # Paged lists of every node, reduced as the node informer reduces them; the first
        # (imports, connections) is not counted.
        await list_pages(kube, "/api/v1/nodes", NodeController.reduce)
        stats = ListStats()
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            await list_pages(kube, "/api/v1/nodes", NodeController.reduce, stats=stats)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        result["list_page"] = {"pages": stats.pages, "cpu_ms": 1000 * cpu / stats.pages,
                               "wall_ms": 1000 * wall / stats.pages}

        cluster = KubeCluster(kube)
        for concurrency in (1, 32):
            cpu, wall = time.process_time(), time.perf_counter()
            for start in range(0, gets, concurrency):
                await asyncio.gather(*(cluster.node_ip(f"n-{i % nodes:05d}")
                                       for i in range(start, start + concurrency)))
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            result[f"get_c{concurrency}"] = {"cpu_ms": 1000 * cpu / gets,
                                             "wall_ms": 1000 * wall / gets}

        # Three informers as the service runs them; changes to nodes written from outside.
        directory = NodeDirectory()
        controller = NodeController(directory)

        async def ignore(*_: Any) -> None:
            return None

        informers = [
            Informer("nodes", kube, "/api/v1/nodes", controller.reduce, controller.on_sync,
                     controller.on_event, Readiness()),
            Informer("pods", kube, "/api/v1/pods", lambda o: o, ignore, ignore, Readiness()),
            Informer("configmaps", kube, "/api/v1/namespaces/kube-system/configmaps",
                     lambda o: o, ignore, ignore, Readiness()),
        ]
        tasks = [asyncio.create_task(i.run()) for i in informers]
        for informer in informers:
            await informer.synced.wait()
        await asyncio.sleep(0.5)  # the watches are open
        result["watching"] = _status()
        writer = subprocess.Popen([sys.executable, "-m", "tests.k8s.transport_bench",
                                   "--patch", url, "--nodes", str(nodes),
                                   "--events", str(events)])
        nodes_informer = informers[0]
        while nodes_informer.stats.events == 0:
            await asyncio.sleep(0.001)
        cpu, wall = time.process_time(), time.perf_counter()
        first = nodes_informer.stats.events
        while nodes_informer.stats.events < events:
            await asyncio.sleep(0.01)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        seen = nodes_informer.stats.events - first
        result["watch_event"] = {"events": seen, "cpu_ms": 1000 * cpu / seen,
                                 "wall_ms": 1000 * wall / seen}
        assert writer.wait(60) == 0
        result["at_end"] = _status()
        for informer, task in zip(informers, tasks, strict=True):
            informer.stop()
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await kube.aclose()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m tests.k8s.transport_bench",
                                description=__doc__)
    p.add_argument("--nodes", type=int, default=5000)
    p.add_argument("--events", type=int, default=5000)
    p.add_argument("--rounds", type=int, default=5, help="lists of every node")
    p.add_argument("--gets", type=int, default=2048, help="GETs of one node per concurrency")
    p.add_argument("--seed", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--patch", metavar="URL", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seed:
        seed(args.seed, args.nodes)
        return 0
    if args.patch:
        patch(args.patch, args.nodes, args.events)
        return 0
    fake = subprocess.Popen([sys.executable, "-m", "tests.fakeapi", "--no-request-log",
                             "--history", str(args.events * 2)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().strip()
        subprocess.run([sys.executable, "-m", "tests.k8s.transport_bench", "--seed", url,
                        "--nodes", str(args.nodes)], check=True)
        result = asyncio.run(measure(url, args.nodes, args.events, args.rounds, args.gets))
    finally:
        fake.terminate()
        fake.wait(10)
    print(json.dumps({"nodes": args.nodes, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
