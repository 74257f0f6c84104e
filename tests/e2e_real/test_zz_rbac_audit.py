"""Runs after the other modules here (by name): every call the service made during the suite
was allowed by manifests/rbac.yaml, as kube-apiserver's audit log shows."""

from __future__ import annotations

from collections import Counter

import pytest

from tests.e2e_real.cluster import IPAM_USER, Cluster

pytestmark = [pytest.mark.realkube, pytest.mark.timeout(120)]


def test_the_service_was_never_refused_by_rbac(cluster: Cluster) -> None:
    events = [e for e in cluster.plane.audit()
              if e["user"]["username"] == IPAM_USER and e.get("stage") == "ResponseComplete"]
    calls = Counter((e["verb"], e["objectRef"].get("resource", ""),
                     e["objectRef"].get("subresource", ""), e["responseStatus"]["code"])
                    for e in events)
    forbidden = {k: n for k, n in calls.items() if k[3] in (401, 403)}
    assert forbidden == {}, f"refused by RBAC: {forbidden}"
    made = {(verb, resource, sub) for verb, resource, sub, code in calls if code < 300}
    # The calls that matter were made, and made as the ipam ServiceAccount.
    assert {("list", "pods", ""), ("watch", "pods", ""), ("list", "nodes", ""),
            ("watch", "nodes", ""), ("create", "pods", "binding")} <= made, sorted(calls)
