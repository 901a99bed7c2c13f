#!/usr/bin/env bash
# Installs what deploy/image/{build,check,dockerfile-check}.sh need, from
# Debian: buildah, podman, skopeo, runc (crun cannot run containers on hosts
# with hybrid cgroups), jq, curl, openssl, ca-certificates. Idempotent; root.
set -euo pipefail
missing=()
for tool in buildah podman skopeo runc jq curl openssl; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[[ -f /etc/ssl/certs/ca-certificates.crt ]] || missing+=(ca-certificates)
if ((${#missing[@]} == 0)); then
    echo "install-image-tools: all present"
    exit 0
fi
[[ $(id -u) -eq 0 ]] || { echo "install-image-tools: need root to apt-get install ${missing[*]}" >&2; exit 1; }
echo "install-image-tools: apt-get install ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
