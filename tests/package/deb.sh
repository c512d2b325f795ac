#!/usr/bin/env bash
# The Debian package end to end, in a contained systemd (tests/lib/contained-systemd.sh):
# build the .deb, lintian, `apt install` it, start jupyterhub.socket, let the first request
# start the unprivileged hub, log in a real PAM user, spawn a server with limits (through the
# privileged helper), read the structured journal, restart the hub under a running server and
# a stream of requests, stop the server (through the polkit rule), check what polkit and the
# helper refuse, print systemd-analyze security, and purge.
#
#   usage: tests/package/deb.sh            (as root, on Debian 12; tests/run.sh runs it)
# The filesystem is the host's: the package is installed on this machine while the test runs
# and purged at the end, on failure too.
set -euo pipefail
cd "$(dirname "$0")/../.."

user=jh-pkg
added=jh-pkg-added   # made by the helper for create_system_users
password="pkg-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
work=/var/lib/jupyterhub-rs-pkgtest   # /tmp is private inside the container
public=http://127.0.0.1:8000
jar=$work/cookies
step() { printf '== %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

if ss -ltn '( sport = :8000 or sport = :8081 )' | grep -q LISTEN; then
  fail "ports 8000/8081 are taken; the packaged sockets need them"
fi
dpkg-query -W jupyterhub-rs >/dev/null 2>&1 && fail "jupyterhub-rs is already installed here"

step "build the package"
bash packaging/build-deb.sh --dev >/dev/null
deb=$(ls -t target/debian/jupyterhub-rs_*_amd64.deb | head -1)
echo "$deb: $(du -h "$deb" | cut -f1)"
dpkg-deb -I "$deb" | sed -n 's/^ \(Package\|Version\|Depends\|Conflicts\|Provides\|Replaces\):/  \1:/p'

step "lintian"
command -v lintian >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lintian >/dev/null
lintian --fail-on error --tag-display-limit 0 "$deb" | tee target/debian/lintian.txt || fail "lintian reports errors"
echo "lintian: no errors ($(grep -c '^W:' target/debian/lintian.txt || true) warnings)"

rm -rf "$work" && mkdir -p "$work"
cp "$deb" "$work/"
deb=$work/$(basename "$deb")

. tests/lib/contained-systemd.sh
contained_boot jupyterhub-rs-pkg
cleanup() {
  set +e
  if dpkg-query -W -f='${Status}' jupyterhub-rs 2>/dev/null | grep -q installed; then
    inside systemctl stop 'jupyter-*' 'jupyterhub-service-*' jupyterhub.service jupyterhub.socket jupyterhub-api.socket >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive inside apt-get purge -y -qq jupyterhub-rs >/dev/null 2>&1
  fi
  contained_stop
  rm -rf /opt/jupyterhub "$work"
  userdel -r "$user" >/dev/null 2>&1
  userdel -r "$added" >/dev/null 2>&1
}
trap cleanup EXIT

step "apt install ./$(basename "$deb")"
# As over Debian's own jupyterhub package: its Python config is left behind, and named.
mkdir -p /etc/jupyterhub
old_config=/etc/jupyterhub/jupyterhub_config.py
[ -e "$old_config" ] && fail "$old_config exists already; this test would remove it"
echo 'c = get_config()  # noqa' >"$old_config"
DEBIAN_FRONTEND=noninteractive inside apt-get install -y -qq "$deb" >"$work/apt.log" 2>&1 \
  || { rm -f "$old_config"; cat "$work/apt.log"; fail "apt install"; }
grep -q "NOTE: /etc/jupyterhub/jupyterhub_config.py is Python JupyterHub's configuration" "$work/apt.log" \
  || { rm -f "$old_config"; cat "$work/apt.log"; fail "no note about the old jupyterhub_config.py"; }
[ -f "$old_config" ] || fail "the old config was removed"
rm -f "$old_config"
id jupyterhub
id -nG jupyterhub | grep -qw systemd-journal || fail "jupyterhub is not in systemd-journal"
[ "$(stat -c '%U:%G %a' /etc/jupyterhub/jupyterhub.toml)" = "root:jupyterhub 640" ] \
  || fail "config is $(stat -c '%U:%G %a' /etc/jupyterhub/jupyterhub.toml)"
inside systemctl is-enabled jupyterhub.socket | grep -qx enabled || fail "jupyterhub.socket is not enabled"

step "the single-user environment: jupyterhub setup-user-env"
inside jupyterhub setup-user-env >"$work/setup.log" 2>&1 || { tail -20 "$work/setup.log"; fail "setup-user-env"; }
tail -1 "$work/setup.log"
[ -x /opt/jupyterhub/user-env/bin/jupyterhub-singleuser ] || fail "no jupyterhub-singleuser in /opt/jupyterhub/user-env"

step "a PAM user and limits in the config"
id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
echo "$user:$password" | chpasswd
# Under the packaged file's own (commented-out) section headers.
sed -i -e "/^\[Authenticator\]\$/a allowed_users = [\"$user\"]" \
  -e '/^\[Spawner\]$/a mem_limit = "700M"\ncpu_limit = 0.5' /etc/jupyterhub/jupyterhub.toml
# The idle culler setup-user-env installed, as the packaged example has it (uncommented).
cat >>/etc/jupyterhub/jupyterhub.toml <<'TOML'

[[JupyterHub.services]]
name = "idle-culler"
command = ["/opt/jupyterhub/user-env/bin/python3", "-m", "jupyterhub_idle_culler", "--timeout=3600"]

[[JupyterHub.load_roles]]
name = "idle-culler"
scopes = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
services = ["idle-culler"]
TOML
inside jupyterhub check-config -f /etc/jupyterhub/jupyterhub.toml

step "socket activation: the first request starts the hub"
inside systemctl start jupyterhub.socket
[ "$(inside systemctl is-active jupyterhub.service || true)" = inactive ] || fail "the hub runs before any request"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "$public/hub/login")
[ "$code" = 200 ] || { inside journalctl -u jupyterhub --no-pager | tail -30; fail "GET /hub/login answered $code"; }
inside systemctl show jupyterhub -p MainPID -p User
main_pid=$(inside systemctl show jupyterhub -p MainPID --value)
[ "$(inside systemctl show jupyterhub -p User --value)" = jupyterhub ] || fail "the service's User= is not jupyterhub"
hub_uid=$(inside awk '/^Uid:/ {print $2}' "/proc/$main_pid/status")
[ "$hub_uid" = "$(id -u jupyterhub)" ] || fail "the hub process runs as uid $hub_uid"
echo "hub process uid $hub_uid (jupyterhub)"

