"""``python -m bench real-scheduler``: a real kube-scheduler 1.20 with and without the extender.

What users feel is the scheduler's throughput, so this runs the real control plane of
tests/e2e_real (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, built by
``tests/e2e_real/realkube/build.sh``) on loopback, with ``ipam serve`` on its TLS extender
listener and its own PostgreSQL database, through the e2e suite's own helpers
(``tests/e2e_real/cluster.py``). The same nodes and the same pods go through three modes,
interleaved round by round (the order rotates):

* ``bare``: kube-scheduler without any extender (the shipped config minus ``extenders``);
* ``names``: with ipam, ``nodeCacheCapable: true`` (the shipped config);
* ``full``: with ipam, ``nodeCacheCapable: false`` (the scheduler sends whole Node objects);
* ``names-shipped`` (only with ``--modes``): names mode with the shipped file's qps / burst.

Every mode runs with the client limits the shipped config sets (``clientConnection`` qps /
burst, raised to 1000 / 2000 by the e2e helper): with 1.20's defaults (50 / 100) the bare
scheduler would be measured against its own rate limiter.

Per run: pods/s from the first create to the last pod seen bound (a watch on the namespace,
``spec.nodeName`` set), CPU seconds of every process over that window (``/proc/<pid>/stat``
of etcd, kube-apiserver, kube-controller-manager, kube-scheduler, ipam, the PostgreSQL
backends connected to ipam's database, and this client), and ipam's extender latency
(``ipam_extender_request_seconds`` on ``/metrics``, the run's delta, so a p99 is the upper
bound of the bucket it falls in). Nodes are Ready, untainted, with an InternalIP in the
pool's routable subnet, and advertise ``tke.cloud.tencent.com/eni-ip`` so that the bare
scheduler can place the same pods (the extender config has it ``ignoredByScheduler``).
Pods are deleted (grace 0) after each run, and the next run starts once ipam has released
every address. Everything started is stopped at the end, by pid.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.infra import machine_busy_seconds, proc_cpu_seconds
from bench.report import Section, Target, render, summary

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MODES = ("bare", "names", "full")
#: Not in the default rotation: names mode with the client limits of the shipped file.
EXTRA_MODES = ("names-shipped",)
ARRIVALS = ("stream", "queued")
SHIPPED_CONFIG = ROOT / "manifests" / "scheduler-config-v1beta1.yaml"
#: (nodes, pods per run): the issue's three sizes; the last only with --sizes.
DEFAULT_SIZES = ((100, 1000), (1000, 1000))
QUICK_SIZES = ((20, 60),)
ENI_IP = "tke.cloud.tencent.com/eni-ip"
#: One pool routes from every node: nodes get 10.20.x.y, pods 10.30.x.y.
POOL = {"routableSubnet": "10.20.0.0/16", "ips": ["10.30.0.1~10.30.254.254"],
        "subnet": "10.30.0.0/16", "gateway": "10.30.255.254", "vlan": 2000}
LEASE = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kube-scheduler"
PROCESSES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "ipam",
             "postgres", "client")


def node_name(i: int) -> str:
    return f"bench-node-{i:05d}"


def node_address(i: int) -> str:
    return f"10.20.{i // 250}.{i % 250 + 1}"


# -- the environment --------------------------------------------------------------------------
@dataclass
class Env:
    """The control plane, the admin client, ipam and its database (tests/e2e_real's parts)."""

    plane: Any
    kube: Any
    ipam: Any
    db: Any
    read_token: str
    nodes: int = 0
    mode: str | None = None
    scheduler_metrics: str = ""

    # ---- nodes ----
    def grow_nodes(self, count: int, parallel: int = 12) -> float:
        """Create nodes up to ``count`` (Ready, InternalIP, eni-ip capacity); seconds taken."""
        from tests.e2e_real.cluster import create_node

        def one(i: int) -> None:
            name = node_name(i)
            create_node(self.kube, name, node_address(i))
            room = {ENI_IP: "1000"}
            self.kube.patch(f"/api/v1/nodes/{name}/status",
                            {"status": {"capacity": room, "allocatable": room}})

        started = time.monotonic()
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(one, range(self.nodes, count)))
        self.nodes = max(self.nodes, count)
        self._wait_ipam_knows_nodes()
        return time.monotonic() - started

    def _wait_ipam_knows_nodes(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        seen = -1
        while time.monotonic() < deadline:
            reply = httpx.get(f"{self.ipam.url}/v1/usage/node-subnets", timeout=30,
                              headers={"Authorization": f"Bearer {self.read_token}"})
            reply.raise_for_status()
            seen = sum(s["nodes"] for p in reply.json()["items"] for s in p["node_subnets"])
            if seen >= self.nodes:
                return
            time.sleep(0.5)
        raise RuntimeError(f"ipam knows {seen} of {self.nodes} nodes after {timeout:.0f} s")

    # ---- kube-scheduler ----
    def use_mode(self, mode: str) -> None:
        """(Re)start kube-scheduler in ``mode``. As ``ControlPlane.start_scheduler`` with
        ``kube`` (old lease deleted, so the new one leads at once), plus the bare mode, which
        drops the ``extenders`` block."""
        doc: dict[str, Any] = self.plane.scheduler_config(
            node_cache_capable=mode in ("names", "names-shipped"))
        if mode == "bare":
            del doc["extenders"]
        if mode == "names-shipped":  # the client limits as shipped, not the helper's 1000/2000
            shipped = yaml.safe_load(SHIPPED_CONFIG.read_text())["clientConnection"]
            for key in ("qps", "burst"):
                if key in shipped:
                    doc["clientConnection"][key] = shipped[key]
                else:
                    doc["clientConnection"].pop(key, None)
        self.scheduler_metrics = f"http://{doc['metricsBindAddress']}/metrics"
        (self.plane.run / "scheduler-config.yaml").write_text(yaml.safe_dump(doc))
        self.plane.stop("kube-scheduler")
        self.kube.delete(LEASE)
        self.plane.script("start.sh", "scheduler")
        self.plane.node_cache_capable = None if mode == "bare" else mode != "full"
        self.mode = mode

    def stop_scheduler(self) -> None:
        self.plane.stop("kube-scheduler")
        self.kube.delete(LEASE)
        self.mode = None

    def scheduler_attempts(self) -> dict[str, float]:
        """kube-scheduler's ``scheduler_schedule_attempts_total`` by result."""
        out: dict[str, float] = {}
        with contextlib.suppress(httpx.HTTPError):
            text = httpx.get(self.scheduler_metrics, timeout=10).text
            for family in text_string_to_metric_families(text):
                if family.name == "scheduler_schedule_attempts":
                    for s in family.samples:
                        if s.name.endswith("_total"):
                            key = s.labels.get("result", "?")
                            out[key] = out.get(key, 0.0) + s.value
        return out

    # ---- what the run costs ----
    def pids(self) -> dict[str, list[int]]:
        """Every process of the run by role; PostgreSQL: the backends on ipam's database."""
        out: dict[str, list[int]] = {}
        for role in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            path = self.plane.run / "pid" / role
            out[role] = [int(path.read_text())] if path.exists() else []
        out["ipam"] = [self.ipam.proc.pid] if self.ipam.proc is not None else []
        rows = self.db.query("SELECT pid FROM pg_stat_activity WHERE datname = $1 "
                             "AND pid <> pg_backend_pid()", self.db.name)
        out["postgres"] = [int(r["pid"]) for r in rows]
        out["client"] = [os.getpid()]
        return out

    def extender_histogram(self) -> dict[tuple[str, str], dict[float, float]]:
        """``ipam_extender_request_seconds`` cumulative buckets by (verb, outcome)."""
        text = httpx.get(f"{self.ipam.url}/metrics", timeout=30).text
        out: dict[tuple[str, str], dict[float, float]] = {}
        for family in text_string_to_metric_families(text):
            if family.name != "ipam_extender_request_seconds":
                continue
            for s in family.samples:
                if s.name.endswith("_bucket"):
                    key = (s.labels["verb"], s.labels["outcome"])
                    out.setdefault(key, {})[float(s.labels["le"])] = s.value
        return out

    # ---- namespaces ----
    def kube_namespace(self, prefix: str) -> str:
        name = f"{prefix}-{secrets.token_hex(3)}"
        self.kube.create_namespace(name)
        return name

    def cleanup(self, namespace: str, timeout: float = 300) -> None:
        """Delete the run's pods at once (no kubelet would confirm a graceful deletion), then the
        namespace; wait until ipam has freed every address, so runs do not overlap."""
        self.kube.delete(f"/api/v1/namespaces/{namespace}/pods",
                         {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
        deadline = time.monotonic() + timeout
        while self.kube.pods(namespace) and time.monotonic() < deadline:
            time.sleep(0.5)
        self.kube.delete(f"/api/v1/namespaces/{namespace}")
        while self.taken() and time.monotonic() < deadline:
            time.sleep(0.5)
        if self.taken():
            raise RuntimeError(f"ipam still holds {self.taken()} addresses {timeout:.0f} s after "
                               f"the pods of {namespace} were deleted")

    def taken(self) -> int:
        rows = self.db.query("SELECT count(*) AS n FROM addresses WHERE state <> 'free'")
        return int(rows[0]["n"])


def histogram_quantile(before: dict[float, float], after: dict[float, float],
                       q: float) -> tuple[float, int]:
    """(upper bound in ms of the bucket holding quantile ``q`` of the delta, samples)."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return float("nan"), 0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= q * total:
            return bound * 1000, int(total)
    return float("inf"), int(total)


@contextlib.contextmanager
def environment(workdir: Path, extra_ipam_env: dict[str, str] | None = None) -> Iterator[Env]:
    """Control plane + RBAC + ipam serve + database, as tests/e2e_real/conftest.py wires them;
    everything stopped (by pid) and dropped on exit."""
    from tests.e2e_real.cluster import (
        MANIFESTS,
        REALKUBE_DIR,
        ControlPlane,
        IpamService,
        Kube,
        Postgres,
        missing_binaries,
    )
    from tests.pg import server_dsn

    missing = missing_binaries()
    if missing:
        raise SystemExit(f"real control plane not built ({', '.join(missing)} missing): "
                         "run tests/e2e_real/realkube/build.sh (~5 min, needs root)")
    plane = ControlPlane(workdir / "run")
    kube = db = ipam = None
    try:
        plane.start()
        applied = plane.kubectl("apply", "-f", str(MANIFESTS / "rbac.yaml"))
        if applied.returncode != 0:
            raise RuntimeError(applied.stderr)
        kube = Kube(plane.server, plane.pki / "ca.crt", plane.admin_token)
        conf = plane.run / "ipam-conf"
        conf.mkdir()
        pools = conf / "floatingips.json"
        pools.write_text(json.dumps([POOL]))
        admin_token, read_token = secrets.token_hex(20), secrets.token_hex(20)
        tokens = conf / "tokens"
        tokens.write_text(f"bench-admin:admin:{admin_token}\nbench-reader:read:{read_token}\n")
        db = Postgres(server_dsn(workdir / "pg"))
        db.create()
        ipam = IpamService(plane, db.url(), db.url(), pools, tokens)
        ipam.migrate()
        ipam.env["IPAM_DATABASE_URL"] = db.create_service_role()
        ipam.env.update(extra_ipam_env or {})
        ipam.start()
        plane.extender_url = ipam.extender_url
        yield Env(plane, kube, ipam, db, read_token)
    finally:
        with contextlib.suppress(Exception):
            plane.stop("kube-scheduler")
        if ipam is not None:
            with contextlib.suppress(Exception):
                ipam.stop()
        if kube is not None:
            kube.close()
        if db is not None:
            db.drop()
        with contextlib.suppress(Exception):
            plane.stop()
        # The logs (ipam's included) outlive the run dir, as the e2e suite keeps its own.
        kept = REALKUBE_DIR / "bench-last-logs"
        shutil.rmtree(kept, ignore_errors=True)
        if (plane.run / "log").is_dir():
            shutil.copytree(plane.run / "log", kept, symlinks=True)
            print(f"# logs in {kept}", flush=True)


# -- one run ----------------------------------------------------------------------------------
@dataclass
class BoundWatch:
    """A watch on the namespace's pods: when each one was first seen with a node, and its
    address annotation. Ends by itself when every pod is bound or at the deadline."""

    env: Env
    namespace: str
    expected: int
    deadline_s: float
    bound_at: dict[str, float] = field(default_factory=dict)
    addresses: dict[str, str | None] = field(default_factory=dict)
    error: str = ""
    #: Called from the watch thread when the first pod is seen bound (queued arrival).
    on_first: Callable[[], None] | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._run, name="bound-watch", daemon=True).start()
        if not self.ready.wait(30):
            raise RuntimeError(f"watch did not start: {self.error}")

    def _run(self) -> None:
        from tests.e2e_real.cluster import pod_address

        try:
            listed = self.env.kube.get(f"/api/v1/namespaces/{self.namespace}/pods")
            params = {"watch": "1", "resourceVersion": listed["metadata"]["resourceVersion"],
                      "timeoutSeconds": str(int(self.deadline_s) + 5)}
            timeout = httpx.Timeout(10.0, read=self.deadline_s + 30)
            with self.env.kube.client(timeout) as http, http.stream(
                    "GET", f"/api/v1/namespaces/{self.namespace}/pods",
                    params=params) as response:
                response.raise_for_status()
                self.ready.set()
                for line in response.iter_lines():
                    if not line:
                        continue
                    event = orjson.loads(line)
                    obj = event["object"]
                    if event["type"] == "ERROR":
                        self.error = str(obj.get("message"))
                        return
                    name = obj["metadata"]["name"]
                    if obj["spec"].get("nodeName") and name not in self.bound_at:
                        if not self.bound_at and self.on_first is not None:
                            self.on_first()
                        self.bound_at[name] = time.monotonic()
                        self.addresses[name] = pod_address(obj)
                        if len(self.bound_at) >= self.expected:
                            return
        except Exception as exc:  # reported with the run
            self.error = repr(exc)
        finally:
            self.ready.set()
            self.done.set()


def cpu_snapshot(pids: dict[str, list[int]]) -> dict[int, float]:
    return {pid: proc_cpu_seconds(pid) for group in pids.values() for pid in group}


def run_once(env: Env, size: tuple[int, int], mode: str, round_no: int,
             arrival: str = "stream", profile_dir: Path | None = None) -> dict[str, Any]:
    """One measured run: create the pods, wait until all are bound, clean up.

    ``stream``: the scheduler runs while the pods are created; the clock runs from the first
    create to the last bound (so the creating client can be the limit, see create_seconds).
    ``queued``: the pods are created while no scheduler runs, then the scheduler starts; the
    clock and the CPU counters run from the first bound to the last (the scheduler's
    throughput with a full queue, whatever the client's create rate).
    """
    from tests.e2e_real.cluster import pod_manifest

    nodes, pods = size
    if arrival == "stream":
        env.use_mode(mode)
    else:
        env.stop_scheduler()
    namespace = env.kube_namespace(f"rs-{mode}-{nodes}-{round_no}")
    names = [f"p-{i:05d}" for i in range(pods)]
    manifests = [pod_manifest(n) for n in names]
    deadline = max(180.0, pods / 3)
    at_first: dict[str, Any] = {}
    known_pids: dict[str, list[int]] = {}

    def first_bound() -> None:
        # In the watch thread, before the event is timestamped: /proc reads only (~1 ms),
        # the new scheduler's pid from its pid file.
        pids = dict(known_pids)
        path = env.plane.run / "pid" / "kube-scheduler"
        pids["kube-scheduler"] = [int(path.read_text())] if path.exists() else []
        at_first.update(pids=pids, cpu=cpu_snapshot(pids), busy=machine_busy_seconds())

    watch = BoundWatch(env, namespace, pods, deadline,
                       on_first=first_bound if arrival == "queued" else None)
    watch.start()
    hist_before = env.extender_histogram()
    created_at: list[float] = []

    def create(manifest: dict[str, Any]) -> None:
        env.kube.create_pod(namespace, manifest)
        created_at.append(time.monotonic())

    spy = None
    load = os.getloadavg()
    if arrival == "stream":
        attempts_before = env.scheduler_attempts()
        pids_before = env.pids()
        cpu_before = cpu_snapshot(pids_before)
        busy_before = machine_busy_seconds()
        spy = _py_spy(env, profile_dir, f"{nodes}x{pods}-{mode}-r{round_no}") \
            if profile_dir is not None and mode != "bare" else None
    first = create_started = time.monotonic()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(create, manifests))
    if arrival == "queued":
        attempts_before = {}
        known_pids.update(env.pids())
        spy = _py_spy(env, profile_dir, f"{nodes}x{pods}-{mode}-r{round_no}-queued") \
            if profile_dir is not None and mode != "bare" else None
        env.use_mode(mode)
    watch.done.wait(deadline)
    end = max(watch.bound_at.values(), default=time.monotonic())
    busy_end = machine_busy_seconds()
    pids_after = env.pids()
    cpu_after = cpu_snapshot(pids_after)
    if arrival == "queued":
        pids_before = at_first.get("pids", pids_after)
        cpu_before = at_first.get("cpu", cpu_after)
        busy_before = at_first.get("busy", busy_end)
        first = min(watch.bound_at.values(), default=end)
    busy = busy_end - busy_before
    if spy is not None:
        spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(60)
    cpu: dict[str, float] = {}
    for role in PROCESSES:
        group = set(pids_before.get(role, [])) | set(pids_after.get(role, []))
        cpu[role] = round(sum(cpu_after.get(p, 0.0) - cpu_before.get(p, 0.0)
                              for p in group if p in cpu_after), 3)
    hist_after = env.extender_histogram()
    latency = {}
    for verb in ("filter", "prioritize", "bind"):
        key = (verb, "ok")
        if key in hist_after:
            p99, n = histogram_quantile(hist_before.get(key, {}), hist_after[key], 0.99)
            p50, _ = histogram_quantile(hist_before.get(key, {}), hist_after[key], 0.50)
            if n:
                latency[verb] = {"n": n, "p50_ms_le": p50, "p99_ms_le": p99}
    errors = {f"{v}/{o}": int(max(h.values()) - max(hist_before.get((v, o), {0: 0}).values()))
              for (v, o), h in hist_after.items() if o != "ok"}
    attempts_after = env.scheduler_attempts()
    closed = closed_extender_connections(env)
    bound = len(watch.bound_at)
    seconds = end - first
    # queued: the clock starts at the first bound, so it covers the other pods only.
    counted = bound - 1 if arrival == "queued" else bound
    addresses = [a for a in watch.addresses.values() if a]
    result: dict[str, Any] = {
        "nodes": nodes, "pods": pods, "mode": mode, "round": round_no, "arrival": arrival,
        "bound": bound, "complete": bound == pods,
        "seconds": round(seconds, 3),
        "pods_per_s": round(counted / seconds, 2) if bound == pods and seconds > 0 else None,
        "create_seconds": round(max(created_at, default=create_started) - create_started, 3),
        "cpu_pods": counted,
        "cpu_s": cpu, "machine_busy_s": round(busy, 2),
        "loadavg_at_start": load,
        "extender": latency, "extender_failures": {k: v for k, v in errors.items() if v},
        "scheduler_attempts": {k: attempts_after.get(k, 0) - attempts_before.get(k, 0)
                               for k in attempts_after},
        "addresses": len(addresses), "distinct_addresses": len(set(addresses)),
        "extender_connections_closed_60s": closed,
        "watch_error": watch.error,
    }
    if mode != "bare" and (len(addresses) != bound or len(set(addresses)) != bound):
        result["address_problem"] = (f"{bound} bound, {len(addresses)} with an address, "
                                     f"{len(set(addresses))} distinct")
    env.cleanup(namespace)
    return result


def _py_spy(env: Env, out_dir: Path, label: str) -> subprocess.Popen[bytes] | None:
    """py-spy recording ipam for the run (only with --profile: it costs CPU itself). With
    BENCH_PY_SPY_NATIVE=1: C frames too (the process is paused per sample, at 50 Hz)."""
    exe = shutil.which("py-spy")
    if exe is None or env.ipam.proc is None:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    native = os.environ.get("BENCH_PY_SPY_NATIVE") == "1"
    mode = ["--native", "--rate", "50"] if native else ["--nonblocking", "--rate", "200"]
    return subprocess.Popen(
        [exe, "record", "--pid", str(env.ipam.proc.pid), "--format", "raw", *mode,
         "--output", str(out_dir / f"{label}{'-native' if native else ''}.txt")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def closed_extender_connections(env: Env) -> int:
    """Connections to the extender listener that kube-scheduler closed in the last ~60 s
    (its side's TIME_WAIT sockets). Go's http.Transport keeps at most 2 idle connections
    per host (MaxIdleConnsPerHost), so with binds in flight it opens and closes connections,
    and every new one costs a TLS handshake on our side."""
    out = subprocess.run(["ss", "-Htn", "state", "time-wait",
                          f"( dport = :{env.ipam.extender_port} )"],
                         capture_output=True, text=True, timeout=30, check=False)
    return len([line for line in out.stdout.splitlines() if line.strip()])



# -- the report -------------------------------------------------------------------------------
def _median(values: list[float | None]) -> float:
    """Median of the numbers (NaN, stored as JSON null, left out); NaN when none."""
    numbers = [v for v in values if v is not None and v == v]
    return statistics.median(numbers) if numbers else float("nan")


def summarise(runs: list[dict[str, Any]], sizes: list[tuple[int, int]]) -> Section:
    section = Section(
        "real-scheduler", "Real kube-scheduler 1.20: bare vs with ipam (medians of runs)",
        ["nodes x pods", "arrival", "mode", "runs", "pods/s", "vs bare", "ipam+PG CPU ms/pod",
         "ipam ms/pod", "PG ms/pod", "scheduler ms/pod", "apiserver ms/pod", "etcd ms/pod",
         "bind p99 ms <=", "filter p99 ms <="])
    figures: dict[str, Any] = {}
    for r in runs:  # runs recorded before the queued arrival existed
        r.setdefault("arrival", "stream")
        r.setdefault("cpu_pods", r["bound"])
    arrivals = [a for a in ARRIVALS if any(r.get("arrival", "stream") == a for r in runs)]
    for (nodes, pods), arrival in ((size, a) for size in sizes for a in arrivals):
        key = f"{nodes}x{pods}"
        of_size = [r for r in runs if (r["nodes"], r["pods"], r.get("arrival", "stream"))
                   == (nodes, pods, arrival)]
        bare = _median([r["pods_per_s"] for r in of_size
                        if r["mode"] == "bare" and r["pods_per_s"]])
        for mode in MODES + EXTRA_MODES:
            mine = [r for r in of_size if r["mode"] == mode]
            if not mine:
                continue
            rates = [r["pods_per_s"] for r in mine if r["pods_per_s"]]
            rate = _median(rates)

            def per_pod(role: str, mine: list[dict[str, Any]] = mine) -> float:
                return _median([r["cpu_s"][role] * 1000 / r["cpu_pods"] for r in mine
                                if r["cpu_pods"]])

            ours = _median([(r["cpu_s"]["ipam"] + r["cpu_s"]["postgres"]) * 1000
                            / r["cpu_pods"] for r in mine if r["cpu_pods"]])
            bind99 = _median([r["extender"]["bind"]["p99_ms_le"] for r in mine
                              if "bind" in r["extender"]])
            filt99 = _median([r["extender"]["filter"]["p99_ms_le"] for r in mine
                              if "filter" in r["extender"]])
            ratio = rate / bare if bare == bare and bare else float("nan")
            section.rows.append([key, arrival, mode, f"{len(rates)}/{len(mine)}", rate,
                                 ratio if mode != "bare" else 1.0,
                                 ours if mode != "bare" else float("nan"),
                                 per_pod("ipam"), per_pod("postgres"),
                                 per_pod("kube-scheduler"), per_pod("kube-apiserver"),
                                 per_pod("etcd"), bind99, filt99])
            figures[f"{key}/{arrival}/{mode}"] = {
                "pods_per_s_median": rate, "pods_per_s_runs": [r["pods_per_s"] for r in mine],
                "ratio_vs_bare": ratio, "ours_cpu_ms_per_pod": ours,
                "cpu_ms_per_pod": {role: per_pod(role) for role in PROCESSES},
                "bind_p99_ms_le": bind99, "filter_p99_ms_le": filt99}
            tag = f"{key}, {arrival}"
            if mode == "names":
                if (nodes, pods) == (1000, 1000):
                    section.targets.append(Target(
                        f"names mode vs bare, {tag}", ratio, 0.9, "x", op="ge"))
                section.targets.append(Target(
                    f"ipam + PostgreSQL CPU per pod, names, {tag}", ours, 1.5, "ms"))
            if mode == "full":
                section.targets.append(Target(f"full-node mode vs bare, {tag}", ratio, 0.5,
                                              "x", op="ge"))
    section.figures = figures
    incomplete = [r for r in runs if not r["complete"]]
    if incomplete:
        section.notes.append(f"{len(incomplete)} run(s) did not bind every pod in time: "
                             + "; ".join(f"{r['nodes']}x{r['pods']} {r['mode']} r{r['round']}: "
                                         f"{r['bound']}/{r['pods']}" for r in incomplete))
    problems = [r["address_problem"] for r in runs if "address_problem" in r]
    if problems:
        section.notes.append("address problems: " + "; ".join(problems))
    section.notes.append("p99 columns: upper bound of the /metrics bucket holding the p99 "
                         "(buckets 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500 ms ...)")
    return section


def machine() -> dict[str, Any]:
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "memory_gb": round(mem_kb / 1024 / 1024, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_at_start": os.getloadavg()}


def parse_sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        nodes, _, pods = part.strip().partition("x")
        out.append((int(nodes), int(pods)))
    return sorted(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench real-scheduler", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, metavar="NxP,...",
                        help="nodes x pods per run (default 100x1000,1000x1000; the issue's "
                             "third size is 5000x500)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds per size (every mode once per round)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="which of bare,names,full to run (default all three); also "
                             "names-shipped: names mode with the shipped file's qps/burst")
    parser.add_argument("--arrival", choices=[*ARRIVALS, "both"], default="stream",
                        help="stream: pods created while the scheduler runs, clock from the "
                             "first create (the issue's figure); queued: created first, clock "
                             "from the first bound (the scheduler's own rate); both: each run "
                             "twice, interleaved")
    parser.add_argument("--quick", action="store_true",
                        help="20 nodes x 60 pods, 1 round: proves the machinery, figures "
                             "mean nothing")
    parser.add_argument("--json", type=Path, metavar="FILE",
                        help="write every run here (default bench/results/"
                             "real-scheduler-<time>.json)")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="record ipam with py-spy (raw, 200 Hz) during every extender "
                             "run, into DIR; the profiler's CPU skews the figures")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="only summarise the runs of an earlier JSON (e.g. one stopped "
                             "with Ctrl-C: it is written after every run) and rewrite it")
    args = parser.parse_args(argv)
    if args.report is not None:
        return report(args.report)
    sizes = list(QUICK_SIZES) if args.quick else (args.sizes or list(DEFAULT_SIZES))
    rounds = 1 if args.quick else args.rounds
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= set(MODES + EXTRA_MODES):
        parser.error(f"--modes: one or more of {','.join(MODES + EXTRA_MODES)}")
    out = args.json or RESULTS / f"real-scheduler-{time.strftime('%Y%m%d-%H%M%S')}.json"
    doc: dict[str, Any] = {"command": " ".join(["python -m bench real-scheduler",
                                                *(argv if argv is not None else sys.argv[1:])]),
                           "machine": machine(), "sizes": sizes, "rounds": rounds,
                           "modes": modes, "runs": [], "setup": {}}
    workdir = Path(tempfile.mkdtemp(prefix="ipam-bench-realsched-"))
    started = time.monotonic()
    try:
        with environment(workdir) as env:
            for nodes, pods in sizes:
                took = env.grow_nodes(nodes)
                doc["setup"][f"{nodes} nodes"] = round(took, 1)
                print(f"# {nodes} nodes ready ({took:.0f} s)", flush=True)
                for r in range(rounds):
                    order = modes[r % len(modes):] + modes[:r % len(modes)]
                    arrivals = list(ARRIVALS) if args.arrival == "both" else [args.arrival]
                    for mode, arrival in ((m, a) for m in order for a in arrivals):
                        result = run_once(env, (nodes, pods), mode, r, arrival, args.profile)
                        doc["runs"].append(result)
                        print(f"  {nodes}x{pods} r{r} {arrival:6} {mode:5}: "
                              f"{result['pods_per_s'] or 'INCOMPLETE'} pods/s "
                              f"({result['bound']}/{pods} in {result['seconds']} s, create "
                              f"{result['create_seconds']} s, load "
                              f"{result['loadavg_at_start'][0]:.1f}) cpu {result['cpu_s']}",
                              flush=True)
                        out.parent.mkdir(parents=True, exist_ok=True)
                        out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    doc["seconds"] = round(time.monotonic() - started, 1)
    doc["machine"]["loadavg_at_end"] = os.getloadavg()
    out.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return report(out)


def report(path: Path) -> int:
    """Print the summary of the runs in ``path`` and store it there."""
    doc = orjson.loads(path.read_bytes())
    sizes = sorted({(r["nodes"], r["pods"]) for r in doc["runs"]})
    section = summarise(doc["runs"], sizes)
    doc["summary"] = section.to_dict()
    doc["targets"] = [t.to_dict() for t in section.targets]
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    print(render(section))
    print(summary([section]))
    print(f"{len(doc['runs'])} runs; total {doc.get('seconds', '?')} s; JSON in {path}")
    return 0
