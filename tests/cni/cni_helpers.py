"""Helpers for the CNI plugin tests: a fault injector in front of the plugin, and a way to run it.

``FakeIpamService`` answers the plugin's HTTP calls (``GET /v1/pods/{ns}/{name}/ips``,
``POST /v1/pods/{ns}/{name}/container-deleted``) on 127.0.0.1, so the plugin's own tests can
make it slow, frame answers oddly, or answer what the real service never would. It is not a
second implementation of the API: its bodies are the real API's models (``ipam.api.cni``) and
``test_cni_fake_contract.py`` checks every answer it gives unprompted against the real service
in the same situation. Tests of the service's behaviour use the real one (``cni_service``).
The plugin always runs as a subprocess, as a container runtime runs it.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from ipam.api.cni import DeleteAck, PodIps

REPO_ROOT = Path(__file__).resolve().parents[2]

POD_NS, POD_NAME, POD_UID = "default", "p", "0b6a1e2c-uid-1"
CONTAINER_ID = "c0ffee0000000000000000000000000000000000000000000000000000000001"
CNI_ARGS = (
    f"IgnoreUnknown=1;K8S_POD_NAMESPACE={POD_NS};K8S_POD_NAME={POD_NAME};"
    f"K8S_POD_INFRA_CONTAINER_ID={CONTAINER_ID};K8S_POD_UID={POD_UID}"
)
TOKEN = "s3cr3t-token"

V4_IP = {
    "address": "10.11.128.7",
    "prefix_length": 21,
    "cidr": "10.11.128.7/21",
    "gateway": "10.11.135.254",
    "vlan": 1200,
    "pool": "10.11.128.0/21",
    "family": 4,
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.11.135.254"}],
}
V6_IP = {
    "address": "fd00:11::7",
    "prefix_length": 64,
    "cidr": "fd00:11::7/64",
    "gateway": "fd00:11::1",
    "vlan": 1200,
    "pool": "fd00:11::/64",
    "family": 6,
    "routes": [{"dst": "::/0", "gw": "fd00:11::1"}],
}


def allocation(*ips: dict[str, Any], uid: str = POD_UID) -> dict[str, Any]:
    """A 200 body of ``GET .../ips`` (``ips`` as given: tests also send incomplete ones)."""
    return {"namespace": POD_NS, "name": POD_NAME, "uid": uid, "ips": list(ips)}


def real_allocation(*ips: dict[str, Any], uid: str = POD_UID) -> dict[str, Any]:
    """``allocation`` through the real response model: exactly what the service would send."""
    return PodIps.model_validate(allocation(*ips, uid=uid)).model_dump(mode="json")


def envelope(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeIpamService:
    """The fault injector; tests edit its state directly (``override`` answers anything)."""

    url: str = ""
    token: str | None = TOKEN
    pods: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    overrides: dict[tuple[str, str], tuple[int, Any]] = field(default_factory=dict)
    delay: float = 0.0
    framing: str = "length"  # how answers are framed: "length", "chunked" or "eof"
    requests: list[Recorded] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def override(self, method: str, leaf: str, status: int, body: Any) -> None:
        """Answer ``method`` on the default pod's ``leaf`` with a fixed status and body."""
        self.overrides[(method, f"/v1/pods/{POD_NS}/{POD_NAME}/{leaf}")] = (status, body)

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        self.requests.append(Recorded(method, path, headers, body))
        if self.delay:
            self.released.wait(self.delay)
        if self.token is not None and headers.get("Authorization") != f"Bearer {self.token}":
            return 401, envelope("unauthorized", "missing or invalid bearer token")
        if (method, path) in self.overrides:
            return self.overrides[(method, path)]
        parts = path.split("/")
        if len(parts) != 6 or parts[:3] != ["", "v1", "pods"]:
            # What the ipam service says for a path it has no route for.
            return 404, envelope("route_not_found", f"no route {method} {path}")
        pod = self.pods.get((parts[3], parts[4]))
        if method == "GET" and parts[5] == "ips":
            if pod is None:
                return 404, envelope("not_found", f"pod {parts[3]}/{parts[4]} has no address")
            return 200, pod
        if method == "POST" and parts[5] == "container-deleted":
            if pod is None:
                return 404, envelope("not_found", f"pod {parts[3]}/{parts[4]} is unknown")
            addresses = [ip["address"] for ip in pod.get("ips", []) if "address" in ip]
            return 202, DeleteAck(action="none", addresses=addresses).model_dump(mode="json")
        return 405, envelope("method_not_allowed", "no such method")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # as uvicorn answers; the plugin asks for Connection: close

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fake = self.server.fake
        status, payload = fake.handle(self.command, self.path, dict(self.headers.items()), body)
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        self.close_connection = True
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if fake.framing == "length":
                self.send_header("Content-Length", str(len(data)))
            elif fake.framing == "chunked":
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if fake.framing == "chunked":
                for i in range(0, len(data), 7):
                    piece = data[i : i + 7]
                    self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.wfile.write(data)
        except OSError:
            pass  # the plugin gave up (timeout test)

    do_GET = do_POST = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeIpamService


