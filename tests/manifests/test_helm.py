"""The Helm chart (manifests/helm/ipam), checked with the real helm binary.

``helm lint --strict`` and ``helm template`` run on the default values and with every optional
part on; what they render is validated against the Kubernetes schemas (kubernetes-validate,
strict: an unknown field fails) and compared with what it configures: the service's settings,
the plain manifests' RBAC and extender block, the scheduler versions of each Kubernetes
release, and the generated certificates, which a real uvicorn TLS listener (ipam's own TLS
options) and a real kube-scheduler 1.20 (``../shared/realkube``) load.

helm comes from ``python3 -m tests.manifests.chart_tools`` (.ci/run runs it). Without helm the
tests skip, except in CI (``CI=true``), where a missing binary is a failure.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ipam.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
CHART = MANIFESTS / "helm" / "ipam"
RELEASE, NAMESPACE = "ipam", "kube-system"
REALKUBE_SCHEDULER = Path(os.environ.get("REALKUBE_DIR", "~/realkube")).expanduser() / "bin" / (
    "kube-scheduler")

SEED_POOLS = ('[{"routableSubnet":"10.10.100.0/24","ips":["10.11.128.1~10.11.135.253"],'
              '"subnet":"10.11.128.0/21","gateway":"10.11.135.254","vlan":1200}]')
#: Every optional part of the chart on.
ALL_ON: dict[str, Any] = {
    "cloudnativepg": {"enabled": True},
    "pools": {"create": True, "floatingips": SEED_POOLS},
    "service": {"clusterIP": "10.96.0.40"},
    "secondScheduler": {"enabled": True},
    "networkPolicy": {"enabled": True, "controlPlaneCIDRs": ["10.0.0.0/24"]},
    "cni": {"enabled": True},
    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                   "dashboard": {"enabled": True}},
}
#: Kinds the Kubernetes schemas do not know (CRDs of CloudNativePG and the Prometheus Operator).
CUSTOM_KINDS = {"Cluster", "ServiceMonitor", "PrometheusRule"}


def helm() -> str:
    binary = shutil.which("helm")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("helm is missing in CI: .ci/run installs it (tests/manifests/chart_tools)")
        pytest.skip("helm is not installed: python3 -m tests.manifests.chart_tools /usr/local/bin")
    return binary


def run_helm(*args: str, values: dict[str, Any] | None = None, tmp: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
    cmd = [helm(), *args]
    if values:
        assert tmp is not None
        path = tmp / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def render(tmp: Path, values: dict[str, Any] | None = None, kube_version: str | None = None
           ) -> list[dict[str, Any]]:
    args = ["template", RELEASE, str(CHART), "-n", NAMESPACE]
    if kube_version:
        args += ["--kube-version", kube_version]
    out = run_helm(*args, values=values, tmp=tmp)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in c.get("env", [])}


def scheduler_config(docs: list[dict[str, Any]], configmap: str, key: str) -> dict[str, Any]:
    cm = find(docs, "ConfigMap", configmap)
    config = yaml.safe_load(cm["data"][key])
    assert isinstance(config, dict)
    return config


@pytest.fixture(scope="module")
def default_docs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(tmp_path_factory.mktemp("default"))


@pytest.fixture(scope="module")
def all_on_docs(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return render(tmp_path_factory.mktemp("all"), ALL_ON)


# --- helm lint and schemas -------------------------------------------------------------------

@pytest.mark.parametrize("values", [None, ALL_ON], ids=["defaults", "all-on"])
def test_helm_lint_strict(values: dict[str, Any] | None, tmp_path: Path) -> None:
    out = run_helm("lint", "--strict", str(CHART), "-n", NAMESPACE, values=values, tmp=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 chart(s) failed" in out.stdout


@pytest.mark.parametrize("which", ["default", "all_on"])
def test_rendered_objects_match_the_kubernetes_schemas(which: str,
                                                       request: pytest.FixtureRequest) -> None:
    import kubernetes_validate

    docs: list[dict[str, Any]] = request.getfixturevalue(f"{which}_docs")
    checked = 0
    for doc in docs:
        if doc["kind"] in CUSTOM_KINDS:
            continue
        # strict: a field the schema does not have is an error, not silently dropped.
        for version in ("1.25.0", kubernetes_validate.latest_version()):
            kubernetes_validate.validate(doc, version, strict=True)
        checked += 1
    assert checked >= 10


def test_default_render_has_the_service_and_nothing_optional(
        default_docs: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in default_docs}
    assert kinds == {
        ("ServiceAccount", "ipam"), ("ClusterRole", "ipam"), ("ClusterRoleBinding", "ipam"),
        ("Role", "ipam"), ("RoleBinding", "ipam"), ("Deployment", "ipam"), ("Service", "ipam"),
        ("PodDisruptionBudget", "ipam"), ("Job", "ipam-migrate"),
        ("ConfigMap", "ipam-scheduler-config"), ("Secret", "ipam-extender-tls"),
        ("Secret", "ipam-scheduler-client")}
    for doc in default_docs:
        if doc["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


def test_all_on_renders_every_optional_part(all_on_docs: list[dict[str, Any]]) -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in all_on_docs}
    assert {("Cluster", "ipam-db"), ("Secret", "ipam-db-serve"),
            ("ConfigMap", "floatingip-config"), ("Deployment", "ipam-scheduler"),
            ("ConfigMap", "ipam-scheduler"), ("NetworkPolicy", "ipam"),
            ("DaemonSet", "ipam-cni"), ("ConfigMap", "ipam-cni-config"),
            ("ServiceMonitor", "ipam"), ("PrometheusRule", "ipam"),
            ("ConfigMap", "ipam-dashboard")} <= kinds


# --- the Deployment and the migrate Job ------------------------------------------------------

def test_deployment_settings_are_real_and_serve_as_the_app_role(
        default_docs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    dep = find(default_docs, "Deployment", "ipam")
    c = container(dep, "ipam")
    assert c["args"] == ["serve"]
    env = env_of(c)
    for name in env:
        if name.startswith("IPAM_"):
            field = name.removeprefix("IPAM_").lower().split("__")[0]
            assert field in Settings.model_fields, f"{name} sets nothing"
    assert env["IPAM_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "ipam-database", "key": "url"}}
    # The literal values parse as the service would read them.
    for key in list(os.environ):
        if key.startswith("IPAM_"):
            monkeypatch.delenv(key)
    for name, e in env.items():
        if "value" in e:
            monkeypatch.setenv(name, e["value"])
    settings = Settings()
    assert settings.port == 9040 and settings.extender_port == 9443
    assert (settings.pools_configmap.namespace, settings.pools_configmap.name) == (
        NAMESPACE, "floatingip-config")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": settings.port, "extender": settings.extender_port}
    # The TLS files are the mounted Secret's keys.
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "extender-tls"]
    (volume,) = [v for v in dep["spec"]["template"]["spec"]["volumes"]
                 if v["name"] == "extender-tls"]
    assert volume["secret"]["secretName"] == "ipam-extender-tls"
    files = {str(p) for p in (settings.extender_tls_cert, settings.extender_tls_key,
                              settings.extender_tls_client_ca)}
    assert files == {f"{mount['mountPath']}/{i['path']}" for i in volume["secret"]["items"]}
    assert dep["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_migrate_job_runs_before_the_pods_as_the_owner(default_docs: list[dict[str, Any]]
                                                       ) -> None:
    job = find(default_docs, "Job", "ipam-migrate")
    hooks = set(job["metadata"]["annotations"]["helm.sh/hook"].split(","))
    assert hooks == {"pre-install", "pre-upgrade"}
    spec = job["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    assert c["args"] == ["migrate"]
    assert c["image"] == container(find(default_docs, "Deployment", "ipam"), "ipam")["image"]
    assert env_of(c)["IPAM_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "ipam-database-owner", "key": "url"}}
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"


@pytest.mark.parametrize("values", [
    None, ALL_ON, {"migrate": {"activeDeadlineSeconds": 3600}},
    {"startup": {"schemaWaitSeconds": 1000, "periodSeconds": 7, "startSeconds": 30}},
], ids=["defaults", "all-on", "long-migrate", "explicit-wait"])
def test_startup_probe_outlasts_the_schema_wait_which_outlasts_the_migrate_job(
        values: dict[str, Any] | None, tmp_path: Path) -> None:
    """A pod serves only once the migrate Job has brought the schema to head (with
    CloudNativePG, after install): the kubelet must not restart it while it waits."""
    docs = render(tmp_path, values)
    deadline = find(docs, "Job", "ipam-migrate")["spec"]["activeDeadlineSeconds"]
    c = container(find(docs, "Deployment", "ipam"), "ipam")
    wait = float(env_of(c)["IPAM_SCHEMA_WAIT_SECONDS"]["value"])
    # ... and it waits as long for a database that does not answer yet (CloudNativePG's
    # cluster comes up with the same install).
    assert float(env_of(c)["IPAM_DATABASE_WAIT_SECONDS"]["value"]) == wait
    probe = c["startupProbe"]
    budget = probe["periodSeconds"] * probe["failureThreshold"]
    assert deadline <= wait < budget
    assert budget >= 600  # default generous: ten minutes at the very least
    if values and "startup" in values:
        assert wait == values["startup"]["schemaWaitSeconds"]
        assert budget - wait >= values["startup"]["startSeconds"]
        assert budget - wait < values["startup"]["startSeconds"] + probe["periodSeconds"]


def test_a_schema_wait_shorter_than_the_migrate_job_is_refused(tmp_path: Path) -> None:
    out = run_helm("template", RELEASE, str(CHART), "-n", NAMESPACE, tmp=tmp_path,
                   values={"startup": {"schemaWaitSeconds": 300}})
    assert out.returncode != 0
    assert "startup.schemaWaitSeconds (300) is shorter than migrate.activeDeadlineSeconds" in (
        out.stderr)


def test_cloudnativepg_wires_owner_and_app_role(all_on_docs: list[dict[str, Any]]) -> None:
    cluster = find(all_on_docs, "Cluster", "ipam-db")
    spec = cluster["spec"]
    assert spec["bootstrap"]["initdb"]["owner"] == "ipam"
    assert "CREATE ROLE ipam_app NOLOGIN" in spec["bootstrap"]["initdb"]["postInitApplicationSQL"]
    (role,) = spec["managed"]["roles"]
    assert role["inRoles"] == ["ipam_app"] and role["login"] is True
    secret = find(all_on_docs, "Secret", role["passwordSecret"]["name"])
    assert base64.b64decode(secret["data"]["username"]).decode() == role["name"]
    password = base64.b64decode(secret["data"]["password"]).decode()
    assert len(password) >= 32 and password.isalnum()
    # 2 replicas x (20 + 20) + 20 spare.
    assert spec["postgresql"]["parameters"]["max_connections"] == "100"

    def url_env(env: dict[str, dict[str, Any]]) -> tuple[str, str]:
        return (env["DATABASE_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"],
                env["IPAM_DATABASE_URL"]["value"])

    app = url_env(env_of(container(find(all_on_docs, "Deployment", "ipam"), "ipam")))
    job = find(all_on_docs, "Job", "ipam-migrate")
    owner = url_env(env_of(job["spec"]["template"]["spec"]["containers"][0]))
    rw = "@ipam-db-rw.kube-system.svc:5432/ipam"
    assert app == ("ipam-db-serve", f"postgresql+asyncpg://{role['name']}:$(DATABASE_PASSWORD){rw}")
    assert owner == ("ipam-db-app", f"postgresql+asyncpg://ipam:$(DATABASE_PASSWORD){rw}")
    # The database exists only once the release is installed: migrate after install.
    assert set(job["metadata"]["annotations"]["helm.sh/hook"].split(",")) == {
        "post-install", "pre-upgrade"}


# --- RBAC, the pool ConfigMap, the kustomization --------------------------------------------

def rules(docs: list[dict[str, Any]]) -> set[tuple[str, str, str, str, frozenset[str]]]:
    out = set()
    for doc in docs:
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        scope = "cluster" if doc["kind"] == "ClusterRole" else doc["metadata"]["namespace"]
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        out.add((scope, group, resource, verb,
                                 frozenset(rule.get("resourceNames", ()))))
    return out


def test_chart_rbac_is_the_manifests_rbac(default_docs: list[dict[str, Any]]) -> None:
    ours = [d for d in default_docs if d["kind"] in ("ClusterRole", "Role")
            and d["metadata"]["name"] == "ipam"]
    plain = list(yaml.safe_load_all((MANIFESTS / "rbac.yaml").read_text()))
    assert rules(ours) == rules([d for d in plain if d])


def test_the_pool_configmap_is_never_taken_over(default_docs: list[dict[str, Any]],
                                                all_on_docs: list[dict[str, Any]]) -> None:
    assert not [d for d in default_docs if d["kind"] == "ConfigMap"
                and d["metadata"]["name"] == "floatingip-config"]
    created = find(all_on_docs, "ConfigMap", "floatingip-config")
    # Kept on uninstall, and only rendered where none exists (lookup: none in helm template).
    assert created["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert created["data"]["floatingips"] == SEED_POOLS
    text = (CHART / "templates" / "pools-configmap.yaml").read_text()
    assert 'lookup "v1" "ConfigMap"' in text


def test_kustomization_does_not_apply_the_sample_pool_configmap() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    out = subprocess.run([kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert ("ConfigMap", "floatingip-config") not in {
        (d["kind"], d["metadata"]["name"]) for d in docs}
    # The images stanza rewrites the image; the Deployment still mounts the live ConfigMap.
    (kust,) = yaml.safe_load_all((MANIFESTS / "kustomization.yaml").read_text())
    (image,) = kust["images"]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"{image['newName']}:{image['newTag']}"
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["pools"]["configMap"]["name"] == "floatingip-config"
    # The sample stays a file of its own, applied by hand with create semantics.
    assert "floatingip-config.yaml" not in kust["resources"]
    assert "kubectl create -f manifests/floatingip-config.yaml" in (
        MANIFESTS / "kustomization.yaml").read_text()


def test_kustomize_images_stanza_rewrites_to_a_pushed_image(tmp_path: Path) -> None:
    """An overlay's images entry (the documented build-and-push step) reaches the pods."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    overlay = tmp_path / "overlay"
    shutil.copytree(MANIFESTS, overlay / "base", ignore=shutil.ignore_patterns("helm"))
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": ["base"],
        "images": [{"name": "ghcr.io/example/ipam", "newName": "registry.example.com/ipam",
                    "newTag": "0.1.0-test"}]}))
    out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True,
                         timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    images = {c["image"] for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "Deployment"
              for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {"registry.example.com/ipam:0.1.0-test"}


# --- scheduler configuration -----------------------------------------------------------------

@pytest.mark.parametrize(("kube_version", "api_version", "pdb"), [
    ("1.20.2", "v1beta1", "policy/v1beta1"),
    ("1.22.17", "v1beta2", "policy/v1"),
    ("1.23.17", "v1beta3", "policy/v1"),
    ("1.24.17", "v1beta3", "policy/v1"),
    ("1.25.16", "v1", "policy/v1"),
    ("1.31.0", "v1", "policy/v1"),
])
def test_scheduler_config_follows_the_cluster_version(kube_version: str, api_version: str,
                                                      pdb: str, tmp_path: Path) -> None:
    docs = render(tmp_path, kube_version=kube_version)
    config = scheduler_config(docs, "ipam-scheduler-config", "ipam-scheduler-config.yaml")
    assert config["apiVersion"] == f"kubescheduler.config.k8s.io/{api_version}"
    assert find(docs, "PodDisruptionBudget", "ipam")["apiVersion"] == pdb


def test_extender_block_matches_the_plain_config_and_the_service(
        default_docs: list[dict[str, Any]]) -> None:
    config = scheduler_config(default_docs, "ipam-scheduler-config", "ipam-scheduler-config.yaml")
    assert config["clientConnection"]["kubeconfig"] == "/etc/kubernetes/scheduler.conf"
    (ours,) = config["extenders"]
    (plain,) = yaml.safe_load((MANIFESTS / "scheduler-config.yaml").read_text())["extenders"]
    transport = {"urlPrefix", "enableHTTPS", "tlsConfig"}
    assert {k: v for k, v in ours.items() if k not in transport} == {
        k: v for k, v in plain.items() if k not in transport}
    assert ours["urlPrefix"] == "https://ipam.kube-system.svc:9443/v1"
    assert ours["enableHTTPS"] is True
    assert set(ours["tlsConfig"]) == {"certFile", "keyFile", "caFile"}
    svc = find(default_docs, "Service", "ipam")
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"http": 9040,
                                                                    "extender": 9443}


