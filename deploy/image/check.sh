#!/usr/bin/env bash
# Loads the image archive deploy/image/build.sh wrote and runs it with podman
# (runc, pinned ulimits, storage in a temp dir: the machine's own podman
# storage is not touched), then checks:
#   1. the image: labels (version, revision, source, licenses), user 65532,
#      entrypoint and command;
#   2. `--version` prints the workspace version;
#   3. `demo --once` with --read-only --cap-drop all;
#   4. `serve` with a mounted config and certificates from the image's own
#      `certs` command answers a TokenReview over mTLS (an HS256 EFA token
#      minted here), and exits 0 on SIGTERM;
#   5. a second build from the same binary gives the same manifest digest.
#
#   bash deploy/image/check.sh [ARCHIVE]   # default target/image/kube-authn-webhook.oci.tar
#
# Needs podman, runc, skopeo, buildah, jq, curl, openssl (apt-get install -y
# buildah podman skopeo runc jq curl openssl). Exit 0 when every check passed.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
archive=$(realpath "${1:-$repo/target/image/kube-authn-webhook.oci.tar}")
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml")
log() { printf 'image-check: %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
for tool in podman runc skopeo buildah jq curl openssl; do
    command -v "$tool" >/dev/null || fail "$tool not found (apt-get install -y buildah podman skopeo runc jq curl openssl)"
done
[[ -f $archive ]] || fail "$archive missing: run deploy/image/build.sh first"

work=$(mktemp -d)
serve_ctr=""
cleanup() {
    [[ -n $serve_ctr ]] && podman rm -f "$serve_ctr" >/dev/null 2>&1
    podman rmi -a -f >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

# --- private podman: this VM's facts (crun cannot run in hybrid cgroups;
# the default ulimits cannot be set) and storage that goes away with $work.
mkdir -p "$work/storage/graph" "$work/storage/run"
cat >"$work/containers.conf" <<CONF
[engine]
runtime = "runc"
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
CONF
cat >"$work/storage.conf" <<CONF
[storage]
driver = "vfs"
graphroot = "$work/storage/graph"
runroot = "$work/storage/run"
CONF
export CONTAINERS_CONF="$work/containers.conf" CONTAINERS_STORAGE_CONF="$work/storage.conf"

image=$(podman load -q -i "$archive" | sed -n 's/^Loaded image[^:]*: *//p' | tail -1)
[[ -n $image ]] || fail "podman load found no image in $archive"
log "loaded $image"

# --- 1. what the image says about itself -----------------------------------
cfg=$(skopeo inspect --config "oci-archive:$archive")
label() { jq -r --arg k "$1" '.config.Labels[$k] // ""' <<<"$cfg"; }
[[ $(label org.opencontainers.image.version) == "$version" ]] || fail "label version is '$(label org.opencontainers.image.version)', expected $version"
[[ $(label org.opencontainers.image.revision) =~ ^[0-9a-f]{40}(-dirty)?$ ]] || fail "label revision '$(label org.opencontainers.image.revision)' is not a git commit"
[[ -n $(label org.opencontainers.image.source) ]] || fail "label source is empty"
[[ $(label org.opencontainers.image.licenses) == Apache-2.0 ]] || fail "label licenses is '$(label org.opencontainers.image.licenses)'"
[[ $(jq -r '.config.User' <<<"$cfg") == 65532:65532 ]] || fail "user is '$(jq -r '.config.User' <<<"$cfg")', expected 65532:65532"
[[ $(jq -c '.config.Entrypoint' <<<"$cfg") == '["/usr/local/bin/kube-authn-webhook"]' ]] || fail "entrypoint is $(jq -c '.config.Entrypoint' <<<"$cfg")"
[[ $(jq -c '.config.Cmd' <<<"$cfg") == '["serve","--config","/etc/kube-authn-webhook/config.yaml"]' ]] || fail "cmd is $(jq -c '.config.Cmd' <<<"$cfg")"
[[ $(jq -r '.history // [] | length' <<<"$cfg") == 0 ]] || fail "the image has history (build with --omit-history)"
[[ $(jq -r '.created' <<<"$cfg") == 1970-01-01T00:00:00Z ]] || fail "created is $(jq -r '.created' <<<"$cfg"), expected the epoch (--timestamp 0)"
log "ok: labels, user 65532:65532, entrypoint, cmd, no history, created at the epoch"

run() { podman run --rm --read-only --cap-drop all --security-opt no-new-privileges "$@"; }

# --- 2. --version ----------------------------------------------------------
got=$(run --network none "$image" --version)
[[ $got == "kube-authn-webhook $version" ]] || fail "--version printed '$got'"
log "ok: --version: $got"

# --- 3. demo --once (loopback only: its issuer and webhook are 127.0.0.1) --
run --network none "$image" demo --once >"$work/demo.out" 2>&1 || { cat "$work/demo.out" >&2; fail "demo --once exited non-zero"; }
grep -q '"authenticated": *true' "$work/demo.out" || { cat "$work/demo.out" >&2; fail "demo --once did not show an authenticated review"; }
if grep -q $'\x1b\[' "$work/demo.out"; then fail "demo printed ANSI escapes to a pipe"; fi
log "ok: demo --once (read-only root, no capabilities)"

# --- 4. serve, over mTLS, then SIGTERM -------------------------------------
cfgdir=$work/config
mkdir -p "$cfgdir"
chown 65532:65532 "$cfgdir"
run --network none --user 65532:65532 -v "$cfgdir:/etc/kube-authn-webhook" "$image" \
    certs --out /etc/kube-authn-webhook --server-san 127.0.0.1 >/dev/null
head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$cfgdir/efa-secret"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$cfgdir/config.yaml" <<CONF
server:
  listen: 127.0.0.1:$port
  tls:
    cert_file: tls.crt
    key_file: tls.key
    client_ca_file: ca.crt
    allowed_client_names: [kube-apiserver-authn-client]
telemetry:
  listen: 127.0.0.1:$tport
  log_format: json
issuers:
  - name: efa
    kind: efa
    keys:
      hmac_secret_file: efa-secret
    allow_any_audience: true
    claims:
      username: {claims: [username], prefix: "efa:"}
      groups: {claims: [roles], prefix: "efa:"}
CONF
chown -R 65532:65532 "$cfgdir"
serve_ctr=$(podman run -d --read-only --cap-drop all --security-opt no-new-privileges \
    --network host -v "$cfgdir:/etc/kube-authn-webhook:ro" "$image")
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$tport/readyz" >/dev/null 2>&1 && break
    [[ $(podman inspect -f '{{.State.Running}}' "$serve_ctr") == true ]] || { podman logs "$serve_ctr" >&2; fail "serve exited at start"; }
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$tport/readyz" >/dev/null || { podman logs "$serve_ctr" >&2; fail "serve never became ready"; }

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
exp=$(($(date +%s) + 600))
header=$(printf '{"alg":"HS256","typ":"JWT"}' | b64url)
payload=$(printf '{"username":"alice","roles":["ops"],"exp":%d}' "$exp" | b64url)
sig=$(printf '%s.%s' "$header" "$payload" | openssl dgst -sha256 -mac HMAC -macopt "key:$(cat "$cfgdir/efa-secret")" -binary | b64url)
token="$header.$payload.$sig"
review() {
    printf '{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"%s"}}' "$1" |
        curl -sS --cacert "$cfgdir/ca.crt" --cert "$cfgdir/apiserver-client.crt" --key "$cfgdir/apiserver-client.key" \
            -H 'Content-Type: application/json' --data-binary @- "https://127.0.0.1:$port/authenticate"
}
answer=$(review "$token")
[[ $(jq -r '.status.authenticated' <<<"$answer") == true ]] || fail "the TokenReview was not authenticated: $answer"
[[ $(jq -r '.status.user.username' <<<"$answer") == efa:alice ]] || fail "username: $answer"
[[ $(jq -c '.status.user.groups' <<<"$answer") == '["efa:ops"]' ]] || fail "groups: $answer"
answer=$(review "$header.$payload.AAAA")
[[ $(jq -r '.status.authenticated' <<<"$answer") == false ]] || fail "a bad signature was authenticated: $answer"
# Without the client certificate: no TLS session at all.
if curl -sS --cacert "$cfgdir/ca.crt" -o /dev/null "https://127.0.0.1:$port/authenticate" 2>/dev/null; then
    fail "a caller without a client certificate got an answer"
fi
# The log is read whole first: `podman logs | grep -q` under pipefail fails
# (SIGPIPE) whenever grep stops reading before podman stops writing.
serve_log=$(podman logs "$serve_ctr" 2>&1)
if grep -qF "$token" <<<"$serve_log"; then fail "the token appears in the log"; fi
metrics=$(curl -fsS "http://127.0.0.1:$tport/metrics")
grep -q '^authn_webhook_tokenreviews_total{issuer="efa",outcome="authenticated",reason="ok"} 1$' <<<"$metrics" || fail "the review is not counted in /metrics"
grep -q '^process_resident_memory_bytes ' <<<"$metrics" || fail "no process_* metrics (the process collector reads /proc)"
log "ok: serve answered TokenReviews over mTLS (efa:alice authenticated, a forged signature refused, no cert: no answer), counted in /metrics"

podman kill --signal TERM "$serve_ctr" >/dev/null
rc=$(podman wait "$serve_ctr")
[[ $rc == 0 ]] || { podman logs "$serve_ctr" >&2; fail "serve exited $rc on SIGTERM, expected 0"; }
serve_log=$(podman logs "$serve_ctr" 2>&1)
grep -q 'signal received' <<<"$serve_log" || fail "no 'signal received' log line"
podman rm "$serve_ctr" >/dev/null
serve_ctr=""
log "ok: SIGTERM -> exit 0"

# --- 5. reproducible -------------------------------------------------------
first=$(skopeo inspect --raw "oci-archive:$archive" | sha256sum | awk '{print $1}')
binary=$work/bin/kube-authn-webhook
mkdir -p "$work/bin" "$work/unpacked"
podman create --name extract "$image" >/dev/null
podman cp extract:/usr/local/bin/kube-authn-webhook "$binary"
podman rm extract >/dev/null
revision=$(jq -r '.config.Labels["org.opencontainers.image.revision"]' <<<"$cfg")
second=$(cd "$repo" && BINARY="$binary" OUT="$work/second.oci.tar" IMAGE="$image" \
    IMAGE_SOURCE="$(label org.opencontainers.image.source)" IMAGE_REVISION="$revision" \
    bash deploy/image/build.sh 2>/dev/null | tail -1)
[[ "sha256:$first" == "$second" ]] || fail "a second build gave $second, the first sha256:$first: not reproducible"
log "ok: a second build gives the same manifest digest sha256:$first"
echo "image-check: all checks passed"
