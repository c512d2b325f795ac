#!/usr/bin/env bash
# Benchmark (not a test): the real jupyterhub-singleuser + JupyterLab, split into the server's
# own start-up and the hub's share, for each venv (5.3 and 6.x):
#   (a) the server alone: exec -> /user/NAME/api answering, launched without the hub spawning
#       it but with the environment our hub gives it (read from a server the hub started,
#       with a token of its own), so it can reach the hub as it starts;
#   (b) through our hub with the local spawner: POST .../server until ready and the route
#       answering; the hub's share is (b) - (a), p50 of each;
#   (d) "login click -> JupyterLab usable" (the launcher visible) in Chromium, ours and
#       Python JupyterHub 5.3 (LocalProcessSpawner, the 5.3 venv's singleuser) in the same run.
# (c), the systemd spawner inside a contained systemd, is bench/jupyterlab-systemd.sh.
# Prints a table of medians; nothing is asserted. See BENCHMARKS.md.
#
# Usage (as root: the servers run as USER):
#   bash bench/jupyterlab.sh
# Env: RUNS=5 (each figure's sample count; QUICK=1: 2)  SKIP_PYTHON=1  SKIP_BROWSER=1
#      SINGLEUSER_VENVS="venv-5.3 venv-6" (venvs with jupyterhub + jupyterlab; the first is the
#      browser runs')  E2E_USER=jh-e2e (an existing account)
#      HUB_BIN, BENCH_BIN (as bench/spawn.sh)  PLAYWRIGHT_MODULES (tests/e2e/node_modules)
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=${QUICK:-0}
if [[ $QUICK == 1 ]]; then RUNS=${RUNS:-2}; else RUNS=${RUNS:-5}; fi
SKIP_PYTHON=${SKIP_PYTHON:-0}
SKIP_BROWSER=${SKIP_BROWSER:-0}
PREFIX=${BENCH_PREFIX:-/var/cache/jupyterhub-rs-bench}
VENV_DIR=/var/cache/jupyterhub-rs-tests
read -r -a VENVS <<<"${SINGLEUSER_VENVS:-$VENV_DIR/venv-5.3 $VENV_DIR/venv-6}"
USER_NAME=${E2E_USER:-jh-e2e}
TOKEN=bench-admin-token-0123456789abcdef

[[ $(id -u) == 0 ]] || { echo "bench/jupyterlab.sh runs as root (servers run as $USER_NAME)" >&2; exit 1; }
id -u "$USER_NAME" >/dev/null || { echo "no account $USER_NAME" >&2; exit 1; }
if [[ -z ${HUB_BIN:-} || -z ${BENCH_BIN:-} ]]; then
    cargo build --release --locked --quiet --bin jupyterhub --example hub_bench
    HUB_BIN=$PWD/target/release/jupyterhub BENCH_BIN=$PWD/target/release/examples/hub_bench
fi
BENCH=$BENCH_BIN
PY_HUB=$PREFIX/venv/bin/jupyterhub
CHP=$PREFIX/chp/node_modules/.bin/configurable-http-proxy
HOME_DIR=$(getent passwd "$USER_NAME" | cut -d: -f6)

RESULTS_DIR=$PREFIX/results/jupyterlab-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
RESULTS=$RESULTS_DIR/results.tsv
HUB_PID= PROXY_PIDFILE= RUN_DIR=

# Local servers outlive their hub by design: stop USER_NAME's through the hub's API while it
# runs (the startup runs end their own).
kill_servers() {
    [[ -n $HUB_PID ]] || return 0
    curl -fsS -m 5 -X DELETE -H "Authorization: token $TOKEN" "$URL/hub/api/users/$USER_NAME/server" >/dev/null 2>&1 || true
    timeout 60 "$BENCH" stop "$URL/hub/api" "$TOKEN" "$USER_NAME" 2>/dev/null || true
}

# kill_stubs, stop_hub, show_failed_log, median
source bench/lib.sh

