#!/usr/bin/env bash
# Run the browser test with the systemd spawner: the hub runs as root inside a contained
# systemd (PID 1 of fresh namespaces, see shared systemd-in-tests notes), user servers are
# transient units there, and Chromium outside reaches them through the hub's proxy on
# 127.0.0.1 (the network namespace is shared).
#   usage: tests/e2e/with-systemd.sh VENV
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$1
cgroup=jupyterhub-rs-e2e-$$
work=/var/lib/jupyterhub-rs-e2e   # /tmp is private inside the container; this is shared
mkdir -p "$work"
# The checkout may live under /tmp, which the container does not see: copy the binary.
bin="$work/jupyterhub"
cp "$(realpath "${JUPYTERHUB_BIN:-target/debug/jupyterhub}")" "$bin"

script='
for d in /run /tmp /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs $d; done
mount -t tmpfs -o mode=755 tmpfs /var/log/journal
mkdir -p /run/lock
exec /lib/systemd/systemd --system --log-target=console --log-level=warning --unit=basic.target'
(
  for h in systemd unified memory cpu cpuacct pids; do
    mkdir -p /sys/fs/cgroup/$h/$cgroup 2>/dev/null || true
    echo $BASHPID > /sys/fs/cgroup/$h/$cgroup/cgroup.procs 2>/dev/null || true
  done
  exec unshare --pid --fork --kill-child --mount --uts --ipc --cgroup --propagation private --mount-proc \
    env container=unshare sh -c "$script" >/dev/null 2>&1
) &
unshare_pid=$!
pid1=""
cleanup() {
  [ -n "$pid1" ] && kill -KILL "$pid1" 2>/dev/null || true
  kill -KILL "$unshare_pid" 2>/dev/null || true
  wait "$unshare_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 200); do
  for child in $(pgrep -P "$unshare_pid" 2>/dev/null) $(pgrep -P "$(pgrep -P "$unshare_pid" | head -1)" 2>/dev/null); do
    [ "$(cat /proc/$child/comm 2>/dev/null)" = systemd ] && pid1=$child
  done
  [ -n "$pid1" ] && break
  sleep 0.05
done
[ -n "$pid1" ] || { echo "the contained systemd did not start"; exit 1; }
for _ in $(seq 200); do
  state=$(nsenter -t "$pid1" -a systemctl is-system-running 2>/dev/null || true)
  case "$state" in running|degraded) break ;; esac
  sleep 0.1
done
echo "contained systemd: PID $pid1 ($state)"

wrapper="$work/jupyterhub-in-container"
cat > "$wrapper" <<WRAP
#!/bin/sh
exec nsenter -t $pid1 -a "$bin" "\$@"
WRAP
chmod 755 "$wrapper"
JUPYTERHUB_BIN="$wrapper" E2E_SPAWNER=systemd E2E_DIR="$work" SINGLEUSER_VENVS="$venv" \
  node --test --test-reporter=spec tests/e2e/
