//! AuthenticationConfiguration files (`apiserver.config.k8s.io/v1` and
//! `v1beta1`, kind AuthenticationConfiguration), the kube-apiserver's
//! structured authentication config: every `jwt[]` entry becomes an oidc
//! issuer beside the native ones, validated by the apiserver's rules and
//! mapped by the same engine (`verify::claims`, CEL from `crate::cel`).
//!
//! Parsed and validated from `prepare`, which reads the files: problems are
//! named `auth.yaml: jwt[0].claimMappings.username.expression: ...`.

mod raw;

use std::collections::HashSet;
use std::sync::Arc;

use jsonwebtoken::Algorithm;

use crate::cel;
use crate::config::{
    self, FieldPath, IssuerKind, KeyFiles, Problem, Problems, RemoteKeys, RemoteSource,
};
use crate::keys::remote;
use crate::verify::claims::{ClaimMapping, ClaimPath, ClaimRule, Source, UserRule};

/// The apiserver's limit on `jwt[]` entries.
const MAX_JWT: usize = 64;
const API_VERSIONS: [&str; 2] = [
    "apiserver.config.k8s.io/v1",
    "apiserver.config.k8s.io/v1beta1",
];

/// What the webhook config gives every issuer of these files.
pub(crate) struct Defaults {
    pub(crate) max_key_age: std::time::Duration,
}

/// The issuers of one AuthenticationConfiguration file (`written` is its
/// path as the webhook config writes it, for problem paths). Entries with
/// problems are left out; every problem is added.
pub(crate) fn issuers(
    text: &str,
    written: &str,
    defaults: &Defaults,
    problems: &mut Problems,
    warnings: &mut Vec<Problem>,
) -> Vec<config::Issuer> {
    let root = FieldPath::file(written);
    let raw: raw::AuthenticationConfiguration = match serde_norway::from_str(text) {
        Ok(r) => r,
        Err(e) => {
            problems.add(
                &root,
                format!("not a valid AuthenticationConfiguration: {e}"),
            );
            return Vec::new();
        }
    };
    match raw.api_version.as_deref() {
        Some(v) if API_VERSIONS.contains(&v) => {}
        other => problems.add(
            &root.field("apiVersion"),
            format!(
                "{} is not supported: use apiserver.config.k8s.io/v1 or apiserver.config.k8s.io/v1beta1",
                other.map_or("a missing apiVersion".to_owned(), |v| format!("{v:?}"))
            ),
        ),
    }
    if raw.kind.as_deref() != Some("AuthenticationConfiguration") {
        problems.add(&root.field("kind"), "must be AuthenticationConfiguration");
    }
    if raw.anonymous.is_some() {
        warnings.push(Problem {
            field: root.field("anonymous"),
            message: "is ignored: it configures the kube-apiserver's own anonymous authenticator, and a webhook is only asked about bearer tokens".to_owned(),
        });
    }
    if raw.jwt.len() > MAX_JWT {
        problems.add(
            &root.field("jwt"),
            format!(
                "has {} entries: at most {MAX_JWT} are allowed (as in the kube-apiserver)",
                raw.jwt.len()
            ),
        );
    }
    let mut urls = HashSet::new();
    let mut discovery_urls = HashSet::new();
    let mut out = Vec::new();
    for (i, jwt) in raw.jwt.into_iter().enumerate() {
        let at = root.field("jwt").index(i);
        let before = problems.len();
        let url = jwt.issuer.url.clone();
        if !url.is_empty() && !urls.insert(url.clone()) {
            problems.add(
                &at.field("issuer").field("url"),
                format!(
                    "duplicate issuer url {url:?}: every token must route to exactly one issuer"
                ),
            );
        }
        if let Some(d) = jwt.issuer.discovery_url.as_deref()
            && !d.is_empty()
            && !discovery_urls.insert(d.to_owned())
        {
            problems.add(
                &at.field("issuer").field("discoveryURL"),
                format!("duplicate discoveryURL {d:?}"),
            );
        }
        let issuer = Entry {
            at: &at,
            problems: &mut *problems,
            warnings: &mut *warnings,
        }
        .issuer(jwt, defaults);
        if problems.len() == before
            && let Some(issuer) = issuer
        {
            out.push(issuer);
        }
    }
    out
}

