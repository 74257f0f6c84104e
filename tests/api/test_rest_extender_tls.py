"""The extender on a listener of its own with TLS and client certificates (enableHTTPS).

Builds the extender-only app as ``ipam serve`` does when ``extender_port`` is set, sharing
the main service's runtime, and serves it with ``extender_tls_options``. Without that
listener the verbs are on the REST port only while it is open anyway (no token file).
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from ipam.api.auth import extender_tls_options
from ipam.app import create_app, create_extender_app
from tests.api.rest_conftest import (  # noqa: F401
    ADMIN,
    RestSettings,
    rest_fixture,
    rest_settings,
    running_rest_service,
)
from tests.fakeapi.objects import make_node, make_pod
from tests.fakeapi.server import FakeApiServer
from tests.service_harness import RunningService
from tests.system_packages import command

TlsSettings = RestSettings


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all from the CA."""
    command("openssl", "openssl")
    d = tmp_path_factory.mktemp("pki")
    out = {n: d / n for n in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem",
                              "client.key")}
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", str(out["ca.key"]), "-out", str(out["ca.pem"]),
             "-days", "2", "-subj", "/CN=ipam-test-ca")
    for who, extra in (("server", "subjectAltName=IP:127.0.0.1"),
                       ("client", "extendedKeyUsage=clientAuth")):
        csr = d / f"{who}.csr"
        _openssl("req", *ec, "-keyout", str(out[f"{who}.key"]), "-out", str(csr),
                 "-subj", f"/CN=kube-scheduler-{who}")
        ext = d / f"{who}.ext"
        ext.write_text(extra + "\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(out["ca.pem"]), "-CAkey",
                 str(out["ca.key"]), "-CAcreateserial", "-out", str(out[f"{who}.pem"]),
                 "-days", "2", "-extfile", str(ext))
    return out


def test_tls_options_from_settings(pki: dict[str, Path]) -> None:
    assert extender_tls_options(TlsSettings()) == {}
    both = extender_tls_options(TlsSettings(extender_tls_cert=pki["server.pem"],
                                            extender_tls_key=pki["server.key"]))
    assert both == {"ssl_certfile": str(pki["server.pem"]), "ssl_keyfile": str(pki["server.key"])}
    with pytest.raises(ValueError, match="both"):
        extender_tls_options(TlsSettings(extender_tls_cert=pki["server.pem"]))
    with pytest.raises(ValueError, match="needs"):
        extender_tls_options(TlsSettings(extender_tls_client_ca=pki["ca.pem"]))


async def test_extender_listener_with_client_certificates(rest: RunningService,
                                                          pki: dict[str, Path]) -> None:
    settings = TlsSettings(extender_tls_cert=pki["server.pem"], extender_tls_key=pki["server.key"],
                           extender_tls_client_ca=pki["ca.pem"])
    app = create_extender_app(settings, create_app(settings, runtime=rest.runtime))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off", **extender_tls_options(settings)))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done()
            await asyncio.sleep(0.02)
        url = f"https://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        body: dict[str, Any] = {"PodName": "x", "PodNamespace": "default", "PodUID": "u",
                                "Node": "node-0"}
        with_cert = ssl.create_default_context(cafile=str(pki["ca.pem"]))
        with_cert.load_cert_chain(str(pki["client.pem"]), str(pki["client.key"]))
        async with httpx.AsyncClient(base_url=url, verify=with_cert) as ok:
            resp = await ok.post("/v1/bind", json=body)
            assert resp.status_code == 200 and "not found" in resp.json()["Error"]
            # Operator routes are not on this listener.
            missing = await ok.get("/v1/addresses", headers=ADMIN)
            assert missing.json()["error"]["code"] == "route_not_found"
        without = ssl.create_default_context(cafile=str(pki["ca.pem"]))
        async with httpx.AsyncClient(base_url=url, verify=without) as anonymous:
            with pytest.raises(httpx.TransportError):
                await anonymous.post("/v1/bind", json=body)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


BIND = {"PodName": "x", "PodNamespace": "default", "PodUID": "u", "Node": "node-0"}


