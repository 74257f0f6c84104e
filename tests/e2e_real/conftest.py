"""The session's real cluster: control plane, kubelet stand-in, ipam serve, its database.

Started once, on first use, by the ``cluster`` fixture, and stopped after the last test of
this package (package-scoped), so the rest of a whole-suite run does not share the machine
with it. When the binaries of
``realkube/build.sh`` are missing, every test here skips with one line, except in CI
(``CI=true``), where that is a failure: CI builds them first (``.ci/run``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator

import pytest

from tests.e2e_real.cluster import (
    MANIFESTS,
    NODES,
    POOLS,
    REALKUBE_DIR,
    REPORT,
    Cluster,
    ControlPlane,
    IpamService,
    Kube,
    Kubelet,
    Postgres,
    create_node,
    missing_binaries,
)
from tests.pg import server_dsn


def _realkube_available() -> None:
    missing = missing_binaries()
    if not missing:
        return
    reason = (f"real control plane not built ({', '.join(missing)} missing in "
              f"{REALKUBE_DIR}/bin): run tests/e2e_real/realkube/build.sh (~5 min, needs root)")
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="package")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    _realkube_available()
    plane = ControlPlane(tmp_path_factory.mktemp("realkube") / "run")
    try:
        plane.start()
        yield plane
    finally:
        plane.stop()
        # The logs outlive pytest's temporary directories (kept for the last 3 runs only).
        kept = REALKUBE_DIR / "last-run-logs"
        shutil.rmtree(kept, ignore_errors=True)
        if (plane.run / "log").is_dir():
            shutil.copytree(plane.run / "log", kept, symlinks=True)


@pytest.fixture(scope="package")
def cluster(control_plane: ControlPlane,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    plane = control_plane
    applied = plane.kubectl("apply", "-f", str(MANIFESTS / "rbac.yaml"))
    assert applied.returncode == 0, applied.stderr
    kube = Kube(plane.server, plane.pki / "ca.crt", plane.admin_token)
    for name, address in NODES.items():
        create_node(kube, name, address)
    kubelet = Kubelet(kube, dict(NODES))
    kubelet.start()

    conf = plane.run / "ipam-conf"
    conf.mkdir()
    pools = conf / "floatingips.json"
    pools.write_text(json.dumps(POOLS))
    admin_token, read_token = secrets.token_hex(20), secrets.token_hex(20)
    tokens = conf / "tokens"
    tokens.write_text(f"e2e-admin:admin:{admin_token}\ne2e-reader:read:{read_token}\n")
    db = Postgres(server_dsn(tmp_path_factory.mktemp("pg")))
    ipam: IpamService | None = None
    try:
        db.create()
        ipam = IpamService(plane, db.url(), db.url(), pools, tokens)
        ipam.migrate()
        ipam.env["IPAM_DATABASE_URL"] = db.create_service_role()
        ipam.start()
        plane.extender_url = ipam.extender_url
        plane.start_scheduler(node_cache_capable=True)
        yield Cluster(plane, kube, kubelet, ipam, db, admin_token, read_token)
    finally:
        plane.stop("kube-scheduler")
        if ipam is not None:
            ipam.stop()
        kubelet.stop()
        kube.close()
        db.drop()


@pytest.fixture
def ns(cluster: Cluster, request: pytest.FixtureRequest) -> str:
    """A fresh namespace for one test, ready for pods."""
    return cluster.namespace(request.node.name.removeprefix("test_")[:30])


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORT:
        terminalreporter.section("real control plane figures")
        for key, value in REPORT.items():
            terminalreporter.write_line(f"{key}: {value}")
