#!/usr/bin/env bash
# The campus benchmark (not a test): one hub holding 10 000 users, 1 000 running stub servers
# and their 1 000 routes, ours and Python JupyterHub 5.3 + configurable-http-proxy, driven the
# same way over HTTP on 127.0.0.1 by examples/hub_bench.rs, examples/campus_bench.rs and wrk.
# Prints one table of medians over RUNS runs with ratios ours/theirs; nothing is asserted.
# See BENCHMARKS.md ("The campus") for what each figure means.
#
# Usage (as root: each server runs as its own system account, as with LocalProcessSpawner):
#   bash bench/campus.sh
# Env: RUNS=1  SKIP_PYTHON=1 (only our hub)  QUICK=1 (2 000 users, 100 running servers)
#      USERS=10000 RUNNING=1000 FLUSH=5 (last_activity_interval, s) FLUSHES=4 (intervals timed)
#      BENCH_PREFIX=/var/cache/jupyterhub-rs-bench (the same venv, CHP and homes as run.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-1}
SKIP_PYTHON=${SKIP_PYTHON:-0}
QUICK=${QUICK:-0}
PREFIX=${BENCH_PREFIX:-/var/cache/jupyterhub-rs-bench}
TOKEN=bench-admin-token-0123456789abcdef
if [[ $QUICK == 1 ]]; then
    USERS=${USERS:-2000} RUNNING=${RUNNING:-100} DURATION=${DURATION:-3s} FLUSHES=${FLUSHES:-2}
else
    USERS=${USERS:-10000} RUNNING=${RUNNING:-1000} DURATION=${DURATION:-10s} FLUSHES=${FLUSHES:-4}
fi
FLUSH=${FLUSH:-5}
FEW=10           # routes in the "few routes" proxy figure
PAGE=200         # users per page of GET /hub/api/users
CLIENTS=32
# A step of the Python hub that takes longer than this is abandoned and reported as such.
PY_STEP_TIMEOUT=${PY_STEP_TIMEOUT:-900}

[[ $(id -u) == 0 ]] || { echo "bench/campus.sh runs as root (it adds system users for the servers)" >&2; exit 1; }
for tool in wrk curl; do
    command -v "$tool" >/dev/null || { echo "$tool is needed: apt-get install -y $tool" >&2; exit 1; }
done
((RUNNING >= FEW && USERS > RUNNING)) || { echo "need USERS > RUNNING >= $FEW" >&2; exit 1; }

# Each server is a process with a listening socket and the hub holds a connection or two per
# server and per websocket: far over the usual 1024 descriptors. Up to 65 536, or the hard
# limit (a container's may be lower).
hard=$(ulimit -Hn)
[[ $hard == unlimited ]] && hard=65536
ulimit -n $((hard < 65536 ? hard : 65536))
((hard >= 4 * RUNNING + 1024)) || { echo "nofile's hard limit $hard is too low for $RUNNING servers" >&2; exit 1; }

# --- build and install -----------------------------------------------------------------------

cargo build --release --locked --quiet --bin jupyterhub --example hub_bench --example campus_bench
BIN=$PWD/target/release/jupyterhub
mkdir -p "$PREFIX/bin" "$PREFIX/home"
chmod 755 "$PREFIX" "$PREFIX/bin" "$PREFIX/home"
install -m 755 target/release/examples/hub_bench "$PREFIX/bin/hub_bench"
BENCH=$PREFIX/bin/hub_bench
CAMPUS=$PWD/target/release/examples/campus_bench
PY_HUB=$PREFIX/venv/bin/jupyterhub
CHP=$PREFIX/chp/node_modules/.bin/configurable-http-proxy
if [[ $SKIP_PYTHON != 1 ]] && ! [[ -x $PY_HUB && -x $CHP ]]; then
    echo "Python JupyterHub or CHP missing under $PREFIX: run bench/run.sh once (it installs them)" >&2
    exit 1
fi

