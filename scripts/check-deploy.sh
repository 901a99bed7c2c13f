#!/usr/bin/env bash
# Checks deploy/, kubeconfig-templates/ and dashboards/ with the real tools,
# and runs the webhook under a real Prometheus. Exits non-zero on the first
# failure. Install the tools first (once; quick when already there):
#
#   bash scripts/install-deploy-tools.sh && bash scripts/check-deploy.sh
#
# What is checked, by what:
#   yamllint          every YAML file in the repository (.yamllint), and the
#                     YAML `kubeconfig` and `kube-authn-login --print-kubeconfig` print
#   hadolint          deploy/Dockerfile
#   kubectl kustomize every kustomization under deploy/ (found, not listed)
#                     renders; python: each lists every manifest in its directory
#   kubernetes-validate --strict   every built-in object rendered, against the
#                     oldest and newest Kubernetes versions we support
#   check-jsonschema  every custom resource (ServiceMonitor, PrometheusRule,
#                     Authentication, cert-manager Issuer/Certificate) against
#                     deploy/schemas/; the schemas themselves against their
#                     metaschema, and deliberately broken objects must fail
#   kube-authn-webhook check-config   the shipped webhook configs (ConfigMap
#                     and sidecar) with files made by `certs`
#   promtool          check rules + test rules on the alerts; the
#                     PrometheusRule is byte-identical to what the rules file
#                     generates; every dashboard query parses; check metrics
#                     on a live scrape
#   live run          the webhook's own `demo` (its dev issuer and the
#                     webhook on loopback), fed reviews with curl; dashboard
#                     and alert expressions name only metrics in the scrape; a
#                     real Prometheus (127.0.0.1, foreground, temp dir) scrapes
#                     the webhook, loads the alert rules, and every dashboard
#                     query returns data
#   python            the webhook kubeconfig templates equal `kubeconfig` output
#   kubectl           reads the exec-plugin kubeconfigs `kube-authn-login`
#                     prints (running the plugin end to end is an integration
#                     test that .ci/run runs with the ignored tests)
#
# What the webhook answers (mTLS, claim mapping, refusals, "could not check")
# is tested in Rust, crates/webhook/tests/it, not here.
#
#   bash scripts/check-deploy.sh sync-rules   regenerates the PrometheusRule
#
# Environment: KUBE_AUTHN_WEBHOOK_BIN and KUBE_AUTHN_LOGIN_BIN (use these
# binaries instead of building them), DEPLOY_TOOLS_VENV (as for install-deploy-tools.sh), K8S_VERSIONS.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${DEPLOY_TOOLS_VENV:-$HOME/.cache/kube-authn-webhook/deploy-tools}"
# Everything live is on loopback: never through a proxy.
export NO_PROXY="127.0.0.1,localhost${NO_PROXY:+,$NO_PROXY}" no_proxy="127.0.0.1,localhost${no_proxy:+,$no_proxy}"
export PATH="$venv/bin:$PATH"
py="$venv/bin/python"
helper="$root/scripts/deploy_check.py"
# kubernetes-validate has schemas for 1.25-1.37; the manifests need >= 1.30
# (the preStop sleep action).
k8s_versions="${K8S_VERSIONS:-1.30.0 1.37.0}"

