#!/usr/bin/env bash
# Load test of the release binary over HTTPS keep-alive with oha, against a
# loopback Dex-like issuer. A benchmark, never part of CI. See BENCHMARKS.md.
#
#   scripts/load.sh                  # all scenarios
#   SCENARIOS="hits refused" scripts/load.sh
#
# Knobs (environment): DURATION (10s), CONNS (32), OHA (path to oha),
# SCENARIOS (hits hits-many rs256 es256 refused refused-cached mixed fill),
# ROUNDS (1),
# FILL_REQUESTS (400000),
# WORKERS (server.workers; default: number of CPUs), SETUP_ARGS (extra
# arguments to `loadtest setup`), RUN_DIR (where everything is written).
#
# Side by side with the kube-apiserver's own stack (../shared/bench/compare.py:
# this webhook and ../shared/tools/k8s-oidc-webhook, same issuer, tokens and
# oha settings, alternating rounds), or with the floor in the peer's place:
#
#   scripts/load.sh compare                        # hit, rs256, es256 over HTTP/1.1
#   scripts/load.sh compare --http2 --h2-parallel 8 --scenarios hit
#   scripts/load.sh compare --peer ../shared/bench/floor/as-peer.sh --scenarios hit
#   FLOOR_ALPN=h2 scripts/load.sh compare --peer ../shared/bench/floor/as-peer.sh \
#       --scenarios hit --http2 --h2-parallel 8
#
# Arguments after `compare` go to compare.py; COMPARE_ROUNDS (3) and
# COMPARE_SECS (8) set its --rounds and --secs.
#
# Needs: cargo, curl, python3 (compare: with the cryptography module); oha is
# installed into target/tools if missing (cargo install --locked oha: ~9
# minutes on two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
FILL_REQUESTS=${FILL_REQUESTS:-400000}
SCENARIOS=${SCENARIOS:-hits hits-many rs256 es256 refused refused-cached mixed fill}
ROUNDS=${ROUNDS:-1}
RUN=${RUN_DIR:-$TARGET/load/$(date +%Y%m%d-%H%M%S)}
# Absolute: compare.py writes configs that name files under it.
RUN=$(realpath -m "$RUN")

for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "load.sh: $tool is needed" >&2; exit 1; }
done

if [[ -z "${OHA:-}" ]]; then
  if command -v oha >/dev/null; then
    OHA=$(command -v oha)
  elif [[ -x "$TARGET/tools/bin/oha" ]]; then
    OHA=$TARGET/tools/bin/oha
  else
    echo "== installing oha into $TARGET/tools (cargo install --locked oha, several minutes)"
    cargo install --locked oha --root "$TARGET/tools"
    OHA=$TARGET/tools/bin/oha
  fi
fi

if [[ "${1:-}" == compare ]]; then
  shift
  COMPARE=$ROOT/../shared/bench/compare.py
  [[ -f "$COMPARE" ]] || { echo "load.sh: $COMPARE is missing (../shared beside the checkout)" >&2; exit 1; }
  echo "== building (release)"
  cargo build --release --locked --bin kube-authn-webhook
  mkdir -p "$RUN"
  {
    echo "date: $(date -u +%FT%TZ)"
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs"
    echo "command: scripts/load.sh compare $*"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  } | tee "$RUN/machine.txt"
  python3 "$COMPARE" "$ROOT" --oha "$OHA" --out "$RUN" --rounds "${COMPARE_ROUNDS:-3}" \
    --secs "${COMPARE_SECS:-8}" "$@" | tee "$RUN/compare.txt"
  echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RUN/machine.txt"
  echo "== everything is in $RUN"
  exit 0
fi

echo "== building (release)"
cargo build --release --locked --bin kube-authn-webhook --example loadtest
BIN=$TARGET/release/kube-authn-webhook
LT=$TARGET/release/examples/loadtest

mkdir -p "$RUN"
echo "== machine"
{
  echo "date: $(date -u +%FT%TZ)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) CPUs"
  echo "kernel: $(uname -r)"
  echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "oha: $("$OHA" --version)"
  echo "duration: $DURATION, connections: $CONNS, rounds: $ROUNDS"
} | tee "$RUN/machine.txt"

echo "== fixtures in $RUN (minting tokens)"
WORKERS_ARG=()
[[ -n "${WORKERS:-}" ]] && WORKERS_ARG=(--workers "$WORKERS")
# shellcheck disable=SC2086
coproc SETUP { exec "$LT" setup --dir "$RUN" "${WORKERS_ARG[@]}" ${SETUP_ARGS:-} 2>"$RUN/setup.err"; }

read -r -t 900 ready <&"${SETUP[0]}" || true
if [[ "${ready:-}" != ready ]]; then
  echo "load.sh: fixture setup failed:" >&2
  cat "$RUN/setup.err" >&2
  exit 1
fi
# shellcheck source=/dev/null
source "$RUN/loadtest.env"
SETUP_IN=${SETUP[1]}
SETUP_OUT=${SETUP[0]}