# The servers' accounts, jhcr0000…; made once and kept (useradd takes a while for 1 000).
# Ordinary UIDs and one shared group: the system ranges (100–999) cannot hold a thousand.
getent group jhcampus >/dev/null || groupadd jhcampus
NAMES=()
for i in $(seq 0 $((RUNNING - 1))); do NAMES+=("$(printf 'jhcr%04d' "$i")"); done
made=0
for name in "${NAMES[@]}"; do
    if ! id -u "$name" >/dev/null 2>&1; then
        useradd --no-create-home --no-user-group --gid jhcampus --home-dir "$PREFIX/home/$name" \
            --shell /usr/sbin/nologin "$name"
        made=$((made + 1))
    fi
    [[ -d $PREFIX/home/$name ]] || install -d -m 700 -o "$name" -g "$(id -g "$name")" "$PREFIX/home/$name"
done
((made == 0)) || echo "added $made system accounts jhcr…" >&2

# --- process bookkeeping ---------------------------------------------------------------------

RESULTS_DIR=$PREFIX/results/campus-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$RESULTS_DIR"
RESULTS=$RESULTS_DIR/results.tsv
HUB_PID= PROXY_PIDFILE= RUN_DIR= HOLD_PID=

# kill_stubs, stop_hub, show_failed_log; a hub with 1 000 servers may take a while to stop
source bench/lib.sh
STOP_TENTHS=600

