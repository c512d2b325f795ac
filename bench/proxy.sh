#!/usr/bin/env bash
# Benchmark of the built-in proxy (not a test): wrk against a trivial backend directly and
# through `jupyterhub proxy` (release build), then websocket round-trip latency both ways.
# Direct and proxied runs are interleaved RUNS times and the summary shows medians, so a burst
# of load from elsewhere skews both sides alike. Everything shares this machine's cores (wrk,
# backend, proxy), so absolute numbers are indicative; compare the ratio and the added p50.
# The CPU time the proxy and the backend use per request (from /proc) depends much less on
# the machine's other load than req/s and latency do. Under saturation p50 is set by req/s
# (Little's law: at half of direct's req/s, p50 doubles), so the proxy's own latency is also
# measured with one connection at a time, and at a fixed rate below capacity (open loop,
# RATE req/s over RATE_CONNECTIONS connections, latency counted from when each request was due).
#
# Usage: bench/proxy.sh
#   env: RUNS=3 DURATION=10s CONNECTIONS=32 THREADS=2 WS_MESSAGES=5000 SERIAL_DURATION=5s
#        RATE=10000 RATE_CONNECTIONS=8 RATE_SECONDS=5
#        PROXY_THREADS=   (sets TOKIO_WORKER_THREADS for the proxy; default: one per core)
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WS_MESSAGES=${WS_MESSAGES:-5000}
SERIAL_DURATION=${SERIAL_DURATION:-5s}
RATE=${RATE:-10000}
RATE_CONNECTIONS=${RATE_CONNECTIONS:-8}
RATE_SECONDS=${RATE_SECONDS:-5}
BACKEND_PORT=${BACKEND_PORT:-18901}
PROXY_PORT=${PROXY_PORT:-18902}
API_PORT=${API_PORT:-18903}
TOKEN=bench-token

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

cargo build --release --quiet --bin jupyterhub --example proxy_bench
BIN=${PROXY_BIN:-target/release/jupyterhub}
BENCH=target/release/examples/proxy_bench

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BENCH" backend "$BACKEND_PORT" &
BACKEND_PID=$!
PIDS+=($!)
if [ -n "${PROXY_THREADS:-}" ]; then export TOKIO_WORKER_THREADS=$PROXY_THREADS; fi
CONFIGPROXY_AUTH_TOKEN=$TOKEN "$BIN" --log-level warn proxy --ip 127.0.0.1 --port "$PROXY_PORT" \
    --api-ip 127.0.0.1 --api-port "$API_PORT" &
PROXY_PID=$!
PIDS+=($!)
unset TOKIO_WORKER_THREADS

for _ in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$BACKEND_PORT/" \
        && curl -fs -o /dev/null -H "Authorization: token $TOKEN" "http://127.0.0.1:$API_PORT/api/routes" && break
    sleep 0.1
done
curl -fs -X POST -H "Authorization: token $TOKEN" -d "{\"target\": \"http://127.0.0.1:$BACKEND_PORT\"}" \
    "http://127.0.0.1:$API_PORT/api/routes/user/bench/"

PATH_=/user/bench/api/status
DIRECT=http://127.0.0.1:$BACKEND_PORT$PATH_
PROXIED=http://127.0.0.1:$PROXY_PORT$PATH_
curl -fs -o /dev/null "$PROXIED" || { echo "the proxy does not route $PATH_" >&2; exit 1; }

