#!/usr/bin/env bash
# Builds the release binary and, from it, a reproducible OCI image archive,
# offline: `buildah from scratch` with a staged root filesystem (the binary,
# the shared libraries `ldd` names and the dynamic loader, the CA bundle,
# /etc/passwd and /etc/group with the nonroot user 65532, /tmp 1777). No base
# image is pulled, so no registry is needed. Same source, same toolchain,
# same host libraries: same digest (timestamps are 0, no history).
#
#   bash deploy/image/build.sh            # -> target/image/kube-authn-webhook.oci.tar
#
# Environment (all optional):
#   IMAGE         the image name in the archive (default localhost/kube-authn-webhook:VERSION)
#   OUT           the archive to write (default target/image/kube-authn-webhook.oci.tar)
#   BINARY        use this binary instead of building target/release/kube-authn-webhook
#   IMAGE_SOURCE  the org.opencontainers.image.source label (default: the git remote
#                 `origin`, or "local" when there is none)
#
# Prints the archive path and the manifest digest. Needs buildah and skopeo
# (apt-get install -y buildah skopeo) and root (the staged files are chowned).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"
log() { printf 'image-build: %s\n' "$*" >&2; }
[[ $(id -u) -eq 0 ]] || { log "run as root (or under \`buildah unshare\`): the staged files are chowned"; exit 1; }
for tool in buildah skopeo ldd; do
    command -v "$tool" >/dev/null || { log "$tool not found (apt-get install -y buildah skopeo)"; exit 1; }
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
[[ -n $version ]] || { log "no [workspace.package] version in Cargo.toml"; exit 1; }
revision=${IMAGE_REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}
if [[ -z ${IMAGE_REVISION:-} && $revision != unknown ]] && ! git diff --quiet HEAD -- 2>/dev/null; then
    revision="$revision-dirty"
fi
source_url=${IMAGE_SOURCE:-$(git config --get remote.origin.url 2>/dev/null || echo local)}
image=${IMAGE:-localhost/kube-authn-webhook:$version}
out=${OUT:-$repo/target/image/kube-authn-webhook.oci.tar}

if [[ -z ${BINARY:-} ]]; then
    log "cargo build --release --locked --bin kube-authn-webhook"
    cargo build --release --locked --bin kube-authn-webhook
    BINARY=$repo/target/release/kube-authn-webhook
fi
[[ -x $BINARY ]] || { log "$BINARY is not an executable"; exit 1; }

work=$(mktemp -d)
ctr=""
cleanup() {
    [[ -n $ctr ]] && buildah rm "$ctr" >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
root=$work/rootfs

# --- the root filesystem ---------------------------------------------------
install -D -m 0755 "$BINARY" "$root/usr/local/bin/kube-authn-webhook"
# Every library at the path ldd prints (what the loader will look for),
# with the symlinks resolved: the loader is the `/lib64/...` line.
libs=$(ldd "$BINARY" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
[[ -n $libs ]] || { log "ldd lists no libraries for $BINARY (a static binary needs none: remove this check)"; exit 1; }
for lib in $libs; do
    install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
done
ca=/etc/ssl/certs/ca-certificates.crt
[[ -f $ca ]] || { log "$ca missing (apt-get install -y ca-certificates)"; exit 1; }
install -D -m 0644 "$ca" "$root$ca"
install -D -m 0644 LICENSE "$root/usr/share/doc/kube-authn-webhook/LICENSE"
install -d -m 0755 "$root/etc"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
chmod 0644 "$root/etc/passwd" "$root/etc/group"
install -d -m 0700 "$root/home/nonroot"
install -d -m 1777 "$root/tmp"
# Where the config is mounted (the Deployment and the checks use this path).
install -d -m 0755 "$root/etc/kube-authn-webhook"
# Reproducible: fixed owners and times on everything staged. Root owns it
# all but the nonroot user's home, so the process cannot change its own files.
chown -R 0:0 "$root"
chown 65532:65532 "$root/home/nonroot"
find "$root" -exec touch -h -d @0 {} +

# --- the image -------------------------------------------------------------
ctr=$(buildah from scratch)
buildah copy "$ctr" "$root/" / >/dev/null
buildah config \
    --entrypoint '["/usr/local/bin/kube-authn-webhook"]' \
    --cmd 'serve --config /etc/kube-authn-webhook/config.yaml' \
    --user 65532:65532 \
    --workingdir / \
    --port 8443 --port 9090 \
    --env SSL_CERT_FILE=$ca \
    --label org.opencontainers.image.title=kube-authn-webhook \
    --label org.opencontainers.image.description="Kubernetes TokenReview webhook for Dex id_tokens and Extreme EFA/XCO tokens" \
    --label org.opencontainers.image.version="$version" \
    --label org.opencontainers.image.revision="$revision" \
    --label org.opencontainers.image.source="$source_url" \
    --label org.opencontainers.image.licenses=Apache-2.0 \
    "$ctr"
img_id=$(buildah commit --quiet --format oci --timestamp 0 --omit-history --rm "$ctr" "$image")
ctr=""
mkdir -p "$(dirname "$out")"
rm -f "$out"
buildah push --quiet "$img_id" "oci-archive:$out:$image" >/dev/null
buildah rmi "$img_id" >/dev/null 2>&1 || true
digest=$(skopeo inspect --raw "oci-archive:$out" | sha256sum | awk '{print "sha256:" $1}')
log "wrote $out ($image, version $version, revision $revision)"
echo "$out"
echo "$digest"
