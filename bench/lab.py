"""Run sizes (full and ``--quick``) and the shared, lazily started environment."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import workload
from bench.infra import FakeApi, PgServer, find_postgres, scratch_dir


@dataclass(frozen=True, slots=True)
class Sizes:
    """Every knob that scales a run; ``QUICK`` only proves the benchmark still works."""

    filter_nodes: tuple[int, ...] = (500, 5000)
    #: Requests per (mode, size); the first ``warmup`` of each are not counted.
    filter_requests_names: dict[int, int] = field(
        default_factory=lambda: {500: 2000, 5000: 1000})
    filter_requests_full: dict[int, int] = field(default_factory=lambda: {500: 200, 5000: 40})
    filter_warmup: int = 20
    floor_repeats: int = 20
    healthz_requests: int = 2000
    #: Distinct pods cycled through filter: each holds one promise, like pods whose binds
    #: are in flight (the bind benchmark's highest concurrency).
    inflight_pods: int = 32
    bind_levels: tuple[int, ...] = (1, 8, 32)
    bind_counts: dict[int, int] = field(default_factory=lambda: {1: 1500, 8: 3000, 32: 4000})
    pgbench_rows: int = 200_000
    schedule_nodes: int = 10
    schedule_deployments: int = 100
    schedule_replicas: int = 10
    poolsize_taken: int = 10_000
    poolsize_rounds: int = 40
    poolsize_per_round: int = 10
    poolsize_streak: int = 1000
    restart_allocations: int = 100_000
    restart_nodes: int = 5000
    restart_repeats: int = 3
    restart_load_filters: int = 50
    reads_allocations: int = 100_000
    reads_pages: int = 200
    #: Issue 18's "10x": allocations, nodes (filter names) and pods scheduled in one run.
    scale_allocations: int = 1_000_000
    scale_nodes: int = 10_000
    scale_filters: int = 300
    scale_deployments: int = 1000
    scale_replicas: int = 10


FULL = Sizes()
QUICK = Sizes(
    filter_nodes=(20, 200),
    filter_requests_names={20: 40, 200: 40},
    filter_requests_full={20: 10, 200: 6},
    filter_warmup=3, floor_repeats=3, healthz_requests=100, inflight_pods=4,
    bind_counts={1: 20, 8: 40, 32: 64}, pgbench_rows=20_000,
    schedule_deployments=10, schedule_replicas=5,
    poolsize_taken=300, poolsize_rounds=2, poolsize_per_round=5, poolsize_streak=30,
    restart_allocations=2000, restart_nodes=200, restart_repeats=1, restart_load_filters=5,
    reads_allocations=3000, reads_pages=20,
    scale_allocations=5000, scale_nodes=300, scale_filters=20, scale_deployments=10,
    scale_replicas=5,
)


class Lab:
    """PostgreSQL, scratch space and fake API servers (one per node count, seeded once)."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.sizes = QUICK if quick else FULL
        self.tmp = scratch_dir()
        # Outside ``tmp``: an embedded server is stopped at exit, after ``close`` removes tmp.
        self.pg: PgServer = find_postgres(Path(tempfile.gettempdir()) / "ipam-bench-pg")
        self._apis: dict[tuple[int, int], FakeApi] = {}
        self.node_objects: dict[int, list[dict[str, Any]]] = {}

    async def fake_api(self, node_count: int, *, fresh: bool = False) -> FakeApi:
        """A fake API server holding ``node_count`` realistic nodes (as stored there); shared
        between sections unless ``fresh`` (then it holds nothing else: no leftover pods)."""
        key = (node_count, len(self._apis) if fresh else -1)
        api = self._apis.get(key)
        if api is None:
            api = await FakeApi.start()
            self._apis[key] = api
            stored = await api.create_many("nodes", workload.nodes(node_count))
            self.node_objects.setdefault(node_count, stored)
            api.nodes = [n["metadata"]["name"] for n in stored]
        return api

    def workdir(self, name: str) -> Path:
        path = self.tmp / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def close(self) -> None:
        for api in self._apis.values():
            api.stop()
        self._apis.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)
