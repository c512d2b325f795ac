#!/usr/bin/env bash
# Benchmark (not a test): where a spawn's time goes. For our hub and Python JupyterHub 5.3,
# alternating, RUNS times: the stub server's own start-up without any hub (exec to answering),
# sequential spawns through the API (POST until ready and the route answering), the hub's
# share (the difference of the two p50s), and 50 concurrent spawns (which must not get worse
# for a faster sequential spawn). Prints a table of medians; nothing is asserted. See
# BENCHMARKS.md.
#
# Usage (as root: servers run as per-user system accounts, as with LocalProcessSpawner):
#   bash bench/spawn.sh
# Env: RUNS=3  SKIP_PYTHON=1  QUICK=1 (5 sequential spawns)
#      HUB_BIN, BENCH_BIN: our hub and hub_bench binaries to use instead of building them
#      (to compare two commits); BENCH_PREFIX as bench/run.sh (its venv and CHP are used)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SKIP_PYTHON=${SKIP_PYTHON:-0}
QUICK=${QUICK:-0}
PREFIX=${BENCH_PREFIX:-/var/cache/jupyterhub-rs-bench}
TOKEN=bench-admin-token-0123456789abcdef
if [[ $QUICK == 1 ]]; then SEQ_SPAWNS=5; else SEQ_SPAWNS=20; fi
CONC_SPAWNS=50

[[ $(id -u) == 0 ]] || { echo "bench/spawn.sh runs as root (it adds system users for the servers)" >&2; exit 1; }

if [[ -z ${HUB_BIN:-} || -z ${BENCH_BIN:-} ]]; then
    cargo build --release --locked --quiet --bin jupyterhub --example hub_bench
    HUB_BIN=$PWD/target/release/jupyterhub BENCH_BIN=$PWD/target/release/examples/hub_bench
fi
mkdir -p "$PREFIX/bin" "$PREFIX/home"
chmod 755 "$PREFIX" "$PREFIX/bin" "$PREFIX/home"
# A copy the servers' accounts can execute, whatever the permissions of this checkout.
BENCH=$PREFIX/bin/hub_bench_spawn
install -m 755 "$BENCH_BIN" "$BENCH"
BIN=$HUB_BIN
PY_HUB=$PREFIX/venv/bin/jupyterhub
CHP=$PREFIX/chp/node_modules/.bin/configurable-http-proxy
if [[ $SKIP_PYTHON != 1 ]] && ! [[ -x $PY_HUB && -x $CHP ]]; then
    echo "no Python hub in $PREFIX: run bench/run.sh once (it installs them), or SKIP_PYTHON=1" >&2
    exit 1
fi

SEQ_USERS=() CONC_USERS=()
for i in $(seq 0 $((SEQ_SPAWNS - 1))); do SEQ_USERS+=("$(printf 'jhbs%02d' "$i")"); done
for i in $(seq 0 $((CONC_SPAWNS - 1))); do CONC_USERS+=("$(printf 'jhbc%02d' "$i")"); done
for name in "${SEQ_USERS[@]}" "${CONC_USERS[@]}"; do
    id -u "$name" >/dev/null 2>&1 \
        || useradd --system --no-create-home --home-dir "$PREFIX/home/$name" --shell /usr/sbin/nologin "$name"
    install -d -m 700 -o "$name" -g "$(id -g "$name")" "$PREFIX/home/$name"
done

RESULTS_DIR=$PREFIX/results/spawn-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
RESULTS=$RESULTS_DIR/results.tsv
HUB_PID= PROXY_PIDFILE= RUN_DIR=

# kill_stubs, stop_hub, show_failed_log
source bench/lib.sh

