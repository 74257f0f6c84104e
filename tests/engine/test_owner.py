"""Owner keys and policies, read from pods the way the API server sends them."""

from __future__ import annotations

from typing import Any

import pytest

from ipam.engine.galaxy_args import ArgsError, IpInfo, annotation_with_ipinfos, requested_ranges
from ipam.engine.ip_ranges import IpRange
from ipam.engine.pod import PodShapeError, pod_facts
from ipam.engine.release_policy import OwnerKind, ReleasePolicy, kept_ttl_seconds, owner_of
from tests.conftest import load_fixture


def pod(name: str = "web-0", *, annotations: dict[str, str] | None = None,
        owner: tuple[str, str] | None = None, labels: dict[str, str] | None = None,
        eni: str | None = "1") -> dict[str, Any]:
    resources = {"requests": {"tke.cloud.tencent.com/eni-ip": eni}} if eni else {}
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": f"uid-{name}",
                            "annotations": annotations or {}, "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1],
                                    "uid": "o-1", "controller": True}]
    return {"metadata": meta, "spec": {"containers": [{"name": "c", "resources": resources}]}}


NEVER = {"k8s.v1.cni.galaxy.io/release-policy": "never"}


def test_seed_pod_is_managed_and_owned_by_its_deployment() -> None:
    facts = pod_facts(load_fixture("extender/filter-request-nodecache.json")["Pod"])
    assert facts.managed and facts.eni_ip_count == 1
    assert ReleasePolicy.of(facts) is ReleasePolicy.NEVER
    owner = owner_of(facts)
    assert (owner.kind, owner.key) == (OwnerKind.DEPLOYMENT, "deploy/default/test-busybox")


def test_statefulset_ordinal_owner() -> None:
    facts = pod_facts(pod("db-2", annotations=NEVER, owner=("StatefulSet", "db")))
    assert owner_of(facts).key == "sts/ns/db/2"
    assert owner_of(facts).workload_key == "sts/ns/db/"


def test_default_policy_owns_by_pod_even_with_a_controller() -> None:
    facts = pod_facts(pod("db-2", owner=("StatefulSet", "db")))
    assert owner_of(facts).kind is OwnerKind.POD
    assert ReleasePolicy.of(facts) is ReleasePolicy.POD_DELETE


def test_unknown_policy_value_is_release_on_delete_like_galaxy() -> None:
    facts = pod_facts(pod(annotations={"k8s.v1.cni.galaxy.io/release-policy": "forever"}))
    assert ReleasePolicy.of(facts) is ReleasePolicy.POD_DELETE


def test_replicaset_without_template_hash_is_its_own_controller() -> None:
    facts = pod_facts(pod("rs-x", annotations=NEVER, owner=("ReplicaSet", "rs")))
    assert owner_of(facts).key == "ctrl/ns/ReplicaSet/rs"


def test_named_pool_wins_over_everything() -> None:
    facts = pod_facts(pod(annotations={"tke.cloud.tencent.com/eni-ip-pool": "shared"}))
    assert owner_of(facts).key == "pool/shared"


def test_network_annotation_without_resource_is_not_managed() -> None:
    facts = pod_facts(pod(annotations={"k8s.v1.cni.cncf.io/networks": "galaxy-k8s-vlan"},
                          eni=None))
    assert facts.wants_fixed_ip_network and not facts.managed


@pytest.mark.parametrize(("raw", "ttl"), [("600", 600), ("0", None), ("x", None)])
def test_kept_ttl(raw: str, ttl: int | None) -> None:
    facts = pod_facts(pod(annotations={"ipam.fixed-ip.io/kept-ttl-seconds": raw}))
    assert kept_ttl_seconds(facts) == ttl


@pytest.mark.parametrize("bad", [[], {"metadata": {"name": "x"}}, {"metadata": []},
                                 {"metadata": {"name": "x", "uid": "u", "annotations": {"a": 1}}}])
def test_malformed_pods_are_refused(bad: Any) -> None:
    with pytest.raises(PodShapeError):
        pod_facts(bad)


def test_request_ip_range_and_ipinfos_round_trip() -> None:
    args = '{"request_ip_range": [["10.11.128.5"], ["10.11.129.1~10.11.129.9"]]}'
    facts = pod_facts(pod(annotations={"k8s.v1.cni.galaxy.io/args": args}))
    assert requested_ranges(facts) == [[IpRange.parse("10.11.128.5")],
                                       [IpRange.parse("10.11.129.1~10.11.129.9")]]
    info = IpInfo(IpRange.parse("10.11.128.5").first_address, 21,
                  IpRange.parse("10.11.135.254").first_address, 1200)
    assert annotation_with_ipinfos(facts, [info]) == (
        '{"request_ip_range":[["10.11.128.5"],["10.11.129.1~10.11.129.9"]],'
        '"common":{"ipinfos":[{"ip":"10.11.128.5/21","vlan":1200,"gateway":"10.11.135.254"}]}}')


@pytest.mark.parametrize("args", ['{"request_ip_range": "x"}', "{", '{"request_ip_range": [[]]}',
                                  '{"request_ip_range": [["10.0.0.0/24"]]}', "[1]"])
def test_bad_args_annotation(args: str) -> None:
    with pytest.raises(ArgsError):
        requested_ranges(pod_facts(pod(annotations={"k8s.v1.cni.galaxy.io/args": args})))
