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

#[derive(Debug, Clone)]
pub(crate) struct ClaimMapping {
    /// The first of these that is present names the user.
    pub(crate) username: Vec<ClaimPath>,
    pub(crate) username_prefix: String,
    /// The first of these that is present lists the groups.
    pub(crate) groups: Vec<ClaimPath>,
    pub(crate) groups_prefix: String,
    pub(crate) uid: Vec<ClaimPath>,
    pub(crate) extra: Vec<(String, ClaimPath)>,
}

pub(crate) struct Mapped {
    pub(crate) user: UserInfo,
    /// Groups left out because they would have started with `system:`.
    pub(crate) dropped_system_groups: usize,
}

impl ClaimMapping {
    pub(crate) fn map(&self, claims: &Map<String, Value>) -> Result<Mapped, Rejection> {
        let (path, name) = self
            .username
            .iter()
            .find_map(|p| match p.lookup(claims) {
                Some(Value::String(s)) if !s.is_empty() => Some((p, s.as_str())),
                _ => None,
            })
            .ok_or(Rejection::NoUsername)?;
        // Dex sets email_verified beside email; an unverified address must not
        // become somebody's identity.
        if path.is("email") && is_false(claims.get("email_verified")) {
            return Err(Rejection::EmailUnverified);
        }
        let username = format!("{}{}", self.username_prefix, name);
        if username.starts_with("system:") {
            return Err(Rejection::SystemUsername);
        }

        let mut groups = Vec::new();
        let mut dropped = 0;
        if let Some(v) = self.groups.iter().find_map(|p| p.lookup(claims)) {
            let names: Vec<&str> = match v {
                Value::String(s) => vec![s.as_str()],
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            for g in names.into_iter().filter(|g| !g.is_empty()) {
                let g = format!("{}{}", self.groups_prefix, g);
                if g.starts_with("system:") {
                    dropped += 1;
                } else {
                    groups.push(g);
                }
            }
        }

        let uid = self
            .uid
            .iter()
            .find_map(|p| p.lookup(claims).and_then(scalar_string));

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
}

fn is_false(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => !b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("false"),
        _ => false,
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
        }
    }

    fn claims(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn first_present_username_claim_wins() {
        let m = mapping(&["email", "name"], "");
        let u = m
            .map(&claims(json!({"name": "jane", "email": ""})))
            .unwrap()
            .user;
        assert_eq!(u.username, "jane", "an empty email is absent");
        let u = m
            .map(&claims(json!({"name": "jane", "email": "j@x"})))
            .unwrap()
            .user;
        assert_eq!(u.username, "j@x");
        assert_eq!(
            m.map(&claims(json!({"sub": "s"}))).err(),
            Some(Rejection::NoUsername)
        );
    }

    #[test]
    fn unverified_email_refused_only_when_email_is_the_username() {
        let m = mapping(&["email", "name"], "");
        for v in [json!(false), json!("false"), json!("FALSE")] {
            let c = claims(json!({"email": "j@x", "email_verified": v}));
            assert_eq!(m.map(&c).err(), Some(Rejection::EmailUnverified));
        }
        let by_name = mapping(&["name"], "");
        let c = claims(json!({"name": "jane", "email": "j@x", "email_verified": false}));
        assert_eq!(by_name.map(&c).unwrap().user.username, "jane");
    }

    #[test]
    fn groups_string_or_list_with_prefix_and_system_dropped() {
        let m = mapping(&["username"], "efa:");
        let out = m
            .map(&claims(json!({"username": "a", "roles": "SystemAdmin"})))
            .unwrap();
        assert_eq!(out.user.groups, vec!["efa:SystemAdmin"]);
        let m = mapping(&["username"], "");
        let out = m
            .map(&claims(
                json!({"username": "a", "groups": ["x", "system:masters", 3, ""]}),
            ))
            .unwrap();
        assert_eq!(out.user.groups, vec!["x"]);
        assert_eq!(out.dropped_system_groups, 1);
    }

    #[test]
    fn system_usernames_are_refused() {
        let m = mapping(&["username"], "");
        assert_eq!(
            m.map(&claims(json!({"username": "system:admin"}))).err(),
            Some(Rejection::SystemUsername)
        );
    }

    #[test]
    fn uid_and_nested_extra() {
        let m = mapping(&["username"], "");
        let out = m
            .map(&claims(
                json!({"username": "a", "sub": 42, "federated": {"connector_id": "ldap"}}),
            ))
            .unwrap();
        assert_eq!(out.user.uid.as_deref(), Some("42"));
        assert_eq!(out.user.extra["k/connector"], vec!["ldap"]);
        assert!(ClaimPath::parse("a..b").is_none());
        assert!(ClaimPath::parse("").is_none());
    }
}
