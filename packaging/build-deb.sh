#!/usr/bin/env bash
# Build the Debian package: target/debian/jupyterhub-rs_VERSION-1_amd64.deb
#   bash packaging/build-deb.sh          release build (what you ship)
#   bash packaging/build-deb.sh --dev    from the debug build (what the package test uses:
#                                        same contents, no slow release build)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb --version 3.8.0
if [ "${1:-}" = --dev ]; then
  cargo build --locked --bin jupyterhub
  cargo deb --no-build --profile dev
else
  cargo build --release --locked --bin jupyterhub
  cargo deb --no-build
fi
