"""The informer against the fake API server, over HTTP on the event loop's session: pages of
``limit`` objects, reduced as they arrive, one consistent snapshot whose resourceVersion the
watch resumes from, a fresh list when a continue token has expired; watch errors mapped, and a
cancelled watch's connection closed at once."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ipam.k8s.client import KubeClient
from ipam.k8s.informer import Informer
from ipam.k8s.nodes import NodeController, NodeEntry
from ipam.services.placement_state import NodeDirectory
from ipam.services.runtime import Readiness
from tests.fakeapi.fixtures import kube_configuration
from tests.fakeapi.objects import make_node
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import wait_until

NODES = 250
PAGE = 100


def ip(i: int) -> str:
    return f"10.1.{i // 250}.{i % 250 + 1}"


@pytest.fixture
async def kube(fake_apiserver: FakeApiServer) -> AsyncIterator[KubeClient]:
    for i in range(NODES):
        fake_apiserver.create("nodes", make_node(f"n-{i:03d}", internal_ip=ip(i)))
    client = KubeClient(kube_configuration(fake_apiserver))
    yield client
    await client.aclose()


def node_informer(kube: KubeClient, directory: NodeDirectory,
                  reduce: Callable[[dict[str, Any]], NodeEntry | None] | None = None
                  ) -> Informer[NodeEntry]:
    nodes = NodeController(directory)
    return Informer("nodes", kube, "/api/v1/nodes", reduce or nodes.reduce, nodes.on_sync,
                    nodes.on_event, Readiness(), page_size=PAGE, backoff=(0.05,))


def node_lists(fake: FakeApiServer) -> list[tuple[dict[str, str], int]]:
    return [(r.query, r.status) for r in fake.requests
            if r.path == "/api/v1/nodes" and r.verb == "list"]


async def test_list_is_paged_and_reduced(fake_apiserver: FakeApiServer, kube: KubeClient
                                         ) -> None:
    directory = NodeDirectory()
    informer = node_informer(kube, directory)
    fake_apiserver.reset_requests()
    rv = await informer.list()
    assert rv == str(fake_apiserver.resource_version)
    assert len(directory) == NODES and directory.synced
    assert directory.get("n-137") == ipaddress.ip_address(ip(137))
    lists = node_lists(fake_apiserver)
    assert [q.get("limit") for q, _ in lists] == [str(PAGE)] * 3
    assert [bool(q.get("continue")) for q, _ in lists] == [False, True, True]
    assert informer.stats.paging.pages == 3 and informer.stats.paging.expired == 0


async def test_pages_are_one_snapshot_and_the_watch_resumes_from_it(
    fake_apiserver: FakeApiServer, kube: KubeClient
) -> None:
    """Writes between pages are not in later pages; the watch from the list's version
    brings them, so the directory ends up current."""
    directory = NodeDirectory()
    nodes = NodeController(directory)
    wrote: list[int] = []

    def reduce(obj: dict[str, Any]) -> NodeEntry | None:
        if not wrote:  # while the first page is being reduced
            wrote.append(fake_apiserver.resource_version)
            fake_apiserver.patch("nodes", "n-200", {"status": {"addresses": [
                {"type": "InternalIP", "address": "10.9.9.9"}]}})
            fake_apiserver.delete("nodes", "n-150")
            fake_apiserver.create("nodes", make_node("n-999", internal_ip="10.9.9.10"))
        return nodes.reduce(obj)

    informer = node_informer(kube, directory, reduce)
    rv = await informer.list()
    assert rv == str(wrote[0])
    assert len(directory) == NODES and directory.known("n-150")
    assert directory.get("n-200") == ipaddress.ip_address(ip(200))
    assert not directory.known("n-999")

    task = asyncio.create_task(informer.run())
    try:
        await wait_until(lambda: not directory.known("n-150") and directory.known("n-999")
                         and str(directory.get("n-200")) == "10.9.9.9")
    finally:
        informer.stop()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert informer.stats.lists == 1 and informer.stats.restarts == 0


async def test_expired_continue_token_lists_again_from_the_start(
    fake_apiserver: FakeApiServer, kube: KubeClient
) -> None:
    """The API server compacted the snapshot's revision between two pages: the next page is
    a 410, and the list starts over (consistent, at the new version) instead of mixing two
    versions of the collection."""
    directory = NodeDirectory()
    nodes = NodeController(directory)
    compacted: list[int] = []

    def reduce(obj: dict[str, Any]) -> NodeEntry | None:
        if not compacted:
            fake_apiserver.patch("nodes", "n-000", {"status": {"addresses": [
                {"type": "InternalIP", "address": "10.9.9.9"}]}})
            compacted.append(fake_apiserver.compact("nodes"))
        return nodes.reduce(obj)

    informer = node_informer(kube, directory, reduce)
    fake_apiserver.reset_requests()
    rv = await informer.list()
    assert rv == str(compacted[0])
    assert [status for _, status in node_lists(fake_apiserver)] == [200, 410, 200, 200, 200]
    assert informer.stats.paging.expired == 1 and informer.stats.lists == 1
    assert len(directory) == NODES
    assert str(directory.get("n-000")) == "10.9.9.9"  # from the second, complete list


async def test_continue_tokens_that_keep_expiring_end_in_one_unpaged_list(
    fake_apiserver: FakeApiServer, kube: KubeClient
) -> None:
    """client-go's fallback: a list that cannot finish paged is taken whole."""
    fake_apiserver.faults.expire(r"^/api/v1/nodes\?.*continue=", count=None)
    directory = NodeDirectory()
    informer = node_informer(kube, directory)
    fake_apiserver.reset_requests()
    await informer.list()
    assert len(directory) == NODES and informer.stats.paging.expired == 3
    lists = node_lists(fake_apiserver)
    assert [(q.get("limit"), status) for q, status in lists] == (
        [(str(PAGE), 200), (str(PAGE), 410)] * 3 + [(None, 200)])


async def test_an_event_whose_handler_raises_is_logged_and_skipped_not_replayed(
    fake_apiserver: FakeApiServer, kube: KubeClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Re-raising would resume the watch before the event and replay it forever, with every
    later event stuck behind it and the resource's readiness down."""
    directory = NodeDirectory()
    nodes = NodeController(directory)
    seen: list[str] = []

    async def on_event(etype: str, obj: dict[str, Any]) -> None:
        seen.append(obj["metadata"]["name"])
        if obj["metadata"]["name"] == "n-bad":
            raise ValueError("Exceeds the limit (4300 digits) for integer string conversion")
        await nodes.on_event(etype, obj)

    readiness = Readiness()
    informer = Informer("nodes", kube, "/api/v1/nodes", nodes.reduce, nodes.on_sync, on_event,
                        readiness, page_size=PAGE, backoff=(0.05,))
    task = asyncio.create_task(informer.run())
    try:
        await wait_until(lambda: directory.synced)
        fake_apiserver.create("nodes", make_node("n-bad", internal_ip="10.9.9.1"))
        fake_apiserver.create("nodes", make_node("n-next", internal_ip="10.9.9.2"))
        await wait_until(lambda: directory.known("n-next"))
    finally:
        informer.stop()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert seen == ["n-bad", "n-next"]
    assert informer.stats.handler_errors == 1 and informer.stats.restarts == 0
    assert readiness.conditions["watch:nodes"][0]
    (record,) = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert "n-bad" in record.getMessage() and record.exc_info is not None
