"""Static checks of what ships beside the code: manifests/, docker-compose.yml, Dockerfile.

No cluster and no Docker engine here: every file is parsed and checked against the schema it
relies on (field names from the upstream Go types) and against the code it configures (routes,
settings, ports), so a typo or a drift between two files fails a test instead of a rollout.

``EXPECTED_RBAC`` is the permission table of the ipam service account. A test that runs the
controllers against the fake API server can compare the calls they make with it
(``EXPECTED_API_CALLS`` has the shape of ``FakeApiServer.api_calls()``).
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import ValidationError
from starlette.routing import Match

from ipam import __version__
from ipam.engine.pool_config import load_document, parse_pool_config
from ipam.settings import Settings
from tests.system_packages import command

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
GALAXY_FIXTURES = ROOT / "tests" / "fixtures" / "galaxy"

NAMESPACE = "kube-system"
ENI_IP = "tke.cloud.tencent.com/eni-ip"
APP_LABELS = {"app.kubernetes.io/name": "ipam"}
UID = 10001

#: YAML files under manifests/ that are read by a tool, not applied to the API server.
NOT_API_OBJECTS = {
    "kustomization.yaml": ("kustomize.config.k8s.io/v1beta1", "Kustomization"),
    "scheduler-config.yaml": ("kubescheduler.config.k8s.io/v1", "KubeSchedulerConfiguration"),
    "scheduler-config-v1beta1.yaml": ("kubescheduler.config.k8s.io/v1beta1",
                                      "KubeSchedulerConfiguration"),
}
#: What `kubectl apply -k manifests/` deploys.
KUSTOMIZE_RESOURCES = {"rbac.yaml", "deployment.yaml", "service.yaml", "pdb.yaml"}
#: Kept out of the kustomization on purpose (see its header): the sample pool ConfigMap would
#: replace a galaxy user's live one, a Job cannot be re-applied with a new image.
KUSTOMIZE_EXCLUDED = {"scheduler-config.yaml", "scheduler-config-v1beta1.yaml",
                      "scheduler-policy-legacy.yaml", "cloudnativepg-cluster.yaml",
                      "example-workload.yaml", "floatingip-config.yaml", "migrate-job.yaml"}
#: May be added (cni-daemonset.yaml where it replaces galaxy's CNI; networkpolicy.yaml once it
#: names the control plane's addresses).
KUSTOMIZE_OPTIONAL = {"cni-daemonset.yaml", "networkpolicy.yaml"}
#: The extender's TLS listener and the Secrets it reads (docs/security.md).
EXTENDER_PORT = 9443
EXTENDER_TLS_SECRET = "ipam-extender-tls"
SCHEDULER_CERT_DIR = "/etc/kubernetes/ipam"


class Grant(NamedTuple):
    """Verbs on one resource, cluster-wide ("cluster") or in one namespace."""

    scope: str
    api_group: str
    #: "pods", or "pods/binding" for a subresource (RBAC's spelling).
    resource: str
    verbs: frozenset[str]
    #: Empty: any object of the resource; else only these names.
    resource_names: frozenset[str] = frozenset()


def _grant(scope: str, group: str, resource: str, verbs: str, names: str = "") -> Grant:
    return Grant(scope, group, resource, frozenset(verbs.split()), frozenset(names.split()))


#: Exactly what manifests/rbac.yaml grants the "ipam" service account; nothing else.
EXPECTED_RBAC: frozenset[Grant] = frozenset({
    _grant("cluster", "", "pods", "get list watch"),
    _grant("cluster", "", "pods/binding", "create"),
    _grant("cluster", "", "events", "create"),
    _grant("cluster", "", "nodes", "get list watch"),
    _grant("cluster", "apps", "replicasets", "get"),
    _grant("cluster", "apps", "deployments", "get"),
    _grant("cluster", "apps", "statefulsets", "get"),
    _grant(NAMESPACE, "", "configmaps", "list watch", "floatingip-config"),
})
#: (apiGroup, resource[/subresource], verb) triples, as ``FakeApiServer.api_calls()`` returns.
EXPECTED_API_CALLS: frozenset[tuple[str, str, str]] = frozenset(
    (g.api_group, g.resource, verb) for g in EXPECTED_RBAC for verb in g.verbs)

#: json tags of k8s.io/kube-scheduler/config/v1 Extender (staging/src/k8s.io/kube-scheduler/
#: config/v1/types.go) and of the legacy Policy's LegacyExtender (removed in 1.23).
V1_EXTENDER_FIELDS = {"urlPrefix", "filterVerb", "preemptVerb", "prioritizeVerb", "weight",
                      "bindVerb", "enableHTTPS", "tlsConfig", "httpTimeout", "nodeCacheCapable",
                      "managedResources", "ignorable"}
LEGACY_EXTENDER_FIELDS = (V1_EXTENDER_FIELDS - {"enableHTTPS"}) | {"enableHttps"}
EXPECTED_TLS_CONFIG = {"certFile": f"{SCHEDULER_CERT_DIR}/tls.crt",
                       "keyFile": f"{SCHEDULER_CERT_DIR}/tls.key",
                       "caFile": f"{SCHEDULER_CERT_DIR}/ca.crt"}
EXPECTED_EXTENDER: dict[str, Any] = {
    "urlPrefix": f"https://ipam.kube-system.svc:{EXTENDER_PORT}/v1",
    "filterVerb": "filter",
    "prioritizeVerb": "prioritize",
    "bindVerb": "bind",
    "weight": 1,
    "enableHTTPS": True,
    "tlsConfig": EXPECTED_TLS_CONFIG,
    "nodeCacheCapable": True,
    "ignorable": False,
    "httpTimeout": "5s",
    "managedResources": [{"name": ENI_IP, "ignoredByScheduler": True}],
}


# --- loading ---------------------------------------------------------------------------------

def yaml_files() -> list[Path]:
    """Every YAML file but the Helm chart's (templates, not YAML; tests/manifests/test_helm.py
    renders and checks them)."""
    return sorted(p for p in MANIFESTS.rglob("*") if p.suffix in (".yaml", ".yml")
                  and "helm" not in p.relative_to(MANIFESTS).parts)


@functools.cache
def docs(name: str) -> tuple[dict[str, Any], ...]:
    """The non-empty documents of manifests/<name>."""
    text = (MANIFESTS / name).read_text()
    return tuple(d for d in yaml.safe_load_all(text) if d is not None)


def one(name: str, kind: str, obj_name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs(name) if d.get("kind") == kind
             and (obj_name is None or d["metadata"]["name"] == obj_name)]
    assert len(found) == 1, f"{name}: expected one {kind} {obj_name or ''}, found {len(found)}"
    return found[0]


def deployment() -> dict[str, Any]:
    return one("deployment.yaml", "Deployment", "ipam")


def pod_spec() -> dict[str, Any]:
    return deployment()["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    (c,) = [c for c in pod_spec()["containers"] if c["name"] == "ipam"]
    return c


def service() -> dict[str, Any]:
    return one("service.yaml", "Service", "ipam")


def container_port(name: str = "http") -> int:
    (port,) = [p["containerPort"] for p in container()["ports"] if p["name"] == name]
    return int(port)


def env(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def settings_from(environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """``Settings`` as the process would read them with exactly these IPAM_ variables."""
    for key in list(os.environ):
        if key.startswith("IPAM_"):
            monkeypatch.delenv(key)
    for key, value in environ.items():
        monkeypatch.setenv(key, value)
    return Settings()


@functools.cache
def app() -> Any:
    """The service as the quickstart builds it (REST port open, so the verbs are on it)."""
    from ipam.app import create_app  # creating the app connects nowhere

    return create_app(Settings())


def has_route(method: str, path: str) -> bool:
    """Whether the app dispatches this request to a route (as its router would)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "",
             "query_string": b"", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in app().routes)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def quantity_bytes(value: str | int) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 10**3, "M": 10**6, "G": 10**9}
    match = re.fullmatch(r"(\d+)([KMG]i|[kMG])?", str(value))
    assert match, f"not a memory quantity: {value!r}"
    return int(match.group(1)) * units.get(match.group(2) or "", 1)


def pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file, pod template) of every workload under manifests/."""
    for path in yaml_files():
        rel = str(path.relative_to(MANIFESTS))
        if rel in NOT_API_OBJECTS:
            continue
        for doc in docs(rel):
            template = doc.get("spec", {}).get("template") if isinstance(doc, dict) else None
            if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet") and template:
                yield rel, doc


# --- every file ------------------------------------------------------------------------------

def test_the_manifests_are_there() -> None:
    names = {str(p.relative_to(MANIFESTS)) for p in yaml_files()}
    assert names >= KUSTOMIZE_RESOURCES | KUSTOMIZE_EXCLUDED | {"kustomization.yaml"}


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_document_is_a_named_object(path: Path) -> None:
    rel = str(path.relative_to(MANIFESTS))
    documents = docs(rel)
    assert documents, f"{rel} has no document"
    for doc in documents:
        assert isinstance(doc, dict), f"{rel}: a document is not a mapping"
        assert isinstance(doc.get("apiVersion"), str) and doc["apiVersion"], rel
        assert isinstance(doc.get("kind"), str) and doc["kind"], rel
        if rel in NOT_API_OBJECTS:
            assert (doc["apiVersion"], doc["kind"]) == NOT_API_OBJECTS[rel]
            continue
        name = doc.get("metadata", {}).get("name")
        assert isinstance(name, str) and name, f"{rel}: {doc['kind']} without metadata.name"


@pytest.mark.parametrize("name", ["rbac.yaml", "floatingip-config.yaml", "deployment.yaml",
                                  "service.yaml", "pdb.yaml", "scheduler-policy-legacy.yaml",
                                  "cloudnativepg-cluster.yaml", "migrate-job.yaml",
                                  "networkpolicy.yaml"])
def test_ipam_objects_live_in_kube_system(name: str) -> None:
    cluster_scoped = {"ClusterRole", "ClusterRoleBinding"}
    for doc in docs(name):
        if doc["kind"] not in cluster_scoped:
            assert doc["metadata"].get("namespace") == NAMESPACE, (name, doc["kind"])


# --- the pool ConfigMap ----------------------------------------------------------------------

def test_floatingip_config_is_the_seed_verbatim() -> None:
    ours = (MANIFESTS / "floatingip-config.yaml").read_bytes()
    assert ours == (GALAXY_FIXTURES / "floatingip-config.yaml").read_bytes()
    config = parse_pool_config(load_document(ours.decode()))
    (pool,) = config.pools
    assert (str(pool.subnet), pool.vlan, str(pool.gateway)) == (
        "10.11.128.0/21", 1200, "10.11.135.254")


def test_the_mounted_pools_file_is_the_configmap_key(monkeypatch: pytest.MonkeyPatch) -> None:
    configmap = one("floatingip-config.yaml", "ConfigMap")
    path = Path(env(container())["IPAM_POOLS_FILE"]["value"])
    (mount,) = [m for m in container()["volumeMounts"] if m["mountPath"] == str(path.parent)]
    assert mount.get("readOnly") is True and "subPath" not in mount
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    (item,) = volume["configMap"]["items"]
    assert item["path"] == path.name
    # The file the process reads is the key's value, galaxy's JSON list: it must parse.
    parse_pool_config(load_document(configmap["data"][item["key"]]))
    literal = {k: e["value"] for k, e in env(container()).items() if "value" in e}
    assert settings_from(literal, monkeypatch).pools_file == path


# --- the extender block ----------------------------------------------------------------------

def scheduler_extender() -> dict[str, Any]:
    (config,) = docs("scheduler-config.yaml")
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["kind"] == "KubeSchedulerConfiguration"
    # With --config the scheduler ignores --kubeconfig: the file must say how to connect.
    assert config["clientConnection"]["kubeconfig"]
    (extender,) = config["extenders"]
    return dict(extender)


def legacy_extender() -> dict[str, Any]:
    configmap = one("scheduler-policy-legacy.yaml", "ConfigMap", "scheduler-policy")
    policy = json.loads(configmap["data"]["policy.cfg"])
    assert (policy["kind"], policy["apiVersion"]) == ("Policy", "v1")
    (extender,) = policy["extenders"]
    return dict(extender)


def test_extender_block_is_exactly_the_intended_one() -> None:
    extender = scheduler_extender()
    assert set(extender) <= V1_EXTENDER_FIELDS, set(extender) - V1_EXTENDER_FIELDS
    assert extender == EXPECTED_EXTENDER


def test_extender_url_reaches_the_service_and_the_process() -> None:
    url = urlsplit(scheduler_extender()["urlPrefix"])
    svc = service()
    assert url.scheme == "https"
    assert url.hostname == f"{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc"
    (svc_port,) = [p for p in svc["spec"]["ports"] if p["port"] == url.port]
    assert svc_port["targetPort"] in (container_port("extender"), "extender")
    assert url.port == container_port("extender") == EXTENDER_PORT
    assert int(env(container())["IPAM_EXTENDER_PORT"]["value"]) == EXTENDER_PORT
    assert int(env(container())["IPAM_PORT"]["value"]) == container_port() == 9040


async def test_the_deployment_serves_the_verbs_only_on_the_tls_listener(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With the container's settings: TLS with a client CA on the extender port, and the REST
    port refuses the verbs (kube-scheduler's identity is required to bind)."""
    from ipam.api.auth import extender_tls_options
    from ipam.app import create_app

    literal = {k: e["value"] for k, e in env(container()).items() if "value" in e}
    settings = settings_from(literal, monkeypatch)
    assert settings.serves_extender_on_api_port() is False
    assert settings.listen_host() == "0.0.0.0"  # a token file: the REST API is protected
    tls = extender_tls_options(settings)
    assert tls["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    # Each file is a key of the mounted Secret.
    (mount,) = [m for m in container()["volumeMounts"] if m["name"] == "extender-tls"]
    assert mount["readOnly"] is True and "subPath" not in mount
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == "extender-tls"]
    assert volume["secret"]["secretName"] == EXTENDER_TLS_SECRET
    items = {i["path"]: i["key"] for i in volume["secret"]["items"]}
    for option, key in (("ssl_certfile", "tls.crt"), ("ssl_keyfile", "tls.key"),
                        ("ssl_ca_certs", "ca.crt")):
        path = Path(tls[option])
        assert path.parent == Path(mount["mountPath"]) and items[path.name] == key, option
    # The app the Deployment runs: no extender verb on its REST port.
    (tmp_path / "tokens").write_text("ops:admin:0123456789abcdef0123\n")
    rest = create_app(settings.model_copy(update={"auth_tokens_path": tmp_path / "tokens"}))
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=rest),
                                 base_url="http://ipam") as client:
        refused = await client.post("/v1/bind", json={"PodName": "p", "PodNamespace": "d",
                                                       "PodUID": "u", "Node": "n"})
    assert refused.status_code == 404  # the listener is configured: not on this port
    assert f"own listener, port {EXTENDER_PORT}" in refused.json()["error"]["message"]


