# Settings of build.sh, start.sh and stop.sh (sourced, not run). Every value can be overridden
# from the environment; tests/e2e_real/conftest.py passes free ports and a run dir per session.
REALKUBE_DIR=${REALKUBE_DIR:-$HOME/realkube}
RK=$REALKUBE_DIR
BIN=$RK/bin                      # etcd, kube-apiserver, kube-controller-manager, kube-scheduler
RUN=${REALKUBE_RUN:-$RK/run}     # PKI, kubeconfigs, etcd data, log/, pid/ (recreated by start)
K8S_VERSION=1.20.2               # what Debian bookworm's kubernetes source package really is
BINARIES="etcd kube-apiserver kube-controller-manager kube-scheduler"
# Loopback ports, away from the machine's services and from ../shared/realkube's defaults.
ETCD_PORT=${ETCD_PORT:-24790}
ETCD_PEER_PORT=${ETCD_PEER_PORT:-24800}
APISERVER_PORT=${APISERVER_PORT:-27443}
SCHEDULER_PORT=${SCHEDULER_PORT:-21259}
KCM_PORT=${KCM_PORT:-21257}
API=https://127.0.0.1:$APISERVER_PORT
