"""Node installation, the shipped manifests, and what keeps the plugin cheap to start."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ipam.cni import install
from tests.cni.cni_helpers import REPO_ROOT, TOKEN, FakeIpamService, netconf, plugin_env, run_plugin

MANIFESTS = REPO_ROOT / "manifests"
CONFLISTS = sorted((MANIFESTS / "cni").glob("*.conflist"))
PLUGIN_SOURCES = [REPO_ROOT / "ipam" / "cni" / m for m in install.PLUGIN_MODULES]


def run_installer(tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> Path:
    """Run ``python -m ipam.cni.install`` into tmp dirs; returns the fake host root."""
    host = tmp_path / "host"
    for d in ("opt/cni/bin", "etc/cni/net.d"):
        (host / d).mkdir(parents=True, exist_ok=True)
    python = host / sys.executable.lstrip("/")  # the interpreter check looks for it here
    python.parent.mkdir(parents=True, exist_ok=True)
    python.touch()
    secret = tmp_path / "secret-token"
    if not secret.exists():
        secret.write_text(TOKEN)
    subprocess.run(
        [
            sys.executable, "-m", "ipam.cni.install",
            f"--bin-dir={host}/opt/cni/bin",
            f"--conf-dir={host}/etc/cni/net.d",
            f"--config={MANIFESTS / 'cni' / 'vlan.conflist'}",
            "--conf-name=90-ipam-fixed.conflist",
            f"--token={secret}",
            f"--host-root={host}",
            "--host-token-file=/etc/ipam/token",
            f"--python={sys.executable} -IS",
            *extra,
        ],
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO_ROOT), **(env or {})},
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return host


def test_install_writes_launcher_library_config_and_token(tmp_path: Path) -> None:
    host = run_installer(
        tmp_path, env={"IPAM_SERVICE_HOST": "10.96.0.50", "IPAM_SERVICE_PORT": "9040"}
    )
    launcher = host / "opt/cni/bin/ipam-cni"
    assert launcher.stat().st_mode & 0o777 == 0o755
    assert launcher.read_text().startswith(f"#!{sys.executable} -IS\n")
    (lib,) = (host / "opt/cni/bin/.ipam-cni").iterdir()
    assert sorted(p.name for p in (lib / "ipam/cni").glob("*.py")) == sorted(install.PLUGIN_MODULES)
    assert not (lib / "ipam/cni/install.py").exists()
    token = host / "etc/ipam/token"
    assert token.read_text() == TOKEN
    assert token.stat().st_mode & 0o777 == 0o600
    conf = json.loads((host / "etc/cni/net.d/90-ipam-fixed.conflist").read_text())
    assert conf["plugins"][0]["ipam"] == {
        "type": "ipam-cni",
        "url": "http://10.96.0.50:9040",  # the ClusterIP: the host cannot resolve *.svc
        "tokenFile": "/etc/ipam/token",
        "timeoutSeconds": 5,
    }


def test_installed_launcher_runs_the_plugin(
    tmp_path: Path, fake_service: FakeIpamService, token_file: Path
) -> None:
    host = run_installer(tmp_path)
    launcher = str(host / "opt/cni/bin/ipam-cni")
    version = run_plugin("VERSION", b"", argv0=[launcher])
    assert version.returncode == 0, version
    assert version.json["cniVersion"] == "1.0.0"
    # PYTHONPATH is ignored (-I): the launcher imports the library beside it, not the repo.
    added = run_plugin(
        "ADD", netconf(fake_service.url, token_file=token_file), argv0=[launcher],
        PYTHONPATH="/nonexistent",
    )  # fmt: skip
    assert added.returncode == 0, added
    assert added.json["ips"][0]["address"] == "10.11.128.7/21"


def test_reinstall_is_idempotent_and_upgrades_keep_the_previous_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    assert install.install_plugin(bin_dir, "/usr/bin/python3 -IS")
    assert not install.install_plugin(bin_dir, "/usr/bin/python3 -IS")
    libs = bin_dir / install.LIB_DIR
    first = {p.name for p in libs.iterdir()}
    for release in ("v2", "v3"):
        stub = (release + "\n").encode()
        monkeypatch.setattr(install, "_STUB_PACKAGE", stub)
        assert install.install_plugin(bin_dir, "/usr/bin/python3 -IS")
    names = {p.name for p in libs.iterdir()}
    assert len(names) == 2  # v3 (current) and v2 (previous); the first one pruned
    assert not first & names
    current = install.digest(install.plugin_files())
    assert current in names
    assert current in (bin_dir / "ipam-cni").read_text()


def test_missing_host_python_fails_the_installer(tmp_path: Path) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        run_installer(tmp_path, "--python=/usr/bin/python9 -IS")
    assert b"the node has no /usr/bin/python9" in failed.value.stderr


@pytest.mark.parametrize(
    ("env", "url"),
    [
        ({}, "http://ipam.kube-system.svc:9040"),
        ({"IPAM_SERVICE_HOST": "10.96.0.50"}, "http://ipam.kube-system.svc:9040"),
        ({"IPAM_SERVICE_HOST": "fd00::50", "IPAM_SERVICE_PORT": "9040"}, "http://[fd00::50]:9040"),
    ],
)
def test_service_url(env: dict[str, str], url: str) -> None:
    assert install.service_url("http://ipam.kube-system.svc:9040", env, "ipam") == url


def test_render_conf_needs_an_ipam_cni_section() -> None:
    with pytest.raises(ValueError, match="ipam-cni"):
        install.render_conf({"type": "bridge", "ipam": {"type": "host-local"}}, None, None)


# -- manifests ----------------------------------------------------------------------------


def test_every_main_plugin_has_an_example() -> None:
    types = {json.loads(p.read_text())["plugins"][0]["type"] for p in CONFLISTS}
    assert types == {"bridge", "macvlan", "ipvlan", "vlan"}


def plugin_stdin(conflist: dict[str, Any], plugin: dict[str, Any]) -> dict[str, Any]:
    """What libcni passes a plugin of a list: its own config plus the list's name/version."""
    return {**plugin, "cniVersion": conflist["cniVersion"], "name": conflist["name"]}


