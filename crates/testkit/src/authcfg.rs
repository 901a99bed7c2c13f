//! AuthenticationConfiguration fixtures: the file around `jwt[]` entries,
//! the configs and claims of the differential test (ours against the
//! kube-apiserver's authenticator), kept here so the corpus is in one place.

use serde_json::{Value, json};

/// An AuthenticationConfiguration (`apiVersion`, v1beta1 for the oracle,
/// which predates v1) with one `jwt[]` entry for `url`, its CA inline and
/// audience `kubernetes`, and `rest`: the entry's other keys, indented by
/// four spaces.
pub fn file(api_version: &str, url: &str, ca_pem: &str, rest: &str) -> String {
    let ca: String = ca_pem.lines().map(|l| format!("        {l}\n")).collect();
    format!(
        "apiVersion: apiserver.config.k8s.io/{api_version}\nkind: AuthenticationConfiguration\njwt:\n  - issuer:\n      url: {url}\n      audiences: [kubernetes]\n      certificateAuthority: |\n{ca}{rest}"
    )
}

/// The differential test's configs: name and `jwt[]` keys besides the
/// issuer. Claim mappings as the apiserver flags write them, prefixes, the
/// upstream documentation's CEL example, and validation rules.
pub const CONFIGS: &[(&str, &str)] = &[
    (
        "claims",
        r#"    claimMappings:
      username: {claim: email, prefix: ""}
      groups: {claim: groups, prefix: ""}
      uid: {claim: sub}
"#,
    ),
    (
        "prefixes",
        r#"    claimMappings:
      username: {claim: sub, prefix: "oidc:"}
      groups: {claim: groups, prefix: "oidc:"}
"#,
    ),
    (
        "cel",
        r#"    claimMappings:
      username:
        expression: 'claims.username + ":external-user"'
      groups:
        expression: 'claims.roles.split(",")'
      uid:
        expression: 'claims.sub'
      extra:
      - key: 'example.com/tenant'
        valueExpression: 'claims.tenant'
    userValidationRules:
    - expression: "!user.username.startsWith('system:')"
      message: 'username cannot used reserved system: prefix'
    - expression: "user.groups.all(group, !group.startsWith('system:'))"
      message: 'groups cannot used reserved system: prefix'
"#,
    ),
    (
        "cel-lists",
        r#"    claimMappings:
      username:
        expression: 'claims.sub'
      groups:
        expression: 'claims.roles.split(",").map(r, "role:" + r)'
      uid:
        expression: 'claims.?uid.orValue(claims.sub)'
      extra:
      - key: example.com/tenant
        valueExpression: 'claims.tenant'
      - key: example.com/domain
        valueExpression: 'claims.email.split("@")[1]'
    userValidationRules:
    - expression: "user.groups.size() > 0"
      message: 'a user needs a role'
"#,
    ),
    (
        "rules",
        r#"    claimValidationRules:
    - claim: hd
      requiredValue: example.com
    - expression: 'claims.?email_verified.orValue(true) == true'
      message: the email must be verified
    - expression: 'claims.exp - claims.iat <= 86400'
      message: total token lifetime must not exceed 24 hours
    claimMappings:
      username:
        expression: 'claims.email'
      groups:
        expression: 'has(claims.groups) ? dyn(claims.groups).map(g, "oidc:" + g) : []'
      uid:
        claim: sub
      extra:
      - key: example.com/groups
        valueExpression: 'has(claims.groups) ? claims.groups : []'
      - key: example.com/hd
        valueExpression: 'claims.?hd.orValue("")'
"#,
    ),
];

/// The claims every corpus token starts from, for issuer `url` at `now`:
/// what each config maps (email, groups, sub, username, roles, tenant, hd).
pub fn base_claims(url: &str, now: u64) -> Value {
    json!({
        "iss": url,
        "sub": "CiQ2YmE3YjgxMC05ZGFkLTExZDEtODBiNC0wMGMwNGZkNDMwYzgSB2RlZmF1bHQ",
        "aud": "kubernetes",
        "exp": now + 3600,
        "iat": now,
        "nbf": now,
        "email": "jane@example.com",
        "email_verified": true,
        "groups": ["developers", "admins"],
        "username": "foo",
        "roles": "user,admin",
        "tenant": "72f988bf-86f1-41af-91ab-2d7cd011db4a",
        "hd": "example.com",
    })
}

/// Claims to set on a token (`None` removes the claim).
pub type Edits = Vec<(&'static str, Option<Value>)>;

/// The claim edits of the corpus, by name.
pub fn claim_edits(now: u64) -> Vec<(&'static str, Edits)> {
    let n = now as i64;
    let set = |k: &'static str, v: Value| vec![(k, Some(v))];
    let del = |k: &'static str| vec![(k, None)];
    vec![
        ("valid", vec![]),
        ("aud array", set("aud", json!(["kubernetes"]))),
        (
            "aud among others",
            set("aud", json!(["other", "kubernetes"])),
        ),
        ("aud other", set("aud", json!("other"))),
        ("aud empty array", set("aud", json!([]))),
        ("aud missing", del("aud")),
        ("exp 10s ago", set("exp", json!(n - 10))),
        ("exp 1s ago", set("exp", json!(n - 1))),
        ("exp in 60s", set("exp", json!(n + 60))),
        ("exp missing", del("exp")),
        ("nbf in 30s", set("nbf", json!(n + 30))),
        ("nbf in 10m", set("nbf", json!(n + 600))),
        ("iat two days ago", set("iat", json!(n - 2 * 86_400))),
        (
            "iss other",
            set("iss", json!("https://elsewhere.example.com/dex")),
        ),
        ("iss missing", del("iss")),
        ("email_verified false", set("email_verified", json!(false))),
        (
            "email_verified \"true\"",
            set("email_verified", json!("true")),
        ),
        ("email_verified missing", del("email_verified")),
        ("email missing", del("email")),
        ("groups a string", set("groups", json!("developers"))),
        ("groups empty", set("groups", json!([]))),
        ("groups null", set("groups", Value::Null)),
        ("groups missing", del("groups")),
        ("groups nested", set("groups", json!([["a"]]))),
        (
            "groups with system:masters",
            set("groups", json!(["developers", "system:masters"])),
        ),
        (
            "groups with an empty name",
            set("groups", json!(["developers", ""])),
        ),
        ("email empty", set("email", json!(""))),
        ("groups an object", set("groups", json!({"a": "b"}))),
        ("hd other", set("hd", json!("example.org"))),
        ("hd missing", del("hd")),
        ("roles one", set("roles", json!("user"))),
        ("roles a number", set("roles", json!(7))),
        ("username missing", del("username")),
        ("username system:", set("username", json!("system"))),
        ("tenant missing", del("tenant")),
        ("tenant a list", set("tenant", json!(["t1", "t2"]))),
        ("sub missing", del("sub")),
        ("sub a number", set("sub", json!(42))),
    ]
}
