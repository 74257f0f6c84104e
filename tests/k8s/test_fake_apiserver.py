"""Fidelity tests for the fake apiserver, driven only through the official kubernetes client.

Each test pins behaviour of the real kube-apiserver that our controllers rely
on (status codes, resourceVersion semantics, watch streams, pods/binding).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client import ApiClient, AppsV1Api, CoordinationV1Api, CoreV1Api
from kubernetes.client.rest import ApiException

from tests.fakeapi import (
    ENI_IP_RESOURCE,
    FakeApiServer,
    Settings,
    make_deployment,
    make_lease,
    make_node,
    make_pod,
    make_replicaset,
    owner_reference,
)
from tests.fakeapi import fixtures as _fixtures
from tests.fakeapi.fixtures import kube_configuration

pytestmark = pytest.mark.timeout(30)

# Re-export the plain fixtures so this module works without a conftest.
fake_apiserver = _fixtures.fake_apiserver
kube_config = _fixtures.kube_config
kube_api_client = _fixtures.kube_api_client

REPO = Path(__file__).resolve().parents[2]
Event = dict[str, Any]


@pytest.fixture
def core(kube_api_client: ApiClient) -> CoreV1Api:
    return CoreV1Api(kube_api_client)


@pytest.fixture
def apps(kube_api_client: ApiClient) -> AppsV1Api:
    return AppsV1Api(kube_api_client)


@pytest.fixture
def coordination(kube_api_client: ApiClient) -> CoordinationV1Api:
    return CoordinationV1Api(kube_api_client)


def _status_body(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == exc.status
    return body


def _binding(
    name: str, node: str, *, uid: str | None = None, annotations: dict[str, str] | None = None
) -> client.V1Binding:
    return client.V1Binding(
        metadata=client.V1ObjectMeta(name=name, uid=uid, annotations=annotations),
        target=client.V1ObjectReference(api_version="v1", kind="Node", name=node),
    )


def _bind_raw(core: CoreV1Api, ns: str, binding: client.V1Binding) -> tuple[int, dict[str, Any]]:
    """Binding the way schedulers work around #547: skip response deserialisation."""
    resp = core.create_namespaced_binding(ns, binding, _preload_content=False)
    return resp.status, json.loads(resp.data)


def _raw_request(api: ApiClient, method: str, path: str, body: Any = None) -> tuple[int, Any, Any]:
    """Send an unvalidated body through the client's REST layer (the typed API
    methods reject unknown fields client-side)."""
    resp = api.rest_client.request(
        method,
        api.configuration.host + path,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        body=body,
    )
    data = resp.read()
    return resp.status, json.loads(data), resp.getheaders()


