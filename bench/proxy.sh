#!/usr/bin/env bash
# Benchmark of the built-in proxy (not a test): wrk against a trivial backend directly and
# through `jupyterhub proxy` (release build), printing req/s, p50/p99 and their ratio, then
# websocket round-trip latency both ways. Everything shares this machine's cores, so the
# numbers are indicative; compare the ratio, not the absolute values.
#
# Usage: bench/proxy.sh            (env: DURATION=10s CONNECTIONS=32 THREADS=2 WS_MESSAGES=5000)
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
WS_MESSAGES=${WS_MESSAGES:-5000}
BACKEND_PORT=${BACKEND_PORT:-18901}
PROXY_PORT=${PROXY_PORT:-18902}
API_PORT=${API_PORT:-18903}
TOKEN=bench-token

command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

cargo build --release --quiet --bin jupyterhub --example proxy_bench
BIN=target/release/jupyterhub
BENCH=target/release/examples/proxy_bench

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$BENCH" backend "$BACKEND_PORT" &
PIDS+=($!)
CONFIGPROXY_AUTH_TOKEN=$TOKEN "$BIN" --log-level warn proxy --ip 127.0.0.1 --port "$PROXY_PORT" \
    --api-ip 127.0.0.1 --api-port "$API_PORT" &
PIDS+=($!)

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

# Print "req/s p50_ms p99_ms" from wrk --latency output.
run_wrk() {
    wrk --latency -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" "$1" | awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec/ { rps = $2 }
        $1 == "50%" { p50 = ms($2) }
        $1 == "99%" { p99 = ms($2) }
        END { printf "%.0f %.3f %.3f\n", rps, p50, p99 }'
}

wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$DIRECT" >/dev/null   # warm-up
read -r d_rps d_p50 d_p99 < <(run_wrk "$DIRECT")
wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$PROXIED" >/dev/null
read -r p_rps p_p50 p_p99 < <(run_wrk "$PROXIED")

printf '%-8s %10s %10s %10s\n' "" "req/s" "p50 ms" "p99 ms"
printf '%-8s %10s %10s %10s\n' direct "$d_rps" "$d_p50" "$d_p99"
printf '%-8s %10s %10s %10s\n' proxied "$p_rps" "$p_p50" "$p_p99"
awk -v d="$d_rps" -v p="$p_rps" -v a="$d_p50" -v b="$p_p50" \
    'BEGIN { printf "ratio    %.1f %% of direct req/s, +%.3f ms p50\n", 100 * p / d, b - a }'

echo "websocket round trip (100-byte text messages):"
printf 'direct   '; "$BENCH" ws-rtt "ws://127.0.0.1:$BACKEND_PORT/ws" "$WS_MESSAGES"
printf 'proxied  '; "$BENCH" ws-rtt "ws://127.0.0.1:$PROXY_PORT/user/bench/ws" "$WS_MESSAGES"
