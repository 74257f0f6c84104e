"""The real-control-plane suite's moving parts, each a small class the fixtures wire together.

- ``ControlPlane``: etcd, kube-apiserver, kube-controller-manager and kube-scheduler, started
  and stopped by ``realkube/start.sh``/``stop.sh`` on free loopback ports in a run dir of the
  session; the scheduler's config is rendered from ``manifests/scheduler-config-v1beta1.yaml``.
- ``Kube``: the admin's JSON client of the API server (httpx, bearer token).
- ``Kubelet``: the two kubelet parts that matter, played from a thread: a bound pod is reported
  Running with the address of its ``k8s.v1.cni.galaxy.io/args`` annotation as podIP, and a
  graceful deletion is finished after a delay (there is no kubelet to confirm it).
- ``IpamService``: ``ipam serve`` as a subprocess under the RBAC of ``manifests/rbac.yaml``,
  with its own database, the extender on its own TLS listener with client certificates.
- ``Postgres``: read-only queries on the service's database from a thread of its own.

No timing thresholds: every wait has a generous deadline and fails with what it last saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
MANIFESTS = ROOT / "manifests"
SCRIPTS = HERE / "realkube"
REALKUBE_DIR = Path(os.environ.get("REALKUBE_DIR", "~/realkube")).expanduser()
BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

ENI_IP = "tke.cloud.tencent.com/eni-ip"
ARGS_ANNOTATION = "k8s.v1.cni.galaxy.io/args"
POLICY_ANNOTATION = "k8s.v1.cni.galaxy.io/release-policy"
IPAM_USER = "system:serviceaccount:kube-system:ipam"


def insecure_ports() -> dict[str, str]:
    """1.20's insecure healthz/metrics listener on a free loopback port instead of its default
    0.0.0.0:10251, which a second scheduler on the machine would find taken (port 0 is
    refused by validation)."""
    address = f"127.0.0.1:{free_port()}"
    return {"healthzBindAddress": address, "metricsBindAddress": address}


T = TypeVar("T")


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if not os.access(REALKUBE_DIR / "bin" / b, os.X_OK)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def eventually(check: Callable[[], T], *, timeout: float, what: str,
               interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; fail with its last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not reached within {timeout:.0f} s; last: {last!r}")
        time.sleep(interval)


# --- the control plane -----------------------------------------------------------------------

class ControlPlane:
    """The processes of realkube/start.sh, on ports of this session."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self.env = {**os.environ, "REALKUBE_DIR": str(REALKUBE_DIR), "REALKUBE_RUN": str(run)}
        for name in ("ETCD_PORT", "ETCD_PEER_PORT", "APISERVER_PORT", "SCHEDULER_PORT",
                     "KCM_PORT"):
            self.env[name] = str(free_port())
        self.server = f"https://127.0.0.1:{self.env['APISERVER_PORT']}"
        self.node_cache_capable: bool | None = None
        self.extender_url = ""

    def script(self, name: str, *args: str, env: dict[str, str] | None = None,
               timeout: float = 180) -> None:
        out = subprocess.run(["bash", str(SCRIPTS / name), *args], env={**self.env, **(env or {})},
                             capture_output=True, text=True, timeout=timeout, check=False)
        if out.returncode != 0:
            raise AssertionError(f"{name} {' '.join(args)} failed ({out.returncode}): "
                                 f"{out.stderr.strip() or out.stdout.strip()}")

    def start(self) -> None:
        self.script("start.sh")

    def stop(self, *names: str) -> None:
        self.script("stop.sh", *names, timeout=120)

    @property
    def pki(self) -> Path:
        return self.run / "pki"

    @property
    def admin_token(self) -> str:
        return (self.run / "admin.token").read_text().strip()

    @property
    def admin_kubeconfig(self) -> Path:
        return self.run / "admin.kubeconfig"

    def scheduler_config(self, node_cache_capable: bool, url: str | None = None
                         ) -> dict[str, Any]:
        """The shipped v1beta1 file with only what a test run must change: where the
        extender listens (its TLS listener, client certificate), how the scheduler reaches
        the API server, its client rate limits, and the node cache mode under test."""
        doc: dict[str, Any] = yaml.safe_load(
            (MANIFESTS / "scheduler-config-v1beta1.yaml").read_text())
        doc["clientConnection"].update(kubeconfig=str(self.run / "scheduler.kubeconfig"),
                                       qps=1000, burst=2000)
        doc.update(insecure_ports())
        (extender,) = doc["extenders"]
        extender.update(urlPrefix=url or self.extender_url, enableHTTPS=True,
                        nodeCacheCapable=node_cache_capable,
                        tlsConfig={"certFile": str(self.pki / "scheduler-client.crt"),
                                   "keyFile": str(self.pki / "scheduler-client.key"),
                                   "caFile": str(self.pki / "extender-ca.crt")})
        return doc

    def start_scheduler(self, node_cache_capable: bool, *, kube: Kube | None = None) -> None:
        """(Re)start kube-scheduler. With ``kube``, the old one's lease is deleted once it has
        exited, so the new one leads at once; without, it waits for the lease to expire (up
        to 15 s: kube-scheduler 1.20 keeps its lease on SIGTERM), as in a real restart."""
        path = self.run / "scheduler-config.yaml"
        path.write_text(yaml.safe_dump(self.scheduler_config(node_cache_capable)))
        if kube is not None:
            self.stop("kube-scheduler")
            kube.delete("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"
                        "kube-scheduler")
        self.script("start.sh", "scheduler")
        self.node_cache_capable = node_cache_capable

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        kubectl = shutil.which("kubectl")
        assert kubectl is not None, "kubectl is not installed"
        return subprocess.run([kubectl, f"--kubeconfig={self.admin_kubeconfig}", *args],
                              input=stdin, capture_output=True, text=True, timeout=120,
                              check=False)

    def audit(self) -> list[dict[str, Any]]:
        """kube-apiserver's audit events of ipam's identity (start.sh's audit policy)."""
        path = self.run / "log" / "audit.log"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the API server, as the admin --------------------------------------------------------------