class _WatchThread:
    """Runs ``Watch.stream`` in a thread, collecting (type, name, rv) or the raised exception."""

    def __init__(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.events: list[tuple[str, str, str]] = []
        self.raw: list[Event] = []
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self.watch = watch.Watch()
        self._thread = threading.Thread(target=self._run, args=(func, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            for ev in self.watch.stream(func, *args, **kwargs):
                meta = ev["raw_object"].get("metadata", {})
                self.raw.append(ev)
                self.events.append(
                    (ev["type"], meta.get("name", ""), meta.get("resourceVersion", ""))
                )
        except BaseException as e:
            self.error = e
        finally:
            self.finished.set()

    def wait_for(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.events) < n and time.monotonic() < deadline and not self.finished.is_set():
            time.sleep(0.01)
        assert len(self.events) >= n, f"got {self.events} (error={self.error!r})"

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "watch stream did not end"


@pytest.fixture
def watches(fake_apiserver: FakeApiServer) -> Iterator[list[_WatchThread]]:
    started: list[_WatchThread] = []
    yield started
    for w in started:
        w.watch.stop()
    fake_apiserver.drop_watches(abrupt=False)
    for w in started:
        w.join()


# ---------------------------------------------------------------------------- CRUD


def test_pod_crud_and_errors(fake_apiserver: FakeApiServer, core: CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", make_pod("web-0"))
    assert created.kind == "Pod" and created.api_version == "v1"
    assert len(created.metadata.uid) == 36
    assert int(created.metadata.resource_version) == fake_apiserver.resource_version
    assert created.metadata.generation == 1
    assert created.metadata.creation_timestamp is not None
    # Server-side defaults and status reset happen like the real pod strategy.
    assert created.spec.scheduler_name == "default-scheduler"
    assert created.status.phase == "Pending"
    assert created.spec.containers[0].resources.requests[ENI_IP_RESOURCE] == "1"

    got = core.read_namespaced_pod("web-0", "default")
    assert got.metadata.uid == created.metadata.uid

    with pytest.raises(ApiException) as ei:
        core.create_namespaced_pod("default", make_pod("web-0"))
    assert ei.value.status == 409
    body = _status_body(ei.value)
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'pods "web-0" already exists'

    with pytest.raises(ApiException) as ei:
        core.read_namespaced_pod("missing", "default")
    assert ei.value.status == 404
    assert _status_body(ei.value)["details"] == {"name": "missing", "kind": "pods"}

    with pytest.raises(ApiException) as ei:
        apps_api = AppsV1Api(core.api_client)
        apps_api.read_namespaced_deployment("nope", "default")
    assert _status_body(ei.value)["message"] == 'deployments.apps "nope" not found'

    deleted = core.delete_namespaced_pod("web-0", "default")
    assert deleted.metadata.name == "web-0"  # pods return the object on DELETE
    with pytest.raises(ApiException) as ei:
        core.delete_namespaced_pod("web-0", "default")
    assert ei.value.status == 404


def test_list_items_and_all_namespaces(fake_apiserver: FakeApiServer, core: CoreV1Api) -> None:
    core.create_namespaced_pod("a", make_pod("p1", "a"))
    core.create_namespaced_pod("b", make_pod("p2", "b"))
    everything = core.list_pod_for_all_namespaces()
    assert [(p.metadata.namespace, p.metadata.name) for p in everything.items] == [
        ("a", "p1"),
        ("b", "p2"),
    ]
    assert everything.metadata.resource_version == str(fake_apiserver.resource_version)
    assert [p.metadata.name for p in core.list_namespaced_pod("b").items] == ["p2"]
    raw = json.loads(core.list_namespaced_pod("a", _preload_content=False).data)
    assert raw["kind"] == "PodList"
    assert "kind" not in raw["items"][0]  # like the real server, list items carry no kind


def test_generate_name_and_invalid_names(core: CoreV1Api) -> None:
    pod = make_pod("ignored")
    del pod["metadata"]["name"]
    pod["metadata"]["generateName"] = "worker-"
    created = core.create_namespaced_pod("default", pod)
    assert (
        created.metadata.name.startswith("worker-")
        and len(created.metadata.name) == len("worker-") + 5
    )

    with pytest.raises(ApiException) as ei:
        core.create_namespaced_pod("default", make_pod("Upper_Case"))
    assert ei.value.status == 422
    assert _status_body(ei.value)["reason"] == "Invalid"


def test_update_requires_current_resource_version(core: CoreV1Api) -> None:
    cm = core.create_namespaced_config_map(
        "default", {"metadata": {"name": "cfg"}, "data": {"k": "1"}}
    )
    cm.data["k"] = "2"
    updated = core.replace_namespaced_config_map("cfg", "default", cm)
    assert updated.data == {"k": "2"}
    assert int(updated.metadata.resource_version) > int(cm.metadata.resource_version)

    cm.data["k"] = "3"  # still carries the old resourceVersion
    with pytest.raises(ApiException) as ei:
        core.replace_namespaced_config_map("cfg", "default", cm)
    assert ei.value.status == 409
    body = _status_body(ei.value)
    assert body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]

    # A no-op write does not bump the resourceVersion (and emits no event).
    same = core.replace_namespaced_config_map("cfg", "default", updated)
    assert same.metadata.resource_version == updated.metadata.resource_version

    with pytest.raises(ApiException) as ei:
        core.replace_namespaced_config_map("absent", "default", {"metadata": {"name": "absent"}})
    assert ei.value.status == 404


def test_delete_preconditions(core: CoreV1Api) -> None:
    cm = core.create_namespaced_config_map("default", {"metadata": {"name": "cfg"}})
    wrong = client.V1DeleteOptions(
        preconditions=client.V1Preconditions(uid="00000000-0000-0000-0000-000000000000")
    )
    with pytest.raises(ApiException) as ei:
        core.delete_namespaced_config_map("cfg", "default", body=wrong)
    assert ei.value.status == 409
    assert "Precondition failed: UID in precondition" in _status_body(ei.value)["message"]
    stale_rv = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version="1"))
    with pytest.raises(ApiException) as ei:
        core.delete_namespaced_config_map("cfg", "default", body=stale_rv)
    assert ei.value.status == 409
    ok = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=cm.metadata.uid))
    status = core.delete_namespaced_config_map("cfg", "default", body=ok)  # v37: returns a dict
    assert status["status"] == "Success"
    assert status["details"] == {"name": "cfg", "kind": "configmaps", "uid": cm.metadata.uid}


