#!/usr/bin/env bash
# Benchmark (not a test): the real jupyterhub-singleuser + JupyterLab under the systemd
# spawner, split into what systemd and the server take and what our hub adds, for each venv.
# Inside a contained systemd (PID 1 of fresh namespaces, as the system tests boot it; the
# network is the host's):
#   (a) the server alone as a transient unit: `systemd-run` of the same command as the user,
#       in its home, with the environment our hub gives it (read from a server the hub
#       started, with a token of its own): from the call until /user/NAME/api answers;
#   (c) through our hub with the systemd spawner (StartTransientUnit over D-Bus): POST
#       .../server until ready and the route answering.
# The hub's share is (c) - (a), as the median of paired differences and as the difference of
# the medians. The local spawner's split and the browser figures are bench/jupyterlab.sh.
# Prints a table of medians; nothing is asserted. See BENCHMARKS.md.
#
# Usage (as root):  bash bench/jupyterlab-systemd.sh
# Env: RUNS=5 (samples per figure)  SINGLEUSER_VENVS  E2E_USER=jh-e2e  HUB_BIN, BENCH_BIN
#      (as bench/jupyterlab.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-5}
PREFIX=${BENCH_PREFIX:-/var/cache/jupyterhub-rs-bench}
VENV_DIR=/var/cache/jupyterhub-rs-tests
read -r -a VENVS <<<"${SINGLEUSER_VENVS:-$VENV_DIR/venv-5.3 $VENV_DIR/venv-6}"
USER_NAME=${E2E_USER:-jh-e2e}
TOKEN=bench-admin-token-0123456789abcdef
HUB_UNIT=jupyterhub-bench.service
ALONE_UNIT=jupyterhub-bench-alone.service
CGROUP=jupyterhub-rs-bench

[[ $(id -u) == 0 ]] || { echo "bench/jupyterlab-systemd.sh runs as root (it boots a contained systemd)" >&2; exit 1; }
id -u "$USER_NAME" >/dev/null || { echo "no account $USER_NAME" >&2; exit 1; }
for venv in "${VENVS[@]}"; do
    [[ -x $venv/bin/jupyterhub-singleuser ]] || { echo "no $venv/bin/jupyterhub-singleuser (bash tests/run.sh makes the venvs)" >&2; exit 1; }
done
if [[ -z ${HUB_BIN:-} || -z ${BENCH_BIN:-} ]]; then
    cargo build --release --locked --quiet --bin jupyterhub --example hub_bench
    HUB_BIN=$PWD/target/release/jupyterhub BENCH_BIN=$PWD/target/release/examples/hub_bench
fi
BENCH=$BENCH_BIN
HOME_DIR=$(getent passwd "$USER_NAME" | cut -d: -f6)

# One contained systemd at a time on this machine (the system tests take the same lock).
exec 9>/tmp/contained-systemd.lock
flock 9

# Outside /tmp and /run: the contained systemd mounts its own there.
RESULTS_DIR=$PREFIX/results/jupyterlab-systemd-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
RESULTS=$RESULTS_DIR/results.tsv
# The hub runs inside from a copy: the contained systemd's units cannot see into a build tree
# that a home directory's protection hides, and a rebuild must not change a running hub.
cp "$HUB_BIN" "$RESULTS_DIR/jupyterhub"
RUN_DIR= PID1= UNSHARE_PID=

inside() { nsenter -t "$PID1" -a "$@"; }

# median
source bench/lib.sh

boot() {
    # As tests/system/harness.rs: its own cgroup subtree, then PID 1 of new namespaces.
    setsid sh -c "
for h in systemd unified memory cpu cpuacct pids; do
  mkdir -p /sys/fs/cgroup/\$h/$CGROUP 2>/dev/null || true
  echo \$\$ > /sys/fs/cgroup/\$h/$CGROUP/cgroup.procs 2>/dev/null || true
done
exec unshare --pid --fork --kill-child --mount --uts --ipc --cgroup --propagation private --mount-proc \
  env container=unshare sh -c '
    for d in /run /tmp /var/tmp; do mount -t tmpfs -o mode=1777 tmpfs \$d; done
    mount -t tmpfs -o mode=755 tmpfs /var/log/journal
    mkdir -p /run/lock
    exec /lib/systemd/systemd --system --log-target=console --log-level=warning --unit=basic.target'" \
        </dev/null >/dev/null 2>&1 &
    UNSHARE_PID=$!
    local i child
    for i in $(seq 200); do
        for child in $(pgrep -P "$(pgrep -P "$UNSHARE_PID" | head -n 1)" 2>/dev/null) $(pgrep -P "$UNSHARE_PID"); do
            [[ $(cat "/proc/$child/comm" 2>/dev/null) == systemd ]] && PID1=$child
        done
        [[ -n $PID1 ]] && break
        sleep 0.05
    done
    [[ -n $PID1 ]] || { echo "the contained systemd did not start" >&2; exit 1; }
    for i in $(seq 200); do
        case $(inside systemctl is-system-running 2>/dev/null) in running | degraded) return 0 ;; esac
        sleep 0.1
    done
    echo "the contained systemd did not finish booting" >&2
    exit 1
}

