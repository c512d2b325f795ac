#!/usr/bin/env bash
# Build the Debian package: target/debian/jupyterhub-rs_VERSION-1_amd64.deb
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install --locked cargo-deb --version 3.8.0
cargo build --release --locked
cargo deb --no-build
ls target/debian/*.deb
