#!/usr/bin/env bash
# A package upgrade end to end, in a contained systemd (tests/lib/contained-systemd.sh):
# install the previous release's .deb (built from an earlier commit, with an older schema),
# change the config as an admin would, log in a PAM user, spawn a server, make a token and a
# group, then `apt install` the current .deb and check that the admin's config is kept, the
# database was backed up and migrated, the hub was restarted on the new binary while the
# user's server and a managed service kept running (same unit invocation, same PID), the
# server is still routed, and the token and group survived; that a hub not running at the
# upgrade migrates at its next start, and that a migration that fails starts no hub and
# leaves the database consistent. Then purge.
#
#   usage: tests/package/upgrade.sh        (as root, on Debian 12; tests/run.sh runs it)
# The filesystem is the host's: the packages are installed on this machine while the test
# runs and purged at the end, on failure too. Needs the full history (not a shallow clone).
set -euo pipefail
cd "$(dirname "$0")/../.."

# The previous release: the last commit on main before migrations 004 (shares) and 005
# (first-use passwords) landed, so the upgrade migrates schema 3 to the newest. Pinned, so
# the test always upgrades from the same package; its .deb is cached by this hash.
old_commit=a7eb58ea5d1979fb0f1d6f5000fa3d8e4b942059
old_schema=3
# Below the current version, as a previous release's is.
old_version=0.0.1-1
cache=/var/cache/jupyterhub-rs-tests/upgrade
old_deb=$cache/jupyterhub-rs_${old_version}_${old_commit:0:12}_amd64.deb
# The real single-user server from tests/run.sh's cached environment, instead of a fresh
# `jupyterhub setup-user-env` from PyPI on every run.
venv=${SINGLEUSER_VENV_6:-/var/cache/jupyterhub-rs-tests/venv-6}

user=jh-upgrade
group=upgrade-testers
password="upg-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
work=/var/lib/jupyterhub-rs-upgradetest   # /tmp is private inside the container
public=http://127.0.0.1:8000
config=/etc/jupyterhub/jupyterhub.toml
db=/var/lib/jupyterhub/jupyterhub.sqlite
jar=$work/cookies
phase="" phase_start=0 test_start=${EPOCHREALTIME/./}
elapsed() { # microseconds since $1, as seconds with one decimal
  local us=$((${EPOCHREALTIME/./} - $1))
  printf '%d.%ds' $((us / 1000000)) $((us % 1000000 / 100000))
}
step() {
  [ -n "$phase" ] && printf '   (%s)\n' "$(elapsed "$phase_start")"
  phase=$*
  phase_start=${EPOCHREALTIME/./}
  printf '== %s\n' "$*"
}
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
# One value from a database, read-only (Python's sqlite3: no sqlite3 program needed).
sql() {
  python3 -c 'import sqlite3, sys; print(sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True).execute(sys.argv[2]).fetchone()[0])' "$1" "$2"
}

if ss -ltn '( sport = :8000 or sport = :8081 )' | grep -q LISTEN; then
  fail "ports 8000/8081 are taken; the packaged sockets need them"
fi
dpkg-query -W jupyterhub-rs >/dev/null 2>&1 && fail "jupyterhub-rs is already installed here"
[ -x "$venv/bin/jupyterhub-singleuser" ] \
  || fail "no jupyterhub-singleuser in $venv (tests/run.sh makes it; or set SINGLEUSER_VENV_6)"

old_src=""
. tests/lib/contained-systemd.sh
cleanup() {
  set +e
  # Any state, half-configured too (a failed upgrade leaves the package unpacked).
  if dpkg-query -W -f='${Status}' jupyterhub-rs 2>/dev/null | grep -qv 'not-installed'; then
    inside systemctl stop 'jupyter-*' 'jupyterhub-service-*' jupyterhub.service jupyterhub.socket jupyterhub-api.socket >/dev/null 2>&1
    DEBIAN_FRONTEND=noninteractive inside apt-get purge -y -qq jupyterhub-rs >/dev/null 2>&1
  fi
  contained_stop
  if [ -n "$old_src" ]; then
    git worktree remove --force "$old_src/tree" >/dev/null 2>&1
    rm -rf "$old_src"
    git worktree prune
  fi
  rm -rf "$work"
  userdel -r "$user" >/dev/null 2>&1
}
trap cleanup EXIT

