"""The ring of recent filter refusals (``ipam.services.refusals``): pure, no service."""

from __future__ import annotations

import pytest

from ipam.services.refusals import (
    MAX_REASON_CHARS,
    MAX_REASONS,
    RefusalLog,
    general,
    summarise,
)


def test_reasons_are_counted_per_distinct_reason_most_nodes_first() -> None:
    top, other, nodes = summarise({"n1": "pool p exhausted", "n2": "no route",
                                   "n3": "pool p exhausted"})
    assert top == (("pool p exhausted", 2, ("n1", "n3")), ("no route", 1, ("n2",)))
    assert (other, nodes) == (0, 3)
    assert summarise(["a", "a", "b"]) == ((("a", 2, ()), ("b", 1, ())), 0, 3)


def test_the_node_named_in_a_reason_is_taken_out_so_nodes_share_it() -> None:
    reasons = {f"n{i}": f"node 10.0.0.{i} is in no routable subnet of any pool"
               for i in range(200)}
    reasons |= {"m1": "node m1 is not known to ipam yet", "m2": "node m2 is not known to ipam yet",
                "v6": "the pod's address 10.1.1.1 (pool a) is not routable from node fd00::7"}
    top, other, nodes = summarise(reasons)
    assert top == (("node … is in no routable subnet of any pool", 200, ("n0", "n1", "n2")),
                   ("node … is not known to ipam yet", 2, ("m1", "m2")),
                   ("the pod's address 10.1.1.1 (pool a) is not routable from node …", 1,
                    ("v6",)))
    assert (other, nodes) == (0, 203)
    assert general("pool p exhausted") == "pool p exhausted"
    assert general("went from node a to b") == "went from node a to b"


def test_only_the_most_common_reasons_are_kept_and_long_ones_are_cut() -> None:
    reasons = {f"node-{i}": f"pool p{i} exhausted" for i in range(20)}
    reasons["big"] = "x" * (MAX_REASON_CHARS + 50)
    top, other, nodes = summarise(reasons)
    assert len(top) == MAX_REASONS and nodes == 21 and other == 21 - MAX_REASONS
    log = RefusalLog()
    entry = log.record("ns/p", "u", {"n": "y" * 2000})
    assert entry.reasons == (("y" * MAX_REASON_CHARS, 1, ("n",)),)


def test_a_pod_refused_again_updates_its_entry_and_moves_to_the_front() -> None:
    log = RefusalLog()
    log.record("ns/a", "uid-a", {"n1": "full"}, now=100.0)
    log.record("ns/b", "uid-b", {"n1": "full"}, now=101.0)
    again = log.record("ns/a", "uid-a", {"n1": "no route", "n2": "no route"}, now=105.0)
    assert (again.first_at, again.last_at, again.times, again.nodes) == (100.0, 105.0, 2, 2)
    assert again.reasons == (("no route", 2, ("n1", "n2")),)
    assert [e.uid for e in log.recent()] == ["uid-a", "uid-b"]
    assert len(log) == 2


def test_the_ring_drops_the_oldest_pod_past_its_capacity() -> None:
    log = RefusalLog(capacity=3)
    for i in range(5):
        log.record(f"ns/p{i}", f"uid-{i}", ["full"], now=float(i))
    assert [e.uid for e in log.recent()] == ["uid-4", "uid-3", "uid-2"]
    assert [e.uid for e in log.recent(2)] == ["uid-4", "uid-3"]
    assert [e.uid for e in log.recent(since=3.0)] == ["uid-4", "uid-3"]
    log.forget("uid-3")
    log.forget("never-seen")
    assert [e.uid for e in log.recent()] == ["uid-4", "uid-2"]
    log.clear()
    assert log.recent() == []


def test_a_ring_needs_room_for_one_pod() -> None:
    with pytest.raises(ValueError, match="capacity"):
        RefusalLog(capacity=0)