shutdown_contained() {
    if [[ -n $PID1 ]]; then
        [[ -z $RUN_DIR ]] || inside journalctl -q -u "$HUB_UNIT" --no-pager >"$RUN_DIR/hub.log" 2>/dev/null || true
        kill -KILL "$PID1" 2>/dev/null || true
        PID1=
    fi
    [[ -z $UNSHARE_PID ]] || { kill "$UNSHARE_PID" 2>/dev/null || true; wait "$UNSHARE_PID" 2>/dev/null || true; UNSHARE_PID=; }
}

cleanup() {
    local rc=$?
    if [[ $rc != 0 && -n $PID1 ]]; then
        echo "--- failed; the hub's journal:" >&2
        inside journalctl -q -u "$HUB_UNIT" --no-pager -n 30 >&2 || true
    fi
    shutdown_contained
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; echo "  $1 $(basename "$2"): $3 = $4" >&2; }

PORT=19075 HUB_PORT=19076
for port in $PORT $HUB_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use; is another bench running?" >&2
        exit 1
    fi
done
URL=http://127.0.0.1:$PORT

start_hub() {
    local venv=$1
    RUN_DIR=$RESULTS_DIR/ours-$(basename "$venv")
    mkdir -p "$RUN_DIR"
    chmod 700 "$RUN_DIR"
    cat >"$RUN_DIR/jupyterhub.toml" <<EOF
[JupyterHub]
ip = "127.0.0.1"
port = $PORT
hub_bind_url = "http://127.0.0.1:$HUB_PORT"
db_url = "sqlite:///$RUN_DIR/jupyterhub.sqlite"
cookie_secret_file = "$RUN_DIR/jupyterhub_cookie_secret"
authenticator_class = "dummy"
spawner_class = "systemd"
api_tokens = { "$TOKEN" = "admin" }

[Authenticator]
admin_users = ["admin"]
allow_all = true

[Spawner]
cmd = ["$venv/bin/jupyterhub-singleuser"]
default_url = "/lab"
start_timeout = 120
http_timeout = 120
EOF
    inside systemctl reset-failed "$HUB_UNIT" 2>/dev/null || true
    # Type=notify: systemd-run returns once the hub said READY=1.
    inside systemd-run --quiet --unit "$HUB_UNIT" --property=Type=notify --property=NotifyAccess=main \
        --setenv=JUPYTERHUB_LOG=info,jupyterhub::hub::spawn=debug \
        "$RESULTS_DIR/jupyterhub" -f "$RUN_DIR/jupyterhub.toml"
    "$BENCH" wait-up "$URL/hub/api/" "$(date +%s%N)" 60 >/dev/null
}

stop_contained_hub() {
    inside journalctl -q -u "$HUB_UNIT" --no-pager >"$RUN_DIR/hub.log" 2>/dev/null || true
    # Each spawn's steps, as the journal's fields (the short format shows only the message).
    inside journalctl -q -u "$HUB_UNIT" --no-pager -o json MESSAGE="spawn steps" 2>/dev/null \
        | python3 -c 'import json, sys
for line in sys.stdin:
    e = json.loads(line)
    print(" ".join(f"{k.lower()}={v}" for k, v in e.items() if k.endswith("_MS")))' \
        >"$RUN_DIR/steps.log" || true
    inside systemctl stop "$HUB_UNIT" || true
}

# The environment our hub gave USER_NAME's running server, as `--setenv=` flags: the
# hub's variables only (systemd sets HOME, USER, INVOCATION_ID and the like itself), the
# port left as {port} and the server's token replaced by $1.
server_env() {
    local token=$1 unit pid kv
    unit=jupyter-${USER_NAME//-/\\x2d}-singleuser.service
    pid=$(inside systemctl show -p MainPID --value "$unit")
    [[ $pid != 0 ]] || { echo "no main process in $unit" >&2; exit 1; }
    SETENV=()
    while IFS= read -r -d '' kv; do
        case $kv in
            JUPYTERHUB_SERVICE_URL=*)
                kv=$(sed -E 's#^(JUPYTERHUB_SERVICE_URL=http://[^/]*):[0-9]+/#\1:{port}/#' <<<"$kv") ;;
            JUPYTERHUB_API_TOKEN=*) kv=JUPYTERHUB_API_TOKEN=$token ;;
            JPY_API_TOKEN=*) kv=JPY_API_TOKEN=$token ;;
            JUPYTERHUB_* | JPY_* | PATH=*) ;;
            *) continue ;;
        esac
        SETENV+=("--setenv=$kv")
    done < <(inside cat "/proc/$pid/environ")
}

