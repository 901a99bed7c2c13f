//! Config snippets the tests, benches and load tools share, so the Dex
//! issuer PCD-K runs is written once.

/// An `issuers:` entry for a Dex-like issuer as PCD-K configures it: Dex's
/// claims mapped (e-mail or name, groups, sub as uid, the connector id).
#[derive(Debug, Clone)]
pub struct DexIssuer<'a> {
    pub name: &'a str,
    pub url: &'a str,
    /// The issuer's CA bundle, relative to the config file.
    pub ca_file: &'a str,
    pub algorithms: &'a str,
    /// `jwks_min_refetch_interval`; `None` keeps the default (10s).
    pub min_refetch: Option<&'a str>,
    /// The username and groups prefix: `""` as PCD-K runs it (names as Dex
    /// sends them); give a second issuer in one config a prefix of its own.
    pub prefix: &'a str,
}

impl<'a> DexIssuer<'a> {
    /// The defaults the test harness uses: `ca.crt`, every algorithm the
    /// test issuer signs with, a 1s refetch interval so rotation tests are
    /// quick.
    pub fn new(name: &'a str, url: &'a str) -> DexIssuer<'a> {
        DexIssuer {
            name,
            url,
            ca_file: "ca.crt",
            algorithms: "[RS256, ES256, EdDSA]",
            min_refetch: Some("1s"),
            prefix: "",
        }
    }

    pub fn yaml(&self) -> String {
        let refetch = self
            .min_refetch
            .map(|r| format!("    jwks_min_refetch_interval: {r}\n"))
            .unwrap_or_default();
        format!(
            r#"
  - name: {name}
    kind: oidc
    url: {url}
    certificate_authority_file: {ca}
    audiences: [kubernetes]
    algorithms: {algs}
{refetch}    claims:
      username: {{claims: [email, name], prefix: "{prefix}"}}
      groups: {{claim: groups, prefix: "{prefix}"}}
      uid: {{claim: sub}}
      extra: {{"authn.k8s.io/connector-id": federated_claims.connector_id}}
"#,
            name = self.name,
            url = self.url,
            ca = self.ca_file,
            algs = self.algorithms,
            prefix = self.prefix,
        )
    }
}