/// The issuer name of a `jwt[]` entry: its URL's host, port and path in
/// lower case, every run of other characters a `-` (`https://dex.example.com:
/// 8443/dex` is `dex-example-com-8443-dex`); longer than 63 characters, the
/// first 54 and 8 hex digits of the URL's SHA-256.
pub(crate) fn issuer_name(url: &str) -> String {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let mut name = String::new();
    for c in rest.chars() {
        if c.is_ascii_alphanumeric() {
            name.push(c.to_ascii_lowercase());
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_matches('-').to_owned();
    let name = if name.is_empty() {
        "jwt".to_owned()
    } else {
        name
    };
    if name.len() <= 63 {
        return name;
    }
    let hash = crate::review::sha256(url.as_bytes());
    format!(
        "{}-{}",
        name[..54].trim_end_matches('-'),
        hex::encode(&hash[..4])
    )
}

struct Entry<'a> {
    at: &'a FieldPath,
    problems: &'a mut Problems,
    warnings: &'a mut Vec<Problem>,
}

impl Entry<'_> {
    fn problem(&mut self, field: &FieldPath, message: impl Into<String>) {
        self.problems.add(field, message);
    }

    fn https_url(&mut self, field: &FieldPath, u: &str, what: &str) -> Option<String> {
        match reqwest::Url::parse(u) {
            Err(e) => {
                self.problem(field, format!("{u:?} is not a URL: {e}"));
                None
            }
            Ok(p) if p.scheme() != "https" => {
                self.problem(field, format!("{what} must use the https scheme"));
                None
            }
            Ok(p) if p.query().is_some() => {
                self.problem(field, format!("{what} must not contain a query"));
                None
            }
            Ok(p) if p.fragment().is_some() => {
                self.problem(field, format!("{what} must not contain a fragment"));
                None
            }
            Ok(p) if !p.username().is_empty() || p.password().is_some() => {
                self.problem(
                    field,
                    format!("{what} must not contain a username or password"),
                );
                None
            }
            Ok(p) => {
                let host = p.host_str()?.to_ascii_lowercase();
                if remote::host_is_link_local(&host) {
                    self.problem(
                        field,
                        format!("{u:?} is a link-local address: keys are never fetched from one"),
                    );
                }
                Some(host)
            }
        }
    }

    fn issuer(&mut self, jwt: raw::Jwt, defaults: &Defaults) -> Option<config::Issuer> {
        let at_iss = self.at.field("issuer");
        let raw_iss = jwt.issuer;
        let url = raw_iss.url.clone();
        let mut hosts = Vec::new();
        if url.is_empty() {
            self.problem(&at_iss.field("url"), "is required: the token's iss");
        } else if let Some(h) = self.https_url(&at_iss.field("url"), &url, "URL") {
            hosts.push(h);
        }
        let discovery = raw_iss.discovery_url.filter(|d| !d.is_empty());
        if let Some(d) = &discovery {
            let field = at_iss.field("discoveryURL");
            if d.trim_end_matches('/') == url.trim_end_matches('/') {
                self.problem(&field, "discoveryURL must be different from URL");
            } else if let Some(h) = self.https_url(&field, d, "discoveryURL")
                && !hosts.contains(&h)
            {
                hosts.push(h);
            }
        }
        if let Some(e) = &raw_iss.egress_selector_type {
            self.warnings.push(Problem {
                field: at_iss.field("egressSelectorType"),
                message: format!("{e:?} is ignored: it selects the kube-apiserver's egress network (konnectivity); the webhook connects to the issuer directly"),
            });
        }
        let ca = raw_iss
            .certificate_authority
            .filter(|c| !c.is_empty())
            .and_then(
                |pem| match kube_authn_common::parse_ca_bundle(pem.as_bytes()) {
                    Ok(_) => Some(pem.into_bytes()),
                    Err(e) => {
                        self.problem(&at_iss.field("certificateAuthority"), e);
                        None
                    }
                },
            );
        let audiences = raw_iss.audiences;
        let at_aud = at_iss.field("audiences");
        if audiences.is_empty() {
            self.problem(&at_aud, "at least one audience is required");
        }
        let mut seen = HashSet::new();
        for (i, a) in audiences.iter().enumerate() {
            if a.is_empty() {
                self.problem(&at_aud.index(i), "audience can't be empty");
            } else if !seen.insert(a.as_str()) {
                self.problem(&at_aud.index(i), format!("duplicate audience {a:?}"));
            }
        }
        match raw_iss.audience_match_policy.as_deref() {
            None | Some("") if audiences.len() > 1 => self.problem(
                &at_iss.field("audienceMatchPolicy"),
                "audienceMatchPolicy must be MatchAny for multiple audiences",
            ),
            None | Some("" | "MatchAny") => {}
            Some(other) => self.problem(
                &at_iss.field("audienceMatchPolicy"),
                format!("{other:?} is not supported: the only value is MatchAny"),
            ),
        }

        let (claim_rules, rules_read_verified) = self.claim_rules(jwt.claim_validation_rules);
        let mapping = self.mappings(jwt.claim_mappings, rules_read_verified);
        let user_rules = self.user_rules(jwt.user_validation_rules);
        let mut claims = mapping?;
        claims.claim_rules = claim_rules;
        claims.user_rules = user_rules;
        if url.is_empty() {
            return None;
        }
        Some(config::Issuer {
            name: issuer_name(&url),
            kind: IssuerKind::Oidc,
            url: Some(url.clone()),
            audiences,
            allow_any_audience: false,
            trust_implicit_audience: true,
            // What go-oidc accepts that jsonwebtoken can check (no ES512).
            algorithms: Some(vec![
                Algorithm::RS256,
                Algorithm::RS384,
                Algorithm::RS512,
                Algorithm::PS256,
                Algorithm::PS384,
                Algorithm::PS512,
                Algorithm::ES256,
                Algorithm::ES384,
                Algorithm::EdDSA,
            ]),
            // None on exp, as the kube-apiserver.
            clock_skew: std::time::Duration::ZERO,
            claims,
            keys: KeyFiles::default(),
            certificate_authority_file: None,
            certificate_authority_data: ca,
            remote: Some(RemoteKeys {
                source: RemoteSource::Discovery {
                    url: discovery.unwrap_or_else(|| {
                        format!(
                            "{}/.well-known/openid-configuration",
                            url.trim_end_matches('/')
                        )
                    }),
                    issuer: url,
                },
                fetch_timeout: config::DEFAULT_FETCH_TIMEOUT,
                min_refetch_interval: config::DEFAULT_MIN_REFETCH,
                max_response_bytes: config::MAX_JWKS_BYTES,
                max_key_age: defaults.max_key_age,
                jwks_hosts: hosts,
                // HTTPS_PROXY/NO_PROXY, as for a native issuer without
                // proxy_url (the file has no such field).
                proxy: None,
            }),
            // The file has neither: none, as the kube-apiserver.
            max_token_lifetime: None,
            required: false,
            field: self.at.clone(),
        })
    }

    /// The rules, and whether an expression among them reads
    /// `claims.email_verified`.
    fn claim_rules(&mut self, raw: Vec<raw::ClaimValidationRule>) -> (Vec<ClaimRule>, bool) {
        let mut out = Vec::new();
        let mut reads_verified = false;
        let mut claims = HashSet::new();
        let mut expressions = HashSet::new();
        for (i, r) in raw.into_iter().enumerate() {
            let at = self.at.field("claimValidationRules").index(i);
            match (
                r.claim.filter(|c| !c.is_empty()),
                r.expression.filter(|e| !e.is_empty()),
            ) {
                (Some(_), Some(_)) => self.problem(&at, "claim and expression can't both be set"),
                (None, None) => self.problem(&at, "claim or expression is required"),
                (Some(claim), None) => {
                    if r.message.is_some() {
                        self.problem(
                            &at.field("message"),
                            "message can't be set when claim is set",
                        );
                    }
                    if !claims.insert(claim.clone()) {
                        self.problem(&at.field("claim"), format!("duplicate claim {claim:?}"));
                    }
                    out.push(ClaimRule::Required {
                        claim,
                        value: r.required_value.unwrap_or_default(),
                    });
                }
                (None, Some(source)) => {
                    if r.required_value.is_some() {
                        self.problem(
                            &at.field("requiredValue"),
                            "requiredValue can't be set when expression is set",
                        );
                    }
                    if !expressions.insert(source.clone()) {
                        self.problem(&at.field("expression"), "duplicate expression");
                    }
                    match cel::compile(&source, cel::Var::Claims, cel::Want::Bool) {
                        Ok(expression) => {
                            reads_verified |= expression.reads_claim("email_verified");
                            let message = r
                                .message
                                .unwrap_or_else(|| format!("expression {source:?} is false"));
                            out.push(ClaimRule::Expression {
                                expression,
                                message: Arc::from(message),
                            });
                        }
                        Err(e) => self.problem(&at.field("expression"), e),
                    }
                }
            }
        }
        (out, reads_verified)
    }

    fn user_rules(&mut self, raw: Vec<raw::UserValidationRule>) -> Vec<UserRule> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (i, r) in raw.into_iter().enumerate() {
            let at = self
                .at
                .field("userValidationRules")
                .index(i)
                .field("expression");
            if r.expression.is_empty() {
                self.problem(&at, "expression is required");
                continue;
            }
            if !seen.insert(r.expression.clone()) {
                self.problem(&at, "duplicate expression");
            }
            match cel::compile(&r.expression, cel::Var::User, cel::Want::Bool) {
                Ok(expression) => out.push(UserRule {
                    message: Arc::from(
                        r.message
                            .unwrap_or_else(|| format!("expression {:?} is false", r.expression)),
                    ),
                    expression,
                }),
                Err(e) => self.problem(&at, e),
            }
        }
        out
    }

    fn expression(&mut self, field: &FieldPath, source: &str) -> Option<cel::Expression> {
        match cel::compile(source, cel::Var::Claims, cel::Want::Any) {
            Ok(e) => Some(e),
            Err(e) => {
                self.problem(field, e);
                None
            }
        }
    }

    /// `username`/`groups`: claim with prefix, or expression.
    fn prefixed(
        &mut self,
        field: &FieldPath,
        raw: Option<raw::PrefixedClaimOrExpression>,
        required: bool,
    ) -> (Source, String) {
        let raw = raw.unwrap_or_default();
        match (
            raw.claim.filter(|c| !c.is_empty()),
            raw.expression.filter(|e| !e.is_empty()),
        ) {
            (Some(_), Some(_)) => {
                self.problem(field, "claim and expression can't both be set");
                (Source::none(), String::new())
            }
            (None, None) => {
                if required {
                    self.problem(field, "claim or expression is required");
                } else if raw.prefix.is_some() {
                    self.problem(
                        &field.field("prefix"),
                        "prefix can't be set when claim is not set",
                    );
                }
                (Source::none(), String::new())
            }
            (Some(claim), None) => {
                let prefix = raw.prefix.unwrap_or_else(|| {
                    self.problem(
                        &field.field("prefix"),
                        "prefix is required when claim is set. It can be set to an empty string to disable prefixing",
                    );
                    String::new()
                });
                (Source::Claims(vec![ClaimPath::literal(&claim)]), prefix)
            }
            (None, Some(source)) => {
                if raw.prefix.is_some() {
                    self.problem(
                        &field.field("prefix"),
                        "prefix can't be set when expression is set",
                    );
                }
                let e = self.expression(&field.field("expression"), &source);
                (
                    e.map_or_else(Source::none, Source::Expression),
                    String::new(),
                )
            }
        }
    }

    fn mappings(
        &mut self,
        raw: raw::ClaimMappings,
        rules_read_verified: bool,
    ) -> Option<ClaimMapping> {
        let at = self.at.field("claimMappings");
        let before = self.problems.len();
        let (username, username_prefix) = self.prefixed(&at.field("username"), raw.username, true);
        let (groups, groups_prefix) = self.prefixed(&at.field("groups"), raw.groups, false);
        let uid_raw = raw.uid.unwrap_or_default();
        let uid = match (
            uid_raw.claim.filter(|c| !c.is_empty()),
            uid_raw.expression.filter(|e| !e.is_empty()),
        ) {
            (Some(_), Some(_)) => {
                self.problem(&at.field("uid"), "claim and expression can't both be set");
                Source::none()
            }
            (None, None) => Source::none(),
            (Some(c), None) => Source::Claims(vec![ClaimPath::literal(&c)]),
            (None, Some(e)) => self
                .expression(&at.field("uid").field("expression"), &e)
                .map_or_else(Source::none, Source::Expression),
        };
        let mut extra = Vec::new();
        let mut keys = HashSet::new();
        let mut extra_reads_verified = false;
        for (i, x) in raw.extra.into_iter().enumerate() {
            let f = at.field("extra").index(i);
            if x.key.is_empty() {
                self.problem(&f.field("key"), "key is required");
            } else {
                self.extra_key(&f.field("key"), &x.key);
                if !keys.insert(x.key.clone()) {
                    self.problem(&f.field("key"), format!("duplicate key {:?}", x.key));
                }
            }
            if x.value_expression.is_empty() {
                self.problem(&f.field("valueExpression"), "valueExpression is required");
                continue;
            }
            if let Some(e) = self.expression(&f.field("valueExpression"), &x.value_expression) {
                extra_reads_verified |= e.reads_claim("email_verified");
                extra.push((x.key, Source::Expression(e)));
            }
        }
        // The apiserver's rule: a username from claims.email needs
        // email_verified looked at somewhere (the claim mapping does it
        // itself).
        if let Source::Expression(e) = &username
            && e.reads_claim("email")
            && !e.reads_claim("email_verified")
            && !extra_reads_verified
            && !rules_read_verified
        {
            self.problem(
                &at.field("username").field("expression"),
                "claims.email_verified must be used in claimMappings.username.expression or claimMappings.extra[*].valueExpression or claimValidationRules[*].expression when claims.email is used in claimMappings.username.expression",
            );
        }
        if self.problems.len() > before {
            return None;
        }
        Some(ClaimMapping {
            extra,
            ..ClaimMapping::of_claims_source(username, username_prefix, groups, groups_prefix, uid)
        })
    }

    /// A domain-prefixed path in lower case, not in k8s.io or
    /// kubernetes.io (the apiserver's rules, its messages).
    fn extra_key(&mut self, field: &FieldPath, key: &str) {
        let Some((domain, path)) = key.split_once('/') else {
            self.problem(
                field,
                format!("{key:?} must be a domain-prefixed path (such as \"acme.io/foo\")"),
            );
            return;
        };
        if path.is_empty() {
            self.problem(
                field,
                format!("{key:?} must be a domain-prefixed path (such as \"acme.io/foo\")"),
            );
        }
        if !is_dns1123_subdomain(domain) {
            self.problem(
                field,
                format!("{domain:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com')"),
            );
        }
        if key != key.to_lowercase() {
            self.problem(field, format!("{key:?}: key must be lowercase"));
        }
        let d = domain.to_lowercase();
        if ["kubernetes.io", "k8s.io"]
            .iter()
            .any(|k| d == *k || d.ends_with(&format!(".{k}")))
        {
            self.problem(
                field,
                format!("{key:?}: k8s.io, kubernetes.io and their subdomains are reserved for Kubernetes use"),
            );
        }
    }
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::Rejection;
    use crate::wire::UserInfo;
    use serde_json::{Value, json};

    const URL: &str = "https://example.com";

    fn file(issuer: &str, rest: &str) -> String {
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: AuthenticationConfiguration\njwt:\n- issuer:\n{issuer}{rest}"
        )
    }

    fn issuer_block() -> String {
        format!("    url: {URL}\n    audiences: [kubernetes]\n")
    }

    fn load(text: &str) -> Result<(Vec<config::Issuer>, Vec<Problem>), Vec<String>> {
        let mut problems = Problems::default();
        let mut warnings = Vec::new();
        let defaults = Defaults {
            max_key_age: std::time::Duration::from_secs(3600),
        };
        let out = issuers(text, "auth.yaml", &defaults, &mut problems, &mut warnings);
        match problems.or_value((), std::path::Path::new("c.yaml")) {
            Ok(()) => Ok((out, warnings)),
            Err(e) => Err(e.problems.iter().map(ToString::to_string).collect()),
        }
    }

    fn map(rest: &str, claims: Value) -> Result<UserInfo, Rejection> {
        let (issuers, _) = load(&file(&issuer_block(), rest)).unwrap();
        let c = claims.as_object().unwrap().clone();
        issuers[0].claims.map(&c).map(|m| m.user)
    }

    /// The claims of the documentation's "valid token" example.
    fn doc_claims() -> Value {
        json!({
            "aud": "kubernetes",
            "exp": 1703232949,
            "iat": 1701107233,
            "iss": "https://example.com",
            "jti": "7c337942807e73caa2c30c868ac0ce910bce02ddcbfebe8c23b8b5f27ad62873",
            "nbf": 1701107233,
            "roles": "user,admin",
            "sub": "authentication",
            "tenant": "72f988bf-86f1-41af-91ab-2d7cd011db4a",
            "username": "foo"
        })
    }

    const DOC_MAPPINGS: &str = r#"  claimMappings:
    username:
      expression: 'claims.username + ":external-user"'
    groups:
      expression: 'claims.roles.split(",")'
    uid:
      expression: 'claims.sub'
    extra:
    - key: 'example.com/tenant'
      valueExpression: 'claims.tenant'
