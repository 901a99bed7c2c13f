//! Config validation, in process, as tables: each broken config names the
//! field it is wrong at and says why. `cli.rs` keeps a few runs of the real
//! `check-config` binary.

use std::path::Path;

use kube_authn_testkit::harness::write;
use kube_authn_webhook::config::{Config, ConfigError};
use kube_authn_webhook::prepare::Prepared;

/// A valid config, with `server_extra` added under `server:` (each line
/// indented two spaces) and `issuers` as the YAML list body.
fn config(server_extra: &str, top_extra: &str, issuers: &str) -> String {
    format!(
        "server:\n  tls: {{cert_file: tls.crt, key_file: tls.key}}\n{server_extra}{top_extra}issuers:{issuers}"
    )
}

const DEX: &str = "
  - name: dex
    kind: oidc
    url: https://dex.example.com/dex
    audiences: [kubernetes]
    claims: {username: {prefix: \"\"}, groups: {prefix: \"\"}}
";

/// What an efa issuer needs besides its keys to validate.
const EFA_REST: &str = "    allow_any_audience: true\n    claims: {username: {prefix: \"efa:\"}, groups: {prefix: \"efa:\"}}\n";

/// An efa issuer with the given prefix (username and groups) and `extra`
/// lines, keyed by an HS256 secret.
fn efa_issuer(name: &str, prefix: &str, extra: &str) -> String {
    format!(
        "\n  - name: {name}\n    kind: efa\n    url: https://{name}.example.com\n    keys: {{hmac_secret_file: secret}}\n    algorithms: [HS256]\n    audiences: [kubernetes]\n    claims: {{username: {{prefix: \"{prefix}\"}}, groups: {{prefix: \"{prefix}\"}}}}\n{extra}"
    )
}

fn problems(err: &ConfigError) -> Vec<(String, String)> {
    err.problems
        .iter()
        .map(|p| (p.field.to_string(), p.message.clone()))
        .collect()
}

/// Every case must fail with a problem at `field` whose message contains
/// `says` (and may report more problems beside it).
fn assert_refused(cases: &[(&str, String, &str, &str)], check: impl Fn(&str) -> ConfigError) {
    for (name, text, field, says) in cases {
        let err = check(text);
        let found = problems(&err);
        assert!(
            found.iter().any(|(f, m)| f == field && m.contains(says)),
            "{name}: expected a problem at {field:?} saying {says:?}, got {found:#?}\n--- config:\n{text}"
        );
    }
}

fn validate(text: &str) -> ConfigError {
    Config::from_yaml(text, Path::new("/etc/kube-authn-webhook/config.yaml"))
        .expect_err("the config should be refused")
}

fn issuer(fields: &str) -> String {
    format!("\n  - name: x\n{fields}")
}

#[test]
fn each_server_telemetry_and_cache_rule_names_its_field() {
    let s = |extra: &str| config(extra, "", DEX);
    let t = |top: &str| config("", top, DEX);
    let cases = [
        (
            "listen",
            s("  listen: localhost\n"),
            "server.listen",
            "is not an address:port",
        ),
        (
            "reload",
            config("", "", DEX).replace(
                "key_file: tls.key}",
                "key_file: tls.key, reload_interval: 50ms}",
            ),
            "server.tls.reload_interval",
            "at least 100ms",
        ),
        (
            "duration",
            config("", "", DEX).replace(
                "key_file: tls.key}",
                "key_file: tls.key, reload_interval: soon}",
            ),
            "server.tls.reload_interval",
            "is not a duration",
        ),
        (
            "names without ca",
            config("", "", DEX).replace(
                "key_file: tls.key}",
                "key_file: tls.key, allowed_client_names: [a]}",
            ),
            "server.tls.allowed_client_names",
            "needs client_ca_file",
        ),
        (
            "empty name",
            config("", "", DEX).replace(
                "key_file: tls.key}",
                "key_file: tls.key, client_ca_file: ca.crt, allowed_client_names: [\" \"]}",
            ),
            "server.tls.allowed_client_names",
            "must not be empty",
        ),
        (
            "body",
            s("  max_body_bytes: 10\n"),
            "server.max_body_bytes",
            "out of range",
        ),
        (
            "request timeout",
            s("  request_timeout: 30s\n"),
            "server.request_timeout",
            "between 1s and 29s",
        ),
        (
            "read timeout",
            s("  read_timeout: 50ms\n"),
            "server.read_timeout",
            "between 100ms and 60s",
        ),
        (
            "grace",
            s("  shutdown_grace: 10m\n"),
            "server.shutdown_grace",
            "at most 5m",
        ),
        (
            "connections",
            s("  max_connections: 0\n"),
            "server.max_connections",
            "at least 1",
        ),
        (
            "workers",
            s("  workers: 0\n"),
            "server.workers",
            "between 1 and 256",
        ),
        (
            "telemetry port",
            s("  listen: 127.0.0.1:8443\n")
                .replace("issuers:", "telemetry: {listen: 127.0.0.1:8443}\nissuers:"),
            "telemetry.listen",
            "must differ from server.listen",
        ),
        (
            "log format",
            t("telemetry: {log_format: xml}\n"),
            "telemetry.log_format",
            "use json or text",
        ),
        (
            "max ttl",
            t("cache: {max_ttl: 48h}\n"),
            "cache.max_ttl",
            "at most 24h",
        ),
        (
            "negative ttl",
            t("cache: {max_ttl: 1m, negative_ttl: 2m}\n"),
            "cache.negative_ttl",
            "must not exceed cache.max_ttl",
        ),
        (
            "entries",
            t("cache: {max_entries: 20000000}\n"),
            "cache.max_entries",
            "at most 10000000",
        ),
        (
            "no issuers",
            config("", "", " []\n"),
            "issuers",
            "at least one issuer",
        ),
        (
            "max key age",
            t("max_key_age: 1m\n"),
            "max_key_age",
            "must be between 5m and 30d",
        ),
        (
            "max key age duration",
            t("max_key_age: a day\n"),
            "max_key_age",
            "is not a duration",
        ),
    ];
    assert_refused(&cases, validate);
}

#[test]
fn each_issuer_rule_names_its_field() {
    let c = |fields: &str| config("", "", &issuer(fields));
    let oidc =
        "    kind: oidc\n    url: https://dex.example.com/dex\n    audiences: [kubernetes]\n";
    let efa = "    kind: efa\n    keys: {hmac_secret_file: secret}\n    algorithms: [HS256]\n";
    let cases = [
        (
            "name",
            config(
                "",
                "",
                "\n  - name: Dex!\n    kind: oidc\n    url: https://d.example.com\n    audiences: [k]\n",
            ),
            "issuers[0].name",
            "is not a valid name",
        ),
        (
            "reserved name",
            config(
                "",
                "",
                "\n  - name: unmatched\n    kind: oidc\n    url: https://d.example.com\n    audiences: [k]\n",
            ),
            "issuers[0].name",
            "is reserved",
        ),
        (
            "kind",
            c("    kind: ldap\n"),
            "issuers[0] (x).kind",
            "is not an issuer kind",
        ),
        (
            "oidc url",
            c("    kind: oidc\n    audiences: [k]\n"),
            "issuers[0] (x).url",
            "an oidc issuer needs url",
        ),
        (
            "https",
            c("    kind: oidc\n    url: http://dex.example.com\n    audiences: [k]\n"),
            "issuers[0] (x).url",
            "must start with https://",
        ),
        (
            "empty url",
            c("    kind: efa\n    url: \"\"\n    keys: {jwks_url: https://e.example.com/keys}\n"),
            "issuers[0] (x).url",
            "must not be empty",
        ),
        (
            "audiences",
            c("    kind: oidc\n    url: https://dex.example.com/dex\n"),
            "issuers[0] (x).audiences",
            "needs at least one audience",
        ),
        (
            "empty audience",
            c(&oidc
                .to_string()
                .replace("[kubernetes]", "[kubernetes, \"\"]")),
            "issuers[0] (x).audiences",
            "must not be empty",
        ),
        (
            "keys on oidc",
            c(&format!("{oidc}    keys: {{hmac_secret_file: s}}\n")),
            "issuers[0] (x).keys",
            "keys is for efa issuers",
        ),
        (
            "jwks_url on efa",
            c(&format!("{efa}    jwks_url: https://e.example.com/keys\n")),
            "issuers[0] (x).jwks_url",
            "put the JWKS URL under keys.jwks_url",
        ),
        (
            "efa without keys",
            c("    kind: efa\n"),
            "issuers[0] (x).keys",
            "an efa issuer needs keys",
        ),
        (
            "efa empty keys",
            c("    kind: efa\n    keys: {public_key_files: []}\n"),
            "issuers[0] (x).keys",
            "no key source given",
        ),
        (
            "jwks over http",
            c(&format!(
                "{oidc}    jwks_url: http://dex.example.com/keys\n"
            )),
            "issuers[0] (x).jwks_url",
            "must start with https://",
        ),
        (
            "no algorithms",
            c(&format!("{oidc}    algorithms: []\n")),
            "issuers[0] (x).algorithms",
            "at least one algorithm",
        ),
        (
            "alg none",
            c(&format!("{oidc}    algorithms: [none]\n")),
            "issuers[0] (x).algorithms",
            "none is never accepted",
        ),
        (
            "unknown alg",
            c(&format!("{oidc}    algorithms: [rs256]\n")),
            "issuers[0] (x).algorithms",
            "is not a JWS algorithm",
        ),
        (
            "hmac for oidc",
            c(&format!("{oidc}    algorithms: [HS256]\n")),
            "issuers[0] (x).algorithms",
            "refused for oidc issuers",
        ),
        (
            "hmac without secret",
            c("    kind: efa\n    keys: {public_key_files: [k.pem]}\n    algorithms: [HS256]\n"),
            "issuers[0] (x).algorithms",
            "needs keys.hmac_secret_file",
        ),
        (
            "rsa without public key",
            c("    kind: efa\n    keys: {hmac_secret_file: s}\n    algorithms: [RS256]\n"),
            "issuers[0] (x).algorithms",
            "needs a public key",
        ),
        (
            "skew",
            c(&format!("{oidc}    clock_skew: 11m\n")),
            "issuers[0] (x).clock_skew",
            "at most 10m",
        ),
        (
            "fetch timeout",
            c(&format!("{oidc}    jwks_fetch_timeout: 20s\n")),
            "issuers[0] (x).jwks_fetch_timeout",
            "between 1s and 15s",
        ),
        (
            "refetch",
            c(&format!("{oidc}    jwks_min_refetch_interval: 50ms\n")),
            "issuers[0] (x).jwks_min_refetch_interval",
            "between 100ms and 5m",
        ),
        (
            "issuer max key age",
            c(&format!("{oidc}    max_key_age: 40d\n")),
            "issuers[0] (x).max_key_age",
            "must be between 5m and 30d",
        ),
        (
            "max key age without fetched keys",
            c(&format!("{efa}    max_key_age: 1h\n")),
            "issuers[0] (x).max_key_age",
            "applies to keys fetched from the issuer",
        ),
        (
            "jwks hosts without fetched keys",
            c(&format!("{efa}    jwks_hosts: [keys.example.com]\n")),
            "issuers[0] (x).jwks_hosts",
            "applies to keys fetched from the issuer",
        ),
        (
            "jwks host with a scheme",
            c(&format!(
                "{oidc}    jwks_hosts: [\"https://keys.example.com/\"]\n"
            )),
            "issuers[0] (x).jwks_hosts",
            "is not a host name or address",
        ),
        (
            "jwks host with a port",
            c(&format!(
                "{oidc}    jwks_hosts: [\"keys.example.com:8443\"]\n"
            )),
            "issuers[0] (x).jwks_hosts",
            "is not a host name or address",
        ),
        (
            "link-local jwks host",
            c(&format!("{oidc}    jwks_hosts: [169.254.169.254]\n")),
            "issuers[0] (x).jwks_hosts",
            "is a link-local address",
        ),
        (
            "link-local v6 jwks host",
            c(&format!("{oidc}    jwks_hosts: [\"[fe80::1]\"]\n")),
            "issuers[0] (x).jwks_hosts",
            "is a link-local address",
        ),
        (
            "jwks_url on another host",
            c(&format!(
                "{oidc}    jwks_url: https://keys.example.com/keys\n"
            )),
            "issuers[0] (x).jwks_url",
            "is not on the issuer's host (dex.example.com); list keys.example.com in jwks_hosts",
        ),
        (
            "efa jwks_url link-local",
            c(
                "    kind: efa\n    url: https://efa.example.com\n    keys: {jwks_url: \"https://169.254.169.254/keys\"}\n",
            ),
            "issuers[0] (x).keys.jwks_url",
            "link-local address",
        ),
        (
            "link-local url",
            c("    kind: oidc\n    url: https://169.254.169.254/dex\n    audiences: [k]\n"),
            "issuers[0] (x).url",
            "is a link-local address",
        ),
        (
            "claim and claims",
            c(&format!(
                "{oidc}    claims: {{username: {{claim: email, claims: [name]}}}}\n"
            )),
            "issuers[0] (x).claims.username",
            "set claim or claims, not both",
        ),
        (
            "no claim",
            c(&format!("{oidc}    claims: {{groups: {{claims: []}}}}\n")),
            "issuers[0] (x).claims.groups",
            "names no claim",
        ),
        (
            "claim path",
            c(&format!(
                "{oidc}    claims: {{username: {{claim: a..b}}}}\n"
            )),
            "issuers[0] (x).claims.username",
            "is not a claim path",
        ),
        (
            "system prefix",
            c(&format!(
                "{oidc}    claims: {{username: {{claim: email, prefix: \"system:\"}}}}\n"
            )),
            "issuers[0] (x).claims.username.prefix",
            "could produce a name starting with system:",
        ),
        (
            "group prefix",
            c(&format!(
                "{oidc}    claims: {{groups: {{claim: groups, prefix: sys}}}}\n"
            )),
            "issuers[0] (x).claims.groups.prefix",
            "could produce a name starting with system:",
        ),
        (
            "uid prefix",
            c(&format!(
                "{oidc}    claims: {{uid: {{claim: sub, prefix: u-}}}}\n"
            )),
            "issuers[0] (x).claims.uid.prefix",
            "uid takes no prefix",
        ),
        (
            "extra key",
            c(&format!(
                "{oidc}    claims: {{extra: {{Tenant: tenant}}}}\n"
            )),
            "issuers[0] (x).claims.extra.Tenant",
            "extra keys must be lower-case",
        ),
        (
            "extra path",
            c(&format!(
                "{oidc}    claims: {{extra: {{example.com/t: \"a.\"}}}}\n"
            )),
            "issuers[0] (x).claims.extra.example.com/t",
            "is not a claim path",
        ),
        (
            "same name",
            config(
                "",
                "",
                &format!(
                    "{DEX}{}",
                    DEX.replace("dex.example.com", "other.example.com")
                ),
            ),
            "issuers[1] (dex)",
            "another issuer has this name",
        ),
        (
            "same iss",
            config(
                "",
                "",
                &format!("{DEX}{}", DEX.replace("name: dex", "name: dex2")),
            ),
            "issuers[1] (dex2)",
            "two issuers match tokens with iss",
        ),
        (
            "two efa without url",
            config("", "", &format!("\n  - name: a\n{efa}\n  - name: b\n{efa}")),
            "issuers[1] (b)",
            "two efa issuers have no url",
        ),
    ];
    assert_refused(&cases, validate);
}

/// The key settings of issue 11 in a config that is fine: a global
/// max_key_age with an issuer's own, a JWKS on a host jwks_hosts lists, an
/// efa issuer without url whose keys.jwks_url is its host.
#[test]
fn key_age_and_jwks_hosts_settings_validate() {
    let text = config(
        "",
        "max_key_age: 2d\n",
        "
  - name: dex
    kind: oidc
    url: https://dex.example.com/dex
    audiences: [kubernetes]
    jwks_url: https://Keys.Example.com/dex/keys
    jwks_hosts: [keys.example.com, \"[2001:db8::1]\", 10.0.0.1]
    max_key_age: 1h
    claims: {username: {claim: email, prefix: \"dex:\"}, groups: {claim: groups, prefix: \"dex:\"}}
  - name: efa
    kind: efa
    allow_any_audience: true
    keys: {jwks_url: https://efa.example.com/keys}
    claims: {username: {claim: username, prefix: \"efa:\"}, groups: {claim: roles, prefix: \"efa:\"}}
",
    );
    Config::from_yaml(&text, Path::new("/etc/kube-authn-webhook/config.yaml")).unwrap();
}

#[test]
fn prefixes_must_be_written_and_issuers_kept_apart() {
    let c = |issuers: &str| config("", "", issuers);
    let shared = "    allow_shared_identities: true\n";
    let cases = [
        (
            "no claims at all",
            c(
                "\n  - name: x\n    kind: oidc\n    url: https://x.example.com\n    audiences: [k]\n",
            ),
            "issuers[0] (x).claims.username.prefix",
            "must be written, even if empty: `username: {claims: [email, name], prefix: \"\"}`",
        ),
        (
            "groups prefix missing",
            c(
                "\n  - name: x\n    kind: oidc\n    url: https://x.example.com\n    audiences: [k]\n    claims: {username: {prefix: \"\"}}\n",
            ),
            "issuers[0] (x).claims.groups.prefix",
            "must be written, even if empty: `groups: {claims: [groups], prefix: \"\"}`",
        ),
        (
            "efa defaults named",
            c(
                "\n  - name: e\n    kind: efa\n    keys: {hmac_secret_file: s}\n    allow_any_audience: true\n    claims: {groups: {prefix: \"\"}}\n",
            ),
            "issuers[0] (e).claims.username.prefix",
            "`username: {claims: [username, sub], prefix: \"\"}`",
        ),
        (
            "two empty username prefixes",
            c(&format!("{DEX}{}", efa_issuer("efa", "", ""))),
            "issuers[1] (efa).claims.username.prefix",
            "\"\" can produce the same usernames as issuers[0] (dex) (prefix \"\")",
        ),
        (
            "empty overlaps everything",
            c(&format!("{DEX}{}", efa_issuer("efa", "efa:", ""))),
            "issuers[1] (efa).claims.username.prefix",
            "set allow_shared_identities: true on both",
        ),
        (
            "and groups too",
            c(&format!("{DEX}{}", efa_issuer("efa", "efa:", ""))),
            "issuers[1] (efa).claims.groups.prefix",
            "can produce the same group names as issuers[0] (dex)",
        ),
        (
            "one prefix starts the other",
            c(&format!(
                "{}{}",
                efa_issuer("efa", "efa:", ""),
                efa_issuer("lab", "efa:lab:", "")
            )),
            "issuers[1] (lab).claims.username.prefix",
            "\"efa:lab:\" can produce the same usernames as issuers[0] (efa) (prefix \"efa:\")",
        ),
        (
            "the same prefix",
            c(&format!(
                "{}{}",
                efa_issuer("a", "efa:", ""),
                efa_issuer("b", "efa:", "")
            )),
            "issuers[1] (b).claims.username.prefix",
            "can produce the same usernames as issuers[0] (a)",
        ),
        (
            "shared on one side only",
            c(&format!(
                "{}{}",
                efa_issuer("a", "efa:", shared),
                efa_issuer("b", "efa:", "")
            )),
            "issuers[1] (b).claims.username.prefix",
            "it is set on issuers[0] (a) only; it takes both",
        ),
        (
            "shared on this side only",
            c(&format!(
                "{}{}",
                efa_issuer("a", "efa:", ""),
                efa_issuer("b", "efa:", shared)
            )),
            "issuers[1] (b).claims.groups.prefix",
            "it is set on this issuer only; it takes both",
        ),
    ];
    assert_refused(&cases, validate);

    // Apart, or both saying they share one space: fine.
    for ok in [
        c(&format!("{}{}", efa_issuer("a", "a:", ""), efa_issuer("b", "b:", ""))),
        c(&format!("{}{}", efa_issuer("a", "efa:", ""), efa_issuer("b", "efa-lab:", ""))),
        c(&format!("{}{}", efa_issuer("a", "", shared), efa_issuer("b", "efa:", shared))),
        c(&format!("{DEX}{}", efa_issuer("efa", "efa:", shared)).replace(
            "    claims: {username: {prefix: \"\"}, groups: {prefix: \"\"}}\n",
            "    claims: {username: {prefix: \"\"}, groups: {prefix: \"\"}}\n    allow_shared_identities: true\n",
        )),
    ] {
        if let Err(e) = Config::from_yaml(&ok, Path::new("/etc/kube-authn-webhook/config.yaml")) {
            panic!("{e}\n--- config:\n{ok}");
        }
    }
}

#[test]
fn an_efa_issuer_checks_aud_unless_it_says_any_audience() {
    let c = |fields: &str| config("", "", &issuer(fields));
    let efa = "    kind: efa\n    keys: {hmac_secret_file: secret}\n    algorithms: [HS256]\n";
    let oidc =
        "    kind: oidc\n    url: https://dex.example.com/dex\n    audiences: [kubernetes]\n";
    let cases = [
        (
            "efa without audiences",
            c(efa),
            "issuers[0] (x).audiences",
            "an efa issuer needs at least one audience (the aud its tokens carry); if its tokens carry no aud, write allow_any_audience: true instead",
        ),
        (
            "both",
            c(&format!(
                "{efa}    audiences: [k]\n    allow_any_audience: true\n"
            )),
            "issuers[0] (x).allow_any_audience",
            "set audiences or allow_any_audience, not both",
        ),
        (
            "any audience for oidc",
            c(&format!("{oidc}    allow_any_audience: true\n")),
            "issuers[0] (x).allow_any_audience",
            "is for efa issuers only",
        ),
    ];
    assert_refused(&cases, validate);

    // Written explicitly, it validates, with a warning at the field.
    let any = efa_issuer("efa", "efa:", "").replace(
        "    audiences: [kubernetes]\n",
        "    allow_any_audience: true\n",
    );
    let config =
        Config::from_yaml(&c_issuers(&any), Path::new("c.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let warnings: Vec<String> = config.warnings().iter().map(ToString::to_string).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .starts_with("issuers[0] (efa).allow_any_audience: the token's aud is not checked"),
        "{warnings:?}"
    );
    let with_audiences = Config::from_yaml(
        &c_issuers(&efa_issuer("efa", "efa:", "")),
        Path::new("c.yaml"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(with_audiences.warnings().is_empty());
}

fn c_issuers(issuers: &str) -> String {
    config("", "", issuers)
}

#[test]
fn unknown_fields_and_unparsable_text_are_refused_at_the_file() {
    for (text, says) in [
        (
            config("  colour: blue\n", "", DEX),
            "unknown field `colour`",
        ),
        ("server: [".to_owned(), "not a valid config"),
    ] {
        let err = validate(&text);
        assert_eq!(err.file, Path::new("/etc/kube-authn-webhook/config.yaml"));
        let found = problems(&err);
        assert!(
            found.iter().any(|(f, m)| f.is_empty() && m.contains(says)),
            "{found:?}"
        );
    }
}

#[test]
fn validation_lists_every_problem_in_one_go() {
    let text = config(
        "  workers: 0\n",
        "cache: {max_ttl: 48h}\n",
        "\n  - name: dex\n    kind: oidc\n    url: https://dex.example.com/dex\n    algorithms: [RS256, HS256]\n",
    );
    let fields: Vec<String> = problems(&validate(&text))
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    for want in [
        "server.workers",
        "cache.max_ttl",
        "issuers[0] (dex).audiences",
        "issuers[0] (dex).algorithms",
    ] {
        assert!(
            fields.iter().any(|f| f == want),
            "{want} missing from {fields:?}"
        );
    }
}

/// Files the config names are read by `Prepared::load`: the problems carry
/// the same field paths, and come in the same list as validation's.
#[test]
fn unreadable_or_unusable_files_name_the_field_that_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = kube_authn_webhook::pki::Ca::new("t", 1).unwrap();
    let tls = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
    let other = ca.server(&["127.0.0.1".to_owned()], 1).unwrap();
    write(dir.path(), "tls.crt", &tls.cert_pem);
    write(dir.path(), "tls.key", &tls.key_pem);
    write(dir.path(), "other.key", &other.key_pem);
    write(dir.path(), "not-pem", "hello");
    write(dir.path(), "short-secret", "too short\n");
    let now = kube_authn_common::clock::unix_now();
    let key = kube_authn_testkit::DevKey::generate(jsonwebtoken::Algorithm::RS256).unwrap();
    let cert = crate::keys::certificate_pem;
    write(
        dir.path(),
        "expired.pem",
        cert(&key, now - 7200, now - 3600),
    );
    write(dir.path(), "future.pem", cert(&key, now + 3600, now + 7200));
    let path = dir.path().join("config.yaml");
    let prepare = |text: &str| Prepared::from_yaml(text, &path).expect_err("refused");
    let efa = |keys: &str| {
        config(
            "",
            "",
            &format!("\n  - name: efa\n    kind: efa\n    keys: {keys}\n{EFA_REST}"),
        )
    };
    let cases = [
        (
            "key of another cert",
            config("", "", DEX).replace("key_file: tls.key", "key_file: other.key"),
            "server.tls",
            "does not fit the certificate",
        ),
        (
            "missing cert",
            config("", "", DEX).replace("cert_file: tls.crt", "cert_file: gone.crt"),
            "server.tls",
            "cannot read",
        ),
        (
            "client ca",
            config("", "", DEX).replace(
                "key_file: tls.key}",
                "key_file: tls.key, client_ca_file: not-pem}",
            ),
            "server.tls.client_ca_file",
            "holds no PEM CERTIFICATE",
        ),
        (
            "issuer ca",
            config(
                "",
                "",
                &format!("{DEX}    certificate_authority_file: gone.crt\n"),
            ),
            "issuers[0] (dex).certificate_authority_file",
            "cannot read",
        ),
        (
            "issuer ca not pem",
            config(
                "",
                "",
                &format!("{DEX}    certificate_authority_file: not-pem\n"),
            ),
            "issuers[0] (dex).certificate_authority_file",
            "holds no PEM CERTIFICATE",
        ),
        (
            "public key missing",
            efa("{public_key_files: [gone.pem]}"),
            "issuers[0] (efa).keys.public_key_files[0]",
            "gone.pem",
        ),
        (
            "public key not pem",
            efa("{public_key_files: [not-pem]}"),
            "issuers[0] (efa).keys.public_key_files[0]",
            "not-pem",
        ),
        (
            "short secret",
            efa("{hmac_secret_file: short-secret}"),
            "issuers[0] (efa).keys.hmac_secret_file",
            "HS256 needs at least 32",
        ),
        (
            "expired certificate",
            efa("{public_key_files: [expired.pem]}"),
            "issuers[0] (efa).keys.public_key_files[0]",
            "the certificate expired at",
        ),
        (
            "certificate not valid yet",
            efa("{public_key_files: [future.pem]}"),
            "issuers[0] (efa).keys.public_key_files[0]",
            "the certificate is not valid before",
        ),
    ];
    assert_refused(&cases, prepare);

    // Validation's problems and the files' problems in one list.
    let both = prepare(&config(
        "  workers: 0\n",
        "",
        &format!(
            "\n  - name: efa\n    kind: efa\n    keys: {{public_key_files: [gone.pem]}}\n{EFA_REST}"
        ),
    ));
    let fields: Vec<String> = problems(&both).into_iter().map(|(f, _)| f).collect();
    assert!(fields.contains(&"server.workers".to_owned()), "{fields:?}");
    assert!(
        fields.contains(&"issuers[0] (efa).keys.public_key_files[0]".to_owned()),
        "{fields:?}"
    );
}
