#!/usr/bin/env bash
# Build the real control plane once, from Debian's packages only (no Go module proxy needed):
#   - Go: Debian bookworm's golang-go (1.19);
#   - Kubernetes v1.20.2: Debian's `kubernetes` SOURCE package (1.20.5+really1.20.2, the upstream
#     tree with vendor/), built with upstream's own `make WHAT=...` (~5 min on 2 cores);
#   - etcd 3.4.23: Debian's etcd-server binary package, unpacked (not installed: no service).
# Output: $REALKUBE_DIR/bin/{etcd,kube-apiserver,kube-controller-manager,kube-scheduler}.
# Does nothing when they are all there (FORCE=1 rebuilds). Needs root for apt-get.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env.sh"
missing=""
for b in $BINARIES; do [ -x "$BIN/$b" ] || missing="$missing $b"; done
if [ -z "$missing" ] && [ -z "${FORCE:-}" ]; then
  echo "realkube: reusing $BIN ($("$BIN/kube-apiserver" --version))"
  exit 0
fi
echo "realkube: building$missing into $BIN"
WHAT=${WHAT:-cmd/kube-apiserver cmd/kube-scheduler cmd/kube-controller-manager}
mkdir -p "$RK" "$BIN"
cd "$RK"
t0=$(date +%s)
if ! command -v go >/dev/null || ! command -v make >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go make >/dev/null
fi
go version

# deb-src lists in a private apt state dir: the machine's apt configuration is not touched.
mkdir -p apt/sp apt/lists/partial src debs
# The machine's own apt sources (deb822 or one-line), with every binary source made a source one.
{
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] && sed -e 's/^Types: deb$/Types: deb-src/' "$f"; echo
  done
} > apt/sp/src.sources
: > apt/sp/src.list
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -e "$f" ] && sed -n 's/^deb /deb-src /p' "$f" >> apt/sp/src.list
done
APTO=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$RK/apt/sp" -o "Dir::State::Lists=$RK/apt/lists")
apt-get "${APTO[@]}" update -qq
(cd src && apt-get "${APTO[@]}" source --download-only kubernetes 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
tarball=$(ls src/kubernetes_*.orig.tar.gz | tail -1)
[ -d "src/kubernetes-$K8S_VERSION" ] || tar -C src -xzf "$tarball"
t1=$(date +%s)

cd "src/kubernetes-$K8S_VERSION"
# Upstream's build (GOPATH mode with vendor/, generated deepcopy/conversion/openapi files);
# no git checkout here, so the version comes from these variables.
export CGO_ENABLED=0 GOPROXY=off GOFLAGS= HOME="$RK/home" \
  KUBE_GIT_VERSION=v$K8S_VERSION KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20 KUBE_GIT_TREE_STATE=clean
mkdir -p "$HOME"
make WHAT="$WHAT"
for w in $WHAT; do cp "_output/bin/$(basename "$w")" "$BIN/"; done
cd "$RK"
t2=$(date +%s)

(cd debs && apt-get download etcd-server 2>&1 | grep -v '^W: Download is performed unsandboxed' || true)
for d in debs/etcd-server_*.deb; do dpkg-deb -x "$d" etcd-root; done
cp etcd-root/usr/bin/etcd "$BIN/"

for b in $BINARIES; do printf '%-26s %s\n' "$b" "$("$BIN/$b" --version 2>/dev/null | head -1)"; done
echo "fetch+unpack $((t1 - t0)) s, make $((t2 - t1)) s, total $(( $(date +%s) - t0 )) s"