SERVER_PID=
cleanup() {
  [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null || true
  exec {SETUP_IN}>&- 2>/dev/null || true
  wait "$SETUP_PID" 2>/dev/null || true
}
trap cleanup EXIT

issuer_fetches() {
  echo fetches >&"$SETUP_IN"
  local n
  read -r -t 10 n <&"$SETUP_OUT"
  echo "$n"
}

echo "== signature verification rate (jsonwebtoken + aws-lc-rs, same machine, now)"
"$LT" sigrate --secs 2 | tee "$RUN/sigrate.txt"

metrics() { curl -sf "http://127.0.0.1:$TPORT/metrics"; }
# CPU time of the load generator (user+system seconds), when GNU time is there.
run_client() {
  local out=$1
  shift
  if [[ -x /usr/bin/time ]]; then /usr/bin/time -f %U+%S -o "$out" "$@"; else "$@"; fi
}
echo "$(getconf CLK_TCK)" >"$RUN/clk_tck"
status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# start_server CONFIG NAME: starts the binary, waits for /readyz, records the
# time from exec to ready and the idle RSS.
start_server() {
  local config=$1 name=$2 t0 t1
  t0=$(date +%s%N)
  "$BIN" serve --config "$RUN/$config" >"$RUN/$name.server.log" 2>&1 &
  SERVER_PID=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$TPORT/readyz"; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "load.sh: the server exited; see $RUN/$name.server.log" >&2
      exit 1
    fi
    if (( $(date +%s%N) - t0 > 10000000000 )); then
      echo "load.sh: not ready within 10 s" >&2
      exit 1
    fi
    sleep 0.002
  done
  t1=$(date +%s%N)
  echo $(( (t1 - t0) / 1000 )) >"$RUN/$name.startup_us"
  sleep 0.5
  status_kib "$SERVER_PID" VmRSS >"$RUN/$name.idle_rss_kib"
}

stop_server() {
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=
}

# scenario NAME CONFIG DRIVER ARGS...: one server, one load run (DRIVER is
# oha, or drive = `loadtest drive`), one summary.
scenario() {
  local name=$1 config=$2 driver=$3 sampler
  shift 3
  echo "== scenario $name"
  start_server "$config" "$name"
  if [[ $name == hits-many.* ]]; then
    # Warm-up, not measured: cache every token of many.lines (random draws,
    # ~7 per token, so nearly all are seen).
    "$OHA" --no-tui -n 200000 -c "$CONNS" -m POST -T application/json --cacert "$RUN/ca.crt" \
      -Z "$RUN/many.lines" "https://127.0.0.1:$PORT/authenticate" >/dev/null
  fi
  metrics >"$RUN/$name.metrics.before"
  issuer_fetches >"$RUN/$name.fetches.before"
  # The cache's entry count, sampled while the load runs.
  ( while sleep 0.5; do metrics | awk '$1 == "authn_webhook_cache_entries" {print $2}'; done ) \
    >"$RUN/$name.cache_entries" 2>/dev/null &
  sampler=$!
  awk '{print $14 + $15}' "/proc/$SERVER_PID/stat" >"$RUN/$name.server_ticks.before"
  case $driver in
    oha) run_client "$RUN/$name.client_cpu" "$OHA" --no-tui --output-format json -c "$CONNS" -m POST -T application/json \
      --cacert "$RUN/ca.crt" "$@" "https://127.0.0.1:$PORT/authenticate" >"$RUN/$name.oha.json" ;;
    drive) run_client "$RUN/$name.client_cpu" "$LT" drive --url "https://127.0.0.1:$PORT/authenticate" --cacert "$RUN/ca.crt" \
      --conns "$CONNS" "$@" >"$RUN/$name.drive.json" ;;
  esac
  awk '{print $14 + $15}' "/proc/$SERVER_PID/stat" >"$RUN/$name.server_ticks.after"
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  metrics >"$RUN/$name.metrics.after"
  issuer_fetches >"$RUN/$name.fetches.after"
  status_kib "$SERVER_PID" VmHWM >"$RUN/$name.peak_rss_kib"
  status_kib "$SERVER_PID" VmRSS >"$RUN/$name.end_rss_kib"
  stop_server
  python3 "$ROOT/scripts/load_summary.py" one "$RUN" "$name"
}

# Every review of rs256, es256 and refused is decided from scratch: oha picks
# its -Z lines at random with replacement, so with the cache on, repeats would
# be hits; those servers run with `cache.max_entries: 0`. The mixed run needs
# hits and never-seen misses in a fixed ratio: `loadtest drive` sends every
# tenth request with the next unused token.
# ROUNDS > 1 runs the scenario list round-robin that many times (a fresh
# server each time); the table then shows each scenario's medians.
for round in $(seq 1 "$ROUNDS"); do
  for s in $SCENARIOS; do
    n=$s.$round
    case $s in
      hits) scenario "$n" config-cache.yaml oha -z "$DURATION" -w -D "$RUN/hit.json" ;;
      hits-many) scenario "$n" config-cache.yaml oha -z "$DURATION" -w -Z "$RUN/many.lines" ;;
      rs256) scenario "$n" config-nocache.yaml oha -z "$DURATION" -w -Z "$RUN/rs256.lines" ;;
      es256) scenario "$n" config-nocache.yaml oha -z "$DURATION" -w -Z "$RUN/es256.lines" ;;
      refused) scenario "$n" config-nocache.yaml oha -z "$DURATION" -w -Z "$RUN/refused.lines" ;;
      refused-cached) scenario "$n" config-cache.yaml oha -z "$DURATION" -w -Z "$RUN/refused.lines" ;;
      mixed) scenario "$n" config-mtls.yaml drive --duration "$DURATION" --hot "$RUN/hit.json" \
        --lines "$RUN/mixed-misses.lines" --every 10 --cert "$RUN/client.crt" --key "$RUN/client.key" ;;
      fill) scenario "$n" config-cache.yaml oha -n "$FILL_REQUESTS" -Z "$RUN/fill.lines" ;;
      *) echo "load.sh: unknown scenario $s" >&2; exit 1 ;;
    esac
  done
done

echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$RUN/machine.txt"
python3 "$ROOT/scripts/load_summary.py" table "$RUN" $SCENARIOS | tee "$RUN/summary.md"