@pytest.mark.parametrize("verb", ["filter", "prioritize", "bind"])
async def test_with_tokens_the_rest_port_refuses_the_verbs(
        db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path, verb: str) -> None:
    """kube-scheduler cannot send a token: on a REST port that needs one, the verbs would be
    the one open door. Unless told otherwise they are refused, with what to do instead."""
    settings = rest_settings(db_url, fake_apiserver, tmp_path, extender_on_api_port=None)
    assert settings.serves_extender_on_api_port() is False
    fake_apiserver.create("nodes", make_node("node-0", internal_ip="10.10.100.10"))
    pod = fake_apiserver.create("pods", make_pod("victim"))["metadata"]
    async with running_rest_service(settings) as svc:
        body = dict(BIND, PodName=pod["name"], PodNamespace=pod["namespace"], PodUID=pod["uid"])
        resp = await svc.client.post(f"/v1/{verb}", json=body)
        assert resp.status_code == 403, resp.text
        error = resp.json()["error"]
        assert error["code"] == "forbidden"
        assert "IPAM_EXTENDER_PORT" in error["message"] and "client CA" in error["message"]
        # Nothing was bound and nothing reserved.
        assert fake_apiserver.get("pods", pod["name"], namespace=pod["namespace"])[
            "spec"].get("nodeName") is None
        async with svc.runtime.db.engine.connect() as conn:
            held = (await conn.execute(text(
                "SELECT count(*) FROM addresses WHERE state <> 'free'"))).scalar_one()
        assert held == 0


async def test_with_an_extender_listener_the_rest_port_points_there(
        db_url: str, fake_apiserver: FakeApiServer, tmp_path: Path) -> None:
    settings = rest_settings(db_url, fake_apiserver, tmp_path, extender_on_api_port=None,
                             extender_port=19443, auth_tokens_path=None)
    assert settings.serves_extender_on_api_port() is False
    async with running_rest_service(settings) as svc:
        resp = await svc.client.post("/v1/bind", json=BIND)
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "route_not_found"
        assert "own listener, port 19443" in resp.json()["error"]["message"]


def test_the_verbs_are_on_the_rest_port_only_where_it_is_open_anyway(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    assert TlsSettings().serves_extender_on_api_port()  # the quickstart: no tokens, loopback
    assert TlsSettings().listen_host() == "127.0.0.1"
    assert not TlsSettings(auth_tokens_path=tokens).serves_extender_on_api_port()
    assert TlsSettings(auth_tokens_path=tokens).listen_host() == "0.0.0.0"
    assert not TlsSettings(extender_port=9443).serves_extender_on_api_port()
    assert not TlsSettings(extender_port=9443,
                           extender_on_api_port=True).serves_extender_on_api_port()
    assert TlsSettings(auth_tokens_path=tokens,
                       extender_on_api_port=True).serves_extender_on_api_port()
    assert TlsSettings(host="10.0.0.1").listen_host() == "10.0.0.1"


async def test_the_documented_certificates_work(rest: RunningService, tmp_path: Path) -> None:
    """docs/security.md's openssl block, run as written: the extender serves its certificate
    for the Service's DNS name and admits the scheduler's certificate, and nothing else."""
    command("openssl", "openssl")
    text = (Path(__file__).parents[2] / "docs/security.md").read_text()
    block = text.split("### Make the certificates", 1)[1].split("```sh\n", 1)[1]
    script = block.split("```", 1)[0].replace("rsa:3072", "rsa:2048")  # same, quicker
    subprocess.run(["sh", "-euc", script], cwd=tmp_path, check=True, capture_output=True,
                   timeout=120)
    settings = TlsSettings(extender_tls_cert=tmp_path / "tls.crt",
                           extender_tls_key=tmp_path / "tls.key",
                           extender_tls_client_ca=tmp_path / "ca.crt", extender_port=9443)
    app = create_extender_app(settings, create_app(settings, runtime=rest.runtime))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="off", **extender_tls_options(settings)))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done()
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]

        async def healthz(context: ssl.SSLContext) -> bytes:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="ipam.kube-system.svc")
            try:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: ipam.kube-system.svc\r\n"
                             b"Connection: close\r\n\r\n")
                await writer.drain()
                return await reader.read()
            finally:
                writer.close()

        scheduler = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        scheduler.load_cert_chain(str(tmp_path / "scheduler.crt"), str(tmp_path / "scheduler.key"))
        answer = await healthz(scheduler)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"status":"ok"}')
        # TLS 1.3 reports a refused client certificate after the client's handshake ends: as
        # an alert or a closed connection, never an answer.
        anonymous = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        assert await refused(healthz(anonymous))
        # The serving certificate is not a client certificate (serverAuth only).
        impostor = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
        impostor.load_cert_chain(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
        assert await refused(healthz(impostor))
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


async def refused(call: Awaitable[bytes]) -> bool:
    try:
        return await call == b""
    except (ssl.SSLError, ConnectionError):
        return True
