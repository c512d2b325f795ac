# A contained systemd as PID 1 of fresh namespaces, for shell tests (source this file).
# The recipe and its pitfalls: private /run, /tmp and /var/tmp (boot wipes /tmp otherwise),
# boot to basic.target (the host's enabled services would hold the boot), one at a time,
# always killed on exit. The filesystem and the network are the host's.
#
#   contained_boot NAME    boots it; sets CONTAINED_PID1 and installs an EXIT trap
#   inside CMD...          runs CMD inside (nsenter into all its namespaces)

CONTAINED_PID1=""
_contained_unshare=""

contained_stop() {
  [ -n "$CONTAINED_PID1" ] && kill -KILL "$CONTAINED_PID1" 2>/dev/null || true
  [ -n "$_contained_unshare" ] && kill -KILL "$_contained_unshare" 2>/dev/null || true
  [ -n "$_contained_unshare" ] && wait "$_contained_unshare" 2>/dev/null || true
  CONTAINED_PID1=""
  _contained_unshare=""
}

contained_boot() {
  local cgroup=$1-$$
  local script='
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
  _contained_unshare=$!
  trap contained_stop EXIT
  local child state=""
  for _ in $(seq 200); do
    for child in $(pgrep -P "$_contained_unshare" 2>/dev/null) $(pgrep -P "$(pgrep -P "$_contained_unshare" | head -1)" 2>/dev/null); do
      [ "$(cat /proc/$child/comm 2>/dev/null)" = systemd ] && CONTAINED_PID1=$child
    done
    [ -n "$CONTAINED_PID1" ] && break
    sleep 0.05
  done
  [ -n "$CONTAINED_PID1" ] || { echo "the contained systemd did not start" >&2; return 1; }
  for _ in $(seq 200); do
    state=$(inside systemctl is-system-running 2>/dev/null || true)
    case "$state" in running|degraded) break ;; esac
    sleep 0.1
  done
  echo "contained systemd: PID $CONTAINED_PID1 ($state)"
}

inside() {
  nsenter -t "$CONTAINED_PID1" -a "$@"
}
