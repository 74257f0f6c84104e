"""Install ``ipam-cni`` on a node: the DaemonSet's init container (and sync loop) runs this.

The plugin runs on the host, not in the image, so what lands in the CNI bin dir must run
on the node's own ``python3`` (3.8+). We install a launcher script, not a zipapp: the
launcher imports the plugin from a content-addressed directory beside it
(``.ipam-cni/<digest>/``), where the host's Python caches bytecode after the first run.
A zipapp cannot cache bytecode, so on a node whose Python differs from the image's it
recompiles the plugin at every pod start (measured: ~55 ms per ADD instead of ~30 ms).
Upgrades stay atomic: the new directory is complete before ``os.replace`` swaps the
launcher, and the previous directory is kept for plugins still starting from it.

Only the four standard-library plugin modules are copied, under a stub
``ipam/__init__.py``, so nothing the service adds to ``ipam`` can slow a pod start.
Beside the plugin it writes the network config and copies the token where the host-side
plugin can read them; container mounts are invisible to the host. ``--watch`` repeats
that sync so a rotated Secret reaches the nodes without restarts.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PLUGIN_MODULES = ("__init__.py", "plugin.py", "client.py", "result.py")
"""What the node needs; ``install`` itself stays out of it."""

PLUGIN_TYPE = "ipam-cni"
LIB_DIR = ".ipam-cni"
DEFAULT_INTERPRETER = "/usr/bin/python3 -IS"
"""``-I``: ignore PYTHON* variables and user site; ``-S``: skip ``site`` (10 ms or more)."""

_STUB_PACKAGE = b'"""Stub: the node gets only ipam.cni."""\n'


def plugin_files() -> dict[str, bytes]:
    """Relative path -> content of the library the launcher imports."""
    package = Path(__file__).resolve().parent
    files = {"ipam/__init__.py": _STUB_PACKAGE}
    for module in PLUGIN_MODULES:
        files[f"ipam/cni/{module}"] = (package / module).read_bytes()
    return files


def digest(files: dict[str, bytes]) -> str:
    """Names the library directory: same code, same directory; new code never overwrites."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + files[name] + b"\0")
    return h.hexdigest()[:16]


def launcher(interpreter: str, lib_digest: str) -> bytes:
    """The executable the runtime finds as ``ipam-cni`` in CNI_PATH."""
    return f"""#!{interpreter}
\"\"\"ipam-cni launcher written by ipam.cni.install: runs the plugin kept beside it.\"\"\"
import os
import sys

_here = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.join(_here, "{LIB_DIR}", "{lib_digest}"))
from ipam.cni.plugin import main  # noqa: E402

main()
""".encode()


def install_plugin(bin_dir: Path, interpreter: str) -> bool:
    """Write library and launcher into ``bin_dir``; True if anything changed."""
    files = plugin_files()
    lib_digest = digest(files)
    lib_root = bin_dir / LIB_DIR
    lib_root.mkdir(mode=0o755, parents=True, exist_ok=True)
    target = lib_root / lib_digest
    changed = False
    if not target.is_dir():
        tmp = Path(tempfile.mkdtemp(prefix=f".{lib_digest}.", dir=lib_root))
        for name, content in files.items():
            path = tmp / name
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            path.write_bytes(content)
            path.chmod(0o644)
        # Bytecode for the image's Python: used if the host runs the same version.
        compileall.compile_dir(str(tmp), quiet=2)
        tmp.chmod(0o755)
        os.rename(tmp, target)
        changed = True
    changed |= write_atomic(bin_dir / PLUGIN_TYPE, launcher(interpreter, lib_digest), 0o755)
    _prune(lib_root, keep=lib_digest)
    return changed