class ApiError(AssertionError):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.request.method} {response.request.url.path}: "
                         f"{response.status_code} {response.text[:500]}")
        self.status = response.status_code


class Kube:
    """JSON over HTTPS with the admin's bearer token; raises ``ApiError`` on non-2xx."""

    def __init__(self, server: str, ca: Path, token: str) -> None:
        self.server = server
        self.verify = ssl.create_default_context(cafile=str(ca))
        self.headers = {"Authorization": f"Bearer {token}"}
        self.http = self.client()

    def client(self, timeout: httpx.Timeout | None = None) -> httpx.Client:
        return httpx.Client(base_url=self.server, verify=self.verify, headers=self.headers,
                            timeout=timeout or httpx.Timeout(30.0))

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (),
                **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code in ok:
            return None
        if not response.is_success:
            raise ApiError(response)
        return response.json()

    def get(self, path: str, **params: str) -> Any:
        return self.request("GET", path, params=params)

    def find(self, path: str) -> Any:
        """GET, or None on 404."""
        return self.request("GET", path, ok=(404,))

    def post(self, path: str, body: dict[str, Any]) -> Any:
        return self.request("POST", path, json=body)

    def patch(self, path: str, body: dict[str, Any], *, kind: str = "merge") -> Any:
        return self.request("PATCH", path, content=json.dumps(body),
                            headers={"Content-Type": f"application/{kind}-patch+json"})

    def delete(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("DELETE", path, ok=(404, 409), content=json.dumps(body or {}),
                            headers={"Content-Type": "application/json"})

    # -- shortcuts ----------------------------------------------------------------------------
    def pods(self, namespace: str, selector: str | None = None) -> list[dict[str, Any]]:
        params = {"labelSelector": selector} if selector else {}
        return list(self.get(f"/api/v1/namespaces/{namespace}/pods", **params)["items"])

    def pod(self, namespace: str, name: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.find(f"/api/v1/namespaces/{namespace}/pods/{name}")
        return found

    def create_pod(self, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self.post(f"/api/v1/namespaces/{namespace}/pods", manifest)
        return created

    def delete_pod(self, namespace: str, name: str, *, grace: int | None = None,
                   uid: str | None = None) -> None:
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace is not None:
            body["gracePeriodSeconds"] = grace
        if uid is not None:
            body["preconditions"] = {"uid": uid}
        self.delete(f"/api/v1/namespaces/{namespace}/pods/{name}", body)

    def create_namespace(self, name: str) -> None:
        """The namespace, once pods can be created in it: the ServiceAccount admission of
        1.20 refuses pods until the controller-manager made the ``default`` ServiceAccount
        and its token Secret."""
        self.post("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                         "metadata": {"name": name}})

        def ready() -> bool:
            sa = self.find(f"/api/v1/namespaces/{name}/serviceaccounts/default")
            return bool(sa and sa.get("secrets"))

        eventually(ready, timeout=60, what=f"default ServiceAccount of {name}")

    def events(self, namespace: str, pod: str) -> list[dict[str, Any]]:
        items = self.get(f"/api/v1/namespaces/{namespace}/events",
                         fieldSelector=f"involvedObject.name={pod}")["items"]
        return list(items)

    def apps(self, namespace: str, kind: str, name: str = "") -> str:
        path = f"/apis/apps/v1/namespaces/{namespace}/{kind}"
        return f"{path}/{name}" if name else path


def pod_address(pod: dict[str, Any]) -> str | None:
    """The address of the pod's args annotation (``common.ipinfos[0].ip`` without prefix)."""
    raw = (pod["metadata"].get("annotations") or {}).get(ARGS_ANNOTATION)
    if not raw:
        return None
    infos = json.loads(raw).get("common", {}).get("ipinfos") or []
    return str(infos[0]["ip"]).split("/", 1)[0] if infos else None


def is_bound(pod: dict[str, Any] | None) -> bool:
    return bool(pod and pod["spec"].get("nodeName"))


# --- the kubelet's part ----------------------------------------------------------------------

@dataclass
class Kubelet:
    """Reports bound pods Running and finishes graceful deletions, for every node.

    Watches all pods from a thread (list, then watch from the list's resourceVersion; re-list
    on any error) and acts through a small thread pool. ``bound_at`` holds, per pod UID, the
    monotonic time the watch first saw the pod bound (the create->bound measurement).
    """

    kube: Kube
    node_ips: dict[str, str]
    #: How long a graceful deletion stays Terminating before the "kubelet" confirms it.
    grace_delay: float = 2.0
    bound_at: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _running: set[str] = field(default_factory=set)
    _finishing: set[str] = field(default_factory=set)
    _timers: list[threading.Timer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(8, thread_name_prefix="kubelet"))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch_forever, name="kubelet-watch",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        for timer in self._timers:
            timer.cancel()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _watch_forever(self) -> None:
        while not self._stop.is_set():
            try:
                with self.kube.client(httpx.Timeout(10.0, read=120.0)) as http:
                    while not self._stop.is_set():
                        self._watch_once(http)
            except Exception as exc:  # supervised: note it, re-list
                if not self._stop.is_set():
                    self.errors.append(f"watch: {exc!r}")
                    time.sleep(0.5)

    def _watch_once(self, http: httpx.Client) -> None:
        """List, then watch from the list's resourceVersion in short requests (so ``stop``
        takes effect within seconds), resuming from the last event; re-list on ERROR."""
        listed = http.get("/api/v1/pods")
        listed.raise_for_status()
        body = listed.json()
        for pod in body["items"]:
            self._seen(pod)
        version = body["metadata"]["resourceVersion"]
        while not self._stop.is_set():
            params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "true",
                      "timeoutSeconds": "3"}
            with http.stream("GET", "/api/v1/pods", params=params) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if not line:
                        continue
                    event = json.loads(line)
                    if event["type"] == "ERROR":
                        return  # 410 Gone and friends: re-list
                    version = event["object"]["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._seen(event["object"])

    def _seen(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        uid, node = meta["uid"], spec.get("nodeName")
        if not node:
            return
        self.bound_at.setdefault(uid, time.monotonic())
        if meta.get("deletionTimestamp"):
            if uid not in self._finishing:
                self._finishing.add(uid)
                # A timer, not a sleeping pool thread: many Terminating pods at once must
                # not hold up the Running reports behind them.
                timer = threading.Timer(self.grace_delay, self._finish_later,
                                        (meta["namespace"], meta["name"], uid))
                timer.daemon = True
                self._timers.append(timer)
                timer.start()
        elif uid not in self._running and pod.get("status", {}).get("phase") != "Running":
            self._running.add(uid)
            self._pool.submit(self._guard, self._report_running, pod)

    def _guard(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self.errors.append(f"{fn.__name__}: {exc!r}")

    def _finish_later(self, namespace: str, name: str, uid: str) -> None:
        with contextlib.suppress(RuntimeError):  # the pool shut down meanwhile
            if not self._stop.is_set():
                self._pool.submit(self._guard, self._finish_deletion, namespace, name, uid)

    def _finish_deletion(self, namespace: str, name: str, uid: str) -> None:
        if not self._stop.is_set():
            self.kube.delete_pod(namespace, name, grace=0, uid=uid)

    def _report_running(self, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status: dict[str, Any] = {
            "phase": "Running", "hostIP": self.node_ips.get(spec["nodeName"], ""),
            "startTime": now,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": now}
                           for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")],
            "containerStatuses": [
                {"name": c["name"], "image": c["image"], "imageID": "", "ready": True,
                 "started": True, "restartCount": 0, "state": {"running": {"startedAt": now}}}
                for c in spec["containers"]],
        }
        address = pod_address(pod)
        if address:
            status.update(podIP=address, podIPs=[{"ip": address}])
        self.kube.request("PATCH", f"/api/v1/namespaces/{meta['namespace']}/pods/"
                          f"{meta['name']}/status", ok=(404, 409),
                          content=json.dumps({"status": status}),
                          headers={"Content-Type": "application/merge-patch+json"})


def create_node(kube: Kube, name: str, address: str) -> None:
    """A Ready node with an InternalIP and room for many pods, without the not-ready taint
    that the TaintNodesByCondition admission puts on every new Node."""
    kube.post("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", "metadata": {
        "name": name, "labels": {"kubernetes.io/hostname": name, "e2e/node": name}}})
    kube.patch(f"/api/v1/nodes/{name}", {"spec": {"taints": None}})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    room = {"cpu": "64", "memory": "256Gi", "pods": "1000"}
    kube.patch(f"/api/v1/nodes/{name}/status", {"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                        "lastHeartbeatTime": now, "lastTransitionTime": now}],
        "addresses": [{"type": "InternalIP", "address": address},
                      {"type": "Hostname", "address": name}],
        "capacity": room, "allocatable": room}})
    node = kube.get(f"/api/v1/nodes/{name}")
    assert not node["spec"].get("taints"), node["spec"]


# --- the service's database ------------------------------------------------------------------

class Postgres:
    """The service's own database: migrated by ``ipam migrate`` as its owner, used by the
    service as a login role that is only a member of ``ipam_app`` (owns nothing), queried
    by the tests from an event loop of its own (tests stay synchronous)."""

    def __init__(self, admin_dsn: str) -> None:
        self.admin_dsn = admin_dsn
        self.name = f"ipam_e2e_{os.getpid()}_{int(time.time())}"
        self.role = f"{self.name}_svc"
        self._conn: asyncpg.Connection | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="e2e-postgres",
                                        daemon=True)
        self._thread.start()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=60)

    def _dsn(self, database: str, user: str | None = None) -> tuple[str, dict[str, str]]:
        base, _, query = self.admin_dsn.partition("?")
        kwargs = {"host": query.split("=", 1)[1]} if query.startswith("host=") else {}
        base = base.rsplit("/", 1)[0]
        if user is not None:
            scheme, rest = base.split("://", 1)
            base = f"{scheme}://{user}@{rest.split('@', 1)[-1]}"
        return f"{base}/{database}", kwargs

    def url(self, user: str | None = None) -> str:
        """SQLAlchemy URL of the database, as the owner or as ``user``."""
        dsn, kwargs = self._dsn(self.name, user)
        url = dsn.replace("postgresql://", "postgresql+asyncpg://", 1)
        return f"{url}?host={kwargs['host']}" if kwargs else url

    async def _admin(self, *statements: str, database: str | None = None) -> None:
        admin_db = self.admin_dsn.partition("?")[0].rsplit("/", 1)[1]
        dsn, kwargs = self._dsn(database or admin_db)
        conn = await asyncpg.connect(dsn, **kwargs)
        try:
            for sql in statements:
                await conn.execute(sql)
        finally:
            await conn.close()

    def create(self) -> None:
        """The empty database; ``ipam migrate`` (as the owner) creates the schema."""
        self._run(self._admin(f'CREATE DATABASE "{self.name}"'))

    def create_service_role(self) -> str:
        """A login role that is a member of the migrated ``ipam_app`` group; its URL."""
        self._run(self._admin(f'CREATE ROLE "{self.role}" LOGIN IN ROLE ipam_app'))
        return self.url(self.role)

    async def _close(self) -> None:
        if self._conn is not None:
            await self._conn.close()

    def drop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(self._close())
        with contextlib.suppress(Exception):
            self._run(self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)',
                                  f'DROP ROLE IF EXISTS "{self.role}"'))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _query(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        # One connection kept for the session: a connection per query churns the shared
        # server's slots, which a busy machine's other test runs may have used up.
        if self._conn is None or self._conn.is_closed():
            dsn, kwargs = self._dsn(self.name)
            self._conn = await asyncpg.connect(dsn, **kwargs)
        return [dict(r) for r in await self._conn.fetch(sql, *args)]

    def query(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return self._run(self._query(sql, args))

    def taken(self, namespace: str | None = None, *,
              states: tuple[str, ...] = ("allocated", "kept", "reserved", "quarantined")
              ) -> list[dict[str, Any]]:
        """Address rows in these states (default: every one but free), as text."""
        sql = ("SELECT host(address) AS address, state, owner_key, pod_namespace, pod_name, "
               "pod_uid, node FROM addresses WHERE state = ANY($1::text[])")
        if namespace is None:
            return self.query(sql + " ORDER BY address", list(states))
        return self.query(sql + " AND (pod_namespace = $2 OR owner_key LIKE $3) "
                          "ORDER BY address", list(states), namespace, f"%/{namespace}/%")

    def held(self, namespace: str | None = None) -> list[dict[str, Any]]:
        """Rows someone holds: allocated, kept or reserved (not free, not quarantined, the
        cool-down of a released address)."""
        return self.taken(namespace, states=("allocated", "kept", "reserved"))


# --- ipam serve ------------------------------------------------------------------------------

class IpamService:
    """``ipam serve`` against the real API server, as the ``ipam`` ServiceAccount."""

    def __init__(self, plane: ControlPlane, database_url: str, migrate_url: str,
                 pools_file: Path, tokens_file: Path) -> None:
        self.plane = plane
        self.port, self.extender_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extender_url = f"https://127.0.0.1:{self.extender_port}/v1"
        pki = plane.pki
        env = {k: v for k, v in os.environ.items() if not k.startswith("IPAM_")}
        env.update(
            IPAM_DATABASE_URL=database_url, IPAM_MIGRATE_DATABASE_URL=migrate_url,
            IPAM_HOST="127.0.0.1", IPAM_PORT=str(self.port),
            IPAM_EXTENDER_HOST="127.0.0.1", IPAM_EXTENDER_PORT=str(self.extender_port),
            IPAM_EXTENDER_TLS_CERT=str(pki / "extender.crt"),
            IPAM_EXTENDER_TLS_KEY=str(pki / "extender.key"),
            IPAM_EXTENDER_TLS_CLIENT_CA=str(pki / "extender-ca.crt"),
            IPAM_KUBECONFIG=str(plane.run / "ipam.kubeconfig"),
            IPAM_POOLS_FILE=str(pools_file), IPAM_AUTH_TOKENS_PATH=str(tokens_file),
            IPAM_DATA_DIR=str(plane.run / "ipam-data"), IPAM_SHUTDOWN_GRACE_SECONDS="3",
            # A released address cools down before another owner takes it (default 30 s);
            # shorter here so the tests that wait for "free" do not wait half a minute.
            IPAM_QUARANTINE_SECONDS="5")
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = plane.run / "log" / "ipam.log"
        self.starts = 0

    def extender_client(self, *, with_cert: bool = True) -> httpx.Client:
        """An HTTPS client of the extender listener, as kube-scheduler is (client cert)."""
        pki = self.plane.pki
        context = ssl.create_default_context(cafile=str(pki / "extender-ca.crt"))
        if with_cert:
            context.load_cert_chain(str(pki / "scheduler-client.crt"),
                                    str(pki / "scheduler-client.key"))
        return httpx.Client(base_url=self.extender_url.removesuffix("/v1"), verify=context,
                            timeout=httpx.Timeout(30.0))

    def migrate(self) -> None:
        """``ipam migrate`` as the tables' owner (IPAM_MIGRATE_DATABASE_URL), as an operator
        or the chart's Job does before the service starts."""
        done = subprocess.run([sys.executable, "-m", "ipam", "migrate"], env=self.env,
                              cwd=self.plane.run, capture_output=True, text=True, timeout=120,
                              check=False)
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts} ---\n".encode())
            out.flush()
            self.proc = subprocess.Popen([sys.executable, "-m", "ipam", "serve"], env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT, cwd=self.plane.run)
        (self.plane.run / "pid" / "ipam").write_text(str(self.proc.pid))

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"ipam serve exited {self.proc.returncode}: "
                                     f"{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code != 200:
                    return False
                with self.extender_client() as ext:
                    return ext.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        eventually(ready, timeout=120, what="ipam serve ready (/readyz, extender listener)",
                   interval=0.3)

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, as a crashed process."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        (self.plane.run / "pid" / "ipam").unlink(missing_ok=True)
        return self.proc.returncode


# --- the session's cluster ----------------------------------------------------------------

#: node -> InternalIP. Pool "a" routes from 10.10.100.0/24, pool "b" from 10.10.101.0/24;
#: node-x sits in no routable subnet.
NODES = {"node-a1": "10.10.100.11", "node-a2": "10.10.100.12", "node-b1": "10.10.101.11",
         "node-x": "192.168.77.5"}
ROUTABLE = {"node-a1", "node-a2", "node-b1"}
POOLS = [
    {"routableSubnet": "10.10.100.0/24", "ips": ["10.11.128.1~10.11.135.253"],
     "subnet": "10.11.128.0/21", "gateway": "10.11.135.254", "vlan": 1200},
    {"routableSubnet": "10.10.101.0/24", "ips": ["10.12.0.10~10.12.0.250"],
     "subnet": "10.12.0.0/24", "gateway": "10.12.0.1", "vlan": 1300},
]
#: pool subnet per node, to check an address routes from the node it was bound to.
SUBNET_OF_NODE = {"node-a1": "10.11.128.0/21", "node-a2": "10.11.128.0/21",
                  "node-b1": "10.12.0.0/24"}

#: Figures printed at the end of the session (create->bound latency, wall times).
REPORT: dict[str, str] = {}


@dataclass
class Cluster:
    plane: ControlPlane
    kube: Kube
    kubelet: Kubelet
    ipam: IpamService
    db: Postgres
    admin_token: str
    read_token: str
    namespaces: list[str] = field(default_factory=list)

    def namespace(self, prefix: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", prefix.lower()).strip("-")[:40]
        name = f"{slug}-{uuid.uuid4().hex[:6]}"
        self.kube.create_namespace(name)
        self.namespaces.append(name)
        return name

    def use_scheduler(self, *, node_cache_capable: bool) -> None:
        """Make sure kube-scheduler runs in this extender mode (restart only on a change)."""
        if self.plane.node_cache_capable is not node_cache_capable:
            self.plane.start_scheduler(node_cache_capable, kube=self.kube)


# --- workloads -------------------------------------------------------------------------------

def container(name: str = "app") -> dict[str, Any]:
    return {"name": name, "image": "busybox:1.36", "command": ["sleep", "3600"],
            "resources": {"limits": {ENI_IP: "1"}}}


def pod_spec(**extra: Any) -> dict[str, Any]:
    return {"containers": [container()], "terminationGracePeriodSeconds": 30, **extra}


def pod_manifest(name: str, *, annotations: dict[str, str] | None = None,
                 labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": labels or {"app": name},
                         "annotations": annotations or {}},
            "spec": pod_spec(**spec)}


def deployment_manifest(name: str, replicas: int, *, policy: str | None,
                        strategy: dict[str, Any] | None = None) -> dict[str, Any]:
    annotations = {POLICY_ANNOTATION: policy} if policy else {}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "strategy": strategy or {"type": "RollingUpdate", "rollingUpdate": {
                         "maxSurge": 1, "maxUnavailable": 0}},
                     "template": {"metadata": {"labels": {"app": name},
                                               "annotations": annotations},
                                  "spec": pod_spec()}}}


def statefulset_manifest(name: str, replicas: int, *, policy: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
            "spec": {"replicas": replicas, "serviceName": name,
                     "podManagementPolicy": "Parallel",
                     "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name},
                                               "annotations": {POLICY_ANNOTATION: policy}},
                                  "spec": pod_spec()}}}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.4999)))
    return ordered[rank - 1]


@contextlib.contextmanager
def timed() -> Iterator[list[float]]:
    box: list[float] = []
    start = time.monotonic()
    try:
        yield box
    finally:
        box.append(time.monotonic() - start)
