//! The `openshift-oauth` issuer: OpenShift OAuth access tokens (`sha256~...`,
//! what `oc login` and the web console hold) checked the way the OpenShift
//! OAuth server's own authenticator checks them, against the cluster's
//! `OAuthAccessToken` (oauth.openshift.io/v1), `User` and `Group`
//! (user.openshift.io/v1) objects, so tokens issued before the switch to
//! `Authentication.spec.type: None` keep working until they expire or are
//! deleted.
//!
//! Nothing here can be verified offline: every token the cache does not hold
//! costs API requests. So the token must look like one (base64url text after
//! `sha256~`) before anything is sent, lookups of new tokens are rate-limited
//! (over the limit: "could not check", which neither side caches, so a real
//! token is never refused for it), and refusals are cached like any other.
//! The token itself never leaves the process: requests carry the object name,
//! which is its hash (seed 004).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube_authn_common::clock::Clock;
use kube_authn_common::fs::read_bounded;
use serde::Deserialize;

use crate::config::{self, Problems};
use crate::metrics::Metrics;
use crate::verify::{Identity, Rejection, TokenFacts, Verified, VerifyError, encode_user};
use crate::wire::UserInfo;

/// What every OpenShift OAuth access token (and its object's name) starts with.
pub(crate) const TOKEN_PREFIX: &str = "sha256~";

/// The one `system:` group this issuer sets: OpenShift's own authenticator
/// adds it to every OAuth-token user, and RBAC in OpenShift clusters binds
/// to it (e.g. `system:oauth-token-deleter`, self-access reviews).
pub(crate) const OAUTH_GROUP: &str = "system:authenticated:oauth";

/// Where OpenShift's authenticator puts the token's scopes; OpenShift's
/// scope authorizer enforces them from there.
pub(crate) const SCOPES_EXTRA: &str = "scopes.authorization.openshift.io";

/// Longer than any token the OAuth server issues (43 characters after the
/// prefix); anything longer is not one of its tokens.
const MAX_TOKEN_REST: usize = 256;

/// Groups are listed in pages of this many, at most `MAX_GROUP_PAGES` pages:
/// a cluster with more groups gets "could not check" rather than an
/// unbounded listing per lookup.
const GROUP_PAGE: u32 = 500;
const MAX_GROUP_PAGES: usize = 100;

/// The object a token is stored as: `sha256~` + unpadded base64url of the
/// SHA-256 of the text after the prefix (seed 004).
pub(crate) fn object_name(rest: &str) -> String {
    let hash = crate::review::sha256(rest.as_bytes());
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(hash))
}

/// Whether the text after `sha256~` could be an OAuth server token
/// (base64url, not absurdly long): anything else is refused unlooked-at.
pub(crate) fn plausible(rest: &str) -> bool {
    (1..=MAX_TOKEN_REST).contains(&rest.len())
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The issuer as the reviewer takes it: its settings and the API server
/// client config (kubeconfig read and parsed, or the pod's in-cluster one).
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) spec: config::OAuthIssuer,
    client: kube::Config,
    /// Its settings and the kubeconfig's bytes: a reload keeps the running
    /// verifier (its cache entries and rate limit) while this is the same.
    pub(crate) identity: crate::prepare::FileHash,
}

