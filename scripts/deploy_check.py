#!/usr/bin/env python3
"""Helpers for scripts/check-deploy.sh: the parts that need to read YAML,
JSON or PromQL. Each subcommand prints what it checked and exits non-zero
with a reason on any problem. Needs PyYAML (in the deploy-tools venv).

Subcommands:
  rules-sync [--write]           PrometheusRule spec == dashboards/alerts.rules.yaml
  kustomize-coverage DIR...      every manifest in DIR is referenced by its kustomization
  split OUT FILE...              one file per object: OUT/core/ or OUT/crd/<schema>/
  dashboard-rules DASH OUT       dashboard queries as a rules file for promtool
  metric-names SCRAPE FILE...    every metric named in dashboards/rules is exported
  query-dashboard URL DASH       every dashboard query returns data from Prometheus
  configmap-key FILE KEY OUT     extract one data key of a ConfigMap
  apiserver RENDER sidecar|flags-only   the rendered kube-apiserver pod is wired
  kubeconfig-templates GEN DIR   the webhook templates match `kubeconfig` output

No issuer and no token minting here: the live check runs the webhook's own
`demo`, and the webhook's answers are tested in crates/webhook/tests/it.
"""

import json
import os
import re
import sys
import time
import urllib.parse
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RULES_FILE = os.path.join(ROOT, "dashboards", "alerts.rules.yaml")
PROMETHEUS_RULE = os.path.join(ROOT, "deploy", "kubernetes", "monitoring", "prometheusrule.yaml")

# Objects validated with kubernetes-validate (built-in API groups).
CORE_GROUPS = {
    "", "apps", "batch", "policy", "autoscaling", "networking.k8s.io",
    "rbac.authorization.k8s.io", "scheduling.k8s.io", "storage.k8s.io",
    "admissionregistration.k8s.io", "coordination.k8s.io", "discovery.k8s.io",
}
# Custom resources and the schema each is checked against (deploy/schemas/).
SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.monitoring.coreos.com_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule.monitoring.coreos.com_v1.json",
    ("config.openshift.io/v1", "Authentication"): "authentication.config.openshift.io_v1.json",
    ("cert-manager.io/v1", "Certificate"): "certificate.cert-manager.io_v1.json",
    ("cert-manager.io/v1", "Issuer"): "issuer.cert-manager.io_v1.json",
}
# YAML files in a kustomization directory that are not Kubernetes manifests.
NOT_MANIFESTS = {"kustomization.yaml", "config.yaml"}

# Grafana variables, as the query check substitutes them.
GRAFANA_VARS = [
    (re.compile(r"\$__rate_interval|\$\{__rate_interval\}"), "1m"),
    (re.compile(r"\$__interval|\$\{__interval\}"), "1m"),
    (re.compile(r"\$\{?job\}?"), ".*"),
    (re.compile(r"\$\{?issuer\}?"), ".*"),
]

PROMQL_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "inf", "nan", "atan2", "start", "end",
}


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def load_yaml_docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


# --- PrometheusRule <-> rules file ---------------------------------------------

def prometheus_rule_text():
    """The PrometheusRule, generated from the rules file: its groups verbatim
    (comments included) under spec."""
    with open(RULES_FILE) as f:
        lines = f.read().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("groups:"))
    body = "\n".join(("  " + l) if l else l for l in lines[start:])
    return (
        "# Generated from dashboards/alerts.rules.yaml by\n"
        "# `bash scripts/check-deploy.sh sync-rules`: edit that file, not this one.\n"
        "apiVersion: monitoring.coreos.com/v1\n"
        "kind: PrometheusRule\n"
        "metadata:\n"
        "  name: kube-authn-webhook\n"
        "  namespace: kube-authn-webhook\n"
        "  labels:\n"
        "    app.kubernetes.io/name: kube-authn-webhook\n"
        "spec:\n"
        f"{body}\n"
    )


