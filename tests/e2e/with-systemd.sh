#!/usr/bin/env bash
# Run the browser test with the systemd spawner: the hub runs as root inside a contained
# systemd (PID 1 of fresh namespaces, see shared systemd-in-tests notes), user servers are
# transient units there, and Chromium outside reaches them through the hub's proxy on
# 127.0.0.1 (the network namespace is shared).
#   usage: tests/e2e/with-systemd.sh VENV
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=$1
work=/var/lib/jupyterhub-rs-e2e   # /tmp is private inside the container; this is shared
mkdir -p "$work"
# The checkout may live under /tmp, which the container does not see: copy the binary.
bin="$work/jupyterhub"
cp "$(realpath "${JUPYTERHUB_BIN:-target/debug/jupyterhub}")" "$bin"

. tests/lib/contained-systemd.sh
contained_boot jupyterhub-rs-e2e
pid1=$CONTAINED_PID1

wrapper="$work/jupyterhub-in-container"
cat > "$wrapper" <<WRAP
#!/bin/sh
exec nsenter -t $pid1 -a "$bin" "\$@"
WRAP
chmod 755 "$wrapper"
JUPYTERHUB_BIN="$wrapper" E2E_SPAWNER=systemd E2E_DIR="$work" SINGLEUSER_VENVS="$venv" \
  node --test --test-reporter=spec tests/e2e/