def test_write_decoding_matches_apiserver(core: CoreV1Api) -> None:
    api = core.api_client
    path = "/api/v1/namespaces/default/configmaps"
    # Unknown fields are dropped (with a Warning), not stored.
    status, created, headers = _raw_request(
        api, "POST", path, {"metadata": {"name": "cfg", "bogus": 1}, "data": {"a": "b"}, "spec": {}}
    )
    assert status == 201
    assert "bogus" not in created["metadata"] and "spec" not in created
    assert created["data"] == {"a": "b"}
    assert 'unknown field \\"metadata.bogus\\"' in headers["Warning"]
    status, body, _ = _raw_request(
        api, "POST", path + "?fieldValidation=Strict", {"metadata": {"name": "s"}, "spec": {}}
    )
    assert (status, body["reason"]) == (400, "BadRequest")
    # Non-string annotation values are a decode error (400), as in Go.
    status, body, _ = _raw_request(
        api, "POST", path, {"metadata": {"name": "bad", "annotations": {"n": 1}}}
    )
    assert status == 400 and "cannot unmarshal number" in body["message"]
    status, body, _ = _raw_request(
        api,
        "POST",
        "/api/v1/namespaces/default/pods",
        make_pod("p")
        | {
            "spec": {
                "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": "80"}]}]
            }
        },
    )
    assert status == 400
    # Timestamps without a zone (naive datetime.isoformat()) do not parse as RFC 3339.
    with pytest.raises(ApiException) as ei:
        CoordinationV1Api(core.api_client).create_namespaced_lease(
            "default",
            {"metadata": {"name": "l"}, "spec": {"renewTime": "2024-01-01T00:00:00.123456"}},
        )
    assert ei.value.status == 400
    lease = CoordinationV1Api(core.api_client).create_namespaced_lease(
        "default", {"metadata": {"name": "l"}, "spec": {"renewTime": "2024-01-01T08:00:00.5+08:00"}}
    )
    raw = json.loads(
        CoordinationV1Api(core.api_client)
        .read_namespaced_lease("l", "default", _preload_content=False)
        .data
    )
    assert raw["spec"]["renewTime"] == "2024-01-01T00:00:00.500000Z"  # MicroTime canonical form
    assert lease.spec.renew_time.year == 2024


def test_extended_resource_requests_must_equal_limits(core: CoreV1Api) -> None:
    pod = make_pod("bad")
    pod["spec"]["containers"][0]["resources"]["requests"][ENI_IP_RESOURCE] = "2"
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_pod("default", pod)
    assert ei.value.status == 422
    assert f"must be equal to {ENI_IP_RESOURCE} limit" in _status_body(ei.value)["message"]
    only_limits = make_pod("defaulted")
    del only_limits["spec"]["containers"][0]["resources"]["requests"]
    created = core.create_namespaced_pod("default", only_limits)
    assert created.spec.containers[0].resources.requests[ENI_IP_RESOURCE] == "1"