impl Prepared {
    /// Reads the kubeconfig (bounded), or the in-cluster config; problems go
    /// to `problems` under the issuer's field.
    pub(crate) fn load(spec: config::OAuthIssuer, problems: &mut Problems) -> Option<Prepared> {
        let field = spec.field.field("kubeconfig");
        let kubeconfig_bytes = spec
            .kubeconfig
            .as_deref()
            .and_then(|p| read_bounded(p).ok());
        let loaded = match &spec.kubeconfig {
            Some(path) => from_kubeconfig(path),
            None => kube::Config::incluster().map_err(|e| {
                format!("no kubeconfig is set and there is no in-cluster config ({e}): run in a pod with its ServiceAccount token mounted, or set kubeconfig: PATH")
            }),
        };
        let mut client = match loaded {
            Ok(c) => c,
            Err(message) => {
                problems.add(&field, message);
                return None;
            }
        };
        // One deadline, api_timeout, bounds the whole lookup (`verify`), so
        // a slow API server is always reported as that; kube's own retries
        // would spend it on one request and hide the failure.
        client.connect_timeout = Some(spec.api_timeout);
        client.read_timeout = None;
        client.write_timeout = None;
        client.default_retry = false;
        // kube takes HTTPS_PROXY from the environment (set for the issuers,
        // perhaps); the API server is the cluster's own and reached directly.
        client.proxy_url = None;
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(format!("{spec:?}").as_bytes());
        if let Some(bytes) = &kubeconfig_bytes {
            ctx.update(bytes);
        }
        let mut identity = [0u8; 32];
        identity.copy_from_slice(ctx.finish().as_ref());
        Some(Prepared {
            spec,
            client,
            identity,
        })
    }
}

fn from_kubeconfig(path: &Path) -> Result<kube::Config, String> {
    let fail = |what: String| format!("{}: {what}", path.display());
    let bytes = read_bounded(path).map_err(|e| fail(format!("cannot read it: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".to_owned()))?;
    let mut kubeconfig =
        Kubeconfig::from_yaml(&text).map_err(|e| fail(format!("not a kubeconfig: {e}")))?;
    if kubeconfig
        .clusters
        .iter()
        .filter_map(|c| c.cluster.as_ref())
        .any(|c| c.proxy_url.is_some())
    {
        return Err(fail(
            "proxy-url is not supported: the API server is reached directly; remove it".to_owned(),
        ));
    }
    // Files it names are relative to it, as kubectl reads them.
    let base = path.parent().unwrap_or(Path::new("."));
    let absolute = |p: &mut Option<String>| {
        if let Some(s) = p.as_deref()
            && Path::new(s).is_relative()
        {
            *p = Some(base.join(s).to_string_lossy().into_owned());
        }
    };
    for c in kubeconfig
        .clusters
        .iter_mut()
        .filter_map(|c| c.cluster.as_mut())
    {
        absolute(&mut c.certificate_authority);
    }
    for a in kubeconfig
        .auth_infos
        .iter_mut()
        .filter_map(|a| a.auth_info.as_mut())
    {
        absolute(&mut a.client_certificate);
        absolute(&mut a.client_key);
        absolute(&mut a.token_file);
    }
    let options = KubeConfigOptions::default();
    let loading = kube::Config::from_custom_kubeconfig(kubeconfig, &options);
    // An async fn that reads nothing further (the files it names are read
    // when the client is built): it is ready at its first poll.
    let mut loading = std::pin::pin!(loading);
    match loading
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Ok(c)) => Ok(c),
        Poll::Ready(Err(e)) => Err(fail(format!("cannot use it: {e}"))),
        Poll::Pending => Err(fail(
            "this kubeconfig needs asynchronous loading, which is not supported here".to_owned(),
        )),
    }
}

/// The API server client cannot be set up from the kubeconfig (bad
/// certificate or key data, say).
#[derive(Debug, thiserror::Error)]
#[error("issuer {issuer}: cannot set up the API server client: {source}")]
pub struct ClientError {
    issuer: String,
    source: kube::Error,
}