def test_tls_off_is_plain_http_on_the_extender_port(tmp_path: Path) -> None:
    docs = render(tmp_path, {"extender": {"tls": {"enabled": False}}})
    (ext,) = scheduler_config(docs, "ipam-scheduler-config",
                              "ipam-scheduler-config.yaml")["extenders"]
    assert ext["urlPrefix"] == "http://ipam.kube-system.svc:9443/v1"
    assert ext["enableHTTPS"] is False and "tlsConfig" not in ext
    env = env_of(container(find(docs, "Deployment", "ipam"), "ipam"))
    assert "IPAM_EXTENDER_TLS_CERT" not in env and env["IPAM_EXTENDER_PORT"]["value"] == "9443"
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_second_scheduler(all_on_docs: list[dict[str, Any]]) -> None:
    dep = find(all_on_docs, "Deployment", "ipam-scheduler")
    c = container(dep, "kube-scheduler")
    # helm template's default cluster version; a real install uses the API server's.
    assert c["image"].startswith("registry.k8s.io/kube-scheduler:v1.")
    config = scheduler_config(all_on_docs, "ipam-scheduler", "config.yaml")
    assert [p["schedulerName"] for p in config["profiles"]] == ["ipam-scheduler"]
    assert "kubeconfig" not in config["clientConnection"]  # in-cluster
    election = config["leaderElection"]
    assert (election["resourceName"], election["resourceNamespace"]) == (
        "ipam-scheduler", NAMESPACE)
    (ext,) = config["extenders"]
    assert ext["urlPrefix"] == "https://10.96.0.40:9443/v1"  # service.clusterIP
    lease = find(all_on_docs, "Role", "ipam-scheduler-lease")
    assert lease["rules"][0]["resourceNames"] == ["ipam-scheduler"]
    spec = dep["spec"]["template"]["spec"]
    secrets = {v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
    assert secrets == {"ipam-scheduler-client"}
    policy = find(all_on_docs, "NetworkPolicy", "ipam")
    (rest, extender) = policy["spec"]["ingress"]
    assert "from" not in rest and rest["ports"][0]["port"] == 9040
    assert extender["ports"][0]["port"] == 9443
    selector = dep["spec"]["template"]["metadata"]["labels"]
    peers = extender["from"]
    assert {"ipBlock": {"cidr": "10.0.0.0/24"}} in peers
    assert any(p.get("podSelector", {}).get("matchLabels", {}).items() <= selector.items()
               and p.get("podSelector") for p in peers)


def test_network_policy_without_peers_is_refused(tmp_path: Path) -> None:
    out = run_helm("template", RELEASE, str(CHART), "-n", NAMESPACE, tmp=tmp_path,
                   values={"networkPolicy": {"enabled": True}})
    assert out.returncode != 0
    assert "nobody could reach the extender" in out.stderr


def test_cni_daemonset_targets_the_release_service(all_on_docs: list[dict[str, Any]]) -> None:
    ds = find(all_on_docs, "DaemonSet", "ipam-cni")
    spec = ds["spec"]["template"]["spec"]
    (install,) = spec["initContainers"]
    (sync,) = spec["containers"]
    assert "--service=ipam" in install["command"]
    assert sync["command"] == [*install["command"], "--watch=60"]
    conf = find(all_on_docs, "ConfigMap", "ipam-cni-config")
    (name,) = conf["data"]
    assert f"--config=/etc/ipam-cni/{name}" in install["command"]
    assert json.loads(conf["data"][name])["plugins"][0]["ipam"]["type"] == "ipam-cni"


# --- generated certificates, loaded by the real consumers ------------------------------------

def write_secret(doc: dict[str, Any], directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for key, value in doc["data"].items():
        (directory / key).write_bytes(base64.b64decode(value))
    return directory


async def test_generated_certificates_make_a_mutual_tls_handshake(
        all_on_docs: list[dict[str, Any]], tmp_path: Path) -> None:
    """uvicorn with ipam's extender TLS options serves the chart's certificate and requires
    the chart's client certificate."""
    import uvicorn

    from ipam.api.auth import extender_tls_options

    server_dir = write_secret(find(all_on_docs, "Secret", "ipam-extender-tls"), tmp_path / "s")
    client_dir = write_secret(find(all_on_docs, "Secret", "ipam-scheduler-client"),
                              tmp_path / "c")
    settings = Settings(extender_tls_cert=server_dir / "tls.crt",
                        extender_tls_key=server_dir / "tls.key",
                        extender_tls_client_ca=server_dir / "ca.crt")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off",
                                           log_level="critical", **extender_tls_options(settings)))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            assert not task.done(), "uvicorn did not start"
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]

        def handshake(with_client_cert: bool, hostname: str) -> bytes:
            ctx = ssl.create_default_context(cafile=str(client_dir / "ca.crt"))
            if with_client_cert:
                ctx.load_cert_chain(client_dir / "tls.crt", client_dir / "tls.key")
            with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname=hostname) as tls:
                tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                return tls.recv(1024)

        # The names kube-scheduler may use: the Service's DNS name and its fixed ClusterIP.
        for host in ("ipam.kube-system.svc", "10.96.0.40"):
            assert (await asyncio.to_thread(handshake, True, host)).startswith(b"HTTP/1.1 200")
        # Without a client certificate: refused (with TLS 1.3 the alert comes on the first
        # read, as an error or as the end of the stream), never answered.
        try:
            reply = await asyncio.to_thread(handshake, False, "ipam.kube-system.svc")
        except (ssl.SSLError, ConnectionError):
            reply = b""
        assert reply == b""
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.to_thread(handshake, True, "elsewhere.example")
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