step "the previous release: $old_version from ${old_commit:0:12} (schema $old_schema)"
if [ -f "$old_deb" ]; then
  echo "cached: $old_deb"
else
  git cat-file -e "$old_commit^{commit}" 2>/dev/null \
    || fail "commit $old_commit is not in this clone (a shallow clone? git fetch --unshallow)"
  mkdir -p "$cache"
  old_src=$(mktemp -d)
  git worktree add --detach "$old_src/tree" "$old_commit" >/dev/null 2>&1 || fail "git worktree add $old_commit"
  # Its own target directory, kept between runs; the first one starts from this tree's
  # debug build, so only what differs is compiled.
  if [ ! -d "$cache/target/debug" ] && [ -d target/debug ]; then
    mkdir -p "$cache/target"
    cp -a target/debug "$cache/target/"
  fi
  command -v cargo-deb >/dev/null || cargo install --locked cargo-deb --version 3.8.0
  (
    cd "$old_src/tree"
    export CARGO_TARGET_DIR=$cache/target
    cargo build --locked --bin jupyterhub
    cargo deb --no-build --profile dev --deb-version "$old_version" --output "$old_deb.part"
  ) || fail "building the previous release"
  mv "$old_deb.part" "$old_deb"
  git worktree remove --force "$old_src/tree"
  rm -rf "$old_src"
  old_src=""
fi
[ "$(dpkg-deb -f "$old_deb" Version)" = "$old_version" ] || fail "$old_deb is not version $old_version"

step "the current package"
bash packaging/build-deb.sh --dev >/dev/null
new_deb=$(ls -t target/debian/jupyterhub-rs_*_amd64.deb | head -1)
new_version=$(dpkg-deb -f "$new_deb" Version)
dpkg --compare-versions "$old_version" lt "$new_version" || fail "$new_version is not newer than $old_version"
dpkg-deb -I "$new_deb" conffiles | grep -qx "$config" || fail "$config is not a conffile"
echo "$old_version -> $new_version ($new_deb)"

rm -rf "$work" && mkdir -p "$work"
cp "$old_deb" "$work/old.deb"
cp "$new_deb" "$work/new.deb"
contained_boot jupyterhub-rs-upgrade
trap cleanup EXIT   # contained_boot set its own
# A container image's policy-rc.d forbids every start and restart a package asks for (so
# the package would leave the old hub running until its next start); a host that runs
# systemd has none. Inside the contained systemd's own mount namespace only.
if [ -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 0\n' >"$work/policy-rc.d"
  chmod 755 "$work/policy-rc.d"
  inside mount --bind "$work/policy-rc.d" /usr/sbin/policy-rc.d
fi

step "apt install the previous release"
DEBIAN_FRONTEND=noninteractive inside apt-get install -y -qq "$work/old.deb" >"$work/apt-old.log" 2>&1 \
  || { cat "$work/apt-old.log"; fail "apt install old.deb"; }
[ "$(dpkg-query -W -f='${Version}' jupyterhub-rs)" = "$old_version" ] || fail "the old version is not installed"

step "the admin's changes to $config"
id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
echo "$user:$password" | chpasswd
# Under the packaged file's own (commented-out) section headers, as an admin would.
sed -i \
  -e '/^\[JupyterHub\]$/a # Site change: the monitoring host scrapes /hub/metrics without a token.\nauthenticate_prometheus = false' \
  -e "/^\[Authenticator\]\$/a admin_users = [\"$user\"]\nallowed_users = [\"$user\"]" \
  -e "/^\[Spawner\]\$/a cmd = [\"$venv/bin/jupyterhub-singleuser\"]" \
  "$config"
# A managed service, which must outlive the upgrade as the users' servers do.
cat >>"$config" <<TOML

[[JupyterHub.services]]
name = "idle-culler"
command = ["$venv/bin/python3", "-m", "jupyterhub_idle_culler", "--timeout=3600"]

[[JupyterHub.load_roles]]
name = "idle-culler"
scopes = ["list:users", "read:users:activity", "read:servers", "delete:servers"]
services = ["idle-culler"]
TOML
inside jupyterhub check-config -f "$config"
admin_config=$(sha256sum <"$config")

step "start the old hub, log in $user, spawn a server, make a token and a group"
inside systemctl start jupyterhub.socket
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "$public/hub/login")
[ "$code" = 200 ] || { inside journalctl -u jupyterhub --no-pager | tail -30; fail "GET /hub/login answered $code"; }
xsrf=$(curl -s -c "$jar" -b "$jar" "$public/hub/login" | sed -n 's/.*name="_xsrf" value="\([^"]*\)".*/\1/p' | head -1)
[ -n "$xsrf" ] || fail "no _xsrf in the login form"
code=$(curl -s -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" \
  --data-urlencode "username=$user" --data-urlencode "password=$password" --data-urlencode "_xsrf=$xsrf" "$public/hub/login")
[ "$code" = 302 ] || fail "the login answered $code"
api_xsrf=$(curl -s -b "$jar" -c "$jar" "$public/hub/home" | sed -n 's/.*"xsrf_token": *"\([^"]*\)".*/\1/p' | head -1)
[ -n "$api_xsrf" ] || fail "no xsrf_token on the home page"
api() { curl -s -b "$jar" -H "X-XSRFToken: $api_xsrf" -H 'Content-Type: application/json' "$@"; }
ready() { api "$public/hub/api/users/$user" | python3 -c 'import json,sys; s=json.load(sys.stdin)["servers"].get(""); print(bool(s and s["ready"]))'; }
code=$(api -o "$work/spawn.json" -w '%{http_code}' -X POST "$public/hub/api/users/$user/server")
case "$code" in 201|202) ;; *) cat "$work/spawn.json"; fail "POST server answered $code" ;; esac
for _ in $(seq 120); do
  [ "$(ready)" = True ] && break
  sleep 0.5