// --- The three OpenShift objects, only the fields used -----------------------

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OAuthAccessToken {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    user_name: String,
    #[serde(default, rename = "userUID")]
    user_uid: String,
    #[serde(default)]
    expires_in: i64,
    #[serde(default)]
    inactivity_timeout_seconds: Option<i64>,
    #[serde(default)]
    scopes: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct User {
    #[serde(default)]
    metadata: ObjectMeta,
    /// Deprecated in favour of Group objects, but OpenShift's authenticator
    /// still adds these, so they count here too.
    #[serde(default)]
    groups: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
struct Group {
    #[serde(default)]
    metadata: ObjectMeta,
    /// `null` in a group without members.
    #[serde(default)]
    users: Option<Vec<String>>,
}

/// `kube::Resource` by hand: the derive would bring in schema generation.
macro_rules! cluster_resource {
    ($t:ty, $group:literal, $kind:literal, $plural:literal) => {
        impl kube::Resource for $t {
            type DynamicType = ();
            type Scope = kube::core::ClusterResourceScope;
            fn kind(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($kind)
            }
            fn group(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($group)
            }
            fn version(_: &()) -> Cow<'_, str> {
                Cow::Borrowed("v1")
            }
            fn plural(_: &()) -> Cow<'_, str> {
                Cow::Borrowed($plural)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
cluster_resource!(
    OAuthAccessToken,
    "oauth.openshift.io",
    "OAuthAccessToken",
    "oauthaccesstokens"
);
cluster_resource!(User, "user.openshift.io", "User", "users");
cluster_resource!(Group, "user.openshift.io", "Group", "groups");

// --- Checking a token ----------------------------------------------------------

/// Lookups of tokens the cache does not hold: `rate` a second, `rate` at
/// once, on the reviewer's clock.
struct Bucket {
    rate: u64,
    tokens: u64,
    last: u64,
}

impl Bucket {
    fn take(&mut self, now: u64) -> bool {
        if now > self.last {
            let refill = (now - self.last).saturating_mul(self.rate);
            self.tokens = self.tokens.saturating_add(refill).min(self.rate);
            self.last = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

pub(crate) struct OAuthVerifier {
    pub(crate) name: Arc<str>,
    tokens: Api<OAuthAccessToken>,
    users: Api<User>,
    groups: Api<Group>,
    positive_ttl: Duration,
    api_timeout: Duration,
    bucket: Mutex<Bucket>,
    /// Lookups run here, not on the actix worker that asked, so the
    /// client's connections live on a runtime that outlives the request.
    runtime: tokio::runtime::Handle,
    /// `Prepared::identity` of what it was built from.
    pub(crate) identity: crate::prepare::FileHash,
    /// Its verdicts are cached under this (see `IssuerVerifier::generation`).
    pub(crate) generation: u64,
}

/// How a lookup ended short of an identity.
enum Failed {
    Refused(Rejection),
    /// Could not check: what went wrong, for the apiserver's log and ours.
    Unavailable(String),
}

impl From<Rejection> for Failed {
    fn from(r: Rejection) -> Failed {
        Failed::Refused(r)
    }
}

impl OAuthVerifier {
    /// Must be called within `runtime` (the client starts a task on it).
    pub(crate) fn new(
        prepared: &Prepared,
        metrics: &Metrics,
        clock: &Clock,
        runtime: &tokio::runtime::Handle,
    ) -> Result<OAuthVerifier, ClientError> {
        let spec = &prepared.spec;
        let _inside = runtime.enter();
        let client =
            kube::Client::try_from(prepared.client.clone()).map_err(|source| ClientError {
                issuer: spec.name.clone(),
                source,
            })?;
        metrics.register_issuer(&spec.name);
        let rate = u64::from(spec.max_lookups_per_second);
        Ok(OAuthVerifier {
            name: Arc::from(spec.name.as_str()),
            tokens: Api::all(client.clone()),
            users: Api::all(client.clone()),
            groups: Api::all(client),
            positive_ttl: spec.positive_ttl,
            api_timeout: spec.api_timeout,
            bucket: Mutex::new(Bucket {
                rate,
                tokens: rate,
                last: clock.now(),
            }),
            runtime: runtime.clone(),
            identity: prepared.identity,
            generation: crate::verify::next_generation(),
        })
    }

    /// Checks the token whose text after `sha256~` is `rest` (already found
    /// `plausible`), at `now`: a lookup if the rate allows one.
    pub(crate) async fn verify(&self, rest: &str, now: u64) -> Result<Verified, VerifyError> {
        let allowed = self.bucket.lock().map(|mut b| b.take(now)).unwrap_or(false);
        if !allowed {
            return Err(VerifyError::RateLimited {
                issuer: self.name.clone(),
            });
        }
        let name = object_name(rest);
        let lookup = Lookup {
            issuer: self.name.clone(),
            tokens: self.tokens.clone(),
            users: self.users.clone(),
            groups: self.groups.clone(),
            positive_ttl: self.positive_ttl,
        };
        let deadline = self.api_timeout;
        let task = self.runtime.spawn(async move {
            tokio::time::timeout(deadline, lookup.run(&name, now))
                .await
                .unwrap_or_else(|_| {
                    Err(Failed::Unavailable(format!(
                        "no answer within api_timeout ({deadline:?})"
                    )))
                })
        });
        let unavailable = |what: String| VerifyError::ApiUnavailable {
            issuer: self.name.clone(),
            what,
        };
        match task.await {
            Ok(Ok(verified)) => Ok(verified),
            Ok(Err(Failed::Refused(r))) => Err(r.into()),
            Ok(Err(Failed::Unavailable(what))) => Err(unavailable(what)),
            Err(e) => Err(unavailable(format!("the lookup task failed: {e}"))),
        }
    }
}

/// One lookup's handles, moved onto the runtime.
struct Lookup {
    issuer: Arc<str>,
    tokens: Api<OAuthAccessToken>,
    users: Api<User>,
    groups: Api<Group>,
    positive_ttl: Duration,
}

impl Lookup {
    /// OpenShift's token validators, in its order: the token object exists,
    /// is not being deleted, has not expired nor timed out; its user exists
    /// with the UID the token was issued to; then the user's groups.
    async fn run(self, name: &str, now: u64) -> Result<Verified, Failed> {
        let token = get_object(&self.tokens, name)
            .await?
            .ok_or(Rejection::TokenNotFound)?;
        if token.metadata.deletion_timestamp.is_some() {
            return Err(Rejection::TokenBeingDeleted.into());
        }
        let created = token
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .ok_or(Rejection::InvalidClaim("creationTimestamp"))?;
        let now_i = i64::try_from(now).unwrap_or(i64::MAX);
        // Valid while now < the end, as the JWT checks; OpenShift compares
        // in nanoseconds, so at the very second both refuse or nearly.
        let expires = (token.expires_in > 0).then(|| created.saturating_add(token.expires_in));
        if expires.is_some_and(|end| now_i >= end) {
            return Err(Rejection::Expired.into());
        }
        // The OAuth server moved this forward as the token was used; nobody
        // does once it is gone (we only read), so a token with an inactivity
        // timeout ends at the value last recorded.
        let times_out = token
            .inactivity_timeout_seconds
            .filter(|t| *t > 0)
            .map(|t| created.saturating_add(t));
        if times_out.is_some_and(|end| now_i >= end) {
            return Err(Rejection::TokenInactive.into());
        }
        let username = token.user_name.as_str();
        if username.is_empty() || username.contains(['/', '%']) {
            return Err(Rejection::InvalidClaim("userName").into());
        }
        // OpenShift refuses such user names; should one appear, it is not
        // ours to hand out.
        if username.starts_with("system:") {
            return Err(Rejection::SystemUsername.into());
        }
        let user = get_object(&self.users, username)
            .await?
            .ok_or(Rejection::UserNotFound)?;
        let uid = user.metadata.uid.unwrap_or_default();
        // A user deleted and created again under the same name is someone
        // else: the token was issued to the old UID.
        if uid.is_empty() || uid != token.user_uid {
            return Err(Rejection::UserUidMismatch.into());
        }
        let (mut groups, dropped) = self
            .groups_of(username, user.groups.unwrap_or_default())
            .await?;
        groups.push(OAUTH_GROUP.to_owned());
        let mut extra = BTreeMap::new();
        if !token.scopes.is_empty() {
            extra.insert(SCOPES_EXTRA.to_owned(), token.scopes);
        }
        // What the revocation list and the audit trail read: the user's
        // name and groups; the token's creation stands for `iat`, so a
        // not-before entry for this issuer logs everyone out.
        let facts = TokenFacts::new(None, Some(created), username, &groups, None, None);
        let user = encode_user(&UserInfo {
            username: username.to_owned(),
            uid: Some(uid),
            groups,
            extra,
        })?;
        let ttl_end = now.saturating_add(self.positive_ttl.as_secs());
        let expires_at = [expires, times_out]
            .into_iter()
            .flatten()
            .map(|e| u64::try_from(e).unwrap_or(0))
            .fold(ttl_end, u64::min);
        Ok(Verified {
            identity: Identity {
                issuer: self.issuer,
                user,
                token_audiences: crate::verify::no_audiences(),
                expires_at,
                // Not audience-aware, like OpenShift's own: valid for the
                // apiserver's audiences only (status.audiences empty).
                trust_implicit_audience: true,
                key: None,
                facts,
            },
            dropped_system_groups: dropped,
        })
    }

    /// The names of the groups that list `username`, and the User's own
    /// (deprecated) `groups`, sorted, without `system:` ones (counted: no
    /// group should be named so).
    async fn groups_of(
        &self,
        username: &str,
        mut names: Vec<String>,
    ) -> Result<(Vec<String>, usize), Failed> {
        let mut params = ListParams::default().limit(GROUP_PAGE);
        for _ in 0..MAX_GROUP_PAGES {
            let page = self.groups.list(&params).await.map_err(api_error)?;
            for g in page.items {
                if g.users.iter().flatten().any(|u| u == username)
                    && let Some(n) = g.metadata.name
                {
                    names.push(n);
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(next) => params = params.continue_token(&next),
                None => {
                    // An empty name is never a group (as for JWT groups).
                    names.retain(|n| !n.is_empty());
                    let before = names.len();
                    names.retain(|n| !n.starts_with("system:"));
                    let dropped = before - names.len();
                    names.sort();
                    names.dedup();
                    return Ok((names, dropped));
                }
            }
        }
        Err(Failed::Unavailable(format!(
            "more than {} groups: too many to list per lookup",
            GROUP_PAGE as usize * MAX_GROUP_PAGES
        )))
    }
}

/// The object, or `None` when the API server says it does not exist: a
/// NotFound `Status` naming it. Any other 404 (a path nobody serves, e.g.
/// the OpenShift API missing) says nothing about the token and is "could not
/// check", like every other failure.
async fn get_object<K>(api: &Api<K>, name: &str) -> Result<Option<K>, Failed>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get(name).await {
        Ok(object) => Ok(Some(object)),
        Err(kube::Error::Api(s))
            if s.reason == "NotFound" && s.details.as_ref().is_some_and(|d| d.name == name) =>
        {
            Ok(None)
        }
        Err(e) => Err(api_error(e)),
    }
}

/// Every API failure is "could not check": the token may be fine.
fn api_error(e: kube::Error) -> Failed {
    Failed::Unavailable(match e {
        kube::Error::Api(s) if s.code == 401 || s.code == 403 => format!(
            "the API server refused the webhook ({} {}): check the ServiceAccount's ClusterRole (get oauthaccesstokens and users, list groups)",
            s.code, s.reason
        ),
        kube::Error::Api(s) => format!("the API server answered {} {}", s.code, s.reason),
        other => format!("cannot reach the API server: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of issue 15, worked out as seed 004 describes.
    #[test]
    fn the_object_name_is_the_hash_of_the_token() {
        assert_eq!(
            object_name("r4nd0m-t0ken-value"),
            "sha256~ADL632sC5pnBsQN-p68jeywkiJhxWo_UiknJyhOruUg"
        );
    }

    #[test]
    fn only_base64url_text_is_looked_up() {
        assert!(plausible("r4nd0m-t0ken-value"));
        assert!(plausible(&"a".repeat(43)));
        for bad in ["", "a b", "a/b", "a%2F", "a.b.c", "ä", &"a".repeat(257)] {
            assert!(!plausible(bad), "{bad}");
        }
    }

    #[test]
    fn the_bucket_refills_with_the_clock_up_to_its_rate() {
        let mut b = Bucket {
            rate: 2,
            tokens: 2,
            last: 100,
        };
        assert!(b.take(100) && b.take(100));
        assert!(!b.take(100));
        assert!(b.take(101));
        assert!(b.take(101));
        assert!(!b.take(101));
        // A long pause refills to the rate, not beyond.
        assert!(b.take(1_000) && b.take(1_000));
        assert!(!b.take(1_000));
    }
}