def test_extender_verbs_are_routes() -> None:
    extender = scheduler_extender()
    prefix = urlsplit(extender["urlPrefix"]).path
    paths = [f"{prefix}/{extender[v]}" for v in ("filterVerb", "prioritizeVerb", "bindVerb")]
    assert [p for p in paths if has_route("POST", p)] == paths


def test_legacy_policy_matches_the_v1_config() -> None:
    legacy, current = legacy_extender(), scheduler_extender()
    assert set(legacy) <= LEGACY_EXTENDER_FIELDS, set(legacy) - LEGACY_EXTENDER_FIELDS
    # Same meaning, legacy spelling: enableHttps, httpTimeout in integer nanoseconds.
    assert legacy["enableHttps"] is True
    assert legacy["httpTimeout"] == 5_000_000_000
    assert re.fullmatch(r"(\d+)s", current["httpTimeout"])
    assert legacy["httpTimeout"] == int(current["httpTimeout"][:-1]) * 10**9
    same = set(EXPECTED_EXTENDER) - {"enableHTTPS", "httpTimeout"}
    assert {k: legacy[k] for k in same} == {k: current[k] for k in same}
    text = (MANIFESTS / "scheduler-policy-legacy.yaml").read_text()
    assert "--policy-configmap" in text and "1.23" in text


