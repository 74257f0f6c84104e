"""The pool catalog's counts run high, never low: how it treats changes that may already be in
the last recount (no database: the rules alone)."""

from __future__ import annotations

from ipam.services.placement_state import PoolCatalog
from ipam.storage.change_feed import Delta

READ_AT = 1_000_000


def catalog(taken: int) -> PoolCatalog:
    cat = PoolCatalog()
    cat.taken = {7: taken}
    cat._read_at = READ_AT
    return cat


def test_changes_that_started_after_the_count_apply_both_ways() -> None:
    cat = catalog(10)
    cat.apply([Delta(7, 3, READ_AT), Delta(7, -1, READ_AT + 5)])
    assert cat.taken[7] == 12


def test_an_older_change_is_counted_again_when_it_took_and_dropped_when_it_freed() -> None:
    """It may be in the count already: adding a take twice errs towards "taken" (a recount
    near exhaustion fixes it); subtracting a free twice would offer an address nobody has."""
    cat = catalog(10)
    cat.apply([Delta(7, 2, READ_AT - 1), Delta(7, -4, READ_AT - 1)])
    assert cat.taken[7] == 12


def test_a_single_pool_recount_moves_only_that_pool_s_horizon() -> None:
    cat = catalog(10)
    cat.taken[8] = 1
    cat._pool_read_at[7] = READ_AT + 100
    cat.apply([Delta(7, -1, READ_AT + 50), Delta(8, -1, READ_AT + 50)])
    assert cat.taken == {7: 10, 8: 0}


def test_changes_arriving_during_a_read_are_replayed_onto_its_result() -> None:
    cat = catalog(10)
    window = cat._reading()
    cat.apply([Delta(7, 1, READ_AT + 10), Delta(7, -1, READ_AT + 20), Delta(7, 1, READ_AT - 10),
               Delta(7, -1, READ_AT - 10), Delta(8, 5, READ_AT + 10)])
    later = READ_AT + 15  # the new count includes the first change, maybe the older two
    cat._read_done(window, {7: 30, 8: 2}, later)
    # +1 again (may be counted: run high), -1 after the read, +1 older again, -1 older dropped
    assert cat.taken == {7: 30 + 1 - 1 + 1, 8: 2 + 5}
    assert cat._windows == []


def test_a_single_pool_read_replays_only_that_pool() -> None:
    cat = catalog(10)
    cat.taken[8] = 4
    window = cat._reading()
    cat.apply([Delta(7, 2, READ_AT + 10), Delta(8, 1, READ_AT + 10)])
    cat._read_done(window, {7: 20}, READ_AT + 5, pool_id=7)
    assert cat.taken == {7: 22, 8: 5}
    assert cat._pool_read_at == {7: READ_AT + 5}