cleanup() {
    local rc=$?
    show_failed_log "$rc"
    kill_servers
    stop_hub
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# record HUB VENV METRIC VALUE
record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$RESULTS"; echo "  $1 $(basename "$2"): $3 = $4" >&2; }

OURS_PORT=19055 OURS_HUB_PORT=19056
PY_PORT=19065 PY_HUB_PORT=19066 PY_PROXY_API_PORT=19067
for port in $OURS_PORT $OURS_HUB_PORT $PY_PORT $PY_HUB_PORT $PY_PROXY_API_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use; is another bench running?" >&2
        exit 1
    fi
done

start_ours() {
    local venv=$1
    RUN_DIR=$RESULTS_DIR/ours-$(basename "$venv")
    mkdir -p "$RUN_DIR"
    cat >"$RUN_DIR/jupyterhub.toml" <<EOF
[JupyterHub]
ip = "127.0.0.1"
port = $OURS_PORT
hub_bind_url = "http://127.0.0.1:$OURS_HUB_PORT"
db_url = "sqlite:///$RUN_DIR/jupyterhub.sqlite"
cookie_secret_file = "$RUN_DIR/jupyterhub_cookie_secret"
authenticator_class = "dummy"
spawner_class = "local"
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
    (cd "$RUN_DIR" && JUPYTERHUB_LOG=info,jupyterhub::hub::spawn=debug exec "$HUB_BIN" -f "$RUN_DIR/jupyterhub.toml") >>"$RUN_DIR/hub.log" 2>&1 &
    HUB_PID=$!
    URL=http://127.0.0.1:$OURS_PORT
    "$BENCH" wait-up "$URL/hub/api/" "$(date +%s%N)" 60 >/dev/null
}

start_python() {
    local venv=$1
    RUN_DIR=$RESULTS_DIR/python-$(basename "$venv")
    mkdir -p "$RUN_DIR"
    PROXY_PIDFILE=$RUN_DIR/jupyterhub-proxy.pid
    cat >"$RUN_DIR/jupyterhub_config.py" <<EOF
c = get_config()  # noqa
c.JupyterHub.bind_url = "http://127.0.0.1:$PY_PORT"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:$PY_HUB_PORT"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:$PY_PROXY_API_PORT"
c.ConfigurableHTTPProxy.command = ["$CHP"]
c.ConfigurableHTTPProxy.pid_file = "$PROXY_PIDFILE"
c.JupyterHub.db_url = "sqlite:///$RUN_DIR/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "$RUN_DIR/jupyterhub_cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "localprocess"
c.JupyterHub.api_tokens = {"$TOKEN": "admin"}
c.Authenticator.admin_users = {"admin"}
c.Authenticator.allow_all = True
c.Spawner.cmd = ["$venv/bin/jupyterhub-singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
EOF
    (cd "$RUN_DIR" && exec "$PY_HUB" -f "$RUN_DIR/jupyterhub_config.py") >>"$RUN_DIR/hub.log" 2>&1 &
    HUB_PID=$!
    URL=http://127.0.0.1:$PY_PORT
    "$BENCH" wait-up "$URL/hub/api/" "$(date +%s%N)" 120 >/dev/null
}

# The environment our hub gave the running server of USER_NAME, with the port left as
# {port} and the server's token replaced by $1 (the server's own is deleted when it stops).
server_env() {
    local token=$1 pid
    pid=$(curl -fsS -H "Authorization: token $TOKEN" "$URL/hub/api/users/$USER_NAME" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["servers"][""]["state"]["pid"])')
    SERVER_ENV=()
    local kv
    while IFS= read -r -d '' kv; do
        case $kv in
            JUPYTERHUB_SERVICE_URL=*)
                kv=$(sed -E 's#^(JUPYTERHUB_SERVICE_URL=http://[^/]*):[0-9]+/#\1:{port}/#' <<<"$kv") ;;
            JUPYTERHUB_API_TOKEN=*) kv=JUPYTERHUB_API_TOKEN=$token ;;
            JPY_API_TOKEN=*) kv=JPY_API_TOKEN=$token ;;
        esac
        SERVER_ENV+=("$kv")
    done <"/proc/$pid/environ"
}


