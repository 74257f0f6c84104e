"""The shipped manifests against the real API server and the real kube-scheduler 1.20."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e_real.cluster import MANIFESTS, REALKUBE_DIR, ControlPlane, insecure_ports

pytestmark = [pytest.mark.realkube, pytest.mark.timeout(300)]


def documents(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


def test_rbac_applies_server_side(control_plane: ControlPlane) -> None:
    out = control_plane.kubectl("apply", "--dry-run=server", "-f", str(MANIFESTS / "rbac.yaml"))
    assert out.returncode == 0, out.stderr
    expected = {f"{d['kind'].lower()}/{d['metadata']['name']}" for d in documents("rbac.yaml")}
    said = set()
    for line in filter(None, out.stdout.splitlines()):
        resource, name = line.split()[0].split("/", 1)
        said.add(f"{resource.split('.', 1)[0]}/{name}")
    assert said == expected, out.stdout


def test_deployment_pod_spec_passes_the_api_servers_validation(
        control_plane: ControlPlane, tmp_path: Path) -> None:
    # The ServiceAccount it names must exist, as after `kubectl apply -k manifests/`.
    rbac = control_plane.kubectl("apply", "-f", str(MANIFESTS / "rbac.yaml"))
    assert rbac.returncode == 0, rbac.stderr
    out = control_plane.kubectl("apply", "--dry-run=server", "-f",
                                str(MANIFESTS / "deployment.yaml"))
    assert out.returncode == 0, out.stderr
    assert "deployment.apps/ipam" in out.stdout and "(server dry run)" in out.stdout

    # The same dry run refuses a broken pod spec: the check has teeth.
    (broken,) = documents("deployment.yaml")
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 70000
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    refused = control_plane.kubectl("apply", "--dry-run=server", "-f", str(path))
    assert refused.returncode != 0 and "containerPort" in refused.stderr, refused


def understood(config: Path, run: Path, tmp_path: Path) -> dict[str, Any]:
    """What the real kube-scheduler made of a config file (--write-config-to, then exit)."""
    out_file = tmp_path / "understood.yaml"
    done = subprocess.run([str(REALKUBE_DIR / "bin" / "kube-scheduler"), f"--config={config}",
                           f"--write-config-to={out_file}", "--port=0", "--secure-port=0",
                           f"--authentication-kubeconfig={run / 'scheduler.kubeconfig'}",
                           f"--authorization-kubeconfig={run / 'scheduler.kubeconfig'}"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(yaml.safe_load(out_file.read_text()))


def test_the_real_scheduler_understands_the_v1beta1_file_as_written(
        control_plane: ControlPlane, tmp_path: Path) -> None:
    """1.20 decodes leniently (a misspelt field is silently dropped): compare what it read."""
    shipped = documents("scheduler-config-v1beta1.yaml")[0]
    # Only what must point at this machine changes: the kubeconfig, and the certificate
    # files, which the scheduler reads at start (ours, from start.sh's extender PKI).
    local = dict(shipped, **insecure_ports(), clientConnection={
        "kubeconfig": str(control_plane.run / "scheduler.kubeconfig")})
    (written,) = local["extenders"] = [dict(e) for e in shipped["extenders"]]
    if "tlsConfig" in written:
        pki = control_plane.pki
        files = {"certFile": pki / "scheduler-client.crt", "keyFile": pki / "scheduler-client.key",
                 "caFile": pki / "extender-ca.crt"}
        written["tlsConfig"] = {k: str(files[k]) if k in files else v
                                for k, v in written["tlsConfig"].items()}
    path = tmp_path / "scheduler-config.yaml"
    path.write_text(yaml.safe_dump(local))
    config = understood(path, control_plane.run, tmp_path)
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1beta1"
    (read,) = config["extenders"]
    # The writer omits false booleans (omitempty), as the reader defaults them.
    assert read == {k: v for k, v in written.items() if v is not False}
    assert config["leaderElection"]["leaderElect"] is True
    # managedResources with ignoredByScheduler reach the resource-fit plugin.
    fit = [p["args"] for profile in config["profiles"] for p in profile["pluginConfig"]
           if p["name"] == "NodeResourcesFit"]
    assert fit and all(a.get("ignoredResources") == ["tke.cloud.tencent.com/eni-ip"]
                       for a in fit)


def test_the_real_scheduler_understands_the_test_config_with_tls(
        control_plane: ControlPlane, tmp_path: Path) -> None:
    """The config the suite runs (the shipped file with TLS and client certificate)."""
    rendered = control_plane.scheduler_config(False, url="https://127.0.0.1:9443/v1")
    path = tmp_path / "scheduler-config.yaml"
    path.write_text(yaml.safe_dump(rendered))
    (read,) = understood(path, control_plane.run, tmp_path)["extenders"]
    assert read["enableHTTPS"] is True and "nodeCacheCapable" not in read
    assert read["tlsConfig"] == rendered["extenders"][0]["tlsConfig"]
    assert "ignorable" not in read  # false