cleanup() {
    local rc=$?
    show_failed_log "$rc"
    [[ -z $HOLD_PID ]] || kill -TERM "$HOLD_PID" 2>/dev/null || true
    stop_hub
    kill_stubs
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

record() { printf '%s\t%s\t%s\t%s\n' "$HUB" "$RUN" "$1" "$2" >>"$RESULTS"; echo "  $HUB run $RUN: $1 = $2" >&2; }

hub_pids() {
    if [[ $HUB == python ]]; then echo "$HUB_PID $(cat "$PROXY_PIDFILE")"; else echo "$HUB_PID"; fi
}

# RSS of the hub (and, for Python, its proxy) in MiB.
hub_rss() {
    local kb=0 pid
    for pid in $(hub_pids); do
        kb=$((kb + $(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status")))
    done
    awk -v kb="$kb" 'BEGIN { printf "%.1f\n", kb / 1024 }'
}

# CPU time (user + system) of the hub (and, for Python, its proxy) so far, in milliseconds.
hub_cpu_ms() {
    local ticks=0 pid
    for pid in $(hub_pids); do
        # Fields 14 and 15 of /proc/PID/stat, counted after the parenthesised command name.
        ticks=$((ticks + $(sed 's/^.*) //' "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
    done
    echo $((ticks * 1000 / $(getconf CLK_TCK)))
}

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

# Run a step of the Python hub with a time limit; a step that overruns is recorded as such.
step() {
    local name=$1
    shift
    if [[ $HUB == python ]]; then
        local t0=$SECONDS
        if ! timeout "$PY_STEP_TIMEOUT" "$@"; then
            record "${name}_abandoned_after_s" $((SECONDS - t0))
            return 1
        fi
    else
        "$@"
    fi
}

# --- the two hubs ----------------------------------------------------------------------------

OURS_PORT=18970 OURS_HUB_PORT=18971
PY_PORT=18980 PY_HUB_PORT=18981 PY_PROXY_API_PORT=18982
for port in $OURS_PORT $OURS_HUB_PORT $PY_PORT $PY_HUB_PORT $PY_PROXY_API_PORT; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is in use; is another bench running?" >&2
        exit 1
    fi
done

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
api_page_max_limit = 20000
last_activity_interval = $FLUSH
api_tokens = { "$TOKEN" = "admin" }

[Authenticator]
admin_users = ["admin"]
allow_all = true

[Spawner]
cmd = ["$BENCH", "stub"]
ip = "127.0.0.1"
start_timeout = 120
http_timeout = 60
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
c.JupyterHub.api_page_max_limit = 20000
c.JupyterHub.last_activity_interval = $FLUSH
# Servers outlive a hub restart, as ours do, so start-up adopts them.
c.JupyterHub.cleanup_servers = False
c.JupyterHub.api_tokens = {"$TOKEN": "admin"}
c.Authenticator.admin_users = {"admin"}
c.Authenticator.allow_all = True
c.Spawner.cmd = ["$BENCH", "stub"]
c.Spawner.ip = "127.0.0.1"
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 60
EOF
    fi
}

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
    STARTUP_T0=$t0
    STARTUP=$("$BENCH" wait-up "$URL/hub/api/" "$t0" 900)
    if [[ $HUB == python ]]; then
        for _ in $(seq 100); do [[ -s $PROXY_PIDFILE ]] && break; sleep 0.1; done
    fi
}

# Users whose servers the API says are ready.
ready_count() {
    curl -fsS -H "Authorization: token $TOKEN" "$API/users?state=ready&limit=$RUNNING" 2>/dev/null \
        | "$BENCH" count 2>/dev/null || echo 0
}

# ADOPTED: seconds from STARTUP_T0 until the API shows $1 servers ready (as many as before
# the restart) and the last one's route answers through the proxy. Not run in `$(…)`: a
# signal to the script would wait for the loop in the subshell.
wait_adopted() {
    local deadline=$((SECONDS + 900)) last=${NAMES[$((RUNNING - 1))]}
    while ((SECONDS < deadline)); do
        if (($(ready_count) >= $1)) && curl -fsS -o /dev/null "$URL/user/$last/api/status"; then
            ADOPTED=$(awk -v t0="$STARTUP_T0" -v t1="$(date +%s%N)" 'BEGIN { printf "%.3f\n", (t1 - t0) / 1e9 }')
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# Mean CPU milliseconds of the hub per activity flush over FLUSHES intervals.
cpu_per_flush() {
    local c0 c1
    c0=$(hub_cpu_ms)
    "$@" >>"$RUN_DIR/flush-steps.out"
    c1=$(hub_cpu_ms)
    awk -v a="$c0" -v b="$c1" -v n="$FLUSHES" 'BEGIN { printf "%.1f\n", (b - a) / n }'
}

one_run() {
    HUB=$1 RUN=$2
    local out rps p50 p99 errors total rss0
    RUN_DIR=$RESULTS_DIR/$HUB-$RUN
    mkdir -p "$RUN_DIR"
    if [[ $HUB == ours ]]; then URL=http://127.0.0.1:$OURS_PORT; else URL=http://127.0.0.1:$PY_PORT; fi
    API=$URL/hub/api
    echo "== $HUB, run $RUN ($RUN_DIR)" >&2
    record load "$(cut -d' ' -f1-3 /proc/loadavg)"
    write_config
    start_hub

    local t0=$SECONDS
    "$BENCH" create "$API" "$TOKEN" "${NAMES[@]}"
    step populate "$BENCH" populate "$API" "$TOKEN" campus $((USERS - RUNNING - 1)) || return 0
    record populate_s $((SECONDS - t0))

    # A few servers and routes first: the proxy's figure with a small table.
    out=$("$BENCH" spawn "$API" "$TOKEN" "$FEW" "${NAMES[@]:0:$FEW}")
    read -r _ _ errors <<<"$out"
    record spawn_few_errors "$errors"
    local user=${NAMES[0]}
    wrk -t2 -c"$CLIENTS" -d2s "$URL/user/$user/api/status" >/dev/null
    out=$(run_wrk "$URL/user/$user/api/status")
    read -r rps p50 p99 errors <<<"$out"
    record proxied_few_rps "$rps"
    record proxied_few_p99_ms "$p99"

    out=$(step spawn "$BENCH" spawn "$API" "$TOKEN" 50 "${NAMES[@]:$FEW}") || return 0
    read -r total _ errors <<<"$out"
    record spawn_rest_s "$total"
    record spawn_rest_errors "$errors"
    record routes "$(curl -fsS -H "Authorization: token $TOKEN" "$API/proxy?limit=$((RUNNING + 10))" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')"

    out=$(run_wrk "$URL/user/$user/api/status")
    read -r rps p50 p99 errors <<<"$out"
    record proxied_many_rps "$rps"
    record proxied_many_p99_ms "$p99"
    record proxied_many_errors "$errors"
    sleep 2
    record rss_campus_mib "$(hub_rss)"

    out=$("$CAMPUS" pages "$API" "$TOKEN" "$PAGE" 3)
    read -r total _ p50 p99 <<<"$out"
    record pages_users "$total"
    record pages_p50_ms "$p50"
    record pages_p99_ms "$p99"

    # The activity flush: hub CPU per interval while every server reports activity and is
    # requested once per interval (so every route has activity to save), then with no new
    # activity at all.
    out=$(cpu_per_flush "$CAMPUS" activity "$API" "$TOKEN" "$URL" $((FLUSH * FLUSHES)) "$FLUSH" "${NAMES[@]}")
    record cpu_per_flush_active_ms "$out"
    out=$(cpu_per_flush sleep $((FLUSH * FLUSHES)))
    record cpu_per_flush_quiet_ms "$out"

    # RUNNING websockets through the proxy at once, one per server; the hub's memory with them.
    rss0=$(hub_rss)
    rm -f "$RUN_DIR/ws-ready"
    "$CAMPUS" ws-hold "$URL" 10 "$RUN_DIR/ws-ready" "${NAMES[@]}" >"$RUN_DIR/ws-hold.out" &
    HOLD_PID=$!
    for _ in $(seq 1200); do [[ -s $RUN_DIR/ws-ready ]] && break; sleep 0.1; done
    read -r total errors <"$RUN_DIR/ws-ready"
    sleep 1
    local rss1
    rss1=$(hub_rss)
    wait "$HOLD_PID"
    HOLD_PID=
    read -r _ out <"$RUN_DIR/ws-hold.out"
    record ws_open "$total"
    record ws_errors $((errors + out))
    record ws_rss_mib "$rss1"
    record ws_kib_each "$(awk -v a="$rss0" -v b="$rss1" -v n="$total" 'BEGIN { printf "%.1f\n", n ? (b - a) * 1024 / n : 0 }')"

    # Restart: start-up with USERS users and RUNNING servers to adopt.
    local ready
    ready=$(ready_count)
    record ready_before_restart "$ready"
    stop_hub
    start_hub
    record startup_api_s "$STARTUP"
    wait_adopted "$ready" || { record adopted_timeout 1; ADOPTED=nan; }
    record startup_adopted_s "$ADOPTED"
    sleep 2
    record rss_restarted_mib "$(hub_rss)"

    # No API stops: polling a thousand stops loads the Python hub for minutes, and the run's
    # database is thrown away; the servers are ended by pid.
    stop_hub
    kill_stubs
}

{
    echo "# bench/campus.sh  RUNS=$RUNS SKIP_PYTHON=$SKIP_PYTHON USERS=$USERS RUNNING=$RUNNING FLUSH=${FLUSH}s"
    echo "# $(date -u '+%Y-%m-%d %H:%M UTC')  $(nproc) cores  commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    echo "# ours: $("$BIN" --version)"
    [[ $SKIP_PYTHON == 1 ]] || echo "# python: jupyterhub $("$PY_HUB" --version) + configurable-http-proxy, node $(node --version)"
} >"$RESULTS_DIR/header.txt"

for run in $(seq "$RUNS"); do
    one_run ours "$run"
    [[ $SKIP_PYTHON == 1 ]] || one_run python "$run"
done

echo
cat "$RESULTS_DIR/header.txt"
"$CAMPUS" report "$RESULTS" | tee "$RESULTS_DIR/table.txt"
echo "raw figures and hub logs: $RESULTS_DIR"