def cmd_rules_sync(args):
    want = prometheus_rule_text()
    if args and args[0] == "--write":
        with open(PROMETHEUS_RULE, "w") as f:
            f.write(want)
        print(f"wrote {os.path.relpath(PROMETHEUS_RULE, ROOT)}")
        return
    try:
        with open(PROMETHEUS_RULE) as f:
            have = f.read()
    except FileNotFoundError:
        have = ""
    if have != want:
        fail(f"{os.path.relpath(PROMETHEUS_RULE, ROOT)} differs from dashboards/alerts.rules.yaml; "
             "run: bash scripts/check-deploy.sh sync-rules")
    rules = yaml.safe_load(open(RULES_FILE))
    spec = yaml.safe_load(have)["spec"]
    if spec != rules:
        fail("PrometheusRule spec and the rules file parse differently")
    n = sum(len(g["rules"]) for g in rules["groups"])
    print(f"ok: PrometheusRule carries the same {n} rules as dashboards/alerts.rules.yaml")


# --- kustomizations --------------------------------------------------------------

def cmd_kustomize_coverage(dirs):
    for d in dirs:
        k = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
        refs = set()
        for r in k.get("resources", []):
            refs.add(os.path.normpath(os.path.join(d, r)))
        for p in k.get("patches", []):
            if "path" in p:
                refs.add(os.path.normpath(os.path.join(d, p["path"])))
        for p in k.get("patchesStrategicMerge", []):
            refs.add(os.path.normpath(os.path.join(d, p)))
        # Generated ConfigMaps/Secrets: `files` entries are PATH or KEY=PATH.
        for g in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
            for f in g.get("files", []):
                refs.add(os.path.normpath(os.path.join(d, f.split("=", 1)[-1])))
        for ref in refs:
            if not os.path.exists(ref):
                fail(f"{d}/kustomization.yaml names {os.path.relpath(ref, d)}, which does not exist")
        for name in sorted(os.listdir(d)):
            path = os.path.normpath(os.path.join(d, name))
            if name.endswith((".yaml", ".yml")) and name not in NOT_MANIFESTS and path not in refs:
                fail(f"{d}/{name} is not listed in {d}/kustomization.yaml")
        print(f"ok: {d}: kustomization covers every manifest ({len(refs)} references)")


def group_of(api_version):
    return api_version.split("/")[0] if "/" in api_version else ""