passed=0
current=""
step() {
    current="$*"
    printf '\n== %s\n' "$current"
}
ok() {
    passed=$((passed + 1))
}
on_exit() {
    local rc=$?
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ $rc -ne 0 ]]; then
        echo "check-deploy: FAILED at: $current" >&2
        shopt -s nullglob
        [[ -n "${work:-}" && -d "$work/logs" ]] && for f in "$work"/logs/*; do
            echo "--- $f (last 20 lines)" >&2
            tail -n 20 "$f" >&2 || true
        done
        echo "check-deploy: $passed passed, 1 failed"
    fi
    [[ -n "${work:-}" ]] && rm -rf "$work"
    exit "$rc"
}
pids=()
work=""
trap on_exit EXIT

die() {
    echo "check-deploy: $*" >&2
    exit 1
}

if [[ "${1:-}" == "sync-rules" ]]; then
    "$py" "$helper" rules-sync --write
    exit 0
fi

step "tools"
[[ -x "$py" ]] || die "no venv at $venv: run bash scripts/install-deploy-tools.sh"
for tool in yamllint kubernetes-validate check-jsonschema hadolint promtool prometheus kubectl openssl curl jq; do
    command -v "$tool" >/dev/null || die "$tool not found: run bash scripts/install-deploy-tools.sh"
done
work="$(mktemp -d "${TMPDIR:-/tmp}/check-deploy.XXXXXX")"
mkdir -p "$work/logs"
if [[ -z "${KUBE_AUTHN_WEBHOOK_BIN:-}" || -z "${KUBE_AUTHN_LOGIN_BIN:-}" ]]; then
    cargo build --locked --quiet --bin kube-authn-webhook --bin kube-authn-login
fi
bin="${KUBE_AUTHN_WEBHOOK_BIN:-$root/target/debug/kube-authn-webhook}"
login_bin="${KUBE_AUTHN_LOGIN_BIN:-$root/target/debug/kube-authn-login}"
for b in "$bin" "$login_bin"; do
    [[ -x "$b" ]] || die "no binary at $b"
    echo "binary: $b ($("$b" --version))"
done
ok

# Runs a command whose output must hold no WARN/ERROR line (for tools that
# only warn about what they could not check).
no_warnings() {
    local out
    out="$("$@" 2>&1)" || { echo "$out"; return 1; }
    echo "$out"
    if grep -qE '^(WARN|ERROR)' <<<"$out"; then
        echo "a warning counts as a failure" >&2
        return 1
    fi
}

step "certificates and keys for the checks (kube-authn-webhook certs)"
"$bin" certs --out "$work/pki" --server-san 127.0.0.1,localhost --days 90 >/dev/null
# Stands in for the EFA "JWT certificate" the configs name.
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/O=Extreme Networks/CN=EFA JWT test" \
    -keyout "$work/efa-jwt.key" -out "$work/efa-jwt-certificate.pem" 2>/dev/null
# The webhook kubeconfig, and its OpenShift Secret form.
"$bin" kubeconfig --server https://127.0.0.1:8443/authenticate --ca "$work/pki/ca.crt" \
    --client-cert "$work/pki/apiserver-client.crt" --client-key "$work/pki/apiserver-client.key" \
    >"$work/webhook-kubeconfig.yaml"
"$bin" kubeconfig --server https://10.96.100.100/authenticate --ca "$work/pki/ca.crt" \
    --client-cert "$work/pki/apiserver-client.crt" --client-key "$work/pki/apiserver-client.key" \
    --format openshift-secret >"$work/webhook-kubeconfig-secret.yaml"
# A kubectl user's kubeconfigs running the login plugin.
"$login_bin" pcd --endpoint https://du.example.com --username jane@example.com --domain Default \
    --project service --ca-file "$work/pki/ca.crt" --print-kubeconfig \
    --cluster-server https://api.example.com:6443 --cluster-ca "$work/pki/ca.crt" >"$work/user-pcd-kubeconfig.yaml"
"$login_bin" efa --endpoint https://efa.example.com --username netadmin --client-id xco \
    --print-kubeconfig --cluster-server https://api.example.com:6443 >"$work/user-efa-kubeconfig.yaml"
ok

step "yamllint (every YAML file, and the kubeconfig command's output)"
yamllint --strict -c .yamllint .
yamllint --strict -c .yamllint "$work/webhook-kubeconfig.yaml" "$work/webhook-kubeconfig-secret.yaml" \
    "$work/user-pcd-kubeconfig.yaml" "$work/user-efa-kubeconfig.yaml"
echo "ok: $(git ls-files -co --exclude-standard '*.yaml' '*.yml' | wc -l) YAML files"
ok

step "hadolint deploy/Dockerfile"
hadolint deploy/Dockerfile
echo "ok"
ok

step "webhook configs accepted by kube-authn-webhook check-config"
# The Deployment's: config.yaml (the generated ConfigMap's), files where the pod projects them.
cm="$work/cfg-deployment"
mkdir -p "$cm/tls" "$cm/efa"
cp deploy/kubernetes/config.yaml "$cm/config.yaml"
cp "$work/pki/tls.crt" "$work/pki/tls.key" "$work/pki/ca.crt" "$cm/tls/"
cp "$work/efa-jwt-certificate.pem" "$cm/efa/jwt-certificate.pem"
"$bin" check-config --config "$cm/config.yaml"
# The sidecar's: everything in one directory, as on the node.
sc="$work/cfg-sidecar"
mkdir -p "$sc"
cp deploy/sidecar/config.yaml "$work/pki/tls.crt" "$work/pki/tls.key" "$work/pki/ca.crt" "$sc/"
cp "$work/efa-jwt-certificate.pem" "$sc/efa-jwt-certificate.pem"
"$bin" check-config --config "$sc/config.yaml"
ok

step "kustomize: every kustomization renders and covers its directory"
# The one list: every kustomization under deploy/. Each must list every
# manifest in its directory; each Kustomization renders (a Component renders
# only inside the kustomizations that use it). Special cases, by directory:
# a function that makes a copy ready to render and prints its path.
with_openshift_secret() { # deploy/openshift needs the generated Secret beside it
    cp -r "$1" "$work/openshift"
    cp "$work/webhook-kubeconfig-secret.yaml" "$work/openshift/"
    echo "$work/openshift"
}
declare -A ready_copy=([deploy/openshift]=with_openshift_secret)
# Extra renders, as a user changes a kustomization: render name -> function
# printing the directory of the changed copy.
with_fixed_cluster_ip() { # the fixed-cluster-ip component, off by default, on
    cp -r deploy/kubernetes "$work/kubernetes-fixed-ip"
    sed -i 's/^# components:/components:/; s/^#   - fixed-cluster-ip/  - fixed-cluster-ip/' \
        "$work/kubernetes-fixed-ip/kustomization.yaml"
    echo "$work/kubernetes-fixed-ip"
}
with_openshift_oauth() { # the openshift-oauth component, off by default, on
    cp -r deploy/kubernetes "$work/kubernetes-openshift-oauth"
    sed -i 's/^# components:/components:/; s/^#   - openshift-oauth/  - openshift-oauth/' \
        "$work/kubernetes-openshift-oauth/kustomization.yaml"
    echo "$work/kubernetes-openshift-oauth"
}
declare -A variants=([kubernetes-fixed-ip]=with_fixed_cluster_ip [kubernetes-openshift-oauth]=with_openshift_oauth)

mapfile -t kustomizations < <(find deploy -name kustomization.yaml -printf '%h\n' | sort)
((${#kustomizations[@]})) || die "no kustomization.yaml under deploy/"
for dir in "${!ready_copy[@]}"; do
    [[ -f "$dir/kustomization.yaml" ]] || die "ready_copy names $dir, which has no kustomization.yaml"
done
coverage=()
declare -A renders=() # render name -> directory
for dir in "${kustomizations[@]}"; do
    ready="$dir"
    [[ -n "${ready_copy[$dir]:-}" ]] && ready="$("${ready_copy[$dir]}" "$dir")"
    coverage+=("$ready")
    grep -qx 'kind: Component' "$dir/kustomization.yaml" && continue
    name="${dir#deploy/}"
    renders[${name//\//-}]="$ready"
done
for name in "${!variants[@]}"; do
    [[ -z "${renders[$name]:-}" ]] || die "variant $name has the name of ${renders[$name]}'s render"
    renders[$name]="$("${variants[$name]}")"
done
"$py" "$helper" kustomize-coverage "${coverage[@]}"
mkdir -p "$work/rendered"
for name in $(printf '%s\n' "${!renders[@]}" | sort); do
    kubectl kustomize "${renders[$name]}" >"$work/rendered/$name.yaml"
    echo "rendered ${renders[$name]}: $(grep -c '^kind:' "$work/rendered/$name.yaml") objects"
done
echo "ok: ${#kustomizations[@]} kustomizations, ${#renders[@]} renders"
grep -q 'clusterIP: 10.96.100.100' "$work/rendered/kubernetes-fixed-ip.yaml" ||
    die "the fixed-cluster-ip component did not set the ClusterIP"
grep -q 'automountServiceAccountToken: true' "$work/rendered/kubernetes-openshift-oauth.yaml" &&
    grep -q 'port: 6443' "$work/rendered/kubernetes-openshift-oauth.yaml" ||
    die "the openshift-oauth component did not mount the token and open the API server port"
"$py" "$helper" apiserver "$work/rendered/sidecar.yaml" sidecar
"$py" "$helper" apiserver "$work/rendered/kubernetes-apiserver.yaml" flags-only
ok

step "split objects: built-in kinds for kubernetes-validate, custom resources for check-jsonschema"
"$py" "$helper" split "$work/objects" "$work"/rendered/*.yaml
ok

for v in $k8s_versions; do
    step "kubernetes-validate --strict -k $v (built-in objects)"
    no_warnings kubernetes-validate --strict --quiet -k "$v" "$work"/objects/core/*.yaml
    echo "ok: $(ls "$work"/objects/core | wc -l) objects valid for Kubernetes $v"
    ok
done

step "check-jsonschema: custom resources against deploy/schemas"
check-jsonschema --check-metaschema deploy/schemas/*.json
for dir in "$work"/objects/crd/*; do
    schema="$(basename "$dir")"
    no_warnings check-jsonschema --schemafile "deploy/schemas/$schema" "$dir"/*.yaml
done
for want in authentication.config.openshift.io_v1.json servicemonitor.monitoring.coreos.com_v1.json \
    prometheusrule.monitoring.coreos.com_v1.json certificate.cert-manager.io_v1.json issuer.cert-manager.io_v1.json; do
    [[ -d "$work/objects/crd/$want" ]] || die "no object was checked against $want"
done
# The schemas must be able to say no.
"$py" "$helper" split "$work/invalid" deploy/schemas/testdata/invalid-*.yaml >/dev/null
bad=0
for f in "$work"/invalid/crd/*/*.yaml; do
    schema="$(basename "$(dirname "$f")")"
    if check-jsonschema --schemafile "deploy/schemas/$schema" "$f" >/dev/null 2>&1; then
        echo "a broken object passed $schema: $(basename "$f")" >&2
        bad=1
    fi
    bad_count=$((${bad_count:-0} + 1))