def test_legacy_policy_reader_is_only_a_get_of_that_configmap() -> None:
    role = one("scheduler-policy-legacy.yaml", "Role")
    assert role["rules"] == [{"apiGroups": [""], "resources": ["configmaps"],
                              "resourceNames": ["scheduler-policy"], "verbs": ["get"]}]
    binding = one("scheduler-policy-legacy.yaml", "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                    "name": "system:kube-scheduler"}]


# --- the Deployment --------------------------------------------------------------------------

def test_deployment_shape() -> None:
    dep = deployment()
    assert dep["spec"]["replicas"] == 2
    spec = pod_spec()
    assert spec["serviceAccountName"] == "ipam"
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["terminationGracePeriodSeconds"] == 30
    assert selects(dep["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]
                   ["labels"])
    image = container()["image"]
    assert image == f"ghcr.io/example/ipam:{__version__}"
    assert env(container())["IPAM_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "ipam-database", "key": "url"}}


def test_every_ipam_variable_is_a_setting() -> None:
    for name in env(container()):
        if name.startswith("IPAM_"):
            field = name.removeprefix("IPAM_").lower().split("__")[0]
            assert field in Settings.model_fields, f"{name} sets nothing"


def test_service_links_are_off_because_they_would_shadow_the_port(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Kubernetes would inject <SERVICE>_PORT=tcp://<ip>:<port> for the Service "ipam" ...
    link_var = service()["metadata"]["name"].upper().replace("-", "_") + "_PORT"
    assert link_var == "IPAM_PORT"
    # ... which is ipam's own listen-port setting, and not a number:
    with pytest.raises(ValidationError):
        settings_from({link_var: "tcp://10.96.0.10:9040"}, monkeypatch)
    assert pod_spec()["enableServiceLinks"] is False


def test_security_context() -> None:
    pod_ctx, ctx = pod_spec()["securityContext"], container()["securityContext"]

    def effective(key: str) -> Any:
        return ctx.get(key, pod_ctx.get(key))

    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") == UID
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert "add" not in ctx["capabilities"]
    assert effective("seccompProfile") == {"type": "RuntimeDefault"}
    assert not ctx.get("privileged", False)
    assert not pod_spec().get("hostNetwork", False)
    # A read-only root needs a writable /tmp.
    assert any(m["mountPath"] == "/tmp" for m in container()["volumeMounts"])


def test_probes_hit_real_routes_on_the_container_port() -> None:
    c = container()
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz",
                "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ("http", container_port()), probe
        assert has_route("GET", path), f"{probe}: no route {path}"
    assert not has_route("GET", "/no-such-probe-path")  # the route check can fail
    # Start-up waits for the schema (migrate-job.yaml) before it answers: the kubelet must not
    # restart a pod within that wait.
    startup = c["startupProbe"]
    env = {e["name"]: e for e in c.get("env", [])}
    wait = float(env.get("IPAM_SCHEMA_WAIT_SECONDS", {}).get(
        "value", Settings.model_fields["schema_wait_seconds"].default))
    assert startup["periodSeconds"] * startup["failureThreshold"] >= wait + 60


def test_resources_fit_the_memory_target_and_request_no_eni_ip() -> None:
    spec = pod_spec()
    for c in spec["containers"] + spec.get("initContainers", []):
        res = c["resources"]
        assert res["requests"]["cpu"] and res["requests"]["memory"], c["name"]
        assert quantity_bytes(res["limits"]["memory"]) == 256 * 2**20
        assert quantity_bytes(res["requests"]["memory"]) <= quantity_bytes(
            res["limits"]["memory"])
        # ipam's own pods must schedule while ipam is down: never send them to the extender.
        for section in ("requests", "limits"):
            assert ENI_IP not in res.get(section, {}), c["name"]


def test_replicas_spread_across_nodes() -> None:
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    terms = pod_spec()["affinity"]["podAntiAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    assert any(t["topologyKey"] == "kubernetes.io/hostname"
               and selects(t["labelSelector"]["matchLabels"], labels) for t in terms)
    spread = pod_spec()["topologySpreadConstraints"]
    assert any(s["topologyKey"] == "topology.kubernetes.io/zone"
               and selects(s["labelSelector"]["matchLabels"], labels) for s in spread)
    # Required anti-affinity and a surge pod would need a spare node for every rollout.
    assert deployment()["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


# --- database roles: migrate as the owner, serve as a role that owns nothing ------------------

def test_the_deployment_serves_as_the_app_role_and_never_migrates(
        monkeypatch: pytest.MonkeyPatch) -> None:
    text = (MANIFESTS / "deployment.yaml").read_text()
    assert "ipam-database-owner" not in text.split("apiVersion:", 1)[1]
    assert "IPAM_MIGRATE_DATABASE_URL" not in env(container())
    assert "IPAM_MIGRATE_ON_START" not in env(container())
    assert not pod_spec().get("initContainers")
    literal = {k: e["value"] for k, e in env(container()).items() if "value" in e}
    assert settings_from(dict(literal, IPAM_DATABASE_URL="postgresql+asyncpg://s@db/ipam"),
                         monkeypatch).migrates_on_start() is False


def test_the_migrate_job_runs_ipam_migrate_as_the_owner() -> None:
    job = one("migrate-job.yaml", "Job", "ipam-migrate")
    spec = job["spec"]["template"]["spec"]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    (c,) = spec["containers"]
    assert c["args"] == ["migrate"] and c["image"] == container()["image"]
    assert env(c) == {"IPAM_MIGRATE_DATABASE_URL": {"name": "IPAM_MIGRATE_DATABASE_URL",
                                                    "valueFrom": {"secretKeyRef": {
                                                        "name": "ipam-database-owner",
                                                        "key": "url"}}}}
    assert env(container())["IPAM_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] != (
        "ipam-database-owner")
    assert c["securityContext"] == container()["securityContext"]
    assert spec["securityContext"] == pod_spec()["securityContext"]
    assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])
    # Not selected by the Service nor by the PodDisruptionBudget.
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert not selects(service()["spec"]["selector"], labels)


# --- NetworkPolicy ---------------------------------------------------------------------------

def test_networkpolicy_admits_only_listed_addresses_to_the_extender_port() -> None:
    policy = one("networkpolicy.yaml", "NetworkPolicy", "ipam")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress"]
    assert selects(spec["podSelector"]["matchLabels"],
                   deployment()["spec"]["template"]["metadata"]["labels"])
    rules = {tuple(p["port"] for p in rule["ports"]): rule for rule in spec["ingress"]}
    assert set(rules) == {(container_port(),), (container_port("extender"),)}
    assert "from" not in rules[container_port(),]  # REST: API clients, CNI, probes
    peers = rules[container_port("extender"),]["from"]
    assert peers and all(set(p) == {"ipBlock"} for p in peers)  # the control plane's nodes
    # The shipped placeholder admits nobody until it is edited (a documentation range).
    assert [p["ipBlock"]["cidr"] for p in peers] == ["192.0.2.0/24"]


# --- Service and PodDisruptionBudget ---------------------------------------------------------

def test_service_selects_the_ipam_pods_only() -> None:
    svc = service()
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 9040, "targetPort": "http", "protocol": "TCP"},
        {"name": "extender", "port": EXTENDER_PORT, "targetPort": "extender", "protocol": "TCP"}]
    selector = svc["spec"]["selector"]
    matched = [(f, w["metadata"]["name"]) for f, w in pod_templates()
               if w["metadata"].get("namespace") == NAMESPACE
               and selects(selector, w["spec"]["template"]["metadata"]["labels"])]
    assert matched == [("deployment.yaml", "ipam")]


def test_pdb_keeps_one_replica_of_the_deployment() -> None:
    pdb = one("pdb.yaml", "PodDisruptionBudget", "ipam")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1 < deployment()["spec"]["replicas"]
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector == deployment()["spec"]["selector"]["matchLabels"]
    assert selects(selector, deployment()["spec"]["template"]["metadata"]["labels"])


# --- RBAC ------------------------------------------------------------------------------------

def rbac_grants() -> frozenset[Grant]:
    """rbac.yaml's rules, one Grant per (scope, group, resource, names), verbs merged."""
    merged: dict[tuple[str, str, str, frozenset[str]], set[str]] = {}
    for doc in docs("rbac.yaml"):
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        scope = "cluster" if doc["kind"] == "ClusterRole" else doc["metadata"]["namespace"]
        for rule in doc["rules"]:
            assert set(rule) <= {"apiGroups", "resources", "verbs", "resourceNames"}, rule
            names = frozenset(rule.get("resourceNames", ()))
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    merged.setdefault((scope, group, resource, names), set()).update(
                        rule["verbs"])
    return frozenset(Grant(s, g, r, frozenset(v), n) for (s, g, r, n), v in merged.items())


def test_rbac_has_no_wildcard() -> None:
    for doc in docs("rbac.yaml"):
        for rule in doc.get("rules", []):
            for key in ("apiGroups", "resources", "verbs", "resourceNames",
                        "nonResourceURLs"):
                assert not any("*" in item for item in rule.get(key, [])), (key, rule)


def test_rbac_grants_exactly_the_expected_table() -> None:
    granted = rbac_grants()
    assert granted - EXPECTED_RBAC == frozenset(), "granted but not expected"
    assert EXPECTED_RBAC - granted == frozenset(), "expected but not granted"


def test_rbac_is_bound_to_the_deployment_service_account() -> None:
    account = one("rbac.yaml", "ServiceAccount", "ipam")
    subject = {"kind": "ServiceAccount", "name": account["metadata"]["name"],
               "namespace": account["metadata"]["namespace"]}
    for kind, role_kind in (("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")):
        binding = one("rbac.yaml", kind)
        role = one("rbac.yaml", role_kind)
        assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io",
                                      "kind": role_kind, "name": role["metadata"]["name"]}
        assert binding["subjects"] == [subject]
    assert pod_spec()["serviceAccountName"] == account["metadata"]["name"]
    assert deployment()["metadata"]["namespace"] == account["metadata"]["namespace"]


