//! Turning verified claims into a Kubernetes user.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::Rejection;
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

#[derive(Debug, Clone)]
pub(crate) struct ClaimMapping {
    /// The first of these that is present names the user.
    pub(crate) username: Vec<ClaimPath>,
    pub(crate) username_prefix: String,
    /// The first of these that is present lists the groups.
    pub(crate) groups: Vec<ClaimPath>,
    pub(crate) groups_prefix: String,
    /// The first of these that is present is the uid; empty: no uid. When
    /// set, a token without a (non-empty string) uid is refused.
    pub(crate) uid: Vec<ClaimPath>,
    pub(crate) extra: Vec<(String, ClaimPath)>,
    /// `email_verified: "true"`, a string, counts as verified (issuers that
    /// write booleans as strings); off by default, as in the kube-apiserver.
    pub(crate) email_verified_accepts_string: bool,
}

pub(crate) struct Mapped {
    pub(crate) user: UserInfo,
    /// Groups left out because they would have started with `system:`.
    pub(crate) dropped_system_groups: usize,
}

impl ClaimMapping {
    /// The mapping in words, for `explain`.
    pub(crate) fn describe(&self) -> String {
        let list = |paths: &[ClaimPath]| {
            paths
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut s = format!(
            "username: first present of [{}], prefix {:?}; groups: first present of [{}], prefix {:?}",
            list(&self.username),
            self.username_prefix,
            list(&self.groups),
            self.groups_prefix
        );
        if !self.uid.is_empty() {
            s.push_str(&format!("; uid: first present of [{}]", list(&self.uid)));
        }
        s
    }

    pub(crate) fn map(&self, claims: &Map<String, Value>) -> Result<Mapped, Rejection> {
        let (path, name) = self.username(claims)?;
        // Dex sets email_verified beside email; an address not known to be
        // verified must not become somebody's identity.
        if path.is("email") {
            self.email_verified(claims.get("email_verified"))?;
        }
        let username = format!("{}{}", self.username_prefix, name);
        if username.starts_with("system:") {
            return Err(Rejection::SystemUsername);
        }

        let mut groups = Vec::new();
        let mut dropped = 0;
        for g in self.group_names(claims)? {
            let g = format!("{}{}", self.groups_prefix, g);
            if g.starts_with("system:") {
                dropped += 1;
            } else {
                groups.push(g);
            }
        }

        let uid = self.uid(claims)?;

        let mut extra = BTreeMap::new();
        for (key, path) in &self.extra {
            let values: Vec<String> = match path.lookup(claims) {
                Some(Value::Array(items)) => items.iter().filter_map(scalar_string).collect(),
                Some(v) => scalar_string(v).into_iter().collect(),
                None => Vec::new(),
            };
            if !values.is_empty() {
                extra.insert(key.clone(), values);
            }
        }

        Ok(Mapped {
            user: UserInfo {
                username,
                uid,
                groups,
                extra,
            },
            dropped_system_groups: dropped,
        })
    }

    /// The first username claim that is present and not empty ("" is
    /// absent: Platform9 sends an empty email for users without one). One
    /// that is present but not a string refuses the token rather than
    /// falling through to the next claim.
    fn username<'c>(
        &self,
        claims: &'c Map<String, Value>,
    ) -> Result<(&ClaimPath, &'c str), Rejection> {
        for p in &self.username {
            match p.lookup(claims) {
                None => {}
                Some(Value::String(s)) if s.is_empty() => {}
                Some(Value::String(s)) => return Ok((p, s)),
                Some(_) => return Err(Rejection::InvalidClaim("username")),
            }
        }
        Err(Rejection::NoUsername)
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

    /// The first groups claim present (`null` is absent): a string is one
    /// group, an array of strings the groups. Any other shape refuses the
    /// token: dropping it would hand a deny-by-group policy a user without
    /// the group it denies. Empty names are left out.
    fn group_names<'c>(&self, claims: &'c Map<String, Value>) -> Result<Vec<&'c str>, Rejection> {
        let names = match self.groups.iter().find_map(|p| p.lookup(claims)) {
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
    fn uid(&self, claims: &Map<String, Value>) -> Result<Option<String>, Rejection> {
        if self.uid.is_empty() {
            return Ok(None);
        }
        match self.uid.iter().find_map(|p| p.lookup(claims)) {
            None => Err(Rejection::MissingClaim("uid")),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(Rejection::InvalidClaim("uid")),
        }
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
            username: p(user),
            username_prefix: prefix.to_owned(),
            groups: p(&["groups", "roles"]),
            groups_prefix: prefix.to_owned(),
            uid: p(&["sub"]),
            extra: vec![(
                "k/connector".to_owned(),
                ClaimPath::parse("federated.connector_id").unwrap(),
            )],
            email_verified_accepts_string: false,
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
        let unverified = Some(Rejection::EmailUnverified);
        let invalid = Some(Rejection::InvalidClaim("email_verified"));
        for (v, want_strict, want_lenient) in [
            (None, None, None),
            (Some(json!(true)), None, None),
            (Some(json!(false)), unverified, unverified),
            (Some(json!(null)), unverified, unverified),
            (Some(json!("true")), invalid, None),
            (Some(json!("false")), invalid, unverified),
            (Some(json!("TRUE")), invalid, invalid),
            (Some(json!("yes")), invalid, invalid),
            (Some(json!("no")), invalid, invalid),
            (Some(json!(1)), invalid, invalid),
            (Some(json!(0)), invalid, invalid),
            (Some(json!([true])), invalid, invalid),
            (Some(json!([false])), invalid, invalid),
            (Some(json!({})), invalid, invalid),
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
            uid: Vec::new(),
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
