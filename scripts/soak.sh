#!/usr/bin/env bash
# Soak test: the release binary under mixed load (valid, expired, garbage and
# unknown-kid tokens; v1 and v1beta1) while the issuer's key and the serving
# certificate rotate. Not part of CI. Usage: scripts/soak.sh [seconds, default 600]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
cargo build --release --locked --bin kube-authn-webhook --example soak
exec target/release/examples/soak --bin target/release/kube-authn-webhook --seconds "$seconds" "${@:2}"