split_run() {
    local venv=$1 out ms i token
    start_hub "$venv"
    "$BENCH" create "$URL/hub/api" "$TOKEN" "$USER_NAME"
    # A first spawn warms the page cache (Python's imports) and gives the environment.
    "$BENCH" spawn "$URL/hub/api" "$TOKEN" 1 "$USER_NAME" >/dev/null
    token=$("$BENCH" token "$URL/hub/api" "$TOKEN" "$USER_NAME")
    server_env "$token"
    "$BENCH" stop "$URL/hub/api" "$TOKEN" "$USER_NAME"
    : >"$RUN_DIR/alone.txt"
    : >"$RUN_DIR/hub.txt"
    for i in $(seq "$RUNS"); do
        # `systemd-run --wait` stays until the unit ends, as the process `startup` times;
        # the unit is stopped after each sample.
        inside systemctl reset-failed "$ALONE_UNIT" 2>/dev/null || true
        out=$("$BENCH" startup 1 root "/user/$USER_NAME/api" \
            nsenter -t "$PID1" -a systemd-run --quiet --wait --unit "$ALONE_UNIT" \
            --uid="$USER_NAME" --property=WorkingDirectory="$HOME_DIR" "${SETENV[@]}" \
            "$venv/bin/jupyterhub-singleuser" 2>/dev/null)
        inside systemctl stop "$ALONE_UNIT" 2>/dev/null || true
        read -r _ ms _ <<<"$out"
        echo "$ms" >>"$RUN_DIR/alone.txt"
        out=$("$BENCH" spawn "$URL/hub/api" "$TOKEN" 1 "$USER_NAME")
        read -r _ ms _ <<<"$out"
        echo "$ms" >>"$RUN_DIR/hub.txt"
        "$BENCH" stop "$URL/hub/api" "$TOKEN" "$USER_NAME"
    done
    local alone through
    alone=$(median <"$RUN_DIR/alone.txt")
    through=$(median <"$RUN_DIR/hub.txt")
    record systemd "$venv" "server alone as a transient unit, call to answering, p50 (ms)" "$alone"
    record systemd "$venv" "through our hub, POST to ready and routed, p50 (ms)" "$through"
    record systemd "$venv" "hub share: difference of the p50s (ms)" "$(awk -v a="$through" -v b="$alone" 'BEGIN { printf "%.1f", a - b }')"
    record systemd "$venv" "hub share: median of paired differences (ms)" \
        "$(paste "$RUN_DIR/hub.txt" "$RUN_DIR/alone.txt" | awk '{ printf "%.1f\n", $1 - $2 }' | median)"
    stop_contained_hub
    # The hub's own steps in the timed spawns (the first, warm-up spawn left out).
    tail -n "$RUNS" "$RUN_DIR/steps.log" >"$RUN_DIR/steps-timed.log"
    record systemd "$venv" "hub step start_ms (StartTransientUnit until started), p50" \
        "$(grep -o 'start_ms=[0-9.]*' "$RUN_DIR/steps-timed.log" | cut -d= -f2 | median)"
    record systemd "$venv" "hub steps but start_ms and listen_ms (its own work), p50" \
        "$(python3 -c 'import sys
for line in open(sys.argv[1]):
    f = dict(kv.split("=") for kv in line.split())
    print(sum(float(v) for k, v in f.items() if k not in ("start_ms", "listen_ms")))' "$RUN_DIR/steps-timed.log" | median)"
}

# What systemd itself takes to start a unit like the hub's (Type=exec, as the user): from the
# call until the start job is done, measured inside (systemd-run's own exec and D-Bus
# connection included), to set beside the hub's `start_ms` step.
unit_start() {
    inside bash -c '
        for i in $(seq '"$RUNS"'); do
            s=$(date +%s%N)
            systemd-run --quiet --unit jupyterhub-bench-sleep.service -p Type=exec --uid='"$USER_NAME"' /bin/sleep 60
            e=$(date +%s%N)
            echo "$(( (e - s) / 1000 ))" | awk "{ printf \"%.2f\n\", \$1 / 1000 }"
            systemctl stop jupyterhub-bench-sleep.service
        done' >"$RESULTS_DIR/unit-start.txt"
    record systemd "-" "systemd-run of a Type=exec unit as the user, call to started, p50 (ms)" "$(median <"$RESULTS_DIR/unit-start.txt")"
}

boot
{
    echo "# bench/jupyterlab-systemd.sh  RUNS=$RUNS  user $USER_NAME"
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC')  $(nproc) cores  load $(cut -d' ' -f1-3 /proc/loadavg)  commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "# ours: $("$HUB_BIN" --version); contained $(inside systemctl --version | head -n 1)"
    for venv in "${VENVS[@]}"; do echo "# $(basename "$venv"): jupyterhub-singleuser $("$venv/bin/jupyterhub-singleuser" --version 2>/dev/null | tail -n 1)"; done
} >"$RESULTS_DIR/header.txt"

unit_start
for venv in "${VENVS[@]}"; do split_run "$venv"; done

echo
cat "$RESULTS_DIR/header.txt"
echo "# load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -F'\t' 'function base(p,    n, a) { n = split(p, a, "/"); return a[n] }
    { printf "%-7s %-9s %-72s %s\n", $1, base($2), $3, $4 }' "$RESULTS" | tee "$RESULTS_DIR/table.txt"
echo "raw figures and hub logs: $RESULTS_DIR"
