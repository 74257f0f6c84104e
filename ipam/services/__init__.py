"""Use cases: one transaction each, with its audit rows written inside it."""