def test_rbac_names_the_objects_ipam_uses() -> None:
    by_resource = {(g.api_group, g.resource): g for g in EXPECTED_RBAC if g.resource_names}
    configmap = one("floatingip-config.yaml", "ConfigMap")
    assert by_resource["", "configmaps"].resource_names == {configmap["metadata"]["name"]}
    assert by_resource["", "configmaps"].scope == configmap["metadata"]["namespace"]
    watched = Settings().pools_configmap
    assert (watched.namespace, watched.name) == (configmap["metadata"]["namespace"],
                                                 configmap["metadata"]["name"])


# --- kustomization ---------------------------------------------------------------------------

def test_kustomization_lists_the_deployable_files() -> None:
    (kust,) = docs("kustomization.yaml")
    resources = kust["resources"]
    assert len(resources) == len(set(resources))
    assert set(resources) - KUSTOMIZE_OPTIONAL == KUSTOMIZE_RESOURCES
    assert not set(resources) & KUSTOMIZE_EXCLUDED
    for name in resources:
        assert (MANIFESTS / name).is_file(), name


def test_kustomize_renders() -> None:
    kubectl = command("kubectl", "kubernetes-client")
    out = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    kinds = {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(out.stdout) if d}
    assert {("Deployment", "ipam"), ("Service", "ipam"), ("PodDisruptionBudget", "ipam"),
            ("ServiceAccount", "ipam")} <= kinds
    assert ("ConfigMap", "floatingip-config") not in kinds  # never over a galaxy user's one