"#;

    /// Every AuthenticationConfiguration example of the upstream
    /// documentation (structured authentication configuration, "JWT
    /// authenticator" and its "Examples" tabs), config and claims to user
    /// or refusal.
    #[test]
    fn golden_the_upstream_documentation_examples() {
        let user_rules = r#"  userValidationRules:
  - expression: "!user.username.startsWith('system:')"
    message: 'username cannot used reserved system: prefix'
  - expression: "user.groups.all(group, !group.startsWith('system:'))"
    message: 'groups cannot used reserved system: prefix'
"#;
        // "Valid token".
        let user = map(&format!("{DOC_MAPPINGS}{user_rules}"), doc_claims()).unwrap();
        assert_eq!(user.username, "foo:external-user");
        assert_eq!(user.uid.as_deref(), Some("authentication"));
        assert_eq!(user.groups, ["user", "admin"]);
        assert_eq!(
            user.extra["example.com/tenant"],
            ["72f988bf-86f1-41af-91ab-2d7cd011db4a"]
        );
        // "Fails claim validation": the token has no hd claim.
        let hd_rule = r#"  claimValidationRules:
  - expression: 'claims.hd == "example.com"'
    message: the hd claim must be set to example.com
"#;
        let r = map(&format!("{hd_rule}{DOC_MAPPINGS}"), doc_claims()).unwrap_err();
        assert_eq!(r.reason(), "cel_error", "{r}");
        let mut c = doc_claims();
        c["hd"] = json!("example.org");
        assert_eq!(
            map(&format!("{hd_rule}{DOC_MAPPINGS}"), c).unwrap_err(),
            Rejection::ClaimValidationFailed(Arc::from("the hd claim must be set to example.com"))
        );
        // "Fails user validation": "system:" + the username.
        let system = DOC_MAPPINGS.replace(
            r#"'claims.username + ":external-user"'"#,
            r#"'"system:" + claims.username'"#,
        );
        assert_eq!(
            map(&format!("{system}{user_rules}"), doc_claims()).unwrap_err(),
            Rejection::UserValidationFailed(Arc::from(
                "username cannot used reserved system: prefix"
            ))
        );
        // The reference example's rules: a required claim, and the token's
        // lifetime (this one lives 24 days).
        let reference = r#"  claimValidationRules:
  - claim: hd
    requiredValue: example.com
  - expression: 'claims.exp - claims.nbf <= 86400'
    message: total token lifetime must not exceed 24 hours
"#;
        let mut c = doc_claims();
        c["hd"] = json!("example.com");
        assert_eq!(
            map(&format!("{reference}{DOC_MAPPINGS}"), c.clone()).unwrap_err(),
            Rejection::ClaimValidationFailed(Arc::from(
                "total token lifetime must not exceed 24 hours"
            ))
        );
        c["exp"] = json!(1701107233 + 3600);
        assert!(map(&format!("{reference}{DOC_MAPPINGS}"), c.clone()).is_ok());
        c["hd"] = json!("example.org");
        assert_eq!(
            map(&format!("{reference}{DOC_MAPPINGS}"), c)
                .unwrap_err()
                .reason(),
            "claim_validation_failed"
        );
        // The reference example's note on claims.email: the rule that matches
        // what username.claim: email does by itself.
        let email = r#"  claimValidationRules:
  - expression: 'claims.?email_verified.orValue(true) == true'
  claimMappings:
    username:
      expression: 'claims.email'
"#;
        let mut c = doc_claims();
        c["email"] = json!("jane@example.com");
        assert_eq!(map(email, c.clone()).unwrap().username, "jane@example.com");
        c["email_verified"] = json!(false);
        assert_eq!(
            map(email, c.clone()).unwrap_err().reason(),
            "claim_validation_failed"
        );
        c["email_verified"] = json!("true");
        assert_eq!(
            map(email, c).unwrap_err().reason(),
            "claim_validation_failed"
        );
        // username.claim with a prefix, as --oidc-username-claim/-prefix.
        let flags = "  claimMappings:\n    username: {claim: sub, prefix: \"oidc:\"}\n    groups: {claim: roles, prefix: \"\"}\n";
        let user = map(flags, doc_claims()).unwrap();
        assert_eq!(user.username, "oidc:authentication");
        assert_eq!(user.groups, ["user,admin"]);
        assert_eq!(user.uid, None);
    }

    #[test]
    fn cel_failures_refuse_the_token_and_never_panic() {
        let rest = "  claimMappings:\n    username:\n      expression: 'claims.sub'\n    groups:\n      expression: 'dyn(claims.groups).map(g, dyn(claims.groups).map(h, g + h))'\n";
        let groups: Vec<String> = (0..3000).map(|i| format!("g{i}")).collect();
        let r = map(rest, json!({"sub": "s", "groups": groups})).unwrap_err();
        assert_eq!(r.reason(), "cel_error");
        assert!(r.to_string().contains("cost limit"), "{r}");
        for (expr, claims) in [
            ("claims.sub", json!({"sub": 7})),
            ("claims.sub", json!({})),
            ("claims.sub + 1", json!({"sub": "s"})),
            ("''", json!({})),
            (
                "claims.a / claims.b == 1 ? 'x' : 'y'",
                json!({"a": 1, "b": 0}),
            ),
        ] {
            let rest = format!("  claimMappings:\n    username:\n      expression: {expr:?}\n");
            let r = map(&rest, claims.clone()).unwrap_err();
            assert_eq!(r.reason(), "cel_error", "{expr} on {claims}: {r}");
        }
        let rest = "  claimMappings:\n    username: {claim: sub, prefix: \"\"}\n    groups:\n      expression: 'claims.sub'\n    uid:\n      expression: 'claims.n'\n    extra:\n    - key: example.com/x\n      valueExpression: 'claims.x'\n";
        let ok = json!({"sub": "s", "n": "1", "x": null});
        let user = map(rest, ok).unwrap();
        assert_eq!(user.groups, ["s"]);
        assert!(
            user.extra.is_empty(),
            "null and empty extra values are left out"
        );
        let r = map(rest, json!({"sub": "s", "n": 1, "x": "v"})).unwrap_err();
        assert!(
            r.to_string()
                .contains("claimMappings.uid.expression: must return a string"),
            "{r}"
        );
        let r = map(rest, json!({"sub": "s", "n": "1", "x": [1]})).unwrap_err();
        assert!(
            r.to_string()
                .contains("claimMappings.extra[example.com/x].valueExpression"),
            "{r}"
        );
    }

    /// One case for every validation rule: where, and what it says.
    #[test]
    fn golden_every_validation_rule() {
        let iss = issuer_block();
        let user = "  claimMappings:\n    username: {claim: sub, prefix: \"\"}\n";
        let with_user = |rest: &str| format!("{user}{rest}");
        let cases: Vec<(String, &str, &str)> = vec![
            (
                file(&iss, user).replace("apiserver.config.k8s.io/v1", "apiserver.config.k8s.io/v1alpha1"),
                "auth.yaml: apiVersion",
                "use apiserver.config.k8s.io/v1 or apiserver.config.k8s.io/v1beta1",
            ),
            (
                file(&iss, user).replace("kind: AuthenticationConfiguration", "kind: Other"),
                "auth.yaml: kind",
                "must be AuthenticationConfiguration",
            ),
            (
                file(&iss, &with_user("  claimsMapping: {}\n")),
                "auth.yaml",
                "unknown field `claimsMapping`",
            ),
            (
                format!(
                    "apiVersion: apiserver.config.k8s.io/v1\nkind: AuthenticationConfiguration\njwt:\n{}",
                    (0..65)
                        .map(|i| format!("- issuer: {{url: 'https://e{i}.example.com', audiences: [k]}}\n  claimMappings: {{username: {{claim: sub, prefix: ''}}}}\n"))
                        .collect::<String>()
                ),
                "auth.yaml: jwt",
                "has 65 entries: at most 64",
            ),
            (file("    audiences: [k]\n", user), "auth.yaml: jwt[0].issuer.url", "is required"),
            (
                file("    url: http://example.com\n    audiences: [k]\n", user),
                "auth.yaml: jwt[0].issuer.url",
                "URL must use the https scheme",
            ),
            (
                file("    url: https://example.com/?a=b\n    audiences: [k]\n", user),
                "auth.yaml: jwt[0].issuer.url",
                "must not contain a query",
            ),
            (
                file("    url: https://u:p@example.com/\n    audiences: [k]\n", user),
                "auth.yaml: jwt[0].issuer.url",
                "must not contain a username or password",
            ),
            (
                format!("{}- issuer: {{url: '{URL}', audiences: [k]}}\n{user}", file(&iss, user)),
                "auth.yaml: jwt[1].issuer.url",
                "duplicate issuer url",
            ),
            (
                file(&format!("{iss}    discoveryURL: {URL}\n"), user),
                "auth.yaml: jwt[0].issuer.discoveryURL",
                "discoveryURL must be different from URL",
            ),
            (
                file(&format!("{iss}    discoveryURL: http://d.example.com/x\n"), user),
                "auth.yaml: jwt[0].issuer.discoveryURL",
                "discoveryURL must use the https scheme",
            ),
            (
                format!(
                    "{}- issuer: {{url: 'https://two.example.com', discoveryURL: 'https://d.example.com/x', audiences: [k]}}\n{user}",
                    file(&format!("{iss}    discoveryURL: https://d.example.com/x\n"), user)
                ),
                "auth.yaml: jwt[1].issuer.discoveryURL",
                "duplicate discoveryURL",
            ),
            (
                file(&format!("    url: {URL}\n"), user),
                "auth.yaml: jwt[0].issuer.audiences",
                "at least one audience is required",
            ),
            (
                file(&format!("    url: {URL}\n    audiences: ['']\n    audienceMatchPolicy: MatchAny\n"), user),
                "auth.yaml: jwt[0].issuer.audiences[0]",
                "audience can't be empty",
            ),
            (
                file(&format!("    url: {URL}\n    audiences: [a, a]\n    audienceMatchPolicy: MatchAny\n"), user),
                "auth.yaml: jwt[0].issuer.audiences[1]",
                "duplicate audience",
            ),
            (
                file(&format!("    url: {URL}\n    audiences: [a, b]\n"), user),
                "auth.yaml: jwt[0].issuer.audienceMatchPolicy",
                "audienceMatchPolicy must be MatchAny for multiple audiences",
            ),
            (
                file(&format!("{iss}    audienceMatchPolicy: MatchAll\n"), user),
                "auth.yaml: jwt[0].issuer.audienceMatchPolicy",
                "the only value is MatchAny",
            ),
            (
                file(&format!("{iss}    certificateAuthority: not a PEM\n"), user),
                "auth.yaml: jwt[0].issuer.certificateAuthority",
                "",
            ),
            (
                file(&iss, &with_user("  claimValidationRules:\n  - {claim: hd, expression: 'true'}\n")),
                "auth.yaml: jwt[0].claimValidationRules[0]",
                "claim and expression can't both be set",
            ),
            (
                file(&iss, &with_user("  claimValidationRules:\n  - {message: m}\n")),
                "auth.yaml: jwt[0].claimValidationRules[0]",
                "claim or expression is required",
            ),
            (
                file(&iss, &with_user("  claimValidationRules:\n  - {claim: hd, requiredValue: x, message: m}\n")),
                "auth.yaml: jwt[0].claimValidationRules[0].message",
                "message can't be set when claim is set",
            ),
            (
                file(&iss, &with_user("  claimValidationRules:\n  - {claim: hd, requiredValue: x}\n  - {claim: hd, requiredValue: y}\n")),
                "auth.yaml: jwt[0].claimValidationRules[1].claim",
                "duplicate claim",
            ),
            (
                file(&iss, &with_user("  claimValidationRules:\n  - {expression: 'claims.hd'}\n")),
                "auth.yaml: jwt[0].claimValidationRules[0].expression",
                "must evaluate to bool",
            ),
            (
                file(&iss, &with_user("  claimValidationRules:\n  - {expression: 'claims.hd =='}\n")),
                "auth.yaml: jwt[0].claimValidationRules[0].expression",
                "compilation failed: ERROR: <input>:1:",
            ),
            (
                file(&iss, "  claimMappings:\n    groups: {claim: g, prefix: ''}\n"),
                "auth.yaml: jwt[0].claimMappings.username",
                "claim or expression is required",
            ),
            (
                file(&iss, "  claimMappings:\n    username: {claim: sub, expression: 'claims.sub'}\n"),
                "auth.yaml: jwt[0].claimMappings.username",
                "claim and expression can't both be set",
            ),
            (
                file(&iss, "  claimMappings:\n    username: {claim: sub}\n"),
                "auth.yaml: jwt[0].claimMappings.username.prefix",
                "prefix is required when claim is set",
            ),
            (
                file(&iss, "  claimMappings:\n    username: {expression: 'claims.sub', prefix: x}\n"),
                "auth.yaml: jwt[0].claimMappings.username.prefix",
                "prefix can't be set when expression is set",
            ),
            (
                file(&iss, &format!("{user}    groups: {{prefix: x}}\n")),
                "auth.yaml: jwt[0].claimMappings.groups.prefix",
                "prefix can't be set when claim is not set",
            ),
            (
                file(&iss, &format!("{user}    groups: {{claim: g}}\n")),
                "auth.yaml: jwt[0].claimMappings.groups.prefix",
                "prefix is required when claim is set",
            ),
            (
                file(&iss, &format!("{user}    uid: {{claim: sub, expression: 'claims.sub'}}\n")),
                "auth.yaml: jwt[0].claimMappings.uid",
                "claim and expression can't both be set",
            ),
            (
                file(&iss, &format!("{user}    groups:\n      expression: 'claims.groups.map(g, \"x:\" + g)'\n")),
                "auth.yaml: jwt[0].claimMappings.groups.expression",
                "expression of type 'any' cannot be range of a comprehension",
            ),
            (
                file(&iss, &format!("{user}    extra:\n    - valueExpression: 'claims.x'\n")),
                "auth.yaml: jwt[0].claimMappings.extra[0].key",
                "key is required",
            ),
            (
                file(&iss, &format!("{user}    extra:\n    - {{key: nodomain, valueExpression: 'claims.x'}}\n")),
                "auth.yaml: jwt[0].claimMappings.extra[0].key",
                "must be a domain-prefixed path",
            ),
            (
                file(&iss, &format!("{user}    extra:\n    - {{key: example.com/Upper, valueExpression: 'claims.x'}}\n")),
                "auth.yaml: jwt[0].claimMappings.extra[0].key",
                "key must be lowercase",
            ),
            (
                file(&iss, &format!("{user}    extra:\n    - {{key: authn.kubernetes.io/x, valueExpression: 'claims.x'}}\n")),
                "auth.yaml: jwt[0].claimMappings.extra[0].key",
                "k8s.io, kubernetes.io and their subdomains are reserved",
            ),
            (
                file(&iss, &format!("{user}    extra:\n    - {{key: example.com/x, valueExpression: 'claims.x'}}\n    - {{key: example.com/x, valueExpression: 'claims.y'}}\n")),
                "auth.yaml: jwt[0].claimMappings.extra[1].key",
                "duplicate key",
            ),
            (
                file(&iss, &format!("{user}    extra:\n    - {{key: example.com/x}}\n")),
                "auth.yaml: jwt[0].claimMappings.extra[0].valueExpression",
                "valueExpression is required",
            ),
            (
                file(&iss, &with_user("  userValidationRules:\n  - {message: m}\n")),
                "auth.yaml: jwt[0].userValidationRules[0].expression",
                "expression is required",
            ),
            (
                file(&iss, &with_user("  userValidationRules:\n  - {expression: 'user.username'}\n")),
                "auth.yaml: jwt[0].userValidationRules[0].expression",
                "must evaluate to bool",
            ),
            (
                file(&iss, &with_user("  userValidationRules:\n  - {expression: \"user.foo == 'x'\"}\n")),
                "auth.yaml: jwt[0].userValidationRules[0].expression",
                "undefined field 'foo'",
            ),
            (
                file(&iss, "  claimMappings:\n    username: {expression: 'claims.email'}\n"),
                "auth.yaml: jwt[0].claimMappings.username.expression",
                "claims.email_verified must be used in claimMappings.username.expression or claimMappings.extra[*].valueExpression or claimValidationRules[*].expression",
            ),
        ];
        for (text, path, message) in cases {
            let problems = load(&text).err().unwrap_or_else(|| panic!("valid: {text}"));
            assert!(
                problems.iter().any(
                    |p| p.starts_with(&format!("{path}: ")) && p.contains(message)
                        || (path == "auth.yaml"
                            && p.starts_with("auth.yaml: ")
                            && p.contains(message))
                ),
                "want {path}: ...{message}..., got {problems:#?}"
            );
        }
        // Fine: email with email_verified in a rule, or in an extra.
        for ok in [
            "  claimValidationRules:\n  - expression: 'claims.?email_verified.orValue(true) == true'\n  claimMappings:\n    username: {expression: 'claims.email'}\n",
            "  claimMappings:\n    username: {expression: 'claims.email'}\n    extra:\n    - {key: example.com/v, valueExpression: 'string(claims.?email_verified.orValue(true))'}\n",
            "  claimMappings:\n    username: {expression: 'claims.email_verified ? claims.email : \"\"'}\n",
        ] {
            load(&file(&iss, ok)).unwrap_or_else(|p| panic!("{ok}: {p:#?}"));
        }
    }

    #[test]
    fn names_come_from_the_url() {
        assert_eq!(
            issuer_name("https://dex.example.com:8443/dex"),
            "dex-example-com-8443-dex"
        );
        assert_eq!(issuer_name("https://Example.COM/"), "example-com");
        let long = format!("https://{}.example.com/", "a".repeat(80));
        let n = issuer_name(&long);
        assert_eq!(n.len(), 63, "{n}");
        assert_ne!(
            n,
            issuer_name(&format!("https://{}.example.com/x", "a".repeat(80)))
        );
    }
}