step "the managed idle culler: its own unit, started by the helper, as a dynamic user"
culler=jupyterhub-service-idle-culler.service
for _ in $(seq 100); do
  [ "$(inside systemctl is-active "$culler" || true)" = active ] && break
  sleep 0.2
done
[ "$(inside systemctl is-active "$culler" || true)" = active ] \
  || { inside journalctl -u jupyterhub -u jupyterhub-helper -u "$culler" --no-pager | tail -30; fail "the culler does not run"; }
inside journalctl -u jupyterhub-helper --no-pager | grep -q "start service requested" || fail "the helper did not start the culler"
culler_pid=$(inside systemctl show "$culler" -p MainPID --value)
culler_uid=$(inside awk '/^Uid:/ {print $2}' "/proc/$culler_pid/status")
[ "$culler_uid" != 0 ] || fail "the culler runs as root"
[ "$(inside systemctl show "$culler" -p DynamicUser --value)" = yes ] || fail "the culler is not a dynamic user"
inside systemctl show "$culler" | grep -q JUPYTERHUB_API_TOKEN && fail "systemctl show reveals the culler's token"
culler_invocation=$(inside systemctl show "$culler" -p InvocationID --value)
echo "$culler: active, pid $culler_pid, uid $culler_uid, no token in systemctl show"

step "PAM login as $user"
xsrf=$(curl -s -c "$jar" -b "$jar" "$public/hub/login" | sed -n 's/.*name="_xsrf" value="\([^"]*\)".*/\1/p' | head -1)
[ -n "$xsrf" ] || fail "no _xsrf in the login form"
code=$(curl -s -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" \
  --data-urlencode "username=$user" --data-urlencode "password=wrong" --data-urlencode "_xsrf=$xsrf" "$public/hub/login")
[ "$code" = 403 ] || fail "a wrong password answered $code"
code=$(curl -s -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" \
  --data-urlencode "username=$user" --data-urlencode "password=$password" --data-urlencode "_xsrf=$xsrf" "$public/hub/login")
[ "$code" = 302 ] || fail "the login answered $code"
home=$(curl -s -b "$jar" -c "$jar" "$public/hub/home")
api_xsrf=$(printf '%s' "$home" | sed -n 's/.*"xsrf_token": *"\([^"]*\)".*/\1/p' | head -1)
[ -n "$api_xsrf" ] || fail "no xsrf_token on the home page"
api() { curl -s -b "$jar" -H "X-XSRFToken: $api_xsrf" -H 'Content-Type: application/json' "$@"; }

step "spawn: a transient unit with the configured limits, started by the privileged helper"
code=$(api -o "$work/spawn.json" -w '%{http_code}' -X POST "$public/hub/api/users/$user/server")
case "$code" in 201|202) ;; *) cat "$work/spawn.json"; fail "POST server answered $code" ;; esac
ready=""
for _ in $(seq 120); do
  ready=$(api "$public/hub/api/users/$user" | python3 -c 'import json,sys; s=json.load(sys.stdin)["servers"].get(""); print(bool(s and s["ready"]))')
  [ "$ready" = True ] && break
  sleep 1
