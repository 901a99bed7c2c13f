#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time; fails on any crash.
# Usage: scripts/fuzz.sh [seconds per target, default 60]
#
# cargo fuzz passes nightly-only flags (-Zsanitizer=address and friends);
# RUSTC_BOOTSTRAP=1 lets this machine's stable toolchain accept them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
targets=(tokenreview_body jwt_routing config_loader cel)
echo "== fuzz: building targets"
cargo fuzz build
for t in "${targets[@]}"; do
  corpus=$(mktemp -d)
  log=$(mktemp)
  echo "== fuzz $t for ${seconds}s"
  # The committed seeds are read-only input; new finds go to a temp corpus.
  if cargo fuzz run "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    status=0
  else
    status=$?
  fi
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|Done [0-9]+ runs)" "$log" || true
  rm -rf "$corpus"
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz target $t failed (exit $status); the crashing input is under fuzz/artifacts/$t/" >&2
    exit 1
  fi
  rm -f "$log"
done
echo "fuzzing: ${#targets[@]} targets ran ${seconds}s each without a crash"
