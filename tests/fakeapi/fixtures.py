"""pytest fixtures for the fake apiserver; import them from a conftest::

from tests.fakeapi.fixtures import fake_apiserver, kube_api_client, kube_config  # noqa: F401
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from kubernetes.client import ApiClient, Configuration

from .server import FakeApiServer


def kube_configuration(server: FakeApiServer) -> Configuration:
    """Client configuration for ``server``: plain HTTP, no auth, no proxy."""
    cfg = Configuration(host=server.url)
    cfg.verify_ssl = False
    cfg.proxy = None
    return cfg


@pytest.fixture
def fake_apiserver() -> Iterator[FakeApiServer]:
    """A fresh server per test on an ephemeral port; its thread is joined on teardown."""
    server = FakeApiServer().start()
    try:
        yield server
    finally:
        server.stop()
        leaked = [t for t in threading.enumerate() if t.name == f"fake-apiserver:{server.port}"]
        assert not leaked, f"fake apiserver thread leaked: {leaked}"


@pytest.fixture
def kube_config(fake_apiserver: FakeApiServer) -> Configuration:
    return kube_configuration(fake_apiserver)


@pytest.fixture
def kube_api_client(kube_config: Configuration) -> Iterator[ApiClient]:
    """An ``ApiClient`` bound to the fake; its connection pool is closed afterwards."""
    client = ApiClient(kube_config)
    try:
        yield client
    finally:
        client.close()  # type: ignore[no-untyped-call]
