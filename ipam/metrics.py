"""Prometheus metrics of one process, in a registry of its own (several apps per test process).

Counters and histograms are updated where things happen; gauges that describe state (pool
usage, watch health, reconciler, connection pool) are read at scrape time from the runtime,
so they cannot drift from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ipam.storage.records import AddressRecord

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


def address_action(before: AddressRecord | None, after: AddressRecord | None) -> str:
    """allocate, reuse, keep, reserve, quarantine or release, from a row's state before and
    after (reuse: the owner takes back what it kept, or what cools down after its release)."""
    was = before.state if before is not None else "free"
    now = after.state if after is not None else "free"
    if now == "allocated":
        return "reuse" if was in ("kept", "quarantined") else "allocate"
    if now == "kept":
        return "keep"
    if now == "reserved":
        return "reserve"
    if now == "quarantined":
        return "quarantine"
    return "release"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.extender_seconds = Histogram(
            "ipam_extender_request_seconds", "Extender request latency by verb and outcome.",
            ["verb", "outcome"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.address_changes = Counter(
            "ipam_address_changes_total",
            "Addresses changing hands, by pool and action (allocate, reuse, keep, release...).",
            ["pool", "action"], registry=self.registry)

    def on_address_change(self, before: AddressRecord | None,
                          after: AddressRecord | None) -> None:
        row = after or before
        if row is not None:
            self.address_changes.labels(row.pool, address_action(before, after)).inc()

    def add_state(self, read: Callable[[], Iterable[Metric]]) -> None:
        """Register gauges computed at scrape time."""
        self.registry.register(_StateCollector(read))


class _StateCollector(Collector):
    def __init__(self, read: Callable[[], Iterable[Metric]]) -> None:
        self.read = read

    def collect(self) -> Iterable[Metric]:
        return self.read()

    def describe(self) -> Iterable[Metric]:
        return []


def gauge(name: str, doc: str, labels: list[str], samples: Iterable[tuple[list[str], float]]
          ) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family


def counter(name: str, doc: str, labels: list[str],
            samples: Iterable[tuple[list[str], float]]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in samples:
        family.add_metric(values, value)
    return family




__all__ = ["Metric", "Metrics", "address_action", "counter", "gauge"]