def test_real_kube_scheduler_loads_the_second_scheduler_config(tmp_path: Path) -> None:
    """kube-scheduler 1.20 (v1beta1) reads the rendered config and the generated client
    certificate, and writes back what it understood (1.20 drops unknown fields silently)."""
    if not os.access(REALKUBE_SCHEDULER, os.X_OK):
        pytest.skip(f"no kube-scheduler at {REALKUBE_SCHEDULER} (../shared/realkube/build.sh)")
    docs = render(tmp_path, {"secondScheduler": {"enabled": True}}, kube_version="1.20.2")
    certs = write_secret(find(docs, "Secret", "ipam-scheduler-client"), tmp_path / "tls")
    text = find(docs, "ConfigMap", "ipam-scheduler")["data"]["config.yaml"]
    config = yaml.safe_load(text.replace("/etc/ipam-scheduler/tls", str(certs)))
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1beta1"
    # Out of a pod there is no in-cluster configuration: a kubeconfig it never dials.
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "unused"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    config["clientConnection"]["kubeconfig"] = str(kubeconfig)
    # v1beta1 still has the insecure health and metrics listener (10251 by default, maybe
    # taken by a control plane on this machine): a free port (it must not be 0).
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    config["healthzBindAddress"] = config["metricsBindAddress"] = f"127.0.0.1:{free}"
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = subprocess.run([str(REALKUBE_SCHEDULER), f"--config={tmp_path / 'config.yaml'}",
                          "--secure-port=0", f"--write-config-to={tmp_path / 'out.yaml'}"],
                         capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    understood = yaml.safe_load((tmp_path / "out.yaml").read_text())
    (ext,) = understood["extenders"]
    (sent,) = config["extenders"]
    for key, value in sent.items():
        if key == "ignorable":  # false is the default, written back as absent
            assert not ext.get(key, False)
        else:
            assert ext[key] == value, key
    assert [p["schedulerName"] for p in understood["profiles"]] == ["ipam-scheduler"]
    assert understood["leaderElection"]["resourceName"] == "ipam-scheduler"
    assert understood["clientConnection"]["qps"] == 100
