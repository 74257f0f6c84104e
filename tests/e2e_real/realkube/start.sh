#!/usr/bin/env bash
# A real control plane on loopback for the e2e suite (tests/e2e_real):
#   start.sh            fresh $RUN: PKI, identities, etcd, kube-apiserver, kube-controller-manager
#   start.sh scheduler  (re)start kube-scheduler with $RUN/scheduler-config.yaml, which the test
#                       renders from manifests/scheduler-config-v1beta1.yaml; waits for its lease
# ipam itself is started by the tests (it needs its pools, database and RBAC first).
# Stop with stop.sh: it ends only the processes whose pids this script recorded in $RUN/pid/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env.sh"

wait_http() { # url what tries
  for _ in $(seq "$3"); do curl -skf "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "$2 did not answer $1; see $RUN/log/" >&2; return 1
}

start_scheduler() {
  local config=${SCHEDULER_CONFIG:-$RUN/scheduler-config.yaml}
  [ -f "$config" ] || { echo "no scheduler config at $config" >&2; exit 2; }
  if [ -f "$RUN/pid/kube-scheduler" ]; then
    local pid; pid=$(cat "$RUN/pid/kube-scheduler")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$RUN/pid/kube-scheduler"
  fi
  cd "$RUN"
  local n=1; while [ -e "log/kube-scheduler.$n.log" ]; do n=$((n + 1)); done
  local log=log/kube-scheduler.$n.log
  "$BIN/kube-scheduler" --config="$config" \
    --authentication-kubeconfig=scheduler.kubeconfig --authorization-kubeconfig=scheduler.kubeconfig \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --port=0 -v=2 > "$log" 2>&1 &
  echo $! > pid/kube-scheduler
  ln -sfn "kube-scheduler.$n.log" log/kube-scheduler.log
  wait_http "https://127.0.0.1:$SCHEDULER_PORT/healthz" kube-scheduler 150
  # kube-scheduler 1.20 keeps its lease on SIGTERM: a restarted one waits up to 15 s for it.
  if [ "${WAIT_LEASE:-1}" = 1 ]; then
    for _ in $(seq 150); do grep -q 'successfully acquired lease' "$log" && break; sleep 0.2; done
    grep -q 'successfully acquired lease' "$log" || { echo "kube-scheduler got no lease: $RUN/$log" >&2; exit 1; }
  fi
  echo "kube-scheduler up (pid $(cat pid/kube-scheduler), log $RUN/$log)"
}

if [ "${1:-}" = scheduler ]; then
  start_scheduler
  exit 0
fi

for b in $BINARIES; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run $HERE/build.sh first" >&2; exit 2; }
done
for p in $ETCD_PORT $ETCD_PEER_PORT $APISERVER_PORT $SCHEDULER_PORT $KCM_PORT; do
  if ss -ltn "( sport = :$p )" | grep -q LISTEN; then echo "port $p is taken (stop.sh?)" >&2; exit 3; fi
done
if [ -d "$RUN/pid" ] && [ -n "$(ls -A "$RUN/pid")" ]; then
  echo "$RUN/pid/ lists running processes: stop.sh first" >&2; exit 3
fi
rm -rf "$RUN"; mkdir -p "$RUN"/{pki,log,pid}
cd "$RUN"

ossl() { openssl "$@" 2>/dev/null; }
cert() { # name subject extensions ca
  ossl req -newkey rsa:2048 -nodes -subj "$2" -keyout "pki/$1.key" -out "pki/$1.csr"
  printf '%s\n' "$3" > "pki/$1.ext"
  ossl x509 -req -in "pki/$1.csr" -CA "pki/$4.crt" -CAkey "pki/$4.key" -CAcreateserial \
    -days 30 -extfile "pki/$1.ext" -out "pki/$1.crt"
}
# --- PKI: the cluster CA and the API server's serving cert; the service-account key pair ----
ossl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=realkube-ca -keyout pki/ca.key -out pki/ca.crt
cert apiserver /CN=kube-apiserver "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.96.0.1
extendedKeyUsage=serverAuth" ca
ossl genrsa -out pki/sa.key 2048
ossl rsa -in pki/sa.key -pubout -out pki/sa.pub
# --- the extender's own TLS listener: its CA, its serving cert, kube-scheduler's client cert --
ossl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=ipam-extender-ca -keyout pki/extender-ca.key -out pki/extender-ca.crt
cert extender /CN=ipam-extender "subjectAltName=IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth" extender-ca
cert scheduler-client /CN=kube-scheduler "extendedKeyUsage=clientAuth" extender-ca