done
[ "$(ready)" = True ] || { inside journalctl -u jupyterhub -u jupyterhub-helper -u "jupyter-*" --no-pager | tail -40; fail "the server never became ready"; }
code=$(curl -s -o /dev/null -w '%{http_code}' "$public/user/$user/api")
[ "$code" = 200 ] || fail "/user/$user/api answered $code before the upgrade"
token=$(api -X POST -d '{"note":"survives the upgrade"}' "$public/hub/api/users/$user/tokens" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
[ -n "$token" ] || fail "no token"
code=$(api -o "$work/group.json" -w '%{http_code}' -X POST -d "{\"users\":[\"$user\"]}" "$public/hub/api/groups/$group")
[ "$code" = 201 ] || { cat "$work/group.json"; fail "POST group answered $code"; }
unit="jupyter-$(systemd-escape "$user")-singleuser.service"
invocation=$(inside systemctl show "$unit" -p InvocationID --value)
server_pid=$(inside systemctl show "$unit" -p MainPID --value)
hub_pid=$(inside systemctl show jupyterhub -p MainPID --value)
culler=jupyterhub-service-idle-culler.service
for _ in $(seq 100); do
  [ "$(inside systemctl is-active "$culler" || true)" = active ] && break
  sleep 0.2
done
[ "$(inside systemctl is-active "$culler" || true)" = active ] || fail "the managed idle culler does not run"
culler_invocation=$(inside systemctl show "$culler" -p InvocationID --value)
culler_pid=$(inside systemctl show "$culler" -p MainPID --value)
helper_pid=$(inside systemctl show jupyterhub-helper -p MainPID --value)
[ "$helper_pid" != 0 ] || fail "the helper that started the server does not run"
[ "$(sql "$db" 'PRAGMA user_version')" = "$old_schema" ] || fail "the old hub's schema is not $old_schema"
ls /var/lib/jupyterhub/*.bak >/dev/null 2>&1 && fail "a backup exists before the upgrade"
echo "hub pid $hub_pid, $unit pid $server_pid (invocation $invocation), schema $old_schema"

step "apt install the current package, under a stream of requests"
(
  ok=0 bad=0
  while [ ! -e "$work/upgraded" ]; do
    c=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$public/hub/api/" || true)
    if [ "$c" = 200 ]; then ok=$((ok + 1)); else bad=$((bad + 1)); echo "  during the upgrade: $c" >&2; fi
    sleep 0.05
  done
  echo "$ok $bad" >"$work/during"
) &
load=$!
# What unattended upgrades pass: keep a changed conffile without asking.
DEBIAN_FRONTEND=noninteractive inside apt-get install -y -qq \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$work/new.deb" >"$work/apt-new.log" 2>&1 \
  || { touch "$work/upgraded"; wait "$load"; cat "$work/apt-new.log"; inside journalctl -u jupyterhub --no-pager | tail -30; fail "apt install new.deb"; }
touch "$work/upgraded"
wait "$load"
cat "$work/apt-new.log"
read -r ok bad <"$work/during"
echo "requests during the upgrade: $ok answered 200, $bad failed"
[ "$bad" = 0 ] || fail "requests failed during the upgrade"
[ "$(dpkg-query -W -f='${Version}' jupyterhub-rs)" = "$new_version" ] || fail "$new_version is not installed"

step "the admin's config is kept"
[ "$(sha256sum <"$config")" = "$admin_config" ] || fail "$config changed"
[ "$(stat -c '%U:%G %a' "$config")" = "root:jupyterhub 640" ] || fail "config is $(stat -c '%U:%G %a' "$config")"
cmp -s "$config.dpkg-dist" packaging/jupyterhub.toml || fail "the new default is not beside it as $config.dpkg-dist"
echo "unchanged (sha256), the new default beside it in $config.dpkg-dist"

step "the database was backed up, then migrated"
backups=(/var/lib/jupyterhub/jupyterhub.sqlite.*.bak)
[ "${#backups[@]}" = 1 ] && [ -f "${backups[0]}" ] || fail "expected one backup, found: ${backups[*]}"
[ "$(sql "${backups[0]}" 'PRAGMA user_version')" = "$old_schema" ] || fail "the backup is not the old schema"
[ "$(sql "${backups[0]}" "SELECT count(*) FROM users WHERE name = '$user'")" = 1 ] || fail "the backup lacks $user"
[ "$(stat -c '%U %a' "${backups[0]}")" = "jupyterhub 600" ] || fail "the backup is $(stat -c '%U %a' "${backups[0]}")"
newest=$(ls migrations/*.sql | wc -l)
[ "$(sql "$db" 'PRAGMA user_version')" = "$newest" ] || fail "the schema is not $newest"
# The backup's name as upgrade-db printed it (the packaged db_url is relative).
inside journalctl -u jupyterhub-upgrade-db -o cat --no-pager >"$work/upgrade-db.log"
grep -F "(backup: $(basename "${backups[0]}"))" "$work/upgrade-db.log" \
  || { cat "$work/upgrade-db.log"; fail "jupyterhub-upgrade-db.service's journal does not name the backup"; }
[ -e /var/lib/jupyterhub/upgrade-db-pending ] && fail "the migration is still marked pending"
echo "${backups[0]}: schema $old_schema; $db: schema $newest"

step "the hub runs the new binary; the user's server was never stopped and is still routed"
new_hub_pid=$(inside systemctl show jupyterhub -p MainPID --value)
[ "$new_hub_pid" != 0 ] && [ "$new_hub_pid" != "$hub_pid" ] || fail "the hub was not restarted (MainPID $new_hub_pid)"
[ "$(inside readlink "/proc/$new_hub_pid/exe")" = /usr/bin/jupyterhub ] || fail "the hub does not run the installed binary"
[ "$(inside systemctl show "$unit" -p InvocationID --value)" = "$invocation" ] || fail "the user's unit was restarted"
[ "$(inside systemctl show "$unit" -p MainPID --value)" = "$server_pid" ] || fail "the user's server changed"
code=$(curl -s -o "$work/api.json" -w '%{http_code}' --max-time 30 "$public/user/$user/api")
[ "$code" = 200 ] && grep -q '"version"' "$work/api.json" || fail "after the upgrade /user/$user/api answered $code"
[ "$(ready)" = True ] || fail "after the upgrade the hub does not know the server runs"
echo "hub pid $hub_pid -> $new_hub_pid (/usr/bin/jupyterhub); $unit: same invocation, pid $server_pid, routed"
[ "$(inside systemctl show "$culler" -p InvocationID --value)" = "$culler_invocation" ] || fail "the culler was restarted"
[ "$(inside systemctl show "$culler" -p MainPID --value)" = "$culler_pid" ] || fail "the culler changed"
echo "$culler: adopted (same invocation, pid $culler_pid)"
code=$(curl -s -o /dev/null -w '%{http_code}' "$public/hub/metrics")
[ "$code" = 200 ] || fail "GET /hub/metrics without a token answered $code: the new hub ignores the admin's option"
echo "the new hub reads the admin's option (authenticate_prometheus = false: /hub/metrics answers 200)"

step "the token and the group survived"
name=$(curl -s -H "Authorization: token $token" "$public/hub/api/user" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("name"))')
[ "$name" = "$user" ] || fail "the token no longer works (got $name)"
members=$(api "$public/hub/api/groups/$group" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("users"))')
[ "$members" = "['$user']" ] || fail "group $group: $members"
echo "token: $name; group $group: $members"

step "a hub stopped at the upgrade migrates when a connection starts it"
# As when the hub did not run at the upgrade (or policy-rc.d forbade the restart): the old
# schema, marked pending. The backup holds this moment's users, token and server.
inside systemctl stop jupyterhub.service
rm -f "$db-wal" "$db-shm"
# Moved, not copied: the next backup may get the same name (they are named by the second).
mv "${backups[0]}" "$work/restored.sqlite"
install -o jupyterhub -g jupyterhub -m 600 "$work/restored.sqlite" "$db"
[ "$(sql "$db" 'PRAGMA user_version')" = "$old_schema" ] || fail "the restored database is not schema $old_schema"
: >/var/lib/jupyterhub/upgrade-db-pending
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "$public/hub/api/")
[ "$code" = 200 ] || { inside journalctl -u jupyterhub-upgrade-db -u jupyterhub --no-pager | tail -20; fail "the socket-activated start answered $code"; }
[ "$(sql "$db" 'PRAGMA user_version')" = "$newest" ] || fail "the socket-activated start did not migrate"
[ -e /var/lib/jupyterhub/upgrade-db-pending ] && fail "the migration is still marked pending"
backups=(/var/lib/jupyterhub/jupyterhub.sqlite.*.bak)
[ "${#backups[@]}" = 1 ] && [ -f "${backups[0]}" ] || fail "expected a new backup, found: ${backups[*]}"
[ "$(sql "${backups[0]}" 'PRAGMA user_version')" = "$old_schema" ] || fail "the new backup is not the old schema"
[ "$(inside systemctl show "$unit" -p InvocationID --value)" = "$invocation" ] || fail "the user's unit was restarted"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$public/user/$user/api")
[ "$code" = 200 ] || fail "/user/$user/api answered $code after the socket-activated start"
echo "migrated before the hub opened the database; the server is still routed"

step "a migration that fails: the database stays as it was, the hub is not started"
inside systemctl stop jupyterhub.service
rm -f "$db-wal" "$db-shm"
mv "${backups[0]}" "$work/restored.sqlite"
install -o jupyterhub -g jupyterhub -m 600 "$work/restored.sqlite" "$db"
# A table the next migration creates: the migration fails, and its transaction is undone.
python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute("CREATE TABLE shares (id INTEGER)"); c.commit()' "$db"
: >/var/lib/jupyterhub/upgrade-db-pending
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$public/hub/api/" || true)
[ "$code" != 200 ] || fail "the hub answered on an unmigrated database"
inside journalctl -u jupyterhub-upgrade-db -o cat --no-pager >"$work/upgrade-db.log"
grep -q "table shares already exists" "$work/upgrade-db.log" \
  || { tail -5 "$work/upgrade-db.log"; fail "jupyterhub-upgrade-db.service's journal does not say why"; }
[ "$(inside systemctl is-active jupyterhub.service || true)" != active ] || fail "the hub runs on an unmigrated database"
[ "$(sql "$db" 'PRAGMA user_version')" = "$old_schema" ] || fail "the failed migration changed the schema version"
[ "$(sql "$db" "SELECT count(*) FROM sqlite_master WHERE name IN ('share_codes', 'first_use_passwords')")" = 0 ] \
  || fail "the failed migration left tables behind"
[ -e /var/lib/jupyterhub/upgrade-db-pending ] || fail "the failed migration is no longer marked pending"
ls /var/lib/jupyterhub/jupyterhub.sqlite.*.bak >/dev/null 2>&1 || fail "no backup before the failed migration"
[ "$(inside systemctl show "$unit" -p InvocationID --value)" = "$invocation" ] || fail "the user's unit was restarted"
echo "\"$(grep -m1 'already exists' "$work/upgrade-db.log")\"; schema $old_schema kept, the hub stopped, $unit running"

step "the cause removed, as the README says: the hub migrates and starts"
python3 -c 'import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute("DROP TABLE shares"); c.commit()' "$db"
inside systemctl reset-failed
inside systemctl restart jupyterhub.socket jupyterhub.service
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$public/hub/api/")
[ "$code" = 200 ] || fail "after the fix the hub answered $code"
[ "$(sql "$db" 'PRAGMA user_version')" = "$newest" ] || fail "after the fix the schema is not $newest"
[ -e /var/lib/jupyterhub/upgrade-db-pending ] && fail "the migration is still marked pending"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "$public/user/$user/api")
[ "$code" = 200 ] || fail "/user/$user/api answered $code after the fix"
echo "migrated; the server is still routed"

step "a new spawn goes through the new helper"
[ "$(inside systemctl show jupyterhub-helper -p MainPID --value)" != "$helper_pid" ] || fail "the old helper still runs"
code=$(api -o "$work/stop.json" -w '%{http_code}' -X DELETE "$public/hub/api/users/$user/server")
case "$code" in 202|204) ;; *) cat "$work/stop.json"; fail "DELETE server answered $code" ;; esac
for _ in $(seq 60); do
  [ "$(ready)" = False ] && [ "$(inside systemctl is-active "$unit" || true)" != active ] && break
  sleep 0.5
done
[ "$(inside systemctl is-active "$unit" || true)" != active ] || fail "$unit still runs"
code=$(api -o "$work/spawn.json" -w '%{http_code}' -X POST "$public/hub/api/users/$user/server")
case "$code" in 201|202) ;; *) cat "$work/spawn.json"; fail "POST server answered $code" ;; esac
for _ in $(seq 120); do
  [ "$(ready)" = True ] && break
  sleep 0.5
done
[ "$(ready)" = True ] || { inside journalctl -u jupyterhub -u jupyterhub-helper --no-pager | tail -30; fail "the spawn after the upgrade never became ready"; }
helper_pid=$(inside systemctl show jupyterhub-helper -p MainPID --value)
[ "$(inside readlink "/proc/$helper_pid/exe")" = /usr/bin/jupyterhub ] || fail "the helper does not run the installed binary"
code=$(curl -s -o /dev/null -w '%{http_code}' "$public/user/$user/api")
[ "$code" = 200 ] || fail "/user/$user/api answered $code after the new spawn"
echo "helper pid $helper_pid (/usr/bin/jupyterhub) started the server again; routed"

step "apt purge"
inside systemctl stop 'jupyter-*' jupyterhub.service jupyterhub.socket jupyterhub-api.socket
DEBIAN_FRONTEND=noninteractive inside apt-get purge -y -qq jupyterhub-rs >"$work/purge.log" 2>&1 \
  || { cat "$work/purge.log"; fail "apt purge"; }
for path in /usr/bin/jupyterhub /etc/jupyterhub /var/lib/jupyterhub /var/lib/jupyterhub-services /var/lib/private/jupyterhub-services; do
  [ -e "$path" ] && fail "$path is left after purge"
done
[ "$(inside systemctl is-active "$culler" || true)" = active ] && fail "the culler outlived the package"
printf '   (%s)\n' "$(elapsed "$phase_start")"
echo "PASS: package upgrade ($(elapsed "$test_start") in all)"
