#!/usr/bin/env bash
# The RPM: build and sign it, list it, and let rpmlint judge it (no errors allowed).
# The signing key is made for this run, in a throwaway GNUPGHOME and rpm database.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v rpmlint >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm rpmlint >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export GNUPGHOME=$tmp/gnupg
mkdir -m 700 "$GNUPGHOME"
key="jupyterhub-rs package test <package-test@example.invalid>"
gpg --batch --quiet --passphrase '' --quick-gen-key "$key" rsa3072 sign never 2>/dev/null
gpg --armor --export "$key" >"$tmp/key.asc"
# rpmlint checks the signature against rpm's database: a private one, not the machine's.
printf '%%_dbpath %s/rpmdb\n' "$tmp" >"$tmp/.rpmmacros"
HOME=$tmp rpm --initdb
HOME=$tmp rpm --import "$tmp/key.asc"

rpm=$(RPM_SIGN_KEY=$key bash packaging/build-rpm.sh --dev | tail -1)
# From here on, rpm reads the private database (which knows the signing key).
export HOME=$tmp
echo "== rpm -qip / -qlp $rpm"
rpm -qip "$rpm" | sed -n 's/^\(Name\|Version\|Release\|Architecture\|License\|Summary\|Signature\) *:/  \1:/p'
rpm -qlp "$rpm" | tee "$tmp/files"
rpm -qp --requires --provides --conflicts "$rpm" | grep -v '^rpmlib\|^lib\|^rtld' | sed 's/^/  /'
for path in /usr/bin/jupyterhub /etc/jupyterhub/jupyterhub.toml /usr/lib/systemd/system/jupyterhub.socket \
            /usr/lib/systemd/system/jupyterhub-helper.service /usr/share/polkit-1/rules.d/50-jupyterhub.rules \
            /usr/lib/sysusers.d/jupyterhub-rs.conf; do
  grep -qx "$path" "$tmp/files" || { echo "FAIL: $path is not in the rpm"; exit 1; }
done
rpm -qp --scripts "$rpm" >"$tmp/scripts"
grep -q '^u jupyterhub' "$tmp/scripts" || { echo "FAIL: %pre does not create the jupyterhub user"; exit 1; }
echo "== rpmlint"
rpmlint "$rpm" | tee target/rpm/rpmlint.txt || true
errors=$(sed -n 's/.* \([0-9][0-9]*\) errors*,.*/\1/p' target/rpm/rpmlint.txt | tail -1)
[ "${errors:-missing}" = 0 ] || { echo "FAIL: rpmlint reports ${errors:-no summary} errors"; exit 1; }
echo "PASS: rpm"
