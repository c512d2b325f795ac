#!/usr/bin/env bash
# Benchmarks (not tests): our hub against Python JupyterHub 5.3 + configurable-http-proxy on
# this machine, both driven the same way over HTTP on 127.0.0.1 by examples/hub_bench.rs and
# wrk. Prints one table of medians over RUNS runs with ratios ours/theirs; nothing is asserted.
# See BENCHMARKS.md for what each figure means.
#
# Usage (as root: servers run as per-user system accounts, as with LocalProcessSpawner):
#   bash bench/run.sh
# Env: RUNS=3  SKIP_PYTHON=1 (only our hub)  QUICK=1 (short smoke run, smaller sizes)
#      BENCH_PREFIX=/var/cache/jupyterhub-rs-bench (venv, node_modules, system users' homes, results)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
SKIP_PYTHON=${SKIP_PYTHON:-0}
QUICK=${QUICK:-0}
PREFIX=${BENCH_PREFIX:-/var/cache/jupyterhub-rs-bench}
JUPYTERHUB_VERSION=5.3.0
CHP_VERSION=${CHP_VERSION:-5.3.0}
TOKEN=bench-admin-token-0123456789abcdef

if [[ $QUICK == 1 ]]; then
    DURATION=3s LIST_N=10 LOGIN_SECONDS=3 SEQ_SPAWNS=5 WS_MESSAGES=500 BIG_USERS=2000
else
    DURATION=10s LIST_N=100 LOGIN_SECONDS=10 SEQ_SPAWNS=20 WS_MESSAGES=5000 BIG_USERS=10000
fi
USERS=1000       # users in the listing, the admin included
CONC_SPAWNS=50
CLIENTS=32       # concurrent clients for GET /hub/api/user and for logins

[[ $(id -u) == 0 ]] || { echo "bench/run.sh runs as root (it adds system users for the servers)" >&2; exit 1; }
for tool in wrk curl; do
    command -v "$tool" >/dev/null || { echo "$tool is needed: apt-get install -y $tool" >&2; exit 1; }
done

# --- build and install -----------------------------------------------------------------------

cargo build --release --locked --quiet --bin jupyterhub --example hub_bench --example campus_bench
BIN=$PWD/target/release/jupyterhub
mkdir -p "$PREFIX/bin" "$PREFIX/home"
chmod 755 "$PREFIX" "$PREFIX/bin" "$PREFIX/home"
# A copy the servers' accounts can execute, whatever the permissions of this checkout.
install -m 755 target/release/examples/hub_bench "$PREFIX/bin/hub_bench"
BENCH=$PREFIX/bin/hub_bench
CAMPUS=$PWD/target/release/examples/campus_bench

PY_HUB=$PREFIX/venv/bin/jupyterhub
CHP=$PREFIX/chp/node_modules/.bin/configurable-http-proxy
if [[ $SKIP_PYTHON != 1 ]]; then
    if ! [[ -x $PY_HUB ]] || [[ $("$PY_HUB" --version 2>/dev/null) != "$JUPYTERHUB_VERSION" ]]; then
        echo "installing jupyterhub==$JUPYTERHUB_VERSION into $PREFIX/venv" >&2
        PY=/usr/bin/python3; [[ -x $PY ]] || PY=python3
        "$PY" -m venv "$PREFIX/venv"
        "$PREFIX/venv/bin/pip" install --quiet "jupyterhub==$JUPYTERHUB_VERSION"
    fi
    if ! [[ -x $CHP ]] || ! grep -q "\"version\": \"$CHP_VERSION\"" "$PREFIX/chp/node_modules/configurable-http-proxy/package.json"; then
        echo "installing configurable-http-proxy@$CHP_VERSION into $PREFIX/chp" >&2
        npm install --silent --no-fund --no-audit --prefix "$PREFIX/chp" "configurable-http-proxy@$CHP_VERSION"
    fi
fi