def test_pod_spec_is_immutable_and_status_is_a_subresource(
    fake_apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    core.create_namespaced_pod("default", make_pod("p"))
    pod = core.read_namespaced_pod("p", "default")
    pod.spec.node_name = "node-1"
    with pytest.raises(ApiException) as ei:
        core.replace_namespaced_pod("p", "default", pod)
    assert ei.value.status == 422
    assert "pod updates may not change fields" in _status_body(ei.value)["message"]

    pod = core.read_namespaced_pod("p", "default")
    pod.status.phase = "Running"
    pod.metadata.labels["x"] = "y"
    after = core.replace_namespaced_pod("p", "default", pod)
    assert after.status.phase == "Pending"  # status changes via the main resource are ignored
    assert after.metadata.labels["x"] == "y"

    pod = core.read_namespaced_pod("p", "default")
    pod.status.phase = "Running"
    pod.status.pod_ip = "10.1.2.3"
    after = core.replace_namespaced_pod_status("p", "default", pod)
    assert (after.status.phase, after.status.pod_ip) == ("Running", "10.1.2.3")

    patched = core.patch_namespaced_pod_status(
        "p", "default", {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    )
    assert [(c.type, c.status) for c in patched.status.conditions] == [("Ready", "True")]
    assert fake_apiserver.get("pods", "p")["status"]["podIP"] == "10.1.2.3"


# ---------------------------------------------------------------------------- patch


def test_patch_flavours(core: CoreV1Api) -> None:
    core.create_namespaced_pod("default", make_pod("p", annotations={"keep": "1", "drop": "1"}))
    # Dict bodies go out as strategic merge patches: containers merge by name.
    sm = core.patch_namespaced_pod(
        "p", "default", {"spec": {"containers": [{"name": "app", "image": "nginx:2"}]}}
    )
    assert sm.spec.containers[0].image == "nginx:2"
    assert sm.spec.containers[0].resources.limits[ENI_IP_RESOURCE] == "1"

    mp = core.patch_namespaced_pod(
        "p",
        "default",
        {"metadata": {"annotations": {"drop": None, "new": "x"}}},
        _content_type="application/merge-patch+json",
    )
    assert mp.metadata.annotations == {"keep": "1", "new": "x"}

    jp = core.patch_namespaced_pod(
        "p",
        "default",
        [
            {"op": "test", "path": "/metadata/annotations/keep", "value": "1"},
            {"op": "replace", "path": "/metadata/annotations/keep", "value": "2"},
            {"op": "add", "path": "/metadata/labels/tier", "value": "web"},
            {"op": "remove", "path": "/metadata/annotations/new"},
        ],
    )
    assert jp.metadata.annotations == {"keep": "2"}
    assert jp.metadata.labels["tier"] == "web"

    with pytest.raises(ApiException) as ei:
        core.patch_namespaced_pod(
            "p", "default", [{"op": "test", "path": "/metadata/annotations/keep", "value": "1"}]
        )
    assert ei.value.status == 422

    with pytest.raises(
        ApiException
    ) as ei:  # resourceVersion in a patch is an optimistic-lock precondition
        core.patch_namespaced_pod(
            "p", "default", {"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}}
        )
    assert ei.value.status == 409

    with pytest.raises(ApiException) as ei:
        core.patch_namespaced_pod("missing", "default", {"metadata": {"labels": {"a": "b"}}})
    assert ei.value.status == 404


def test_strategic_merge_of_owner_references_and_conditions(
    fake_apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    node = make_node("n1")
    core.create_node(node)
    patched = core.patch_node_status(
        "n1",
        {
            "status": {
                "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady"}]
            }
        },
    )
    by_type = {c.type: c.status for c in patched.status.conditions}
    assert by_type == {
        "MemoryPressure": "False",
        "DiskPressure": "False",
        "PIDPressure": "False",
        "Ready": "False",
    }


# ---------------------------------------------------------------------------- watch


def test_list_then_watch_from_list_rv_sees_exactly_later_events(
    fake_apiserver: FakeApiServer, core: CoreV1Api, watches: list[_WatchThread]
) -> None:
    core.create_namespaced_pod("default", make_pod("before"))
    listed = core.list_namespaced_pod("default")
    rv = listed.metadata.resource_version

    w = _WatchThread(core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=10)
    watches.append(w)
    fake_apiserver.wait_for_watchers("pods", namespace="default")
    core.create_namespaced_pod("default", make_pod("after"))
    core.create_namespaced_pod(
        "other", make_pod("elsewhere", "other")
    )  # different namespace: not seen
    core.patch_namespaced_pod("before", "default", {"metadata": {"labels": {"v": "2"}}})
    core.delete_namespaced_pod("after", "default")
    # A last event in the watched namespace: events arrive in order, so once it is here,
    # anything the other namespace had wrongly sent would be here too.
    core.create_namespaced_pod("default", make_pod("sentinel"))
    w.wait_for(4)
    assert [(t, n) for t, n, _ in w.events] == [
        ("ADDED", "after"),
        ("MODIFIED", "before"),
        ("DELETED", "after"),
        ("ADDED", "sentinel"),
    ]
    rvs = [int(r) for _, _, r in w.events]
    assert rvs == sorted(rvs) and rvs[0] > int(rv)
    assert w.raw[0]["object"].metadata.name == "after"  # deserialised to V1Pod


def test_watch_replays_history_and_rv_zero_sends_synthetic_adds(
    fake_apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    core.create_namespaced_pod("default", make_pod("a"))
    rv = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", make_pod("b"))
    core.delete_namespaced_pod("a", "default")

    w = watch.Watch()
    replay = [
        (e["type"], e["object"].metadata.name)
        for e in w.stream(
            core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=1
        )
    ]
    assert replay == [("ADDED", "b"), ("DELETED", "a")]

    initial = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_pod, "default", resource_version="0", timeout_seconds=1
        )
    ]
    assert initial == [("ADDED", "b")]


def test_watch_timeout_seconds_ends_stream_cleanly(core: CoreV1Api) -> None:
    start = time.monotonic()
    events = list(
        watch.Watch().stream(
            core.list_namespaced_pod, "default", resource_version="0", timeout_seconds=1
        )
    )
    assert events == []
    assert 0.9 < time.monotonic() - start < 3


def test_watch_from_compacted_rv_raises_410(fake_apiserver: FakeApiServer, core: CoreV1Api) -> None:
    core.create_namespaced_pod("default", make_pod("a"))
    old_rv = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", make_pod("b"))
    fake_apiserver.compact()

    # Real servers answer HTTP 200 and put an ERROR event with a 410 Status in the stream.
    resp = core.list_namespaced_pod(
        "default", watch=True, resource_version=old_rv, _preload_content=False
    )
    assert resp.status == 200
    first = json.loads(resp.data.splitlines()[0])
    assert first["type"] == "ERROR"
    assert (first["object"]["code"], first["object"]["reason"]) == (410, "Expired")

    # With timeout_seconds the client does not retry: ApiException(410) at once.
    with pytest.raises(ApiException) as ei:
        list(
            watch.Watch().stream(
                core.list_namespaced_pod, "default", resource_version=old_rv, timeout_seconds=5
            )
        )
    assert ei.value.status == 410

    # Without it, Watch retries once from the same RV, then raises.
    fake_apiserver.reset_requests()
    with pytest.raises(ApiException) as ei:
        for _ in watch.Watch().stream(core.list_namespaced_pod, "default", resource_version=old_rv):
            pass
    assert ei.value.status == 410
    assert fake_apiserver.request_count("GET", verb="watch") == 2

    current = str(fake_apiserver.resource_version)
    assert (
        list(
            watch.Watch().stream(
                core.list_namespaced_pod, "default", resource_version=current, timeout_seconds=1
            )
        )
        == []
    )


def test_bounded_history_expires_old_resource_versions() -> None:
    with (
        FakeApiServer(settings=Settings(history_size=3)) as server,
        ApiClient(kube_configuration(server)) as api,
    ):
        core = CoreV1Api(api)
        first = core.create_namespaced_config_map("default", {"metadata": {"name": "c0"}})
        for i in range(1, 5):
            core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
        with pytest.raises(ApiException) as ei:
            list(
                watch.Watch().stream(
                    core.list_namespaced_config_map,
                    "default",
                    resource_version=first.metadata.resource_version,
                    timeout_seconds=1,
                )
            )
        assert ei.value.status == 410
        # The last 3 events are still replayable.
        third = server.get("configmaps", "c1", namespace="default")
        assert third is not None
        names = [
            e["object"].metadata.name
            for e in watch.Watch().stream(
                core.list_namespaced_config_map,
                "default",
                resource_version=third["metadata"]["resourceVersion"],
                timeout_seconds=1,
            )
        ]
        assert names == ["c2", "c3", "c4"]


def test_label_selector_watch_turns_label_changes_into_add_delete(
    fake_apiserver: FakeApiServer, core: CoreV1Api, watches: list[_WatchThread]
) -> None:
    core.create_namespaced_pod("default", make_pod("p", labels={"role": "db"}))
    rv = core.list_namespaced_pod("default").metadata.resource_version
    w = _WatchThread(
        core.list_namespaced_pod,
        "default",
        label_selector="role=db",
        resource_version=rv,
        timeout_seconds=10,
    )
    watches.append(w)
    fake_apiserver.wait_for_watchers("pods")
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"role": "web"}}})
    core.patch_namespaced_pod("p", "default", {"metadata": {"labels": {"role": "db"}}})
    w.wait_for(2)
    assert [(t, n) for t, n, _ in w.events] == [("DELETED", "p"), ("ADDED", "p")]