def cmd_split(args):
    out, files = args[0], args[1:]
    counts = {}
    n = 0
    for path in files:
        for doc in load_yaml_docs(path):
            api, kind = doc.get("apiVersion", ""), doc.get("kind", "")
            name = (doc.get("metadata") or {}).get("name", "unnamed")
            n += 1
            if group_of(api) in CORE_GROUPS:
                sub = "core"
            elif (api, kind) in SCHEMAS:
                sub = os.path.join("crd", SCHEMAS[(api, kind)])
            else:
                fail(f"{path}: {api} {kind} {name}: no schema to validate it against; "
                     "add one under deploy/schemas/ and to SCHEMAS in scripts/deploy_check.py")
            d = os.path.join(out, sub)
            os.makedirs(d, exist_ok=True)
            base = os.path.basename(path).rsplit(".", 1)[0]
            target = os.path.join(d, f"{n:03d}-{base}-{kind}-{name}.yaml")
            with open(target, "w") as f:
                yaml.safe_dump(doc, f, sort_keys=False)
            counts[sub] = counts.get(sub, 0) + 1
    print("split: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))


# --- dashboards and PromQL -----------------------------------------------------

def dashboard_queries(path):
    """(where, expr) for every panel target, and the metric of every
    label_values() variable (which is not PromQL)."""
    dash = json.load(open(path))
    queries, variable_metrics = [], []

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            if "expr" in t:
                queries.append((f"panel {p['id']} {p['title']!r} {t.get('refId', '')}", t["expr"]))
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
        m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*", q)
        if not m:
            fail(f"variable {v['name']}: only label_values(selector, label) is supported, got {q!r}")
        variable_metrics.append((f"variable {v['name']}", m.group(1)))
    if not queries:
        fail(f"{path}: no queries found")
    return queries, variable_metrics


def substitute(expr):
    for pattern, value in GRAFANA_VARS:
        expr = pattern.sub(value, expr)
    if "$" in expr:
        fail(f"unknown Grafana variable left in {expr!r}")
    return expr


def cmd_dashboard_rules(args):
    dash, out = args
    queries, variables = dashboard_queries(dash)
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(e)}
             for i, (_, e) in enumerate(queries + variables)]
    with open(out, "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False)
    print(f"wrote {len(rules)} dashboard queries as recording rules to {out}")


def metric_names(expr):
    """Metric names an expression selects: identifiers that are not
    functions, keywords, label names or durations."""
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", s):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def exported_names(scrape_path):
    names = set()
    for line in open(scrape_path):
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if not m:
            continue
        name, kind = m.groups()
        names.add(name)
        if kind in ("histogram", "summary"):
            names.update({name + "_bucket", name + "_sum", name + "_count"})
    if not names:
        fail(f"{scrape_path}: no metrics in the scrape")
    return names


def cmd_metric_names(args):
    scrape, files = args[0], args[1:]
    exported = exported_names(scrape)
    used, problems, n = set(), [], 0
    for path in files:
        if path.endswith(".json"):
            queries, variables = dashboard_queries(path)
            items = queries + variables
        else:
            items = []
            for doc in load_yaml_docs(path):
                spec = doc.get("spec", doc)
                for g in spec.get("groups", []):
                    for r in g["rules"]:
                        items.append((f"rule {r.get('alert') or r.get('record')}", str(r["expr"])))
        for where, expr in items:
            n += 1
            names = metric_names(expr)
            if not names:
                problems.append(f"{path}: {where}: selects no metric: {expr!r}")
            for name in names:
                used.add(name)
                if name not in exported:
                    problems.append(f"{path}: {where}: {name} is not exported by the service")
    if problems:
        fail("\n  ".join(["metrics named that the running service does not export:"] + problems))
    ours = {e for e in exported if e.startswith("authn_webhook_")}
    histograms = {e[: -len("_bucket")] for e in ours if e.endswith("_bucket")}
    shown = used | {h for h in histograms if h + "_bucket" in used}
    unused = sorted(ours - shown - {e + s for e in ours for s in ("_sum", "_count", "_bucket")})
    print(f"ok: {n} expressions name only exported metrics ({len(used)} distinct)")
    if unused:
        print(f"note: exported but not shown anywhere: {', '.join(unused)}")


def cmd_query_dashboard(args):
    """Every panel query returns data; retried for a few seconds, since the
    last scrapes may still be arriving."""
    base, dash = args
    queries, _ = dashboard_queries(dash)
    deadline = time.monotonic() + 15
    while True:
        empty = []
        for where, expr in queries:
            q = substitute(expr)
            url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": q})
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.load(resp)
            if body.get("status") != "success":
                fail(f"{where}: Prometheus refused {q!r}: {body}")
            if not body["data"]["result"]:
                empty.append(f"{where}: {q}")
        if not empty:
            break
        if time.monotonic() > deadline:
            fail("\n  ".join(["dashboard queries without data:"] + empty))
        time.sleep(1)
    print(f"ok: all {len(queries)} dashboard queries return data from the live Prometheus")


WEBHOOK_FLAGS = [
    "--authentication-token-webhook-config-file=/etc/kubernetes/authn-webhook/webhook-kubeconfig.yaml",
    "--authentication-token-webhook-version=v1",
    "--authentication-token-webhook-cache-ttl=2m",
]


def cmd_apiserver(args):
    """The rendered kube-apiserver static pod carries the webhook flags and
    the kubeconfig mount, and the sidecar exactly when asked for."""
    path, mode = args
    (pod,) = [d for d in load_yaml_docs(path) if d.get("kind") == "Pod"]
    containers = {c["name"]: c for c in pod["spec"]["containers"]}
    api = containers.get("kube-apiserver") or fail(f"{path}: no kube-apiserver container")
    argv = api.get("command", []) + api.get("args", [])
    for flag in WEBHOOK_FLAGS:
        if argv.count(flag) != 1:
            fail(f"{path}: kube-apiserver should have {flag} once, has it {argv.count(flag)} times")
    prefix = "--authentication-token-webhook"
    if sum(a.startswith(prefix) for a in argv) != len(WEBHOOK_FLAGS):
        fail(f"{path}: unexpected extra {prefix}* flags")
    mounts = {m["name"]: m for m in api.get("volumeMounts", [])}
    mount = mounts.get("authn-webhook") or fail(f"{path}: kube-apiserver lacks the authn-webhook mount")
    if mount["mountPath"] != "/etc/kubernetes/authn-webhook" or not mount.get("readOnly"):
        fail(f"{path}: the kube-apiserver's authn-webhook mount must be read-only at /etc/kubernetes/authn-webhook")
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    if volumes.get("authn-webhook", {}).get("hostPath", {}).get("path") != "/etc/kubernetes/authn-webhook":
        fail(f"{path}: volume authn-webhook must be hostPath /etc/kubernetes/authn-webhook")
    sidecar = containers.get("kube-authn-webhook")
    if mode == "sidecar":
        if sidecar is None:
            fail(f"{path}: no kube-authn-webhook sidecar")
        if sidecar.get("args") != ["serve", "--config", "/etc/kube-authn-webhook/config.yaml"]:
            fail(f"{path}: the sidecar must run serve --config /etc/kube-authn-webhook/config.yaml")
        annotations = pod["metadata"].get("annotations", {})
        if annotations.get("kubectl.kubernetes.io/default-container") != "kube-apiserver":
            fail(f"{path}: kubectl's default container must stay kube-apiserver")
    elif sidecar is not None:
        fail(f"{path}: the Deployment path must not add the sidecar")
    print(f"ok: {path}: kube-apiserver flags and mount in place ({mode})")


def cmd_configmap_key(args):
    path, key, out = args
    (doc,) = load_yaml_docs(path)
    if doc.get("kind") != "ConfigMap" or key not in doc.get("data", {}):
        fail(f"{path}: no ConfigMap data key {key}")
    with open(out, "w") as f:
        f.write(doc["data"][key])
    print(f"extracted {path} data.{key} to {out}")


# --- kubeconfig templates --------------------------------------------------------

def cmd_kubeconfig_templates(args):
    """The webhook templates, with their placeholders filled from a kubeconfig
    that `kube-authn-webhook kubeconfig` generated, equal that kubeconfig
    except for the server URL; the user templates have the one-context shape."""
    generated, directory = args
    gen = yaml.safe_load(open(generated))
    values = {
        "CA_DATA": gen["clusters"][0]["cluster"]["certificate-authority-data"],
        "CLIENT_CERT_DATA": gen["users"][0]["user"]["client-certificate-data"],
        "CLIENT_KEY_DATA": gen["users"][0]["user"]["client-key-data"],
    }
    checked = 0
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".yaml"):
            continue
        path = os.path.join(directory, name)
        text = open(path).read()
        placeholders = set(re.findall(r"\$\{([A-Z_]+)\}", text))
        doc = yaml.safe_load(text)
        for key in ("clusters", "users", "contexts"):
            if len(doc.get(key, [])) != 1:
                fail(f"{path}: needs exactly one entry in {key}")
        if doc.get("current-context") != doc["contexts"][0]["name"]:
            fail(f"{path}: current-context does not name the context")
        if name.startswith("webhook-"):
            filled = text
            for k, v in values.items():
                filled = filled.replace("${" + k + "}", v)
            left = set(re.findall(r"\$\{([A-Z_]+)\}", filled))
            if left - {"WEBHOOK_HOST", "WEBHOOK_PORT", "SERVICE_CLUSTER_IP"}:
                fail(f"{path}: undocumented placeholders {sorted(left)}")
            doc = yaml.safe_load(filled)
            server = doc["clusters"][0]["cluster"]["server"]
            if not server.endswith("/authenticate"):
                fail(f"{path}: the server URL must end in /authenticate")
            doc["clusters"][0]["cluster"]["server"] = gen["clusters"][0]["cluster"]["server"]
            if doc != gen:
                fail(f"{path}: differs from `kube-authn-webhook kubeconfig` output beyond the server URL")
        readme = open(os.path.join(directory, "README.md")).read()
        for p in placeholders:
            if "${" + p + "}" not in readme:
                fail(f"{path}: placeholder ${{{p}}} is not documented in {directory}/README.md")
        checked += 1
    if checked == 0:
        fail(f"{directory}: no templates")
    print(f"ok: {checked} kubeconfig templates (webhook ones match the generated kubeconfig)")


COMMANDS = {
    "rules-sync": cmd_rules_sync,
    "kustomize-coverage": cmd_kustomize_coverage,
    "split": cmd_split,
    "dashboard-rules": cmd_dashboard_rules,
    "metric-names": cmd_metric_names,
    "query-dashboard": cmd_query_dashboard,
    "configmap-key": cmd_configmap_key,
    "apiserver": cmd_apiserver,
    "kubeconfig-templates": cmd_kubeconfig_templates,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    COMMANDS[sys.argv[1]](sys.argv[2:])
