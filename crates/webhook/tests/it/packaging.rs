//! Docs and packaging that must agree with each other: the kube-apiserver's
//! webhook kubeconfig path, the licence, the alerts' runbook links, the
//! Grafana dashboard's import inputs, the generated ConfigMap, the sidecar's
//! scrape config.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use serde_norway::Value as Yaml;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    serde_norway::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every file under `dir` (relative to the root) ending in one of `exts`.
fn files(dir: &str, exts: &[&str], out: &mut Vec<String>) {
    for entry in std::fs::read_dir(root().join(dir)).unwrap() {
        let entry = entry.unwrap();
        let rel = format!("{dir}/{}", entry.file_name().to_string_lossy());
        if entry.file_type().unwrap().is_dir() {
            files(&rel, exts, out);
        } else if exts.iter().any(|e| rel.ends_with(e)) {
            out.push(rel);
        }
    }
}

#[test]
fn the_webhook_kubeconfig_path_is_the_same_everywhere() {
    let mut docs = vec![
        "README.md".to_owned(),
        "kubeconfig-templates/README.md".to_owned(),
    ];
    files("deploy", &[".md", ".yaml"], &mut docs);
    const FLAG: &str = "--authentication-token-webhook-config-file=";
    let mut paths = BTreeSet::new();
    let mut seen_in = BTreeSet::new();
    for doc in &docs {
        for (i, _) in read(doc).match_indices(FLAG) {
            let text = read(doc);
            let path: String = text[i + FLAG.len()..]
                .chars()
                .take_while(|c| !c.is_whitespace() && !"`|\"'".contains(*c))
                .collect();
            paths.insert(path);
            seen_in.insert(doc.clone());
        }
    }
    assert!(
        seen_in.contains("README.md"),
        "README.md shows the flag: {seen_in:?}"
    );
    assert!(
        seen_in.iter().any(|d| d.ends_with(".yaml")),
        "a manifest sets the flag: {seen_in:?}"
    );
    assert_eq!(
        paths.len(),
        1,
        "one webhook kubeconfig path everywhere, found {paths:?} in {seen_in:?}"
    );
    // And the files the steps install are that file.
    let path = paths.into_iter().next().unwrap();
    let name = path.rsplit('/').next().unwrap();
    assert!(
        read("deploy/README.md").contains(&format!("pki/{name}")),
        "deploy/README.md installs {name}"
    );
}

#[test]
fn the_licence_is_the_apache_2_0_text_cargo_and_the_image_declare() {
    let licence = read("LICENSE");
    assert!(licence.contains("Apache License") && licence.contains("Version 2.0, January 2004"));
    assert!(
        licence.contains("END OF TERMS AND CONDITIONS"),
        "the full text"
    );
    assert!(read("Cargo.toml").contains("license = \"Apache-2.0\""));
    assert!(read("deploy/image/build.sh").contains("org.opencontainers.image.licenses=Apache-2.0"));
}

/// The README's Operations part (to the next top-level section).
fn operations() -> String {
    let readme = read("README.md");
    let start = readme
        .find("\n## Operations")
        .expect("an Operations section");
    let rest = &readme[start + 1..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3);
    rest[..end].to_owned()
}

fn rules(doc: &Yaml) -> Vec<&Yaml> {
    let groups = doc
        .get("groups")
        .or_else(|| doc.get("spec").and_then(|s| s.get("groups")))
        .and_then(Yaml::as_sequence)
        .expect("groups");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

#[test]
fn every_alert_links_to_a_runbook_entry_in_operations() {
    let ops = operations();
    for file in [
        "dashboards/alerts.rules.yaml",
        "deploy/kubernetes/monitoring/prometheusrule.yaml",
    ] {
        let doc = yaml(file);
        let alerts = rules(&doc);
        assert!(alerts.len() >= 10, "{file}: {} alerts", alerts.len());
        for rule in alerts {
            let name = rule["alert"].as_str().unwrap();
            let url = rule["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{file}: {name} has no runbook_url"));
            let anchor = url
                .strip_prefix("README.md#")
                .unwrap_or_else(|| panic!("{file}: {name}: {url} is not README.md#anchor"));
            assert!(
                ops.contains(&format!("<a id=\"{anchor}\"></a>")),
                "{file}: {name}: no anchor {anchor} in README's Operations"
            );
            assert!(
                ops.contains(&format!("**{name}**")),
                "README's runbook has no entry for {name}"
            );
        }
    }
}