# The servers' system accounts: both hubs run as root and start each server as its user.
SEQ_USERS=() CONC_USERS=()
for i in $(seq 0 $((SEQ_SPAWNS - 1))); do SEQ_USERS+=("$(printf 'jhbs%02d' "$i")"); done
for i in $(seq 0 $((CONC_SPAWNS - 1))); do CONC_USERS+=("$(printf 'jhbc%02d' "$i")"); done
for name in "${SEQ_USERS[@]}" "${CONC_USERS[@]}"; do
    id -u "$name" >/dev/null 2>&1 \
        || useradd --system --no-create-home --home-dir "$PREFIX/home/$name" --shell /usr/sbin/nologin "$name"
    install -d -m 700 -o "$name" -g "$(id -g "$name")" "$PREFIX/home/$name"
done

# --- process bookkeeping ---------------------------------------------------------------------

RESULTS_DIR=$PREFIX/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
RESULTS=$RESULTS_DIR/results.tsv
HUB_PID=
PROXY_PIDFILE=
RUN_DIR=

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

# RSS of the hub (and, for Python, its proxy) in MiB.
rss_mib() {
    local kb=0 pid
    for pid in "$@"; do
        kb=$((kb + $(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")))
    done
    awk -v kb="$kb" 'BEGIN { printf "%.1f\n", kb / 1024 }'
}

hub_rss() {
    if [[ $HUB == python ]]; then rss_mib "$HUB_PID" "$(cat "$PROXY_PIDFILE")"; else rss_mib "$HUB_PID"; fi
}

# "req/s p50_ms p99_ms errors" from wrk --latency output (errors: socket errors and non-2xx/3xx).
run_wrk() {
    wrk --latency -t2 -c"$CLIENTS" -d"$DURATION" "$@" | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        /Socket errors/ { gsub(/,/, ""); errors += $4 + $6 + $8 + $10 }
        /Non-2xx or 3xx/ { errors += $5 }
        END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, errors }'
}

# --- the two hubs ----------------------------------------------------------------------------

OURS_PORT=18950 OURS_HUB_PORT=18951
PY_PORT=18960 PY_HUB_PORT=18961 PY_PROXY_API_PORT=18962
for port in $OURS_PORT $OURS_HUB_PORT $PY_PORT $PY_HUB_PORT $PY_PROXY_API_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use; is another bench running?" >&2
        exit 1
    fi
done

write_config() {
    local spawner_common="start_timeout = 60
http_timeout = 30"
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
api_page_default_limit = 20000
api_page_max_limit = 20000
api_tokens = { "$TOKEN" = "admin" }

[Authenticator]
admin_users = ["admin"]
allow_all = true

[Spawner]
cmd = ["$BENCH", "stub"]
ip = "127.0.0.1"
$spawner_common
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
# LocalProcessSpawner: as root it starts each server as that user, like our local spawner.
c.JupyterHub.spawner_class = "localprocess"
c.JupyterHub.concurrent_spawn_limit = 100
c.JupyterHub.api_page_default_limit = 20000
c.JupyterHub.api_page_max_limit = 20000
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

# Start the hub in $RUN_DIR; STARTUP is the seconds until it answers /hub/api/ on its public port.
start_hub() {
    local t0
    t0=$(date +%s%N)
    if [[ $HUB == ours ]]; then
        (cd "$RUN_DIR" && exec "$BIN" -f "$RUN_DIR/jupyterhub.toml") >>"$RUN_DIR/hub.log" 2>&1 &
    else
        PROXY_PIDFILE=$RUN_DIR/jupyterhub-proxy.pid
        (cd "$RUN_DIR" && exec "$PY_HUB" -f "$RUN_DIR/jupyterhub_config.py") >>"$RUN_DIR/hub.log" 2>&1 &
    fi
    HUB_PID=$!
    STARTUP=$("$BENCH" wait-up "$URL/hub/api/" "$t0" 600)
    if [[ $HUB == python ]]; then
        # The hub answers through the proxy, so the proxy's pid file is there by now.
        for _ in $(seq 100); do [[ -s $PROXY_PIDFILE ]] && break; sleep 0.1; done
    fi
}

one_run() {
    HUB=$1 RUN=$2
    local out rps p50 p99 errors rate total
    RUN_DIR=$RESULTS_DIR/$HUB-$RUN
    mkdir -p "$RUN_DIR"
    if [[ $HUB == ours ]]; then URL=http://127.0.0.1:$OURS_PORT; else URL=http://127.0.0.1:$PY_PORT; fi
    API=$URL/hub/api
    echo "== $HUB, run $RUN ($RUN_DIR)" >&2
    record load "$(cut -d' ' -f1-3 /proc/loadavg)"
    write_config

    start_hub
    record startup_empty_s "$STARTUP"
    sleep 2
    record rss_idle_mib "$(hub_rss)"

    # 1 000 users (the admin is one), then a restart to time start-up with them.
    "$BENCH" populate "$API" "$TOKEN" bench $((USERS - 1))
    stop_hub
    start_hub
    record startup_1k_s "$STARTUP"
    record list_users_count "$(curl -fsS -H "Authorization: token $TOKEN" "$API/users" | "$BENCH" count)"

    out=$("$BENCH" latency "$API/users" "$TOKEN" "$LIST_N")
    read -r p50 p99 <<<"$out"
    record list_users_p50_ms "$p50"
    record list_users_p99_ms "$p99"
    # The same after a write each time: rendered, not a remembered answer.
    out=$("$CAMPUS" latency-after-write "$API/users" "$API" "$TOKEN" "$LIST_N")
    read -r p50 p99 <<<"$out"
    record list_users_written_p50_ms "$p50"
    record list_users_written_p99_ms "$p99"

    wrk -t2 -c"$CLIENTS" -d2s -H "Authorization: token $TOKEN" "$API/user" >/dev/null
    out=$(run_wrk -H "Authorization: token $TOKEN" "$API/user")
    read -r rps p50 p99 errors <<<"$out"
    record api_user_rps "$rps"
    record api_user_p50_ms "$p50"
    record api_user_p99_ms "$p99"
    record api_user_errors "$errors"
    # Tokens from the config are hashed with 16384 rounds (as upstream), tokens the hub issues
    # with one; API clients may hold either, so both are measured.
    local issued
    issued=$("$BENCH" token "$API" "$TOKEN" admin)
    out=$(run_wrk -H "Authorization: token $issued" "$API/user")
    read -r rps p50 p99 errors <<<"$out"
    record api_user_gen_rps "$rps"
    record api_user_gen_p99_ms "$p99"

    out=$("$BENCH" logins "$URL" "$CLIENTS" "$LOGIN_SECONDS" bench $((USERS - 1)))
    read -r rate errors <<<"$out"
    record logins_per_s "$rate"
    record login_errors "$errors"
    record rss_1k_mib "$(hub_rss)"

    # Spawns one at a time; the first server then serves the proxy benchmark.
    "$BENCH" create "$API" "$TOKEN" "${SEQ_USERS[@]}" "${CONC_USERS[@]}"
    out=$("$BENCH" spawn "$API" "$TOKEN" 1 "${SEQ_USERS[@]}")
    read -r _ p50 errors <<<"$out"
    record spawn_p50_ms "$p50"
    record spawn_seq_errors "$errors"
    # The stub's own start-up (exec to answering, no hub), in the same run: the hub's share of
    # a spawn is the difference.
    local stub_http
    out=$(JUPYTERHUB_SERVICE_URL="http://127.0.0.1:{port}/user/${SEQ_USERS[0]}/" \
        "$BENCH" startup "$SEQ_SPAWNS" "${SEQ_USERS[0]}" "/user/${SEQ_USERS[0]}/api" "$BENCH" stub 2>/dev/null)
    read -r _ stub_http _ <<<"$out"
    record stub_http_p50_ms "$stub_http"
    record spawn_share_ms "$(awk -v a="$p50" -v b="$stub_http" 'BEGIN { printf "%.1f\n", a - b }')"

    local user=${SEQ_USERS[0]} direct
    direct=$("$BENCH" target "$API" "$TOKEN" "$user")
    wrk -t2 -c"$CLIENTS" -d2s "$direct/user/$user/api/status" >/dev/null
    out=$(run_wrk "$direct/user/$user/api/status")
    read -r rps p50 p99 errors <<<"$out"
    record direct_rps "$rps"
    record direct_p50_ms "$p50"
    record direct_p99_ms "$p99"
    local direct_rps=$rps
    wrk -t2 -c"$CLIENTS" -d2s "$URL/user/$user/api/status" >/dev/null
    out=$(run_wrk "$URL/user/$user/api/status")
    read -r rps p50 p99 errors <<<"$out"
    record proxied_rps "$rps"
    record proxied_p50_ms "$p50"
    record proxied_p99_ms "$p99"
    record proxied_errors "$errors"
    record proxied_pct_direct "$(awk -v p="$rps" -v d="$direct_rps" 'BEGIN { printf "%.1f\n", 100 * p / d }')"
    out=$("$BENCH" ws-rtt "ws://${direct#http://}/user/$user/ws" "$WS_MESSAGES")
    read -r p50 p99 <<<"$out"
    record ws_direct_p50_ms "$p50"
    record ws_direct_p99_ms "$p99"
    out=$("$BENCH" ws-rtt "ws://${URL#http://}/user/$user/ws" "$WS_MESSAGES")
    read -r p50 p99 <<<"$out"
    record ws_proxied_p50_ms "$p50"
    record ws_proxied_p99_ms "$p99"
    "$BENCH" stop "$API" "$TOKEN" "${SEQ_USERS[@]}"

    # 50 spawns at once; then the memory with them running.
    out=$("$BENCH" spawn "$API" "$TOKEN" "$CONC_SPAWNS" "${CONC_USERS[@]}")
    read -r total p50 errors <<<"$out"
    record spawn50_total_s "$total"
    record spawn50_p50_ms "$p50"
    record spawn50_errors "$errors"
    sleep 2
    record rss_50_mib "$(hub_rss)"
    "$BENCH" stop "$API" "$TOKEN" "${CONC_USERS[@]}"

    # Up to 10 000 users, then start-up time with them. Creating them through the API takes
    # the Python hub minutes, so later runs start on a copy of the first run's database.
    local big_db=$RESULTS_DIR/$HUB-big.sqlite db=$RUN_DIR/jupyterhub.sqlite
    if [[ -f $big_db ]]; then
        stop_hub
        rm -f "$db-wal" "$db-shm"
        cp "$big_db" "$db"
        [[ ! -f $big_db-wal ]] || cp "$big_db-wal" "$db-wal"
    else
        "$BENCH" populate "$API" "$TOKEN" big $((BIG_USERS - USERS - SEQ_SPAWNS - CONC_SPAWNS))
        stop_hub
        cp "$db" "$big_db"
        [[ ! -f $db-wal ]] || cp "$db-wal" "$big_db-wal"
    fi
    start_hub
    record startup_10k_s "$STARTUP"
    sleep 2
    record rss_10k_mib "$(hub_rss)"
    stop_hub
    kill_stubs
}

{
    echo "# bench/run.sh  RUNS=$RUNS SKIP_PYTHON=$SKIP_PYTHON QUICK=$QUICK"
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC')  $(nproc) cores  commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "# ours: $("$BIN" --version)"
    [[ $SKIP_PYTHON == 1 ]] || echo "# python: jupyterhub $("$PY_HUB" --version) + configurable-http-proxy $CHP_VERSION, node $(node --version)"
} >"$RESULTS_DIR/header.txt"

for run in $(seq "$RUNS"); do
    one_run ours "$run"
    [[ $SKIP_PYTHON == 1 ]] || one_run python "$run"
done

echo
cat "$RESULTS_DIR/header.txt"
[[ $QUICK == 1 ]] && echo "# QUICK=1: shorter runs, $SEQ_SPAWNS sequential spawns, $BIG_USERS users for the big start-up"
"$BENCH" report "$RESULTS" | tee "$RESULTS_DIR/table.txt"
echo "raw figures and hub logs: $RESULTS_DIR"