def test_dropped_watch_ends_client_stream(fake_apiserver: FakeApiServer, core: CoreV1Api) -> None:
    abrupt = _WatchThread(core.list_namespaced_pod, "default", timeout_seconds=30)
    fake_apiserver.wait_for_watchers("pods")
    assert fake_apiserver.drop_watches() == 1
    abrupt.join()
    assert isinstance(abrupt.error, urllib3.exceptions.ProtocolError)

    clean = _WatchThread(core.list_namespaced_pod, "default", timeout_seconds=30)
    fake_apiserver.wait_for_watchers("pods")
    fake_apiserver.drop_watches(abrupt=False)
    clean.join()
    assert clean.error is None and clean.events == []
    assert fake_apiserver.watch_count() == 0


def test_bookmarks(
    fake_apiserver: FakeApiServer, core: CoreV1Api, watches: list[_WatchThread]
) -> None:
    w = _WatchThread(
        core.list_namespaced_pod,
        "default",
        allow_watch_bookmarks=True,
        resource_version="0",
        timeout_seconds=10,
    )
    watches.append(w)
    fake_apiserver.wait_for_watchers("pods")
    core.create_namespaced_config_map("default", {"metadata": {"name": "bump-rv"}})
    fake_apiserver.send_bookmarks()
    w.wait_for(1)
    assert w.events[0] == ("BOOKMARK", "", str(fake_apiserver.resource_version))
    assert w.watch.resource_version == str(fake_apiserver.resource_version)


