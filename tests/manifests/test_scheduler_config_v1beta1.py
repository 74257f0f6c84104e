"""manifests/scheduler-config-v1beta1.yaml (Kubernetes 1.19-1.22) says what the v1 file says.

Both are read by kube-scheduler itself, not applied; a drift between them would configure
older and newer clusters differently. tests/e2e_real runs a real kube-scheduler 1.20 on it.
"""

from __future__ import annotations

from typing import Any

import yaml

from tests.manifests.test_manifests import EXPECTED_EXTENDER, MANIFESTS, V1_EXTENDER_FIELDS


def load(name: str) -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d is not None]
    return dict(doc)


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """Every leaf by its path (``extenders[0].managedResources[0].name``)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(value, list):
        out = {f"{path}[]": len(value)}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{path}[{i}]"))
        return out
    return {path: value}


def test_v1beta1_agrees_with_v1_field_by_field() -> None:
    v1 = flatten(load("scheduler-config.yaml"))
    beta = flatten(load("scheduler-config-v1beta1.yaml"))
    assert v1.pop("apiVersion") == "kubescheduler.config.k8s.io/v1"
    assert beta.pop("apiVersion") == "kubescheduler.config.k8s.io/v1beta1"
    assert set(beta) == set(v1), set(beta) ^ set(v1)
    assert {k: beta[k] for k in v1 if beta[k] != v1[k]} == {}


def test_v1beta1_extender_block_is_the_intended_one() -> None:
    (extender,) = load("scheduler-config-v1beta1.yaml")["extenders"]
    # k8s.io/kube-scheduler/config/v1beta1 Extender has the same json tags as v1.
    assert set(extender) <= V1_EXTENDER_FIELDS
    assert extender == EXPECTED_EXTENDER


def test_flatten_sees_a_difference_deep_inside() -> None:
    base = load("scheduler-config-v1beta1.yaml")
    changed = load("scheduler-config-v1beta1.yaml")
    changed["extenders"][0]["managedResources"][0]["ignoredByScheduler"] = False
    diff = {k for k, v in flatten(changed).items() if flatten(base)[k] != v}
    assert diff == {"extenders[0].managedResources[0].ignoredByScheduler"}