done
[ "$ready" = True ] || { inside journalctl -u jupyterhub -u jupyterhub-helper -u "jupyter-*" --no-pager | tail -40; fail "the server never became ready"; }
unit="jupyter-$(systemd-escape "$user")-singleuser.service"   # jh\x2dpkg, as systemd-escape
inside systemctl show "$unit" -p User -p MemoryMax -p CPUQuotaPerSecUSec -p Slice
[ "$(inside systemctl show "$unit" -p User --value)" = "$user" ] || fail "unit User="
[ "$(inside systemctl show "$unit" -p MemoryMax --value)" = $((700 * 1024 * 1024)) ] || fail "unit MemoryMax="
[ "$(inside systemctl show "$unit" -p CPUQuotaPerSecUSec --value)" = 500ms ] || fail "unit CPUQuota="
inside journalctl -u jupyterhub-helper --no-pager | grep -q "start unit requested" || fail "the helper did not start the unit"
token_hint=$(inside sh -c "cat /run/jupyterhub-units/*.env" | sed -n 's/^JUPYTERHUB_API_TOKEN=//p' | tr -d "'\"" | head -1)
[ -n "$token_hint" ] || fail "no token in the unit's environment file"
inside systemctl show "$unit" | grep -qF "$token_hint" && fail "systemctl show reveals the token"
code=$(curl -s -o "$work/api.json" -w '%{http_code}' "$public/user/$user/api")
[ "$code" = 200 ] && grep -q '"version"' "$work/api.json" || fail "/user/$user/api through the proxy answered $code"
echo "server reachable through the proxy: $(cat "$work/api.json")"

step "journalctl -u jupyterhub -o json: structured fields"
inside journalctl -u jupyterhub -o json --no-pager >"$work/journal.json"
python3 - "$work/journal.json" "$user" <<'PY'
import json, sys
entries = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
user = sys.argv[2]
def find(pred, what):
    for e in entries:
        if pred(e):
            print(f"  {what}: " + ", ".join(f"{k}={e[k]}" for k in sorted(e) if not k.startswith("_") and k not in ("__CURSOR", "__REALTIME_TIMESTAMP", "__MONOTONIC_TIMESTAMP", "SYSLOG_IDENTIFIER", "CODE_FILE", "CODE_LINE", "TARGET")))
            return
    sys.exit(f"no journal entry with {what}")
find(lambda e: {"METHOD", "PATH", "STATUS", "DURATION_MS"} <= e.keys(), "a request (METHOD, PATH, STATUS, DURATION_MS)")
find(lambda e: e.get("USER") == user and "SPAWN_SECONDS" in e, "a spawn (USER, SERVER, SPAWN_SECONDS)")
find(lambda e: "PRIORITY" in e and e.get("SYSLOG_IDENTIFIER") == "jupyterhub", "PRIORITY")
PY

step "systemctl restart jupyterhub: the server keeps running and stays reachable"
invocation=$(inside systemctl show "$unit" -p InvocationID --value)
server_pid=$(inside systemctl show "$unit" -p MainPID --value)
(
  ok=0 bad=0
  for _ in $(seq 60); do
    c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$public/hub/api/" || true)
    if [ "$c" = 200 ]; then ok=$((ok + 1)); else bad=$((bad + 1)); echo "  during restart: $c" >&2; fi
    sleep 0.05
  done
  echo "$ok $bad" >"$work/during"
) &
load=$!
sleep 0.5
inside systemctl restart jupyterhub
wait "$load"
read -r ok bad <"$work/during"
echo "requests during the restart: $ok answered 200, $bad failed"
[ "$bad" = 0 ] || fail "requests failed during the restart"
[ "$(inside systemctl show jupyterhub -p MainPID --value)" != "$main_pid" ] || fail "the hub did not restart"
[ "$(inside systemctl show "$unit" -p InvocationID --value)" = "$invocation" ] || fail "the user's unit was restarted"
[ "$(inside systemctl show "$unit" -p MainPID --value)" = "$server_pid" ] || fail "the user's server changed"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$public/user/$user/api")
[ "$code" = 200 ] || fail "after the restart /user/$user/api answered $code"
ready=$(api "$public/hub/api/users/$user" | python3 -c 'import json,sys; s=json.load(sys.stdin)["servers"].get(""); print(bool(s and s["ready"]))')
[ "$ready" = True ] || fail "after the restart the hub does not know the server runs"
echo "same unit invocation $invocation, same PID $server_pid, reachable"
[ "$(inside systemctl show "$culler" -p InvocationID --value)" = "$culler_invocation" ] || fail "the culler was restarted"
[ "$(inside systemctl show "$culler" -p MainPID --value)" = "$culler_pid" ] || fail "the culler changed"
echo "the culler was adopted: same invocation, same PID $culler_pid"

