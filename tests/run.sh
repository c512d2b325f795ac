#!/usr/bin/env bash
# Install what the tests need (Debian 12, as root) and run every test.
# This is the README's test command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

cache=/var/cache/jupyterhub-rs-tests
export SINGLEUSER_VENV="$cache/venv-5.3"
export SINGLEUSER_VENV_6="$cache/venv-6"
export E2E_USER=jh-e2e

apt_packages=(dbus polkitd systemd python3-venv chromium nodejs npm curl iproute2 lintian rpm rpmlint slapd ldap-utils pebble openssl)
missing=()
for package in "${apt_packages[@]}"; do
  # Node and npm may come from elsewhere (the image ships them); only install if absent.
  case "$package" in nodejs) command -v node >/dev/null && continue ;; npm) command -v npm >/dev/null && continue ;; esac
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The single-user environments: Debian's python (a venv from /root's pyenv python is not
# executable by other users), the real jupyterhub-singleuser and JupyterLab from PyPI.
make_venv() {
  local dir=$1 requirement=$2
  if [ ! -x "$dir/bin/jupyterhub-singleuser" ] || [ ! -x "$dir/bin/jupyter-lab" ] || ! "$dir/bin/python" -c "import jupyterhub_idle_culler" 2>/dev/null; then
    echo "== creating $dir ($requirement)"
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    /usr/bin/python3 -m venv "$dir"
    "$dir/bin/pip" install -q "$requirement" jupyterlab jupyterhub-idle-culler
  fi
}
make_venv "$SINGLEUSER_VENV" "jupyterhub==5.3.0"
make_venv "$SINGLEUSER_VENV_6" "jupyterhub>=6.1,<7"

# A real system user for servers run by the local spawner as root.
id "$E2E_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$E2E_USER"

if [ ! -d tests/e2e/node_modules/playwright-core ] || [ ! -d tests/e2e/node_modules/oidc-provider ]; then
  echo "== npm install (tests/e2e)"
  (cd tests/e2e && npm install --no-audit --no-fund --silent)
fi

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --all-targets --locked
echo "== end to end: Chromium, JupyterLab (jupyterhub 5.3 and 6.x single-user servers)"
JUPYTERHUB_BIN=target/debug/jupyterhub SINGLEUSER_VENVS="$SINGLEUSER_VENV,$SINGLEUSER_VENV_6" \
  node --test --test-reporter=spec tests/e2e/
echo "== end to end with the systemd spawner in a contained systemd (jupyterhub 6.x single-user server)"
JUPYTERHUB_BIN=target/debug/jupyterhub bash tests/e2e/with-systemd.sh "$SINGLEUSER_VENV_6"
echo "== packages: the .deb end to end in a contained systemd (apt install, unprivileged hub, PAM, restart, purge)"
bash tests/package/deb.sh
echo "== packages: an upgrade from the previous release's .deb (config kept, database backed up and migrated, servers kept running)"
bash tests/package/upgrade.sh
echo "== packages: the .rpm (rpm -qlp, rpmlint)"
bash tests/package/rpm.sh
