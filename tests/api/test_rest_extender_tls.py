"""The extender on a listener of its own with TLS and client certificates (enableHTTPS).

Builds the extender-only app the way ``ipam.app`` is to build it when ``extender_port`` is
set, sharing the main service's runtime, and serves it with ``extender_tls_options``.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from ipam.api import errors, extender, health
from ipam.api.auth import extender_tls_options
from tests.api.rest_conftest import ADMIN, RestSettings, rest_fixture  # noqa: F401
from tests.service_harness import RunningService

TlsSettings = RestSettings


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, all from the CA."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (apt-get install -y openssl)")
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
    app = FastAPI()
    errors.install(app)
    app.include_router(health.router)
    app.include_router(extender.router)
    app.state.runtime = rest.runtime
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