# --- examples and the optional database ------------------------------------------------------

def test_example_deployment_is_galaxys_test_busybox() -> None:
    ours = one("example-workload.yaml", "Deployment", "test-busybox")
    seed = yaml.safe_load((GALAXY_FIXTURES / "test-busybox.yaml").read_text())
    image = ours["spec"]["template"]["spec"]["containers"][0]["image"]
    assert re.fullmatch(r"busybox:\d+\.\d+\.\d+", image), "pin the example's image"
    seed["spec"]["template"]["spec"]["containers"][0]["image"] = image
    assert ours == seed


def test_example_statefulset_keeps_addresses_per_ordinal() -> None:
    sts = one("example-workload.yaml", "StatefulSet")
    meta = sts["spec"]["template"]["metadata"]
    assert meta["annotations"] == {"k8s.v1.cni.cncf.io/networks": "galaxy-k8s-vlan",
                                   "k8s.v1.cni.galaxy.io/release-policy": "immutable"}
    headless = one("example-workload.yaml", "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert selects(headless["spec"]["selector"], meta["labels"])
    assert selects(sts["spec"]["selector"]["matchLabels"], meta["labels"])


def test_example_pods_request_the_eni_ip_resource() -> None:
    workloads = [w for f, w in pod_templates() if f == "example-workload.yaml"]
    assert len(workloads) == 2
    for workload in workloads:
        for c in workload["spec"]["template"]["spec"]["containers"]:
            res = c["resources"]
            # An extended resource needs a limit, and a request equal to it.
            assert res["requests"][ENI_IP] == res["limits"][ENI_IP] == "1"


def test_cloudnativepg_cluster() -> None:
    cluster = one("cloudnativepg-cluster.yaml", "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert spec["bootstrap"]["initdb"] == {"database": "ipam", "owner": "ipam"}
    assert quantity_bytes(spec["storage"]["size"]) > 0
    assert re.fullmatch(r"ghcr\.io/cloudnative-pg/postgresql:16\.\d+", spec["imageName"])
    assert spec["affinity"]["podAntiAffinityType"] in ("required", "preferred")
    # The comment's recipe for Secret ipam-database: asyncpg URL at this cluster's -rw Service.
    text = (MANIFESTS / "cloudnativepg-cluster.yaml").read_text()
    match = re.search(r"postgresql\+asyncpg://(\w+):\S+@([\w.-]+):5432/(\w+)", text)
    assert match, "no asyncpg URL in the comment"
    name, ns = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    assert match.groups() == ("ipam", f"{name}-rw.{ns}.svc", "ipam")
    assert f"{name}-app" in text


# --- docker-compose.yml ----------------------------------------------------------------------

def compose_file() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_compose_services(monkeypatch: pytest.MonkeyPatch) -> None:
    services = compose_file()["services"]
    assert set(services) == {"postgres", "db-roles", "migrate", "ipam"}
    pg, roles, migrate, ipam = (services[n] for n in ("postgres", "db-roles", "migrate", "ipam"))

    assert re.fullmatch(r"postgres:16\.\d+(-\w+)?", pg["image"]), pg["image"]
    assert any(v.startswith("pgdata:") for v in pg["volumes"])
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])

    assert roles["image"] == pg["image"] and roles["restart"] == "no"
    assert roles["depends_on"] == {"postgres": {"condition": "service_healthy"}}

    assert migrate["build"] == ipam["build"] == "."
    assert migrate["image"] == ipam["image"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                     "db-roles": {"condition": "service_completed_successfully"}}

    assert ipam["command"] == ["serve"]
    assert ipam["depends_on"] == {"postgres": {"condition": "service_healthy"},
                                  "migrate": {"condition": "service_completed_successfully"}}
    # No token file: the REST API is open, so only this machine reaches it.
    assert ipam["ports"] == ["127.0.0.1:9040:9040"]
    assert "/readyz" in " ".join(ipam["healthcheck"]["test"])

    # The owner migrates; the service logs in as the role db-roles makes, which owns nothing.
    owner = urlsplit(migrate["environment"]["IPAM_MIGRATE_DATABASE_URL"])
    assert "IPAM_DATABASE_URL" not in migrate["environment"]
    assert (owner.username, owner.password) == (pg["environment"]["POSTGRES_USER"],
                                                pg["environment"]["POSTGRES_PASSWORD"])
    environ = ipam["environment"]
    serving = urlsplit(environ["IPAM_DATABASE_URL"])
    assert serving.username == "ipam_serve" != owner.username
    assert "IPAM_MIGRATE_DATABASE_URL" not in environ
    sql = compose_sql(roles)
    assert f"CREATE ROLE {serving.username} LOGIN PASSWORD '{serving.password}' IN ROLE " \
           "ipam_app" in sql
    settings = settings_from(environ, monkeypatch)
    assert settings.migrates_on_start() is False
    assert settings.controllers_enabled is False
    assert settings.port == 9040 and settings.listen_host() == "0.0.0.0"
    (mount,) = ipam["volumes"]
    source, target, mode = mount.split(":")
    assert (ROOT / source).resolve() == (MANIFESTS / "floatingip-config.yaml").resolve()
    assert mode == "ro"
    assert settings.pools_file == Path(target)