cleanup() {
    local rc=$?
    show_failed_log "$rc"
    stop_hub
    kill_stubs
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

record() { printf '%s\t%s\t%s\t%s\n' "$HUB" "$RUN" "$1" "$2" >>"$RESULTS"; echo "  $HUB run $RUN: $1 = $2" >&2; }

# Ports apart from the other bench scripts, so they never meet.
OURS_PORT=19050 OURS_HUB_PORT=19051
PY_PORT=19060 PY_HUB_PORT=19061 PY_PROXY_API_PORT=19062
for port in $OURS_PORT $OURS_HUB_PORT $PY_PORT $PY_HUB_PORT $PY_PROXY_API_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use; is another bench running?" >&2
        exit 1
    fi
done

# The same settings as bench/run.sh's (BENCHMARKS.md); debug logs for ours give each
# spawn's steps ("spawn steps" lines).
write_config() {
    if [[ $HUB == ours ]]; then
        cat >"$RUN_DIR/jupyterhub.toml" <<EOF
[JupyterHub]
ip = "127.0.0.1"
port = $OURS_PORT
hub_bind_url = "http://127.0.0.1:$OURS_HUB_PORT"
db_url = "sqlite:///$RUN_DIR/jupyterhub.sqlite"
cookie_secret_file = "$RUN_DIR/jupyterhub_cookie_secret"
authenticator_class = "dummy"
spawner_class = "local"
concurrent_spawn_limit = 100
slow_spawn_timeout = 10
api_tokens = { "$TOKEN" = "admin" }

[Authenticator]
admin_users = ["admin"]
allow_all = true

[Spawner]
cmd = ["$BENCH", "stub"]
ip = "127.0.0.1"
start_timeout = 60
http_timeout = 30
EOF
    else
        cat >"$RUN_DIR/jupyterhub_config.py" <<EOF
c = get_config()  # noqa
c.JupyterHub.bind_url = "http://127.0.0.1:$PY_PORT"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:$PY_HUB_PORT"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:$PY_PROXY_API_PORT"
c.ConfigurableHTTPProxy.command = ["$CHP"]
c.ConfigurableHTTPProxy.pid_file = "$RUN_DIR/jupyterhub-proxy.pid"
c.JupyterHub.db_url = "sqlite:///$RUN_DIR/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "$RUN_DIR/jupyterhub_cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.JupyterHub.spawner_class = "localprocess"
c.JupyterHub.concurrent_spawn_limit = 100
c.JupyterHub.api_tokens = {"$TOKEN": "admin"}
c.Authenticator.admin_users = {"admin"}
c.Authenticator.allow_all = True
c.Spawner.cmd = ["$BENCH", "stub"]
c.Spawner.ip = "127.0.0.1"
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 30
EOF
    fi
}

start_hub() {
    local t0
    t0=$(date +%s%N)
    if [[ $HUB == ours ]]; then
        (cd "$RUN_DIR" && JUPYTERHUB_LOG=info,jupyterhub::hub::spawn=debug exec "$BIN" -f "$RUN_DIR/jupyterhub.toml") >>"$RUN_DIR/hub.log" 2>&1 &
    else
        PROXY_PIDFILE=$RUN_DIR/jupyterhub-proxy.pid
        (cd "$RUN_DIR" && exec "$PY_HUB" -f "$RUN_DIR/jupyterhub_config.py") >>"$RUN_DIR/hub.log" 2>&1 &
    fi
    HUB_PID=$!
    "$BENCH" wait-up "$URL/hub/api/" "$t0" 600 >/dev/null
}

one_run() {
    HUB=$1 RUN=$2
    local out p50 errors total stub_listen stub_http
    RUN_DIR=$RESULTS_DIR/$HUB-$RUN
    mkdir -p "$RUN_DIR"
    if [[ $HUB == ours ]]; then URL=http://127.0.0.1:$OURS_PORT; else URL=http://127.0.0.1:$PY_PORT; fi
    API=$URL/hub/api
    echo "== $HUB, run $RUN ($RUN_DIR)" >&2
    record load "$(cut -d' ' -f1-3 /proc/loadavg)"
    write_config
    start_hub
    "$BENCH" create "$API" "$TOKEN" "${SEQ_USERS[@]}" "${CONC_USERS[@]}"

    out=$("$BENCH" spawn "$API" "$TOKEN" 1 "${SEQ_USERS[@]}")
    read -r _ p50 errors <<<"$out"
    record spawn_p50_ms "$p50"
    record spawn_seq_errors "$errors"
    # The stub alone, with the hub idle beside it: the same binary, account and environment.
    out=$(JUPYTERHUB_SERVICE_URL="http://127.0.0.1:{port}/user/${SEQ_USERS[0]}/" \
        "$BENCH" startup "$SEQ_SPAWNS" "${SEQ_USERS[0]}" "/user/${SEQ_USERS[0]}/api" "$BENCH" stub 2>/dev/null)
    read -r stub_listen stub_http _ <<<"$out"
    record stub_listen_p50_ms "$stub_listen"
    record stub_http_p50_ms "$stub_http"
    record spawn_share_ms "$(awk -v a="$p50" -v b="$stub_http" 'BEGIN { printf "%.1f\n", a - b }')"
    "$BENCH" stop "$API" "$TOKEN" "${SEQ_USERS[@]}"

    out=$("$BENCH" spawn "$API" "$TOKEN" "$CONC_SPAWNS" "${CONC_USERS[@]}")
    read -r total p50 errors <<<"$out"
    record spawn50_total_s "$total"
    record spawn50_p50_ms "$p50"
    record spawn50_errors "$errors"
    "$BENCH" stop "$API" "$TOKEN" "${CONC_USERS[@]}"
    stop_hub
    kill_stubs
    if [[ $HUB == ours ]]; then
        # Each sequential spawn's steps, for BENCHMARKS.md's table (median per step).
        grep 'spawn steps' "$RUN_DIR/hub.log" | head -n "$SEQ_SPAWNS" >"$RUN_DIR/steps.log" || true
    fi
}

{
    echo "# bench/spawn.sh  RUNS=$RUNS SKIP_PYTHON=$SKIP_PYTHON QUICK=$QUICK  $SEQ_SPAWNS sequential spawns"
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC')  $(nproc) cores  commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "# ours: $("$BIN" --version) ($BIN)"
    [[ $SKIP_PYTHON == 1 ]] || echo "# python: jupyterhub $("$PY_HUB" --version)"
} >"$RESULTS_DIR/header.txt"

for run in $(seq "$RUNS"); do
    one_run ours "$run"
    [[ $SKIP_PYTHON == 1 ]] || one_run python "$run"
done

echo
cat "$RESULTS_DIR/header.txt"
"$BENCH" report "$RESULTS" | tee "$RESULTS_DIR/table.txt"
# Our sequential spawns' steps (ms, median over all runs' spawns), from the debug log.
cat "$RESULTS_DIR"/ours-*/steps.log 2>/dev/null | awk '
    function median(key,    m, i, j, t, a) {
        m = n[key]
        for (i = 1; i <= m; i++) a[i] = v[key, i]
        for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
        return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
    }
    { for (i = 1; i <= NF; i++) if (split($i, kv, "=") == 2 && kv[1] ~ /_ms$/) { n[kv[1]]++; v[kv[1], n[kv[1]]] = kv[2] + 0; any = 1 } }
    END {
        if (!any) exit
        printf "ours, steps of a sequential spawn (median ms):"
        k = split("credentials_ms prepare_ms start_ms save_ms listen_ms http_ms route_ms", keys, " ")
        for (i = 1; i <= k; i++) printf " %s=%.2f", keys[i], median(keys[i])
        printf "\n"
    }' | tee -a "$RESULTS_DIR/table.txt"
echo "raw figures and hub logs: $RESULTS_DIR"