def test_send_initial_events_watch_list(fake_apiserver: FakeApiServer, core: CoreV1Api) -> None:
    core.create_namespaced_pod("default", make_pod("a"))
    resp = core.list_namespaced_pod(
        "default",
        watch=True,
        send_initial_events=True,
        allow_watch_bookmarks=True,
        resource_version_match="NotOlderThan",
        timeout_seconds=1,
        _preload_content=False,
    )
    lines = [json.loads(x) for x in resp.data.splitlines()]
    assert [ln["type"] for ln in lines[:2]] == ["ADDED", "BOOKMARK"]
    assert lines[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


# ---------------------------------------------------------------------------- selectors / paging


def test_label_and_field_selectors(fake_apiserver: FakeApiServer, core: CoreV1Api) -> None:
    core.create_namespaced_pod(
        "default", make_pod("a", labels={"tier": "web", "env": "prod"}, node_name="n1")
    )
    core.create_namespaced_pod("default", make_pod("b", labels={"tier": "db"}))
    core.create_namespaced_pod("default", make_pod("c", labels={"tier": "web"}))

    def names(**kw: Any) -> list[str]:
        return [p.metadata.name for p in core.list_namespaced_pod("default", **kw).items]

    assert names(label_selector="tier=web") == ["a", "c"]
    assert names(label_selector="tier=web,env") == ["a"]
    assert names(label_selector="tier!=web") == ["b"]
    assert names(label_selector="tier in (db, web),!env") == ["b", "c"]
    assert names(label_selector="tier notin (web)") == ["b"]
    assert names(field_selector="spec.nodeName=n1") == ["a"]
    assert names(field_selector="spec.nodeName=") == ["b", "c"]
    assert names(field_selector="spec.nodeName!=,metadata.name=a") == ["a"]
    assert names(field_selector="metadata.namespace=default", label_selector="tier=db") == ["b"]
    with pytest.raises(ApiException) as ei:
        core.list_namespaced_pod("default", field_selector="spec.priorityClassName=x")
    assert ei.value.status == 400
    assert "field label not supported" in _status_body(ei.value)["message"]
    with pytest.raises(ApiException) as ei:
        core.list_namespaced_pod("default", label_selector="a in (x")
    assert ei.value.status == 400


def test_pagination_with_continue(core: CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
    page = core.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in page.items] == ["c0", "c1"]
    assert page.metadata.remaining_item_count == 3
    seen = [c.metadata.name for c in page.items]
    while page.metadata._continue:
        page = core.list_namespaced_config_map(
            "default", limit=2, _continue=page.metadata._continue
        )
        seen += [c.metadata.name for c in page.items]
    assert seen == [f"c{i}" for i in range(5)]


def test_continue_pages_are_one_snapshot_at_the_first_pages_version(
    fake_apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    """Like etcd behind a real apiserver: writes between pages do not show in later pages."""
    for i in range(6):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"},
                                                      "data": {"v": "1"}})
    first = core.list_namespaced_config_map("default", limit=2)
    rv = first.metadata.resource_version
    core.patch_namespaced_config_map("c3", "default", {"data": {"v": "2"}})
    core.delete_namespaced_config_map("c4", "default")
    core.create_namespaced_config_map("default", {"metadata": {"name": "c9"}})
    core.delete_namespaced_config_map("c0", "default")  # already listed: no effect either
    pages = [first]
    while pages[-1].metadata._continue:
        pages.append(core.list_namespaced_config_map(
            "default", limit=2, _continue=pages[-1].metadata._continue))
    items = [c for page in pages for c in page.items]
    assert [c.metadata.name for c in items] == [f"c{i}" for i in range(6)]
    assert next(c for c in items if c.metadata.name == "c3").data == {"v": "1"}
    assert {page.metadata.resource_version for page in pages} == {rv}
    # The next list sees the writes; a watch from the snapshot's version replays them.
    now = core.list_namespaced_config_map("default")
    assert [c.metadata.name for c in now.items] == ["c1", "c2", "c3", "c5", "c9"]
    events = [(e["type"], e["object"].metadata.name) for e in watch.Watch().stream(
        core.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=1)]
    assert events == [("MODIFIED", "c3"), ("DELETED", "c4"), ("ADDED", "c9"), ("DELETED", "c0")]


def test_continue_token_of_a_compacted_version_is_410(
    fake_apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    for i in range(3):
        core.create_namespaced_config_map("default", {"metadata": {"name": f"c{i}"}})
    first = core.list_namespaced_config_map("default", limit=2)
    core.create_namespaced_config_map("default", {"metadata": {"name": "c3"}})
    fake_apiserver.compact("configmaps")
    with pytest.raises(ApiException) as ei:
        core.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    assert (ei.value.status, _status_body(ei.value)["reason"]) == (410, "Expired")
    again = core.list_namespaced_config_map("default", limit=10)
    assert [c.metadata.name for c in again.items] == ["c0", "c1", "c2", "c3"]


# ---------------------------------------------------------------------------- pods/binding


def test_binding_semantics(
    fake_apiserver: FakeApiServer, core: CoreV1Api, watches: list[_WatchThread]
) -> None:
    pod = core.create_namespaced_pod("default", make_pod("p", annotations={"existing": "1"}))
    w = _WatchThread(
        core.list_namespaced_pod,
        "default",
        resource_version=pod.metadata.resource_version,
        timeout_seconds=10,
    )
    watches.append(w)
    fake_apiserver.wait_for_watchers("pods")

    # Stale UID precondition (pod was recreated) -> 409.
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_binding(
            "default",
            _binding("p", "n1", uid="11111111-1111-1111-1111-111111111111"),
            _preload_content=False,
        )
    assert ei.value.status == 409
    assert "Precondition failed: UID in precondition" in _status_body(ei.value)["message"]

    # The official client cannot parse the Status the server returns (python-client #547)...
    with pytest.raises(ValueError):
        core.create_namespaced_binding(
            "default",
            _binding("p", "n1", uid=pod.metadata.uid, annotations={"ipam/ip": "10.0.0.9"}),
        )
    bound = core.read_namespaced_pod("p", "default")  # ...even though the binding happened.
    assert bound.spec.node_name == "n1"
    assert bound.metadata.annotations == {"existing": "1", "ipam/ip": "10.0.0.9"}
    assert [(c.type, c.status) for c in bound.status.conditions] == [("PodScheduled", "True")]

    # Already bound -> 409 Conflict on pods/binding.
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_binding("default", _binding("p", "n2"), _preload_content=False)
    assert ei.value.status == 409
    assert _status_body(ei.value)["message"] == (
        'Operation cannot be fulfilled on pods/binding "p": pod p is already assigned to node "n1"'
    )

    w.wait_for(1)
    assert [(t, n) for t, n, _ in w.events] == [("MODIFIED", "p")]


def test_binding_with_preload_content_false_returns_status(
    fake_apiserver: FakeApiServer, core: CoreV1Api
) -> None:
    core.create_namespaced_pod("default", make_pod("p"))
    status, body = _bind_raw(core, "default", _binding("p", "n1"))
    assert status == 201
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "code": 201,
    }
    assert fake_apiserver.get("pods", "p")["spec"]["nodeName"] == "n1"

    with pytest.raises(ApiException) as ei:
        _bind_raw(core, "default", _binding("missing", "n1"))
    assert ei.value.status == 404

    core.create_namespaced_pod("default", make_pod("q"))
    with pytest.raises(ApiException) as ei:  # Binding name must match the URL
        core.create_namespaced_pod_binding(
            "q", "default", _binding("other", "n1"), _preload_content=False
        )
    assert ei.value.status == 400
    resp = core.create_namespaced_pod_binding(
        "q", "default", _binding("q", "n1"), _preload_content=False
    )
    assert resp.status == 201
    assert json.loads(resp.data)["status"] == "Success"  # reading releases the connection