# --- identities: static bearer tokens (token,user,uid,"groups") ----------------------------
tok() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
T_ADMIN=$(tok); T_SCHED=$(tok); T_KCM=$(tok); T_IPAM=$(tok)
cat > pki/tokens.csv <<X
$T_ADMIN,admin,admin,"system:masters"
$T_SCHED,system:kube-scheduler,kube-scheduler
$T_KCM,system:kube-controller-manager,kube-controller-manager
$T_IPAM,system:serviceaccount:kube-system:ipam,ipam-sa,"system:serviceaccounts,system:serviceaccounts:kube-system,system:authenticated"
X
kubeconfig() { # name user token
  cat > "$1.kubeconfig" <<X
apiVersion: v1
kind: Config
clusters:
- name: realkube
  cluster: {server: "$API", certificate-authority: "$RUN/pki/ca.crt"}
users:
- name: $2
  user: {token: "$3"}
contexts:
- name: realkube
  context: {cluster: realkube, user: $2}
current-context: realkube
X
}
kubeconfig admin admin "$T_ADMIN"
kubeconfig scheduler system:kube-scheduler "$T_SCHED"
kubeconfig controller-manager system:kube-controller-manager "$T_KCM"
kubeconfig ipam ipam "$T_IPAM"
printf %s "$T_ADMIN" > admin.token

# Audit every request of ipam's identity (metadata only): the suite checks none was refused.
cat > audit-policy.yaml <<X
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
    users: ["system:serviceaccount:kube-system:ipam"]
  - level: None
X

# --- etcd (Debian's etcd-server 3.4), loopback only ----------------------------------------
"$BIN/etcd" --name realkube --data-dir "$RUN/etcd" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "realkube=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "" \
  > log/etcd.log 2>&1 &
echo $! > pid/etcd
wait_http "http://127.0.0.1:$ETCD_PORT/health" etcd 150

# --- kube-apiserver -------------------------------------------------------------------------
# --endpoint-reconciler-type=none: the 'kubernetes' Endpoints would need a non-loopback address.
"$BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" --insecure-port=0 \
  --tls-cert-file=pki/apiserver.crt --tls-private-key-file=pki/apiserver.key --client-ca-file=pki/ca.crt \
  --token-auth-file=pki/tokens.csv --authorization-mode=Node,RBAC \
  --service-cluster-ip-range=10.96.0.0/16 --endpoint-reconciler-type=none \
  --service-account-key-file=pki/sa.pub --service-account-signing-key-file=pki/sa.key \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --allow-privileged=true --profiling=false \
  --requestheader-client-ca-file=pki/ca.crt --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --audit-policy-file=audit-policy.yaml --audit-log-path=log/audit.log --audit-log-format=json \
  > log/kube-apiserver.log 2>&1 &
echo $! > pid/kube-apiserver
K() { curl -sS --cacert "$RUN/pki/ca.crt" -H "Authorization: Bearer $T_ADMIN" "$@"; }
for _ in $(seq 300); do [ "$(K -o /dev/null -w '%{http_code}' "$API/readyz" 2>/dev/null)" = 200 ] && break; sleep 0.2; done
[ "$(K -o /dev/null -w '%{http_code}' "$API/readyz")" = 200 ] || { echo "kube-apiserver not ready: $RUN/log/kube-apiserver.log" >&2; exit 1; }

# --- kube-controller-manager: Deployment/ReplicaSet/StatefulSet/GC/ServiceAccount/token ------
# No node-lifecycle controller: without kubelet heartbeats it would taint and evict everything.
"$BIN/kube-controller-manager" --kubeconfig=controller-manager.kubeconfig \
  --authentication-kubeconfig=controller-manager.kubeconfig --authorization-kubeconfig=controller-manager.kubeconfig \
  --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --port=0 \
  --use-service-account-credentials=true --service-account-private-key-file=pki/sa.key \
  --root-ca-file=pki/ca.crt --cluster-signing-cert-file=pki/ca.crt --cluster-signing-key-file=pki/ca.key \
  --controllers='*,-nodelifecycle,-nodeipam,-cloud-node-lifecycle,-route,-service' \
  --kube-api-qps=500 --kube-api-burst=1000 --concurrent-deployment-syncs=10 \
  --concurrent-replicaset-syncs=10 --concurrent-statefulset-syncs=10 --concurrent-gc-syncs=20 \
  --leader-elect=false > log/kube-controller-manager.log 2>&1 &
echo $! > pid/kube-controller-manager
wait_http "https://127.0.0.1:$KCM_PORT/healthz" kube-controller-manager 300
echo "control plane up: $API (admin kubeconfig $RUN/admin.kubeconfig, logs $RUN/log/)"