@contextlib.contextmanager
def serve_fake(tls: tuple[Path, Path] | None = None) -> Iterator[FakeIpamService]:
    """Run a fake ipam service on 127.0.0.1 knowing ``default/p`` with one IPv4 address.

    ``tls`` is (certificate, key) to serve https instead of http.
    """
    server = _Server(("127.0.0.1", 0), _Handler)
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    fake = FakeIpamService(url=f"{scheme}://127.0.0.1:{server.server_address[1]}")
    fake.pods[(POD_NS, POD_NAME)] = real_allocation(V4_IP)
    server.fake = fake
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def netconf(
    url: str, version: str = "1.0.0", *, token_file: Path | None = None, **ipam: Any
) -> dict[str, Any]:
    """A bridge network config with our ipam section, as the runtime passes it."""
    section: dict[str, Any] = {"type": "ipam-cni", "url": url, "timeoutSeconds": 2}
    if token_file is not None:
        section["tokenFile"] = str(token_file)
    section.update(ipam)
    return {"cniVersion": version, "name": "fixed", "type": "bridge", "ipam": section}


@dataclass
class PluginRun:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def plugin_env(command: str, **overrides: str | None) -> dict[str, str]:
    """The environment a runtime gives an IPAM plugin; ``None`` removes a variable."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO_ROOT),
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": CONTAINER_ID,
        "CNI_NETNS": "/var/run/netns/test",
        "CNI_IFNAME": "eth0",
        "CNI_PATH": "/opt/cni/bin",
        "CNI_ARGS": CNI_ARGS,
    }
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_plugin(
    command: str,
    conf: dict[str, Any] | bytes | None = None,
    argv0: Sequence[str] = (sys.executable, "-m", "ipam.cni.plugin"),
    **env: str | None,
) -> PluginRun:
    """Run the plugin with a config (dict or raw bytes) on stdin, as a runtime does."""
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf or {}).encode()
    proc = subprocess.run(
        list(argv0),
        input=stdin,
        env=plugin_env(command, **env),
        capture_output=True,
        timeout=30,
        check=False,
    )
    return PluginRun(proc.returncode, proc.stdout.decode(), proc.stderr.decode())


@dataclass(frozen=True)
class CniService:
    """What the datapath tests need from the ipam service.

    ``expected_ips`` is the allocation the service holds for the pod, as (cidr, gateway);
    ``saw_delete`` tells whether the service recorded the DEL of a container (its audit
    trail), or is None where that is not to be checked.
    """

    url: str
    token: str | None
    expected_ips: list[tuple[str, str]]
    namespace: str = POD_NS
    name: str = POD_NAME
    uid: str | None = POD_UID
    saw_delete: Callable[[str], bool] | None = None

    @property
    def cni_args(self) -> str:
        args = f"IgnoreUnknown=1;K8S_POD_NAMESPACE={self.namespace};K8S_POD_NAME={self.name}"
        return args + (f";K8S_POD_UID={self.uid}" if self.uid else "")


def wait_for(predicate: Callable[[], object], timeout: float = 30.0) -> None:
    """Block until ``predicate()`` is true (checked every 20 ms), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.02)


def ip_json(*args: str) -> Any:
    """``ip -j ARGS`` parsed; raises CalledProcessError with stderr on failure."""
    out = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout or "[]")