#[test]
fn the_dashboard_asks_for_a_prometheus_data_source_on_import() {
    let text = read("dashboards/kube-authn-webhook.json");
    let dash: Value = serde_json::from_str(&text).unwrap();
    let inputs = dash["__inputs"].as_array().expect("__inputs");
    assert_eq!(inputs.len(), 1, "{inputs:?}");
    let input = &inputs[0];
    assert_eq!(input["type"], "datasource");
    assert_eq!(input["pluginId"], "prometheus");
    let name = input["name"].as_str().unwrap();
    // Grafana substitutes ${NAME} on import: used, and nothing undeclared.
    let placeholder = format!("${{{name}}}");
    assert!(text.contains(&placeholder), "{placeholder} is used");
    for (i, _) in text.match_indices("${DS_") {
        let used: String = text[i + 2..].chars().take_while(|c| *c != '}').collect();
        assert_eq!(used, name, "undeclared input ${{{used}}}");
    }
    let vars = dash["templating"]["list"].as_array().unwrap();
    let ds = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(ds["query"], "prometheus");
    assert_eq!(ds["current"]["value"], placeholder.as_str());
    let requires = dash["__requires"].as_array().expect("__requires");
    let required =
        |kind: &str, id: &str| requires.iter().any(|r| r["type"] == kind && r["id"] == id);
    assert!(required("grafana", "grafana"));
    assert!(required("datasource", "prometheus"));
    // Every panel type, and every query through the datasource variable (no
    // data source uid of somebody's Grafana baked in).
    fn walk(v: &Value, types: &mut BTreeSet<String>, uids: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                if let (Some(Value::String(t)), Some(_)) = (m.get("type"), m.get("gridPos")) {
                    types.insert(t.clone());
                }
                if let Some(Value::Object(ds)) = m.get("datasource")
                    && let Some(Value::String(uid)) = ds.get("uid")
                {
                    uids.insert(uid.clone());
                }
                m.values().for_each(|v| walk(v, types, uids));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, types, uids)),
            _ => {}
        }
    }
    let (mut types, mut uids) = (BTreeSet::new(), BTreeSet::new());
    walk(&dash["panels"], &mut types, &mut uids);
    walk(&dash["templating"], &mut types, &mut uids);
    types.remove("row");
    for t in &types {
        assert!(required("panel", t), "__requires lacks panel {t}");
    }
    assert_eq!(uids, BTreeSet::from(["${datasource}".to_owned()]));
}

#[test]
fn the_config_is_a_generated_configmap_so_edits_roll_out() {
    let k = yaml("deploy/kubernetes/kustomization.yaml");
    let generated = k["configMapGenerator"]
        .as_sequence()
        .expect("configMapGenerator")
        .iter()
        .find(|g| g["name"] == "kube-authn-webhook-config")
        .expect("the config's generator");
    assert_eq!(generated["files"][0], "config.yaml");
    assert!(
        generated
            .get("options")
            .and_then(|o| o.get("disableNameSuffixHash"))
            .is_none_or(|d| d.as_bool() != Some(true)),
        "the hash suffix is what rolls the pods"
    );
    let resources: Vec<&str> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert!(!resources.contains(&"configmap.yaml"), "{resources:?}");
    assert!(read("deploy/kubernetes/deployment.yaml").contains("name: kube-authn-webhook-config"));
    // The file itself is a webhook config (check-deploy runs check-config on it).
    let config = yaml("deploy/kubernetes/config.yaml");
    assert!(config.get("issuers").is_some());
}

#[test]
fn the_sidecar_scrape_example_matches_the_alerts_and_the_sidecar_port() {
    let scrape = yaml("deploy/sidecar/monitoring/prometheus-scrape.yaml");
    let job = &scrape["scrape_configs"][0];
    assert_eq!(job["job_name"], "kube-authn-webhook");
    assert!(read("dashboards/alerts.rules.yaml").contains("job=\"kube-authn-webhook\""));
    let sidecar = yaml("deploy/sidecar/config.yaml");
    let listen = sidecar["telemetry"]["listen"].as_str().unwrap();
    let port = listen.rsplit(':').next().unwrap();
    let replacement = job["relabel_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|r| r["target_label"] == "__address__")
        .and_then(|r| r["replacement"].as_str())
        .expect("an __address__ relabel");
    assert_eq!(replacement, format!("${{1}}:{port}"));
}
