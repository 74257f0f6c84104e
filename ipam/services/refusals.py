"""Pods the extender is holding back: the most recent filter calls that passed no node.

Filter answers kube-scheduler and forgets; the scheduler only logs "0/N nodes are available".
Operators asking "why is my pod Pending?" need the reasons ipam gave, so filter records each
refusal here (``record``), and the console and ``GET /v1/refusals`` read them back
(``recent``). It is a bounded in-memory ring, per replica and lost on restart, on purpose:
it answers "what is stuck right now", the audit trail answers "what happened".

One entry per pod UID: a pod the scheduler retries every few seconds updates its entry (times
refused, last reasons) and moves to the front instead of flooding the ring. Reasons are
summarised when recorded (distinct reason -> number of nodes, the most common first), so an
entry costs the same for 5 nodes as for 5,000.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: Entries kept (distinct pods); the oldest is dropped first.
CAPACITY = 256
#: Distinct reasons kept per entry; the rest are counted in ``other_nodes``.
MAX_REASONS = 8
#: Longest reason kept, in characters (reasons name pods, pools and addresses).
MAX_REASON_CHARS = 500


@dataclass(frozen=True, slots=True)
class Refusal:
    """The latest refusal of one pod, with how often it was refused."""

    pod: str
    uid: str
    #: Wall-clock seconds (``time.time()``) of the first and the latest refusal.
    first_at: float
    last_at: float
    times: int
    #: Nodes refused in the latest call.
    nodes: int
    #: (reason, nodes refused with it), most nodes first.
    reasons: tuple[tuple[str, int], ...]
    #: Nodes refused for reasons beyond ``MAX_REASONS``.
    other_nodes: int = 0


def summarise(reasons: Mapping[str, str] | Iterable[str]) -> tuple[tuple[tuple[str, int], ...],
                                                                   int, int]:
    """(top reasons with node counts, nodes with other reasons, nodes) of node -> reason."""
    values = reasons.values() if isinstance(reasons, Mapping) else reasons
    counts = Counter(values)
    total = sum(counts.values())
    top = tuple((reason[:MAX_REASON_CHARS], n) for reason, n in counts.most_common(MAX_REASONS))
    return top, total - sum(n for _, n in top), total


class RefusalLog:
    """The ring. ``record`` is called on the event loop by filter; reads may come from any
    thread (tests, the console's endpoint), hence the lock, held for microseconds."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._entries: OrderedDict[str, Refusal] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, pod_key: str, uid: str, reasons: Mapping[str, str] | Iterable[str], *,
               now: float | None = None) -> Refusal:
        """Remember that filter passed no node for this pod; ``reasons``: node -> reason (or
        the reasons alone). Returns the entry as stored."""
        at = time.time() if now is None else now
        top, other, nodes = summarise(reasons)
        with self._lock:
            previous = self._entries.pop(uid, None)
            entry = Refusal(pod_key, uid, previous.first_at if previous else at, at,
                            previous.times + 1 if previous else 1, nodes, top, other)
            self._entries[uid] = entry
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return entry

    def forget(self, uid: str) -> None:
        """Drop a pod's entry (it was deleted, or an operator dealt with it)."""
        with self._lock:
            self._entries.pop(uid, None)

    def recent(self, limit: int | None = None, *, since: float | None = None) -> list[Refusal]:
        """Newest first; ``since``: only entries refused at or after that time."""
        with self._lock:
            entries = list(reversed(self._entries.values()))
        entries.sort(key=lambda e: e.last_at, reverse=True)  # stable: ties stay newest first
        if since is not None:
            entries = [e for e in entries if e.last_at >= since]
        return entries if limit is None else entries[:limit]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


#: The process's ring: filter records into it, ``GET /v1/refusals`` reads it.
RECENT = RefusalLog()


def record(pod_key: str, uid: str, reasons: Mapping[str, str] | Iterable[str]) -> Refusal:
    """Record a filter call that passed no node (``RECENT.record``)."""
    return RECENT.record(pod_key, uid, reasons)


def recent(limit: int | None = None, *, since: float | None = None) -> list[Refusal]:
    """The latest refusals, newest first (``RECENT.recent``)."""
    return RECENT.recent(limit, since=since)
