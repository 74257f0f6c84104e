#!/usr/bin/env bash
# Stop what start.sh (and the tests, for ipam) recorded in $RUN/pid/, by those pids only.
#   stop.sh                 everything, ipam first, etcd last
#   stop.sh kube-scheduler  one component
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/env.sh"
names=${*:-ipam kube-scheduler kube-controller-manager kube-apiserver etcd}
for f in $names; do
  p="$RUN/pid/$f"; [ -f "$p" ] || continue
  pid=$(cat "$p"); kill "$pid" 2>/dev/null && echo "stopped $f ($pid)"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null; rm -f "$p"
done
exit 0
