//! Turning verified claims into a Kubernetes user.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use std::sync::Arc;

use super::Rejection;
use crate::cel;
use crate::wire::UserInfo;

/// A claim name, or a dotted path into nested objects
/// (`federated_claims.connector_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClaimPath(Vec<String>);

impl ClaimPath {
    pub(crate) fn parse(s: &str) -> Option<ClaimPath> {
        let parts: Vec<String> = s.split('.').map(str::to_owned).collect();
        if parts.iter().any(|p| p.is_empty()) {
            return None;
        }
        Some(ClaimPath(parts))
    }

    /// One claim by its name as written, dots and all (an
    /// AuthenticationConfiguration's `claim`).
    pub(crate) fn literal(name: &str) -> ClaimPath {
        ClaimPath(vec![name.to_owned()])
    }

    pub(crate) fn lookup<'a>(&self, claims: &'a Map<String, Value>) -> Option<&'a Value> {
        let (first, rest) = self.0.split_first()?;
        let mut v = claims.get(first)?;
        for part in rest {
            v = v.as_object()?.get(part)?;
        }
        (!v.is_null()).then_some(v)
    }

    fn is(&self, name: &str) -> bool {
        self.0.len() == 1 && self.0[0] == name
    }
}

impl std::fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

/// Where one part of the user comes from: claims (the first present wins)
/// or a CEL expression over `claims`.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    Claims(Vec<ClaimPath>),
    Expression(cel::Expression),
}

impl Source {
    pub(crate) fn none() -> Source {
        Source::Claims(Vec::new())
    }

    fn expression(&self) -> Option<&cel::Expression> {
        match self {
            Source::Expression(e) => Some(e),
            Source::Claims(_) => None,
        }
    }
}

/// One `claimValidationRules` entry.
#[derive(Debug, Clone)]
pub(crate) enum ClaimRule {
    /// The claim must be a string equal to `value`.
    Required { claim: String, value: String },
    /// The expression must be true; `message` is the refusal's reason.
    Expression {
        expression: cel::Expression,
        message: Arc<str>,
    },
}

/// One `userValidationRules` entry.
#[derive(Debug, Clone)]
pub(crate) struct UserRule {
    pub(crate) expression: cel::Expression,
    pub(crate) message: Arc<str>,
}

#[derive(Debug, Clone)]
pub(crate) struct ClaimMapping {
    /// The first of these claims that is present names the user, or the
    /// expression does.
    pub(crate) username: Source,
    /// Applies to a username from claims (an expression writes its own).
    pub(crate) username_prefix: String,
    /// The first of these that is present lists the groups.
    pub(crate) groups: Source,
    pub(crate) groups_prefix: String,
    /// The first of these that is present is the uid; empty: no uid. When
    /// set, a token without a (non-empty string) uid is refused.
    pub(crate) uid: Source,
    pub(crate) extra: Vec<(String, Source)>,
    /// `email_verified: "true"`, a string, counts as verified (issuers that
    /// write booleans as strings); off by default, as in the kube-apiserver.
    pub(crate) email_verified_accepts_string: bool,
    /// Checked before the user is mapped.
    pub(crate) claim_rules: Vec<ClaimRule>,
    /// Checked on the mapped user.
    pub(crate) user_rules: Vec<UserRule>,
    /// The claims the expressions can read (`None` inner: any), found once.
    pub(crate) cel_fields: std::sync::OnceLock<Option<Vec<String>>>,
}

pub(crate) struct Mapped {
    pub(crate) user: UserInfo,
    /// Groups left out because they would have started with `system:`.
    pub(crate) dropped_system_groups: usize,
}

/// The claims as CEL sees them, bound once per token and only if an
/// expression needs them.
struct CelClaims<'a> {
    claims: &'a Map<String, Value>,
    /// Only these are bound, when known.
    fields: Option<&'a [String]>,
    bound: Option<cel::Bindings<'a>>,
}

