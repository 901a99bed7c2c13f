#!/usr/bin/env bash
# Proves deploy/Dockerfile's build stage works on its real build context: the
# files `.dockerignore` lets through, as a container engine sends them (buildah
# builds a FROM-scratch image of the context, so its own .dockerignore rules
# decide, not a re-implementation), then the Dockerfile's exact `cargo build`
# command run in a copy of that context. No base image is pulled, so this runs
# offline: cargo uses the local registry cache (CARGO_NET_OFFLINE), as the
# Dockerfile's cache mount would, and CARGO_TARGET_DIR (default: this
# checkout's target/) stands in for its target cache.
#
#   bash deploy/image/dockerfile-check.sh
#
# Needs buildah (apt-get install -y buildah) and root.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
log() { printf 'dockerfile-check: %s\n' "$*" >&2; }
fail() { log "FAILED: $*"; exit 1; }
command -v buildah >/dev/null || fail "buildah not found (apt-get install -y buildah)"

# The build command, exactly as the Dockerfile's RUN has it (the part before
# `&&` or the line's end), so the check follows the Dockerfile when it changes.
cmd=$(grep -o 'cargo build[^&\\]*' deploy/Dockerfile | head -1 | sed 's/[[:space:]]*$//')
[[ -n $cmd ]] || fail "no 'cargo build' line in deploy/Dockerfile"
log "the Dockerfile builds with: $cmd"

work=$(mktemp -d)
ctr=""
img=""
cleanup() {
    [[ -n $ctr ]] && buildah rm "$ctr" >/dev/null 2>&1
    [[ -n $img ]] && buildah rmi "$img" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT

# The context as the engine sees it.
printf 'FROM scratch\nCOPY . /context/\n' >"$work/Containerfile"
img=$(buildah build --quiet --ignorefile .dockerignore -f "$work/Containerfile" "$repo" | tail -1)
ctr=$(buildah from "$img")
mnt=$(buildah mount "$ctr")
cp -a "$mnt/context" "$work/context"
buildah umount "$ctr" >/dev/null
log "the build context holds: $(cd "$work/context" && find . -maxdepth 2 -mindepth 1 | sort | tr '\n' ' ')"
[[ ! -e $work/context/target ]] || fail "target/ is in the build context"
[[ ! -e $work/context/.git ]] || fail ".git is in the build context"

cd "$work/context"
export CARGO_NET_OFFLINE=true
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
log "running it in the context ($CARGO_TARGET_DIR as the target cache)"
# shellcheck disable=SC2086 # the command is word-split as the shell in RUN would
$cmd
[[ -x $CARGO_TARGET_DIR/release/kube-authn-webhook ]] || fail "no release binary"
log "ok: the Dockerfile's build stage builds on its .dockerignore'd context"