def compose_sql(service: dict[str, Any]) -> str:
    """The SQL of the db-roles step as psql receives it (compose turns "$$" into "$")."""
    command = service["command"]
    assert command[:4] == ["psql", "-v", "ON_ERROR_STOP=1", "-c"]
    return str(command[4]).replace("$$", "$")


async def test_compose_roles_sql_runs_and_is_idempotent(db_factory: Any) -> None:
    """The db-roles step on a real PostgreSQL, twice (role names made unique: roles are
    cluster-wide): the serving role exists, logs in and is a member of ipam_app."""
    import uuid

    import asyncpg

    tag = uuid.uuid4().hex[:8]
    sql = compose_sql(compose_file()["services"]["db-roles"]).replace(
        "ipam_serve", f"ipam_serve_{tag}")
    conn = await asyncpg.connect(db_factory.dsn)
    try:
        await conn.execute(sql)
        await conn.execute(sql)
        member = await conn.fetchval(
            "SELECT pg_has_role($1, 'ipam_app', 'MEMBER') AND rolcanlogin FROM pg_roles "
            "WHERE rolname = $1", f"ipam_serve_{tag}")
        assert member is True
    finally:
        await conn.execute(f'DROP ROLE IF EXISTS "ipam_serve_{tag}"')
        await conn.close()


