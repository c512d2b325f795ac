#!/usr/bin/env bash
# Build the RPM: target/rpm/RPMS/x86_64/jupyterhub-rs-VERSION-1.x86_64.rpm
#   bash packaging/build-rpm.sh          release build
#   bash packaging/build-rpm.sh --dev    from the debug build (the package test's choice)
# With RPM_SIGN_KEY set (a gpg key name or id), the package is signed with that key.
# Needs rpmbuild (Debian: apt-get install rpm; Fedora: rpm-build).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --dev ]; then
  cargo build --locked --bin jupyterhub
  bin=target/debug
else
  cargo build --release --locked --bin jupyterhub
  bin=target/release
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
rpmbuild -bb --quiet \
  --define "_topdir $PWD/target/rpm" \
  --define "_sourcedir $PWD" \
  --define "version $version" \
  --define "bindir_src $PWD/$bin" \
  packaging/jupyterhub-rs.spec
rpm=target/rpm/RPMS/x86_64/jupyterhub-rs-"$version"-1.x86_64.rpm
if [ -n "${RPM_SIGN_KEY:-}" ]; then
  rpmsign --addsign --define "__gpg $(command -v gpg)" --define "_gpg_name $RPM_SIGN_KEY" "$rpm" >/dev/null
fi
echo "$rpm"