# Print "req/s p50_ms p99_ms requests" from wrk --latency output; $2 = "-t1 -c1 -dN" overrides.
run_wrk() {
    # shellcheck disable=SC2086
    wrk --latency ${2:--t"$THREADS" -c"$CONNECTIONS" -d"$DURATION"} "$1" | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec/ { rps = $2 }
        / requests in / { n = $1 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        END { printf "%.0f %.3f %.3f %d\n", rps, p50, p99, n }'
}

# CPU time (user + system, in clock ticks) process $1 has used so far.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
# Microseconds of CPU per request: ticks_before ticks_after requests.
per_req() { awk -v a="$1" -v b="$2" -v n="$3" -v t="$TICK_US" 'BEGIN { printf "%.1f", (b - a) * t / n }'; }

# Print "p50_ms p99_ms" of websocket round trips to $1.
run_ws() {
    "$BENCH" ws-rtt "$1" "$WS_MESSAGES" | sed -E 's/.*p50=([0-9.]+) p99=([0-9.]+).*/\1 \2/'
}

# Print "p50_ms p99_ms" of requests to port $1 at RATE req/s.
run_rate() {
    "$BENCH" rate "127.0.0.1:$1" "$PATH_" "$RATE" "$RATE_SECONDS" "$RATE_CONNECTIONS" \
        | sed -E 's/.*p50=([0-9.]+) p99=([0-9.]+).*/\1 \2/'
}

# The median of the arguments.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

load() { cut -d' ' -f1-3 /proc/loadavg; }

wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$DIRECT" >/dev/null   # warm-up
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$PROXIED" >/dev/null

D_RPS=() D_P50=() D_P99=() P_RPS=() P_P50=() P_P99=()
WD_P50=() WD_P99=() WP_P50=() WP_P99=()
SD_P50=() SD_P99=() SP_P50=() SP_P99=()
RD_P50=() RD_P99=() RP_P50=() RP_P99=()
D_BCPU=() P_BCPU=() P_PCPU=()
printf '%-4s %-8s %9s %8s %8s %10s %10s   %s\n' run side "req/s" "p50 ms" "p99 ms" \
    "backend" "proxy" "load average (1 5 15 min)"
printf '%-4s %-8s %9s %8s %8s %10s %10s\n' "" "" "" "" "" "CPU us/req" "CPU us/req"
for run in $(seq "$RUNS"); do
    for side in direct proxied; do
        if [ "$side" = direct ]; then url=$DIRECT; else url=$PROXIED; fi
        b0=$(cpu_ticks "$BACKEND_PID") p0=$(cpu_ticks "$PROXY_PID")
        read -r rps p50 p99 n < <(run_wrk "$url")
        b1=$(cpu_ticks "$BACKEND_PID") p1=$(cpu_ticks "$PROXY_PID")
        bcpu=$(per_req "$b0" "$b1" "$n") pcpu=-
        if [ "$side" = direct ]; then
            D_RPS+=("$rps") D_P50+=("$p50") D_P99+=("$p99") D_BCPU+=("$bcpu")
        else
            pcpu=$(per_req "$p0" "$p1" "$n")
            P_RPS+=("$rps") P_P50+=("$p50") P_P99+=("$p99") P_BCPU+=("$bcpu") P_PCPU+=("$pcpu")
        fi
        printf '%-4s %-8s %9s %8s %8s %10s %10s   %s\n' "$run" "$side" "$rps" "$p50" "$p99" \
            "$bcpu" "$pcpu" "$(load)"
    done
    read -r _ a b _ < <(run_wrk "$DIRECT" "-t1 -c1 -d$SERIAL_DURATION")
    SD_P50+=("$a") SD_P99+=("$b")
    read -r _ a b _ < <(run_wrk "$PROXIED" "-t1 -c1 -d$SERIAL_DURATION")
    SP_P50+=("$a") SP_P99+=("$b")
    printf '%-4s %-8s %9s %8s %8s   %s\n' "$run" "serial" "" "$a" "$b" "(proxied, 1 connection; direct p50 ${SD_P50[-1]})"
    read -r a b < <(run_rate "$BACKEND_PORT")
    RD_P50+=("$a") RD_P99+=("$b")
    read -r a b < <(run_rate "$PROXY_PORT")
    RP_P50+=("$a") RP_P99+=("$b")
    printf '%-4s %-8s %9s %8s %8s   %s\n' "$run" "rate" "" "$a" "$b" "(proxied, $RATE req/s; direct p50 ${RD_P50[-1]})"
    read -r a b < <(run_ws "ws://127.0.0.1:$BACKEND_PORT/ws")
    WD_P50+=("$a") WD_P99+=("$b")
    read -r a b < <(run_ws "ws://127.0.0.1:$PROXY_PORT/user/bench/ws")
    WP_P50+=("$a") WP_P99+=("$b")
    printf '%-4s %-8s %9s %8s %8s   %s\n' "$run" "ws" "" "$a" "$b" "(proxied; direct p50 ${WD_P50[-1]})"
done

d_rps=$(median "${D_RPS[@]}") p_rps=$(median "${P_RPS[@]}")
d_p50=$(median "${D_P50[@]}") p_p50=$(median "${P_P50[@]}")
d_p99=$(median "${D_P99[@]}") p_p99=$(median "${P_P99[@]}")
sd50=$(median "${SD_P50[@]}") sd99=$(median "${SD_P99[@]}")
sp50=$(median "${SP_P50[@]}") sp99=$(median "${SP_P99[@]}")
rd50=$(median "${RD_P50[@]}") rd99=$(median "${RD_P99[@]}")
rp50=$(median "${RP_P50[@]}") rp99=$(median "${RP_P99[@]}")
wd50=$(median "${WD_P50[@]}") wd99=$(median "${WD_P99[@]}")
wp50=$(median "${WP_P50[@]}") wp99=$(median "${WP_P99[@]}")

echo
echo "summary: medians of $RUNS interleaved runs (wrk -t$THREADS -c$CONNECTIONS -d$DURATION; ws: $WS_MESSAGES x 100 B); load now $(load)"
printf '%-16s %10s %10s\n' "" direct proxied
printf '%-16s %10s %10s\n' "req/s" "$d_rps" "$p_rps"
printf '%-16s %10s %10s\n' "p50 ms" "$d_p50" "$p_p50"
printf '%-16s %10s %10s\n' "p99 ms" "$d_p99" "$p_p99"
printf '%-16s %10s %10s\n' "1 conn p50 ms" "$sd50" "$sp50"
printf '%-16s %10s %10s\n' "1 conn p99 ms" "$sd99" "$sp99"
printf '%-16s %10s %10s\n' "$RATE/s p50 ms" "$rd50" "$rp50"
printf '%-16s %10s %10s\n' "$RATE/s p99 ms" "$rd99" "$rp99"
printf '%-16s %10s %10s\n' "ws rtt p50 ms" "$wd50" "$wp50"
printf '%-16s %10s %10s\n' "ws rtt p99 ms" "$wd99" "$wp99"
printf '%-16s %10s %10s\n' "backend CPU us" "$(median "${D_BCPU[@]}")" "$(median "${P_BCPU[@]}")"
printf '%-16s %10s %10s\n' "proxy CPU us" "-" "$(median "${P_PCPU[@]}")"
awk -v d="$d_rps" -v p="$p_rps" -v a="$d_p50" -v b="$p_p50" -v wa="$wd50" -v wb="$wp50" \
    -v sa="$sd50" -v sb="$sp50" -v c="$CONNECTIONS" -v ra="$rd50" -v rb="$rp50" -v r="$RATE" 'BEGIN {
    printf "ratio            %.1f %% of direct req/s (goal >= 50 %%)\n", 100 * p / d
    printf "added p50        %+.3f ms at %s connections, saturated (p50 ~ connections / req/s)\n", b - a, c
    printf "added p50        %+.3f ms at %s req/s, open loop (goal <= 0.3 ms)\n", rb - ra, r
    printf "added p50        %+.3f ms at 1 connection (goal <= 0.3 ms)\n", sb - sa
    printf "added ws p50     %+.3f ms\n", wb - wa
}'
