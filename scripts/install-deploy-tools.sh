#!/usr/bin/env bash
# Installs what scripts/check-deploy.sh needs, from the package registries:
#   - Debian: prometheus (the server and promtool), curl, jq, openssl,
#     bsdutils (`script`, for the login plugin's terminal test)
#   - PyPI, into a private venv: yamllint, kubernetes-validate, check-jsonschema
# Idempotent and quick when everything is already there. Run as root (apt).
#
#   bash scripts/install-deploy-tools.sh
#
# The venv lives in $DEPLOY_TOOLS_VENV (default ~/.cache/kube-authn-webhook/deploy-tools);
# check-deploy.sh looks in the same place.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${DEPLOY_TOOLS_VENV:-$HOME/.cache/kube-authn-webhook/deploy-tools}"
requirements="$here/deploy-tools-requirements.txt"

log() { printf 'install-deploy-tools: %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------
apt_missing=()
command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || apt_missing+=(prometheus)
for pkg in curl jq openssl; do
    command -v "$pkg" >/dev/null 2>&1 || apt_missing+=("$pkg")
done
# `script` gives the login plugin's terminal test its pseudo-terminal.
command -v script >/dev/null 2>&1 || apt_missing+=(bsdutils)
if ((${#apt_missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "need root to apt-get install ${apt_missing[*]}"
        exit 1
    fi
    log "apt-get install ${apt_missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends: the package recommends the node exporter and
    # more, none of which the checks need. The package also starts a system
    # service where systemd runs; the checks never use it (they start their
    # own Prometheus on 127.0.0.1), and in containers there is no systemd.
    apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi

# --- Python tools in a venv -------------------------------------------------
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    log "python tools up to date in $venv"
else
    python="${PYTHON:-python3}"
    if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
        log "$python cannot make a venv; installing python3-venv"
        apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        python=/usr/bin/python3
    fi
    log "creating $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements"
    echo "$want" >"$stamp"
fi

for tool in yamllint kubernetes-validate check-jsonschema hadolint; do
    [[ -x "$venv/bin/$tool" ]] || { log "missing $venv/bin/$tool after install"; exit 1; }
done
if ! command -v kubectl >/dev/null 2>&1 || ! kubectl kustomize --help >/dev/null 2>&1; then
    log "kubectl with its built-in kustomize is needed and cannot come from Debian's archive; install it from your Kubernetes packages"
    exit 1
fi
log "ok: $(promtool --version 2>&1 | head -1); kubectl $(kubectl version --client -o json | jq -r .clientVersion.gitVersion); hadolint $("$venv/bin/hadolint" --version | awk '{print $NF}'); yamllint $("$venv/bin/yamllint" --version | cut -d' ' -f2); kubernetes-validate $("$venv/bin/pip" show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p'); check-jsonschema $("$venv/bin/check-jsonschema" --version | awk '{print $NF}')"