impl CelClaims<'_> {
    fn eval(&mut self, e: &cel::Expression, what: &str) -> Result<cel::Value, Rejection> {
        let (claims, fields) = (self.claims, self.fields);
        let bound = self.bound.get_or_insert_with(|| match fields {
            Some(f) => cel::Bindings::claims_only(claims, f),
            None => cel::Bindings::claims(claims),
        });
        e.eval(bound).map_err(|err| cel_error(what, &err))
    }
}

fn cel_error(what: &str, err: &str) -> Rejection {
    Rejection::CelError(Arc::from(format!("{what}: {err}")))
}

impl ClaimMapping {
    /// The mapping in words, for `explain`.
    pub(crate) fn describe(&self) -> String {
        let source = |s: &Source| match s {
            Source::Claims(paths) => format!(
                "first present of [{}]",
                paths
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Source::Expression(e) => format!("expression {:?}", e.source),
        };
        let mut s = format!(
            "username: {}, prefix {:?}; groups: {}, prefix {:?}",
            source(&self.username),
            self.username_prefix,
            source(&self.groups),
            self.groups_prefix
        );
        if !matches!(&self.uid, Source::Claims(p) if p.is_empty()) {
            s.push_str(&format!("; uid: {}", source(&self.uid)));
        }
        if !self.claim_rules.is_empty() || !self.user_rules.is_empty() {
            s.push_str(&format!(
                "; {} claim validation rule(s), {} user validation rule(s)",
                self.claim_rules.len(),
                self.user_rules.len()
            ));
        }
        s
    }

    /// A mapping without rules or extra: what every issuer starts from.
    pub(crate) fn of_claims_source(
        username: Source,
        username_prefix: String,
        groups: Source,
        groups_prefix: String,
        uid: Source,
    ) -> ClaimMapping {
        ClaimMapping {
            username,
            username_prefix,
            groups,
            groups_prefix,
            uid,
            extra: Vec::new(),
            email_verified_accepts_string: false,
            claim_rules: Vec::new(),
            user_rules: Vec::new(),
            cel_fields: std::sync::OnceLock::new(),
        }
    }

    /// Every claims expression of this mapping.
    fn claim_expressions(&self) -> impl Iterator<Item = &cel::Expression> {
        [&self.username, &self.groups, &self.uid]
            .into_iter()
            .chain(self.extra.iter().map(|(_, s)| s))
            .filter_map(Source::expression)
            .chain(self.claim_rules.iter().filter_map(|r| match r {
                ClaimRule::Expression { expression, .. } => Some(expression),
                ClaimRule::Required { .. } => None,
            }))
    }

    fn cel_fields(&self) -> Option<&[String]> {
        self.cel_fields
            .get_or_init(|| {
                let mut all = Vec::new();
                for e in self.claim_expressions() {
                    all.extend(e.claim_fields()?);
                }
                all.sort();
                all.dedup();
                Some(all)
            })
            .as_deref()
    }

    pub(crate) fn map(&self, claims: &Map<String, Value>) -> Result<Mapped, Rejection> {
        let mut cel_claims = CelClaims {
            claims,
            fields: self.cel_fields(),
            bound: None,
        };
        for rule in &self.claim_rules {
            self.claim_rule(rule, &mut cel_claims)?;
        }
        let username = match &self.username {
            Source::Claims(paths) => {
                let (path, name) = username(paths, claims)?;
                // Dex sets email_verified beside email; an address not known
                // to be verified must not become somebody's identity.
                if path.is("email") {
                    self.email_verified(claims.get("email_verified"))?;
                }
                format!("{}{}", self.username_prefix, name)
            }
            Source::Expression(e) => {
                match cel_claims.eval(e, "claimMappings.username.expression")? {
                    cel::Value::String(s) if !s.is_empty() => s.to_string(),
                    cel::Value::String(_) => {
                        return Err(cel_error(
                            "claimMappings.username.expression",
                            "an empty username is not allowed",
                        ));
                    }
                    _ => {
                        return Err(cel_error(
                            "claimMappings.username.expression",
                            "must return a string",
                        ));
                    }
                }
            }
        };
        let names: Vec<String> = match &self.groups {
            Source::Claims(paths) => group_names(paths, claims)?
                .into_iter()
                .map(|g| format!("{}{}", self.groups_prefix, g))
                .collect(),
            Source::Expression(e) => {
                let what = "claimMappings.groups.expression";
                string_list(&cel_claims.eval(e, what)?, false)
                    .ok_or_else(|| cel_error(what, "must return a string or a list of strings"))?
            }
        };

        let uid = match &self.uid {
            Source::Claims(paths) => uid(paths, claims)?,
            Source::Expression(e) => {
                let what = "claimMappings.uid.expression";
                match cel_claims.eval(e, what)? {
                    cel::Value::String(s) => Some(s.to_string()),
                    _ => return Err(cel_error(what, "must return a string")),
                }
            }
        };

        let mut extra = BTreeMap::new();
        for (key, source) in &self.extra {
            let values: Vec<String> = match source {
                Source::Claims(paths) => match paths.iter().find_map(|p| p.lookup(claims)) {
                    Some(Value::Array(items)) => items.iter().filter_map(scalar_string).collect(),
                    Some(v) => scalar_string(v).into_iter().collect(),
                    None => Vec::new(),
                },
                Source::Expression(e) => {
                    let what = format!("claimMappings.extra[{key}].valueExpression");
                    string_list(&cel_claims.eval(e, &what)?, true).ok_or_else(|| {
                        cel_error(&what, "must return a string or a list of strings")
                    })?
                }
            };
            if !values.is_empty() {
                extra.insert(key.clone(), values);
            }
        }

        let mut user = UserInfo {
            username,
            uid,
            groups: names,
            extra,
        };
        // The rules see the user as mapped, as upstream's do (so a rule
        // refusing system: names gives its message); what Kubernetes
        // reserves is refused or left out after.
        self.user_rules(&user)?;
        if user.username.starts_with("system:") {
            return Err(Rejection::SystemUsername);
        }
        let before = user.groups.len();
        user.groups.retain(|g| !g.starts_with("system:"));
        let dropped = before - user.groups.len();
        Ok(Mapped {
            user,
            dropped_system_groups: dropped,
        })
    }

    fn claim_rule(
        &self,
        rule: &ClaimRule,
        cel_claims: &mut CelClaims<'_>,
    ) -> Result<(), Rejection> {
        match rule {
            ClaimRule::Required { claim, value } => match cel_claims.claims.get(claim) {
                Some(Value::String(s)) if s == value => Ok(()),
                Some(Value::String(_)) | None => Err(Rejection::ClaimValidationFailed(Arc::from(
                    format!("required claim {claim} not found in the token"),
                ))),
                Some(_) => Err(Rejection::ClaimValidationFailed(Arc::from(format!(
                    "claim {claim} is not a string"
                )))),
            },
            ClaimRule::Expression {
                expression,
                message,
            } => match cel_claims.eval(expression, "claimValidationRules[].expression")? {
                cel::Value::Bool(true) => Ok(()),
                cel::Value::Bool(false) => Err(Rejection::ClaimValidationFailed(message.clone())),
                _ => Err(cel_error(
                    "claimValidationRules[].expression",
                    "must return a bool",
                )),
            },
        }
    }

    fn user_rules(&self, user: &UserInfo) -> Result<(), Rejection> {
        if self.user_rules.is_empty() {
            return Ok(());
        }
        let value = cel::Bindings::user(user);
        for rule in &self.user_rules {
            let what = "userValidationRules[].expression";
            match rule
                .expression
                .eval(&value)
                .map_err(|e| cel_error(what, &e))?
            {
                cel::Value::Bool(true) => {}
                cel::Value::Bool(false) => {
                    return Err(Rejection::UserValidationFailed(rule.message.clone()));
                }
                _ => return Err(cel_error(what, "must return a bool")),
            }
        }
        Ok(())
    }

    /// Absent is fine (the issuer did not say); present, only `true` is
    /// verified (and `"true"` when the issuer opts in). `false` and `null`
    /// are "not verified"; any other value is not an answer at all.
    fn email_verified(&self, v: Option<&Value>) -> Result<(), Rejection> {
        match v {
            None | Some(Value::Bool(true)) => Ok(()),
            Some(Value::Bool(false) | Value::Null) => Err(Rejection::EmailUnverified),
            Some(Value::String(s)) if self.email_verified_accepts_string => match s.as_str() {
                "true" => Ok(()),
                "false" => Err(Rejection::EmailUnverified),
                _ => Err(Rejection::InvalidClaim("email_verified")),
            },
            Some(_) => Err(Rejection::InvalidClaim("email_verified")),
        }
    }
}

/// The first username claim that is present and not empty ("" is absent:
/// Platform9 sends an empty email for users without one). One that is
/// present but not a string refuses the token rather than falling through
/// to the next claim.
fn username<'p, 'c>(
    paths: &'p [ClaimPath],
    claims: &'c Map<String, Value>,
) -> Result<(&'p ClaimPath, &'c str), Rejection> {
    for p in paths {
        match p.lookup(claims) {
            None => {}
            Some(Value::String(s)) if s.is_empty() => {}
            Some(Value::String(s)) => return Ok((p, s)),
            Some(_) => return Err(Rejection::InvalidClaim("username")),
        }
    }
    Err(Rejection::NoUsername)
}

/// The first groups claim present (`null` is absent): a string is one
/// group, an array of strings the groups. Any other shape refuses the
/// token: dropping it would hand a deny-by-group policy a user without the
/// group it denies. Empty names are left out.
fn group_names<'c>(
    paths: &[ClaimPath],
    claims: &'c Map<String, Value>,
) -> Result<Vec<&'c str>, Rejection> {
    let names = match paths.iter().find_map(|p| p.lookup(claims)) {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().ok_or(Rejection::InvalidClaim("groups")))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Rejection::InvalidClaim("groups")),
    };
    Ok(names.into_iter().filter(|g| !g.is_empty()).collect())
}