def test_compose_validates_with_docker_compose() -> None:
    binary = command("docker-compose", "docker-compose")
    out = subprocess.run([binary, "-f", "docker-compose.yml", "config"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(out.stdout)
    services = config["services"]
    assert set(services) == {"postgres", "db-roles", "migrate", "ipam"}
    assert set(config["volumes"]) == {"pgdata"}
    assert services["ipam"]["depends_on"]["migrate"]["condition"] == (
        "service_completed_successfully")
    assert services["migrate"]["depends_on"]["db-roles"]["condition"] == (
        "service_completed_successfully")
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["ipam"]["ports"] == ["127.0.0.1:9040:9040/tcp"]
    for name in ("postgres", "ipam"):
        assert services[name]["healthcheck"]["test"], name
    assert Path(services["ipam"]["build"]["context"]) == ROOT


# --- Dockerfile ------------------------------------------------------------------------------

class Instruction(NamedTuple):
    op: str
    args: str


def dockerfile_stages() -> list[list[Instruction]]:
    """Instructions per stage (index 0: the ARGs before the first FROM)."""
    stages: list[list[Instruction]] = [[]]
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        op, _, args = (pending + line).partition(" ")
        pending = ""
        if op.upper() == "FROM":
            stages.append([])
        stages[-1].append(Instruction(op.upper(), args.strip()))
    return stages


def final_stage() -> list[Instruction]:
    return dockerfile_stages()[-1]


def args_of(instructions: list[Instruction]) -> dict[str, str]:
    out = {}
    for ins in instructions:
        if ins.op == "ARG" and "=" in ins.args:
            key, _, value = ins.args.partition("=")
            out[key] = value
    return out


def from_images() -> list[str]:
    global_args = args_of(dockerfile_stages()[0])
    images = []
    for stage in dockerfile_stages()[1:]:
        words = [w for w in stage[0].args.split() if not w.startswith("--")]
        images.append(re.sub(r"\$\{?(\w+)\}?", lambda m: global_args[m.group(1)], words[0]))
    return images


def test_dockerfile_is_multi_stage_on_a_pinned_slim_base() -> None:
    images = from_images()
    assert len(images) >= 2
    for image in images:
        assert "latest" not in image
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    # The final stage starts from the base again, not from the build stage.
    assert final_stage()[0].args.split()[0] != "build"


def test_dockerfile_final_stage_runs_as_a_fixed_non_root_uid() -> None:
    stage = final_stage()
    users = [ins.args for ins in stage if ins.op == "USER"]
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert int(uid) == UID == pod_spec()["securityContext"]["runAsUser"]
    assert not gid or int(gid) != 0
    assert args_of(stage).get("IPAM_UID") == str(UID)


def test_dockerfile_final_stage_has_no_build_tools() -> None:
    text = " ".join(ins.args for ins in final_stage() if ins.op == "RUN")
    for tool in ("apt-get install", "build-essential", "gcc", "pip wheel"):
        assert tool not in text, tool
    assert "venv" in text  # installed into a venv, from the build stage's wheels
    assert any("pip wheel" in ins.args for stage in dockerfile_stages()[1:-1] for ins in stage)


def test_dockerfile_entrypoint_port_and_healthcheck() -> None:
    stage = final_stage()
    ops = {ins.op: ins.args for ins in stage}
    assert json.loads(ops["ENTRYPOINT"]) == ["ipam"]
    assert json.loads(ops["CMD"]) == ["serve"]
    assert str(Settings().port) in ops["EXPOSE"].split()
    health = ops["HEALTHCHECK"]
    assert "CMD" in health and "urllib" in health and "/healthz" in health


def test_dockerignore_lets_in_exactly_what_the_build_copies() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "an allow-list keeps .git, tests and caches out"
    allowed = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for stage in dockerfile_stages():
        for ins in stage:
            if ins.op == "COPY" and "--from" not in ins.args:
                copied.update(shlex.split(ins.args)[:-1])
    assert copied, "no COPY from the context"
    assert {c.rstrip("/") for c in copied} <= allowed