split_run() {
    local venv=$1 out ms i token
    start_ours "$venv"
    "$BENCH" create "$URL/hub/api" "$TOKEN" "$USER_NAME"
    # A first spawn warms the page cache (Python's imports) and gives the environment.
    "$BENCH" spawn "$URL/hub/api" "$TOKEN" 1 "$USER_NAME" >/dev/null
    token=$("$BENCH" token "$URL/hub/api" "$TOKEN" "$USER_NAME")
    server_env "$token"
    "$BENCH" stop "$URL/hub/api" "$TOKEN" "$USER_NAME"
    : >"$RUN_DIR/alone.txt"
    : >"$RUN_DIR/hub.txt"
    # Alternating, so both see the same machine.
    for i in $(seq "$RUNS"); do
        out=$(env -i "${SERVER_ENV[@]}" "$BENCH" startup 1 "$USER_NAME" "/user/$USER_NAME/api" \
            "$venv/bin/jupyterhub-singleuser" 2>/dev/null)
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
    record ours "$venv" "server alone, exec to answering, p50 (ms)" "$alone"
    record ours "$venv" "through our hub, POST to ready and routed, p50 (ms)" "$through"
    record ours "$venv" "hub share: difference of the p50s (ms)" "$(awk -v a="$through" -v b="$alone" 'BEGIN { printf "%.1f", a - b }')"
    # Each (b) ran right after its (a): the median of those differences is steadier than the
    # difference of medians when the server's own start-up varies by more than the share.
    record ours "$venv" "hub share: median of paired differences (ms)" \
        "$(paste "$RUN_DIR/hub.txt" "$RUN_DIR/alone.txt" | awk '{ printf "%.1f\n", $1 - $2 }' | median)"
    grep 'spawn steps' "$RUN_DIR/hub.log" >"$RUN_DIR/steps.log" || true
    stop_hub
}

browser_run() {
    local hub=$1 venv=$2
    if [[ $hub == ours ]]; then start_ours "$venv"; else start_python "$venv"; fi
    RUN_DIR=$RUN_DIR-browser
    mkdir -p "$RUN_DIR"
    node bench/jupyterlab-browser.mjs "$URL" "$USER_NAME" "$RUNS" "$TOKEN" >"$RUN_DIR/browser.txt"
    record "$hub" "$venv" "login click to JupyterLab usable, median (ms)" "$(median <"$RUN_DIR/browser.txt")"
    stop_hub
}

{
    echo "# bench/jupyterlab.sh  RUNS=$RUNS  user $USER_NAME"
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC')  $(nproc) cores  load $(cut -d' ' -f1-3 /proc/loadavg)  commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "# ours: $("$HUB_BIN" --version)"
    for venv in "${VENVS[@]}"; do echo "# $(basename "$venv"): jupyterhub-singleuser $("$venv/bin/jupyterhub-singleuser" --version 2>/dev/null | tail -n 1)"; done
} >"$RESULTS_DIR/header.txt"

for venv in "${VENVS[@]}"; do split_run "$venv"; done
if [[ $SKIP_BROWSER != 1 ]]; then
    browser_run ours "${VENVS[0]}"
    [[ $SKIP_PYTHON == 1 ]] || browser_run python "${VENVS[0]}"
fi

echo
cat "$RESULTS_DIR/header.txt"
echo "# load at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
awk -F'\t' 'function base(p,    n, a) { n = split(p, a, "/"); return a[n] }
    { printf "%-7s %-9s %-56s %s\n", $1, base($2), $3, $4 }' "$RESULTS" | tee "$RESULTS_DIR/table.txt"
echo "raw figures and hub logs: $RESULTS_DIR"