# ------------------------------------------------------------------ leases, GC, finalizers


def test_lease_update_conflict(coordination: CoordinationV1Api) -> None:
    lease = coordination.create_namespaced_lease(
        "kube-system", make_lease("ipam-leader", holder="a")
    )
    mine = coordination.read_namespaced_lease("ipam-leader", "kube-system")
    theirs = coordination.read_namespaced_lease("ipam-leader", "kube-system")
    theirs.spec.holder_identity = "b"
    coordination.replace_namespaced_lease("ipam-leader", "kube-system", theirs)
    mine.spec.holder_identity = "c"
    with pytest.raises(ApiException) as ei:
        coordination.replace_namespaced_lease("ipam-leader", "kube-system", mine)
    assert ei.value.status == 409
    assert (
        coordination.read_namespaced_lease("ipam-leader", "kube-system").spec.holder_identity == "b"
    )
    assert lease.metadata.namespace == "kube-system"

    # Unlike most resources, a Lease PUT must carry a resourceVersion.
    with pytest.raises(ApiException) as ei:
        coordination.replace_namespaced_lease(
            "ipam-leader", "kube-system", make_lease("ipam-leader")
        )
    assert ei.value.status == 422

    # Leases allow create-on-update (PUT of a missing lease creates it).
    created = coordination.replace_namespaced_lease(
        "other", "kube-system", make_lease("other", holder="x")
    )
    assert created.spec.holder_identity == "x"


def test_garbage_collection_cascades_and_orphans(
    fake_apiserver: FakeApiServer, apps: AppsV1Api, core: CoreV1Api
) -> None:
    dep = apps.create_namespaced_deployment("default", make_deployment("web"))
    rs = apps.create_namespaced_replica_set(
        "default", make_replicaset("web-5d4f", owner=dep.to_dict(serialize=True))
    )
    core.create_namespaced_pod(
        "default", make_pod("web-5d4f-abcde", owner=rs.to_dict(serialize=True))
    )
    apps.delete_namespaced_deployment("web", "default")
    assert fake_apiserver.list("replicasets") == []
    assert fake_apiserver.list("pods") == []

    rs2 = apps.create_namespaced_replica_set("default", make_replicaset("solo"))
    core.create_namespaced_pod("default", make_pod("solo-x", owner=rs2.to_dict(serialize=True)))
    apps.delete_namespaced_replica_set(
        "solo", "default", body=client.V1DeleteOptions(propagation_policy="Orphan")
    )
    orphan = core.read_namespaced_pod("solo-x", "default")
    assert orphan.metadata.owner_references is None


def test_finalizers_delay_deletion(fake_apiserver: FakeApiServer, core: CoreV1Api) -> None:
    core.create_namespaced_config_map(
        "default", {"metadata": {"name": "f", "finalizers": ["ipam.example/release"]}}
    )
    core.delete_namespaced_config_map("f", "default")
    pending = core.read_namespaced_config_map("f", "default")
    assert pending.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map(
        "f",
        "default",
        {"metadata": {"finalizers": None}},
        _content_type="application/merge-patch+json",
    )
    with pytest.raises(ApiException) as ei:
        core.read_namespaced_config_map("f", "default")
    assert ei.value.status == 404


def test_graceful_pod_deletion_setting() -> None:
    with (
        FakeApiServer(settings=Settings(graceful_pod_deletion=True)) as server,
        ApiClient(kube_configuration(server)) as api,
    ):
        core = CoreV1Api(api)
        core.create_namespaced_pod("default", make_pod("p", node_name="n1"))
        core.delete_namespaced_pod("p", "default")
        terminating = core.read_namespaced_pod("p", "default")
        assert terminating.metadata.deletion_grace_period_seconds == 30
        with pytest.raises(ApiException) as ei:  # cannot bind a terminating pod either
            core.create_namespaced_binding("default", _binding("p", "n2"), _preload_content=False)
        assert ei.value.status == 409
        server.finalize_pod("default", "p")
        assert server.get("pods", "p") is None


# ------------------------------------------------------------------ faults and request log