done
[[ $bad -eq 0 ]] || die "schemas accepted broken objects"
echo "ok: ${bad_count:-0} broken objects rejected by their schemas"
ok

step "promtool: alert rules, their unit tests, PrometheusRule in sync"
promtool check rules dashboards/alerts.rules.yaml
promtool test rules dashboards/alerts.test.yaml
"$py" "$helper" rules-sync
ok

step "promtool: every dashboard query parses"
"$py" "$helper" dashboard-rules dashboards/kube-authn-webhook.json "$work/dashboard-rules.yaml"
promtool check rules "$work/dashboard-rules.yaml"
ok

step "kubeconfig templates match the kubeconfig command"
"$py" "$helper" kubeconfig-templates "$work/webhook-kubeconfig.yaml" kubeconfig-templates
ok

step "kubectl reads the login plugin's kubeconfigs"
for f in "$work/user-pcd-kubeconfig.yaml" "$work/user-efa-kubeconfig.yaml"; do
    kubectl --kubeconfig "$f" config view -o jsonpath='{.users[0].user.exec.apiVersion}{"\n"}' |
        grep -qx 'client.authentication.k8s.io/v1' || die "kubectl does not read $f's exec user"
done
ok

step "live: the webhook's demo (its dev issuer and the webhook, on loopback)"
# What the webhook answers is tested in Rust (crates/webhook/tests/it); here
# it only has to run and be fed reviews, for the scrape and the Prometheus
# below. `demo` serves until interrupted; it prints its URLs and writes a
# review.json with a fresh token (under TMPDIR, so $work holds it).
free_port() { "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # URL SECONDS [curl args...]
    local url="$1" secs="$2"
    shift 2
    for _ in $(seq $((secs * 10))); do
        curl -fsS -o /dev/null "$@" "$url" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
live="$work/live"
mkdir -p "$live"
TMPDIR="$work" "$bin" demo >"$work/logs/demo.log" 2>&1 &
demo_pid=$!
pids+=("$demo_pid")
for _ in $(seq 300); do
    grep -q '^Serving until' "$work/logs/demo.log" && break
    kill -0 "$demo_pid" 2>/dev/null || die "the demo exited early"
    sleep 0.1
done
grep -q '^Serving until' "$work/logs/demo.log" || die "the demo did not start serving"
# The printed curl command: --cacert CA ... --data @REVIEW URL.
read -r ca_file review_json webhook_url < <(sed -nE \
    's|^ +curl --cacert (\S+) .* --data @(\S+) (https://\S+/authenticate)$|\1 \2 \3|p' "$work/logs/demo.log")
telemetry="$(sed -nE 's|^Ready: +curl -s (http://[^/ ]+)/readyz$|\1|p' "$work/logs/demo.log")"
[[ -f "${ca_file:-}" && -f "${review_json:-}" && -n "${webhook_url:-}" && -n "$telemetry" ]] ||
    die "cannot read the demo's URLs and files from its output"
telemetry_addr="${telemetry#http://}"
wait_for "$telemetry/readyz" 20 || die "the demo's webhook is not ready"
echo "demo serving: $webhook_url, telemetry $telemetry_addr"
# Feeding the webhook: the demo's token (authenticated; a cache miss, then
# hits), a garbage token (rejected) and a body that is not a TokenReview (400).
jq -c '.spec.token = "garbage"' "$review_json" >"$live/garbage.json"
authenticated=1 # the demo's own round trip
feed() {
    local body
    for body in "@$review_json" "@$review_json" "@$live/garbage.json"; do
        curl -fsS -o /dev/null --cacert "$ca_file" -H 'Content-Type: application/json' \
            --data "$body" "$webhook_url"
    done
    authenticated=$((authenticated + 2))
    curl -sS -o /dev/null --cacert "$ca_file" -H 'Content-Type: application/json' \
        --data 'not json' "$webhook_url"
}
feed
# Every labelled series exists now (bad requests only appear after the first).
curl -fsS "$telemetry/metrics" >"$live/scrape.txt"
ok

step "promtool check metrics (live scrape)"
promtool check metrics <"$live/scrape.txt"
grep -q '^authn_webhook_tls_certificate_expiry_timestamp_seconds ' "$live/scrape.txt" ||
    die "the certificate expiry metric is missing from the scrape"
ok

step "dashboard and alert expressions name only metrics the webhook exports"
"$py" "$helper" metric-names "$live/scrape.txt" dashboards/kube-authn-webhook.json dashboards/alerts.rules.yaml \
    deploy/kubernetes/monitoring/prometheusrule.yaml
ok

step "live: a real Prometheus scrapes the webhook; dashboard queries return data"
prom_port="$(free_port)"
cp dashboards/alerts.rules.yaml "$live/alerts.rules.yaml"
cat >"$live/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - alerts.rules.yaml
scrape_configs:
  - job_name: kube-authn-webhook
    static_configs:
      - targets: ["$telemetry_addr"]
EOF
promtool check config "$live/prometheus.yml"
prometheus --config.file="$live/prometheus.yml" --storage.tsdb.path="$live/prometheus-data" \
    --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$work/logs/prometheus.log" 2>&1 &
pids+=($!)
prom="http://127.0.0.1:$prom_port"
wait_for "$prom/-/ready" 30 || die "Prometheus did not become ready"
# Prometheus starts scraping only after its first target update (up to ~5 s).
instant() { promtool query instant -o json "$prom" "$1" | jq -r '.[0].value[1] // 0'; }
for _ in $(seq 60); do
    [[ "$(instant 'count(authn_webhook_build_info{job="kube-authn-webhook"})')" == 1 ]] && break
    sleep 0.5
done
[[ "$(instant 'count(authn_webhook_build_info{job="kube-authn-webhook"})')" == 1 ]] ||
    die "Prometheus never scraped the webhook"
# Traffic over a few scrapes, so rate() has samples to work with.
for _ in 1 2 3 4 5; do
    feed
    sleep 1.2
done
# Wait until Prometheus has scraped the last of it, a few times over (rate()
# needs two samples in its window).
for _ in $(seq 60); do
    got="$(instant 'sum(authn_webhook_tokenreviews_total{job="kube-authn-webhook",outcome="authenticated"})')"
    samples="$(instant 'min(count_over_time(authn_webhook_tokenreviews_total{job="kube-authn-webhook"}[1m]))')"
    [[ "${got%.*}" -ge $authenticated && "${samples%.*}" -ge 3 ]] && break
    sleep 0.5
done
[[ "${got%.*}" -ge $authenticated ]] || die "Prometheus saw $got authenticated reviews, the webhook made $authenticated"
echo "Prometheus scraped $got authenticated reviews (the webhook made $authenticated)"
promtool query instant "$prom" 'sum by (outcome, reason) (authn_webhook_tokenreviews_total)'
"$py" "$helper" query-dashboard "$prom" dashboards/kube-authn-webhook.json
# The alert rules loaded and evaluate without error in a real Prometheus.
n_rules="$(grep -cE '^ +- alert: ' dashboards/alerts.rules.yaml)"
for _ in $(seq 30); do
    curl -fsS "$prom/api/v1/rules" |
        jq -e --argjson n "$n_rules" '[.data.groups[].rules[]] | length == $n and all(.health == "ok")' >/dev/null && break
    sleep 0.5
done
curl -fsS "$prom/api/v1/rules" | jq -e --argjson n "$n_rules" '[.data.groups[].rules[]] | length == $n and all(.health == "ok")' >/dev/null ||
    die "alert rules did not load or evaluate cleanly: $(curl -fsS "$prom/api/v1/rules")"
echo "ok: $n_rules alert rules loaded and healthy"
ok

trap - EXIT
for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
rm -rf "$work"
echo
echo "check-deploy: $passed passed, 0 failed"