step "polkit: what the hub's user may and may not do"
inside systemd-run --quiet --unit=not-ours sleep 600
if inside runuser -u jupyterhub -- systemctl --no-ask-password stop not-ours.service 2>"$work/polkit.err"; then
  fail "the jupyterhub user stopped a unit that is not jupyter-*"
fi
echo "  jupyterhub stopping not-ours.service: refused ($(head -1 "$work/polkit.err"))"
if inside runuser -u "$user" -- systemctl --no-ask-password stop "$unit" 2>"$work/polkit.err"; then
  fail "$user stopped a server unit"
fi
echo "  $user stopping $unit: refused"
inside systemctl stop not-ours.service

step "the privileged helper refuses what the config does not allow"
helper_call() {
  inside runuser -u "$1" -- python3 -c '
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("/run/jupyterhub-helper.sock")
except OSError as e:
    print("connect:", e.strerror); sys.exit(0)
s.sendall((sys.argv[1] + "\n").encode())
print(s.makefile().readline().strip())' "$2"
}
req() { # user argv
  printf '{"op":"start_unit","request":{"user":"%s","server_name":"","system_user":"%s","argv":%s,"env":{},"working_dir":null,"ip":"127.0.0.1","port":18999,"limits":{"mem_limit":734003200,"mem_guarantee":null,"cpu_limit":0.5,"cpu_guarantee":null,"tasks_max":null}}}' "$1" "$1" "$2"
}
answer=$(helper_call jupyterhub "$(req root '["/opt/jupyterhub/user-env/bin/jupyterhub-singleuser"]')")
echo "  User=root: $answer"
case "$answer" in *'"result":"error"'*"system account"*) ;; *) fail "the helper did not refuse User=root" ;; esac
answer=$(helper_call jupyterhub "$(req "$user" '["/bin/sh","-c","id"]')")
echo "  a foreign command: $answer"
case "$answer" in *'"result":"error"'*"configured Spawner.cmd"*) ;; *) fail "the helper did not refuse a foreign command" ;; esac
answer=$(helper_call jupyterhub '{"op":"start_service","name":"not-configured","env":{},"fingerprint":"ab"}')
echo "  an unknown service: $answer"
case "$answer" in *'"result":"error"'*"not a managed service"*) ;; *) fail "the helper started an unknown service" ;; esac
answer=$(helper_call jupyterhub '{"op":"start_service","name":"idle-culler","env":{"LD_PRELOAD":"/tmp/x.so"},"fingerprint":"ab"}')
echo "  a variable the hub does not set: $answer"
case "$answer" in *'"result":"error"'*"not a variable the hub sets"*) ;; *) fail "the helper took LD_PRELOAD from the hub" ;; esac
answer=$(helper_call "$user" "$(req "$user" '["/opt/jupyterhub/user-env/bin/jupyterhub-singleuser"]')")
echo "  another user calling: $answer"
case "$answer" in *"connect: Permission denied"*) ;; *) fail "$user could reach the helper" ;; esac

step "stop the server: StopUnit by the unprivileged hub, allowed by the polkit rule"
code=$(api -o "$work/stop.json" -w '%{http_code}' -X DELETE "$public/hub/api/users/$user/server")
case "$code" in 202|204) ;; *) cat "$work/stop.json"; fail "DELETE server answered $code" ;; esac
for _ in $(seq 60); do
  state=$(inside systemctl is-active "$unit" || true)
  [ "$state" = inactive ] || [ "$state" = unknown ] && break
  sleep 0.5
