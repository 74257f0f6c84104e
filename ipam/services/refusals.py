"""Pods the extender is holding back: the most recent filter calls that passed no node.

Filter answers kube-scheduler and forgets; the scheduler only logs "0/N nodes are available".
Operators asking "why is my pod Pending?" need the reasons ipam gave, so filter records each
refusal here (``record``), and the console and ``GET /v1/refusals`` read them back
(``recent``). It is a bounded in-memory ring, per replica and lost on restart, on purpose:
it answers "what is stuck right now", the audit trail answers "what happened".

One entry per pod UID: a pod the scheduler retries every few seconds updates its entry (times
refused, last reasons) and moves to the front instead of flooding the ring. Reasons are
summarised when recorded, so an entry costs the same for 5 nodes as for 5,000: the node's own
name or address is taken out of each reason ("node 10.0.0.7 is in no routable subnet" and
"node 10.0.0.8 ..." are one reason), then each distinct reason keeps its number of nodes and
a few of their names, the most common first.
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
#: Node names kept per reason, as examples.
EXAMPLES = 3
#: What stands for the node in a summarised reason.
THE_NODE = "node …"
#: Above this many distinct texts, each node's text is generalised on its own.
FEW_TEXTS = 64
_LEADING = f"{THE_NODE} "
_TRAILING = f" from {THE_NODE}"

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
    #: (reason, nodes refused with it, a few of their names), most nodes first.
    reasons: tuple[tuple[str, int, tuple[str, ...]], ...]
    #: Nodes refused for reasons beyond ``MAX_REASONS``.
    other_nodes: int = 0


Summary = tuple[tuple[tuple[str, int, tuple[str, ...]], ...], int, int]


def general(reason: str) -> str:
    """The reason without the node it was given for: filter's reasons name their node first
    ("node 10.0.0.7 is in no routable subnet ...", "node n1 is not known ...") or last
    ("... is not routable from node 10.0.0.7"). String operations, no regex: a refusal over
    5,000 nodes may generalise 5,000 texts."""
    if reason.startswith("node "):
        cut = reason.find(" ", 5)
        if cut > 0:
            reason = _LEADING + reason[cut + 1:]
    else:
        cut = reason.rfind(" from node ")
        if cut >= 0 and " " not in reason[cut + 11:]:
            reason = reason[:cut] + _TRAILING
    return reason[:MAX_REASON_CHARS]


def summarise(reasons: Mapping[str, str] | Iterable[str]) -> Summary:
    """(top reasons with their node counts and example nodes, nodes refused for other
    reasons, nodes) of ``node -> reason`` (or of the reasons alone)."""
    nodes = list(reasons.keys()) if isinstance(reasons, Mapping) else None
    texts = list(reasons.values()) if isinstance(reasons, Mapping) else list(reasons)
    counts: Counter[str] = Counter()
    memo: dict[str, str] | None = None
    keys: list[str] = []
    # Usually a handful of texts shared by every node: count them at C speed, generalise
    # each once. Texts that name their node are told apart by a sample, and done one by one.
    raw = Counter(texts) if len(set(texts[:FEW_TEXTS * 2])) <= FEW_TEXTS else None
    if raw is not None and len(raw) <= FEW_TEXTS:
        memo = {text: general(text) for text in raw}
        for text, n in raw.items():
            counts[memo[text]] += n
    else:
        keys = list(map(general, texts))
        counts.update(keys)
    top_counts = counts.most_common(MAX_REASONS)
    examples: dict[str, list[str]] = {reason: [] for reason, _ in top_counts}
    if nodes is not None:
        # Stops as soon as every listed reason has its examples (after a few nodes, usually).
        wanted = sum(min(n, EXAMPLES) for _, n in top_counts)
        for i, node in enumerate(nodes):
            names = examples.get(memo[texts[i]] if memo is not None else keys[i])
            if names is not None and len(names) < EXAMPLES:
                names.append(node)
                wanted -= 1
                if not wanted:
                    break
    top = tuple((reason, n, tuple(examples[reason])) for reason, n in top_counts)
    total = len(texts)
    return top, total - sum(n for _, n in top_counts), total


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
