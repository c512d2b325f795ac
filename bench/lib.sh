# Shared by the bench scripts (sourced): ending what a run started, by pid, and only that.
# Each script that stops hubs sets BENCH (its copy of hub_bench), HUB_PID, PROXY_PIDFILE and RUN_DIR.

# The stub servers are processes of $BENCH (the script's copy): end exactly those, by pid.
kill_stubs() {
    local p
    for p in /proc/[0-9]*; do
        [[ $(readlink "$p/exe" 2>/dev/null) == "$BENCH" ]] && kill -KILL "${p#/proc/}" 2>/dev/null || true
    done
}

# SIGTERM, then SIGKILL after STOP_TENTHS tenths of a second (default 30 s). The Python hub
# stops its proxy on SIGTERM; its pid file makes sure of it.
stop_hub() {
    if [[ -n $HUB_PID ]]; then
        kill -TERM "$HUB_PID" 2>/dev/null || true
        for _ in $(seq "${STOP_TENTHS:-300}"); do kill -0 "$HUB_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$HUB_PID" 2>/dev/null || true
        wait "$HUB_PID" 2>/dev/null || true
        HUB_PID=
    fi
    if [[ -n $PROXY_PIDFILE && -f $PROXY_PIDFILE ]]; then
        local pid
        pid=$(cat "$PROXY_PIDFILE" 2>/dev/null || true)
        [[ -n $pid ]] && kill -TERM "$pid" 2>/dev/null || true
        rm -f "$PROXY_PIDFILE"
    fi
}

# On a failed run, the end of the hub's log says why.
show_failed_log() {
    if [[ $1 != 0 && -n $RUN_DIR && -f $RUN_DIR/hub.log ]]; then
        echo "--- failed; last lines of $RUN_DIR/hub.log:" >&2
        tail -n 30 "$RUN_DIR/hub.log" >&2
    fi
}

# The median of the numbers on stdin, one per line ("nan" when there are none).
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "nan"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
