"""Latency summaries: percentiles by the nearest-rank rule, so a p99 is a measured sample."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0-100) of unsorted samples; NaN when empty."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Latency:
    """Milliseconds; ``rps`` is requests per second of wall time (or 1/mean when serial)."""

    n: int
    p50: float
    p99: float
    mean: float
    max: float
    rps: float

    @classmethod
    def of(cls, seconds: Sequence[float], wall: float | None = None) -> Latency:
        """Summarise per-request durations in seconds; ``wall`` for concurrent runs."""
        ms = [s * 1000 for s in seconds]
        mean = sum(ms) / len(ms) if ms else math.nan
        if wall is None:
            wall = sum(seconds)
        return cls(n=len(ms), p50=percentile(ms, 50), p99=percentile(ms, 99), mean=mean,
                   max=max(ms) if ms else math.nan,
                   rps=len(ms) / wall if wall > 0 else math.nan)

    def to_dict(self) -> dict[str, Any]:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}