def test_fault_switches(fake_apiserver: FakeApiServer, core: CoreV1Api) -> None:
    rule = fake_apiserver.faults.fail_next("GET", r"/api/v1/namespaces/default/pods$", status=503)
    with pytest.raises(ApiException) as ei:
        core.list_namespaced_pod("default")
    assert ei.value.status == 503
    assert _status_body(ei.value)["reason"] == "ServiceUnavailable"
    assert core.list_namespaced_pod("default").items == []
    assert rule.hits == 1

    fake_apiserver.faults.fail_next("POST", "/pods$", status=429, retry_after=1)
    with pytest.raises(ApiException) as ei:
        core.create_namespaced_pod("default", make_pod("p"))
    assert ei.value.status == 429 and ei.value.headers["Retry-After"] == "1"

    fake_apiserver.faults.expire(r"/configmaps")
    with pytest.raises(ApiException) as ei:
        core.list_namespaced_config_map(
            "default", resource_version="1", resource_version_match="Exact"
        )
    assert ei.value.status == 410

    fake_apiserver.faults.hang(r"/pods$", seconds=5, count=None)  # urllib3 retries read timeouts
    start = time.monotonic()
    with pytest.raises(urllib3.exceptions.MaxRetryError) as mre:
        core.list_namespaced_pod("default", _request_timeout=0.2)
    assert isinstance(mre.value.reason, urllib3.exceptions.ReadTimeoutError)
    assert time.monotonic() - start < 3
    fake_apiserver.faults.clear()

    fake_apiserver.faults.reset(r"/pods$", count=None)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        core.list_namespaced_pod("default")
    fake_apiserver.faults.clear()
    assert core.list_namespaced_pod("default").items == []


def test_request_log_for_rbac(
    fake_apiserver: FakeApiServer, core: CoreV1Api, coordination: CoordinationV1Api
) -> None:
    core.create_namespaced_pod("default", make_pod("p"))
    core.list_pod_for_all_namespaces()
    _bind_raw(core, "default", _binding("p", "n1"))  # POST .../namespaces/default/bindings
    core.create_namespaced_pod("default", make_pod("q"))
    raw = core.create_namespaced_pod_binding(
        "q", "default", _binding("q", "n1"), _preload_content=False
    )
    assert raw.status == 201 and raw.data  # reading the body releases the connection
    core.patch_namespaced_pod_status("p", "default", {"status": {"phase": "Running"}})
    lease = coordination.create_namespaced_lease("default", make_lease("l", "default"))
    coordination.replace_namespaced_lease("l", "default", lease)
    list(watch.Watch().stream(core.list_node, timeout_seconds=1))
    assert fake_apiserver.api_calls() == {
        ("", "pods", "create"),
        ("", "pods", "list"),
        ("", "bindings", "create"),
        ("", "pods/binding", "create"),
        ("", "pods/status", "patch"),
        ("coordination.k8s.io", "leases", "create"),
        ("coordination.k8s.io", "leases", "update"),
        ("", "nodes", "watch"),
    }
    method, path, query = fake_apiserver.requests[-1]
    assert (method, path, query["watch"]) == ("GET", "/api/v1/nodes", "true")
    assert fake_apiserver.request_count("POST", r"/bindings?$") == 2
    assert fake_apiserver.request_count(verb="create", resource="pods/binding") == 1


def test_python_side_helpers_emit_events(fake_apiserver: FakeApiServer, core: CoreV1Api) -> None:
    node = fake_apiserver.create("nodes", make_node("n1"))
    assert node["status"]["addresses"][0]["type"] == "InternalIP"
    rv = str(fake_apiserver.resource_version)
    fake_apiserver.create("pods", make_pod("p", phase="Running", pod_ip="10.0.0.7"))
    fake_apiserver.bind("default", "p", "n1", annotations={"k": "v"})
    fake_apiserver.set_pod_status("default", "p", phase="Succeeded")
    fake_apiserver.delete("pods", "p")
    events = [
        (e["type"], e["raw_object"]["status"]["phase"])
        for e in watch.Watch().stream(
            core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=1
        )
    ]
    assert events == [
        ("ADDED", "Running"),
        ("MODIFIED", "Running"),
        ("MODIFIED", "Succeeded"),
        ("DELETED", "Succeeded"),
    ]
    assert owner_reference(node)["uid"] == node["metadata"]["uid"]


def test_discovery_and_version(kube_api_client: ApiClient) -> None:
    assert client.VersionApi(kube_api_client).get_code().minor == "37"
    resources = CoreV1Api(kube_api_client).get_api_resources()
    names = {r.name for r in resources.resources}
    assert {"pods", "pods/binding", "pods/status", "nodes", "configmaps", "bindings"} <= names
    groups = {g.name for g in client.ApisApi(kube_api_client).get_api_versions().groups}
    assert {"apps", "coordination.k8s.io"} <= groups


def test_runs_as_separate_process() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "tests.fakeapi", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip()
            assert url.startswith("http://127.0.0.1:")
            with ApiClient(client.Configuration(host=url)) as api:
                core = CoreV1Api(api)
                core.create_namespaced_pod("default", make_pod("p"))
                assert [p.metadata.name for p in core.list_namespaced_pod("default").items] == ["p"]
        finally:
            proc.kill()  # SIGKILL: the fake holds nothing that needs a clean shutdown
            proc.wait(5)