@pytest.mark.parametrize("path", CONFLISTS, ids=lambda p: p.stem)
def test_example_configs_yield_a_result(
    path: Path, fake_service: FakeIpamService, token_file: Path
) -> None:
    """The kernel here has no vlan/macvlan links: check the IPAM result these configs get."""
    conflist = json.loads(path.read_text())
    (plugin,) = conflist["plugins"]
    ipam = plugin["ipam"]
    assert ipam["type"] == "ipam-cni"
    assert ipam["url"] == "http://ipam.kube-system.svc:9040"
    if plugin["type"] in ("vlan", "macvlan", "ipvlan"):
        assert plugin["master"] == "eth0"
    if plugin["type"] == "vlan":
        assert plugin["vlanId"] == 1200
    ipam.update(url=fake_service.url, tokenFile=str(token_file))
    run = run_plugin("ADD", plugin_stdin(conflist, plugin))
    assert run.returncode == 0, run
    assert run.json == {
        "cniVersion": "1.0.0",
        "ips": [{"address": "10.11.128.7/21", "gateway": "10.11.135.254"}],
        "routes": [{"dst": "0.0.0.0/0", "gw": "10.11.135.254"}],
        "dns": {},
    }


def test_daemonset() -> None:
    docs = list(yaml.safe_load_all((MANIFESTS / "cni-daemonset.yaml").read_text()))
    config_map = next(d for d in docs if d["kind"] == "ConfigMap")
    daemonset = next(d for d in docs if d["kind"] == "DaemonSet")
    assert daemonset["metadata"]["namespace"] == "kube-system"
    # The shipped config is the vlan example.
    shipped = json.loads(config_map["data"]["90-ipam-fixed.conflist"])
    assert shipped == json.loads((MANIFESTS / "cni" / "vlan.conflist").read_text())
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["tolerations"] == [{"operator": "Exists"}]
    host_paths = {v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert {"/opt/cni/bin", "/etc/cni/net.d", "/etc/ipam"} <= host_paths
    secrets = [v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v]
    assert secrets == ["ipam-cni-token"]
    for container in pod["initContainers"] + pod["containers"]:
        assert container["image"] == "ghcr.io/example/ipam:0.1.0"
        assert container["resources"]["requests"] and container["resources"]["limits"]
        security = container["securityContext"]
        assert security["capabilities"]["drop"] == ["ALL"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        # The command parses with the installer's own options.
        assert container["command"][:3] == ["python", "-m", "ipam.cni.install"]
        args = install.parse_args(container["command"][3:])
        assert args.config.endswith("90-ipam-fixed.conflist")


# -- start-up cost and portability --------------------------------------------------------


HEAVY = ("http.client", "urllib.request", "email", "ssl", "ipaddress", "dataclasses", "typing")


@pytest.mark.parametrize("command", ["VERSION", "ADD"])
def test_startup_imports_stay_small(
    command: str, fake_service: FakeIpamService, token_file: Path
) -> None:
    """Pins the import diet that keeps a pod's ADD in the ~25 ms range (see client.py)."""
    probe = (
        "import sys, io, atexit\n"
        "from ipam.cni import plugin\n"
        "atexit.register(lambda: print(sorted(sys.modules), file=sys.stderr))\n"
        "plugin.main()\n"
    )
    conf = json.dumps(netconf(fake_service.url, token_file=token_file)).encode()
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(REPO_ROOT)!r})\n"
         + probe],
        input=conf, env=plugin_env(command), capture_output=True, check=False, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 0, proc
    modules = set(ast.literal_eval(proc.stderr.decode().strip().splitlines()[-1]))
    allowed_on_add = {"ipaddress"} if command == "ADD" else set()
    loaded = {m for m in modules for h in HEAVY if m == h or m.startswith(h + ".")}
    assert loaded <= allowed_on_add
    assert not {m for m in modules if m.startswith("ipam.") and not m.startswith("ipam.cni")}


@pytest.mark.parametrize("source", PLUGIN_SOURCES, ids=lambda p: p.name)
def test_plugin_parses_as_python_3_8(source: Path) -> None:
    """The plugin runs on the node's python3, which may be as old as 3.8."""
    ast.parse(source.read_text(), str(source), feature_version=(3, 8))
    tree = ast.parse(source.read_text())
    if not any(isinstance(n, ast.FunctionDef | ast.ClassDef) for n in tree.body):
        return
    future = [n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "__future__"]
    assert future, "annotations like 'str | None' need 'from __future__ import annotations'"


def test_sync_picks_up_a_rotated_token(tmp_path: Path) -> None:
    host = run_installer(tmp_path)
    args = install.parse_args(
        [
            f"--conf-dir={host}/etc/cni/net.d",
            f"--config={MANIFESTS / 'cni' / 'vlan.conflist'}",
            "--conf-name=90-ipam-fixed.conflist",
            f"--token={tmp_path / 'secret-token'}",
            f"--host-root={host}",
        ]
    )
    assert install.sync(args, {}) == []  # nothing changed since the install
    (tmp_path / "secret-token").write_text("rotated")
    assert install.sync(args, {}) == [f"{host}/etc/ipam/token"]
    assert (host / "etc/ipam/token").read_text() == "rotated"
