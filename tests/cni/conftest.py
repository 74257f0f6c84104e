"""Fixtures for the CNI plugin tests; the machinery lives in ``cni_helpers``."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cni.cni_helpers import (
    POD_NAME,
    POD_NS,
    TOKEN,
    CniService,
    FakeIpamService,
    allocation,
    serve_fake,
)


@pytest.fixture
def fake_service() -> Iterator[FakeIpamService]:
    """A fake ipam service on 127.0.0.1 knowing ``default/p`` with one IPv4 address."""
    with serve_fake() as fake:
        yield fake


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for 127.0.0.1 (certificate, key)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (apt-get install -y openssl)")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=ipam-test", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return cert, key


NETNS_SUBNET_IP = {
    "address": "10.99.0.7",
    "prefix_length": 24,
    "cidr": "10.99.0.7/24",
    "gateway": "10.99.0.254",
    "vlan": 0,
    "pool": "10.99.0.0/24",
    "family": 4,
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.99.0.254"}],
}
"""A test-only range: it exists on a bridge of our own and reaches nothing else."""


@pytest.fixture
def cni_service() -> Iterator[CniService]:
    """The ipam service the datapath tests allocate from: here the fake on 127.0.0.1.

    To run the same tests against the real service, override this fixture (same name, in
    a closer conftest.py or in the test module) to yield a CniService with its URL, a
    token it accepts, a pod it has allocated for and that allocation.
    """
    with serve_fake() as fake:
        fake.pods[(POD_NS, POD_NAME)] = allocation(NETNS_SUBNET_IP)

        def saw_delete(container_id: str) -> bool:
            return any(
                r.path.endswith("/container-deleted")
                and json.loads(r.body).get("container_id") == container_id
                for r in fake.requests
            )

        yield CniService(
            url=fake.url,
            token=TOKEN,
            expected_ips=[("10.99.0.7/24", "10.99.0.254")],
            saw_delete=saw_delete,
        )