done
case "$state" in inactive|unknown) ;; *) fail "$unit is still $state" ;; esac
stopped=$(api "$public/hub/api/users/$user" | python3 -c 'import json,sys; print(json.load(sys.stdin)["servers"] == {})')
[ "$stopped" = True ] || fail "the hub still lists the server"
echo "$unit: $state"

step "a server that dies on its own: the unprivileged hub hears it from systemd"
code=$(api -o "$work/spawn.json" -w '%{http_code}' -X POST "$public/hub/api/users/$user/server")
case "$code" in 201|202) ;; *) cat "$work/spawn.json"; fail "POST server answered $code" ;; esac
wait_server() { # True|False: wait until the server's readiness is that
  local want=$1 got=""
  for _ in $(seq 120); do
    got=$(api "$public/hub/api/users/$user" | python3 -c 'import json,sys; s=json.load(sys.stdin)["servers"].get(""); print(bool(s and s["ready"]))')
    [ "$got" = "$want" ] && return 0
    sleep 0.5
  done
  return 1
}
wait_server True || fail "the second spawn never became ready"
inside systemctl kill --signal=KILL "$unit"
wait_server False || fail "the hub still thinks the killed server runs"
code=$(api -L --max-redirs 5 -o /dev/null -w '%{http_code}' "$public/user/$user/api")
echo "killed $unit: the hub shows it stopped; /user/$user/api now answers $code"
[ "$code" = 424 ] || fail "/user/$user/api after the kill answered $code"

step "create_system_users: an admin adds a user and the helper makes the account"
# The unprivileged hub cannot run useradd: it asks the root helper, which checks its own
# reading of the config. Both read the changed config after a restart (the helper's socket
# starts a new one).
getent passwd "$added" >/dev/null && fail "$added exists before the test"
sed -i -e "/^\[Authenticator\]\$/a admin_users = [\"$user\"]" /etc/jupyterhub/jupyterhub.toml
printf '\n[LocalAuthenticator]\ncreate_system_users = true\n' >>/etc/jupyterhub/jupyterhub.toml
inside jupyterhub check-config -f /etc/jupyterhub/jupyterhub.toml
inside systemctl stop jupyterhub-helper.service
inside systemctl restart jupyterhub.service
for _ in $(seq 60); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$public/hub/api/")" = 200 ] && break
  sleep 0.5
done
code=$(api -o "$work/add.json" -w '%{http_code}' -X POST "$public/hub/api/users/$added")
[ "$code" = 201 ] || { cat "$work/add.json"; inside journalctl -u jupyterhub -u jupyterhub-helper --no-pager | tail -20; fail "adding $added answered $code"; }
entry=$(getent passwd "$added") || fail "no system account for $added"
echo "  $entry"
home=$(echo "$entry" | cut -d: -f6)
[ -d "$home" ] || fail "no home directory $home"
[ "$(stat -c %U "$home")" = "$added" ] || fail "$home is not $added's"
passwd -S "$added" | grep -q " L " || fail "$added can log in with a password: $(passwd -S "$added")"
id -nG "$added" | grep -qw sudo && fail "$added is in sudo"
inside journalctl -u jupyterhub-helper --no-pager | grep -q "create account" \
  || { inside journalctl -u jupyterhub-helper --no-pager | tail -10; fail "the helper did not log the account it made"; }
code=$(api -o /dev/null -w '%{http_code}' -X DELETE "$public/hub/api/users/$added")
[ "$code" = 204 ] || fail "deleting $added answered $code"
getent passwd "$added" >/dev/null && [ -d "$home" ] || fail "deleting the hub user removed the account or its home"
echo "$added: account made by the helper (home, locked password, not in sudo), kept when the hub user was deleted"

step "systemd-analyze security jupyterhub.service"
inside systemd-analyze security jupyterhub.service --no-pager | tail -1

step "apt purge"
inside systemctl stop jupyterhub.service jupyterhub.socket jupyterhub-api.socket
DEBIAN_FRONTEND=noninteractive inside apt-get purge -y -qq jupyterhub-rs >"$work/purge.log" 2>&1 \
  || { cat "$work/purge.log"; fail "apt purge"; }
for path in /usr/bin/jupyterhub /etc/jupyterhub /var/lib/jupyterhub /var/lib/jupyterhub-services /var/lib/private/jupyterhub-services /usr/lib/systemd/system/jupyterhub.service; do
  [ -e "$path" ] && fail "$path is left after purge"
done
[ "$(inside systemctl is-active "$culler" || true)" = active ] && fail "the culler outlived the package"
echo "purged: no binary, config, state or units left, the culler stopped"
echo "PASS: package end to end"