def _prune(lib_root: Path, keep: str) -> None:
    """Drop library directories but the current and the newest previous one."""
    others = sorted(
        (p for p in lib_root.iterdir() if p.is_dir() and p.name != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for stale in others[1:]:
        shutil.rmtree(stale, ignore_errors=True)


def write_atomic(path: Path, data: bytes, mode: int) -> bool:
    """Replace ``path`` with ``data`` unless it already holds it; True if written.

    A temporary file in the same directory plus ``os.replace``: a runtime executing or
    reading the old file never sees a half-written one.
    """
    with contextlib.suppress(OSError):
        if path.read_bytes() == data and (path.stat().st_mode & 0o777) == mode:
            return False
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return True


def service_url(template_url: str, env: dict[str, str], service: str) -> str:
    """Prefer the Service's ClusterIP (``{SERVICE}_SERVICE_HOST``/``_PORT``) over its name.

    The plugin runs in the host's network namespace with the host's resolv.conf, which
    usually cannot resolve ``*.svc`` names; kube-proxy makes the ClusterIP reachable.
    """
    prefix = service.upper().replace("-", "_")
    host, port = env.get(f"{prefix}_SERVICE_HOST"), env.get(f"{prefix}_SERVICE_PORT")
    if not host or not port:
        return template_url
    scheme = template_url.split("://", 1)[0] if "://" in template_url else "http"
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def render_conf(template: dict[str, Any], url: str | None, token_file: str | None) -> bytes:
    """The network config with every ``ipam-cni`` section pointed at ``url``/``token_file``."""
    conf = json.loads(json.dumps(template))
    plugins = conf.get("plugins", [conf])
    sections = [p["ipam"] for p in plugins if p.get("ipam", {}).get("type") == PLUGIN_TYPE]
    if not sections:
        raise ValueError(f"the config has no plugin with an ipam section of type {PLUGIN_TYPE}")
    for ipam in sections:
        if url:
            ipam["url"] = url
        if token_file:
            ipam["tokenFile"] = token_file
    return (json.dumps(conf, indent=2) + "\n").encode()


def sync(args: argparse.Namespace, env: dict[str, str]) -> list[str]:
    """Write config and token (and binary unless ``skip_binary``); names of changed files."""
    changed: list[str] = []
    template = json.loads(Path(args.config).read_text())
    url = args.url or service_url(
        template.get("plugins", [template])[0].get("ipam", {}).get("url", ""), env, args.service
    )
    host_token = None
    if args.token:
        host_token = args.host_token_file
        target = Path(args.host_root + host_token)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if write_atomic(target, Path(args.token).read_bytes(), 0o600):
            changed.append(str(target))
    conf_path = Path(args.conf_dir) / (args.conf_name or Path(args.config).name)
    if write_atomic(conf_path, render_conf(template, url, host_token), 0o644):
        changed.append(str(conf_path))
    return changed


def check_interpreter(interpreter: str, host_root: str) -> None:
    """Fail the init container, not every pod start, when the node has no such Python."""
    path = interpreter.split(maxsplit=1)[0]
    if host_root and not os.path.lexists(host_root + path):
        raise SystemExit(
            f"the node has no {path} (looked under {host_root}): ipam-cni needs Python 3.8+ "
            "on the host; point --python at it"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ipam.cni.install", description=__doc__)
    parser.add_argument("--bin-dir", default="/host/opt/cni/bin")
    parser.add_argument("--conf-dir", default="/host/etc/cni/net.d")
    parser.add_argument("--config", required=True, help="network config (conflist) template")
    parser.add_argument("--conf-name", help="file name in --conf-dir (default: the template's)")
    parser.add_argument("--token", help="token file in the container (the mounted Secret)")
    parser.add_argument("--host-token-file", default="/etc/ipam/token",
                        help="where the host-side plugin reads the token")  # fmt: skip
    parser.add_argument("--host-root", default="", help="where the host's / is mounted")
    parser.add_argument("--url", help="ipam service URL (default: Service env, then template)")
    parser.add_argument("--service", default="ipam", help="Service whose env vars give the URL")
    parser.add_argument(
        "--python", default=DEFAULT_INTERPRETER, help="the host's Python, as a shebang line"
    )
    parser.add_argument("--watch", type=float, metavar="SECONDS",
                        help="keep syncing config and token every SECONDS")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    env = dict(os.environ)
    check_interpreter(args.python, args.host_root)
    if install_plugin(Path(args.bin_dir), args.python):
        print(f"installed {Path(args.bin_dir) / PLUGIN_TYPE}", flush=True)
    for path in sync(args, env):
        print(f"wrote {path}", flush=True)
    while args.watch:
        time.sleep(args.watch)
        try:
            for path in sync(args, env):
                print(f"updated {path}", flush=True)
        except (OSError, ValueError) as exc:  # keep the last good files; say why
            print(f"sync failed: {exc}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