/// With a uid mapping, the first uid claim present must be a non-empty
/// string: a missing one is not turned into "", a number not into text.
fn uid(paths: &[ClaimPath], claims: &Map<String, Value>) -> Result<Option<String>, Rejection> {
    if paths.is_empty() {
        return Ok(None);
    }
    match paths.iter().find_map(|p| p.lookup(claims)) {
        None => Err(Rejection::MissingClaim("uid")),
        Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
        Some(_) => Err(Rejection::InvalidClaim("uid")),
    }
}

/// A CEL result as strings: a string is one, a list of strings is them;
/// with `null_is_none` (extra values), `null` and `""` are none, and so is
/// every `""` in a list.
fn string_list(v: &cel::Value, null_is_none: bool) -> Option<Vec<String>> {
    match v {
        cel::Value::String(s) if null_is_none && s.is_empty() => Some(Vec::new()),
        cel::Value::String(s) => Some(vec![s.to_string()]),
        cel::Value::Null if null_is_none => Some(Vec::new()),
        cel::Value::List(items) => items
            .iter()
            .filter_map(|i| match i {
                // Extra values leave out empty strings, as upstream.
                cel::Value::String(s) if null_is_none && s.is_empty() => None,
                cel::Value::String(s) => Some(Some(s.to_string())),
                _ => Some(None),
            })
            .collect(),
        _ => None,
    }
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapping(user: &[&str], prefix: &str) -> ClaimMapping {
        let p = |names: &[&str]| names.iter().map(|n| ClaimPath::parse(n).unwrap()).collect();
        ClaimMapping {
            extra: vec![(
                "k/connector".to_owned(),
                Source::Claims(vec![ClaimPath::parse("federated.connector_id").unwrap()]),
            )],
            ..ClaimMapping::of_claims_source(
                Source::Claims(p(user)),
                prefix.to_owned(),
                Source::Claims(p(&["groups", "roles"])),
                prefix.to_owned(),
                Source::Claims(p(&["sub"])),
            )
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn first_present_username_claim_wins() {
        let m = mapping(&["email", "name"], "");
        let u = m
            .map(&claims(json!({"name": "jane", "email": "", "sub": "s"})))
            .unwrap()
            .user;
        assert_eq!(u.username, "jane", "an empty email is absent");
        let u = m
            .map(&claims(json!({"name": "jane", "email": null, "sub": "s"})))
            .unwrap()
            .user;
        assert_eq!(u.username, "jane", "a null email is absent");
        let u = m
            .map(&claims(json!({"name": "jane", "email": "j@x", "sub": "s"})))
            .unwrap()
            .user;
        assert_eq!(u.username, "j@x");
        assert_eq!(
            m.map(&claims(json!({"sub": "s"}))).err(),
            Some(Rejection::NoUsername)
        );
        // Present but not a string: refused, not skipped for the next claim.
        for email in [json!(5), json!(["j@x"]), json!({"a": "j@x"}), json!(true)] {
            let c = claims(json!({"name": "jane", "email": email, "sub": "s"}));
            assert_eq!(
                m.map(&c).err(),
                Some(Rejection::InvalidClaim("username")),
                "{email}"
            );
        }
    }

    #[test]
    fn only_true_is_a_verified_email() {
        let verdict = |m: &ClaimMapping, v: Option<Value>| {
            let mut c = json!({"email": "j@x", "sub": "s"});
            if let Some(v) = v {
                c["email_verified"] = v;
            }
            m.map(&claims(c)).map(|_| ()).err()
        };
        let strict = mapping(&["email", "name"], "");
        let lenient = ClaimMapping {
            email_verified_accepts_string: true,
            ..mapping(&["email", "name"], "")
        };
        const UNVERIFIED: Option<Rejection> = Some(Rejection::EmailUnverified);
        const INVALID: Option<Rejection> = Some(Rejection::InvalidClaim("email_verified"));
        for (v, want_strict, want_lenient) in [
            (None, None, None),
            (Some(json!(true)), None, None),
            (Some(json!(false)), UNVERIFIED, UNVERIFIED),
            (Some(json!(null)), UNVERIFIED, UNVERIFIED),
            (Some(json!("true")), INVALID, None),
            (Some(json!("false")), INVALID, UNVERIFIED),
            (Some(json!("TRUE")), INVALID, INVALID),
            (Some(json!("yes")), INVALID, INVALID),
            (Some(json!("no")), INVALID, INVALID),
            (Some(json!(1)), INVALID, INVALID),
            (Some(json!(0)), INVALID, INVALID),
            (Some(json!([true])), INVALID, INVALID),
            (Some(json!([false])), INVALID, INVALID),
            (Some(json!({})), INVALID, INVALID),
        ] {
            assert_eq!(verdict(&strict, v.clone()), want_strict, "{v:?}");
            assert_eq!(
                verdict(&lenient, v.clone()),
                want_lenient,
                "{v:?} (opted in)"
            );
        }
        // Only when email is the username.
        let by_name = mapping(&["name"], "");
        let c = claims(json!({"name": "jane", "email": "j@x", "email_verified": 0, "sub": "s"}));
        assert_eq!(by_name.map(&c).unwrap().user.username, "jane");
    }

    #[test]
    fn groups_string_or_list_with_prefix_and_system_dropped() {
        let m = mapping(&["username"], "efa:");
        let out = m
            .map(&claims(
                json!({"username": "a", "sub": "s", "roles": "SystemAdmin"}),
            ))
            .unwrap();
        assert_eq!(out.user.groups, vec!["efa:SystemAdmin"]);
        let m = mapping(&["username"], "");
        let out = m
            .map(&claims(
                json!({"username": "a", "sub": "s", "groups": ["x", "system:masters", ""]}),
            ))
            .unwrap();
        assert_eq!(out.user.groups, vec!["x"]);
        assert_eq!(out.dropped_system_groups, 1);
        for absent in [json!({}), json!({"groups": null}), json!({"groups": []})] {
            let mut c = absent.clone();
            c["username"] = json!("a");
            c["sub"] = json!("s");
            assert_eq!(m.map(&claims(c)).unwrap().user.groups, Vec::<String>::new());
        }
        // null is absent, so the next groups claim is read.
        let c = claims(json!({"username": "a", "sub": "s", "groups": null, "roles": ["r"]}));
        assert_eq!(m.map(&c).unwrap().user.groups, vec!["r"]);
    }

    #[test]
    fn malformed_groups_refuse_the_token() {
        let m = mapping(&["username"], "");
        for groups in [
            json!({"admins": true}),
            json!(["x", 1]),
            json!(["x", null]),
            json!([["x"]]),
            json!(["x", {"name": "y"}]),
            json!(7),
            json!(true),
        ] {
            let c = claims(json!({"username": "a", "sub": "s", "groups": groups.clone()}));
            assert_eq!(
                m.map(&c).err(),
                Some(Rejection::InvalidClaim("groups")),
                "{groups}"
            );
            // Nor does a malformed first claim fall through to the next one.
            let c = claims(json!({"username": "a", "sub": "s", "groups": groups, "roles": "r"}));
            assert_eq!(m.map(&c).err(), Some(Rejection::InvalidClaim("groups")));
        }
    }

    #[test]
    fn a_mapped_uid_is_a_non_empty_string() {
        let m = mapping(&["username"], "");
        let out = m
            .map(&claims(
                json!({"username": "a", "sub": "s-1", "federated": {"connector_id": "ldap"}}),
            ))
            .unwrap();
        assert_eq!(out.user.uid.as_deref(), Some("s-1"));
        assert_eq!(out.user.extra["k/connector"], vec!["ldap"]);
        for (sub, want) in [
            (None, Rejection::MissingClaim("uid")),
            (Some(json!(null)), Rejection::MissingClaim("uid")),
            (Some(json!(42)), Rejection::InvalidClaim("uid")),
            (Some(json!("")), Rejection::InvalidClaim("uid")),
            (Some(json!(["s"])), Rejection::InvalidClaim("uid")),
            (Some(json!({"id": "s"})), Rejection::InvalidClaim("uid")),
            (Some(json!(true)), Rejection::InvalidClaim("uid")),
        ] {
            let mut c = json!({"username": "a"});
            if let Some(sub) = sub.clone() {
                c["sub"] = sub;
            }
            assert_eq!(m.map(&claims(c)).err(), Some(want), "{sub:?}");
        }
        // Without a uid mapping, no uid and no requirement.
        let none = ClaimMapping {
            uid: Source::none(),
            ..mapping(&["username"], "")
        };
        let out = none
            .map(&claims(json!({"username": "a", "sub": 42})))
            .unwrap();
        assert_eq!(out.user.uid, None);
        assert!(ClaimPath::parse("a..b").is_none());
        assert!(ClaimPath::parse("").is_none());
    }

    #[test]
    fn system_usernames_are_refused() {
        let m = mapping(&["username"], "");
        assert_eq!(
            m.map(&claims(json!({"username": "system:admin", "sub": "s"})))
                .err(),
            Some(Rejection::SystemUsername)
        );
    }
}
