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
                    issuer: url,
                    discovery_url: discovery,
                },
                fetch_timeout: config::DEFAULT_FETCH_TIMEOUT,
                min_refetch_interval: config::DEFAULT_MIN_REFETCH,
                max_response_bytes: config::MAX_JWKS_BYTES,
                max_key_age: defaults.max_key_age,
                jwks_hosts: hosts,
            }),
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
