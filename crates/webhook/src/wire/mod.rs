//! The TokenReview wire format, v1 and v1beta1 (identical fields). Our own
//! types: k8s-openapi has no v1beta1, and the apiserver sends `metadata` and an
//! empty `status` that a strict decoder would trip on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub(crate) const KIND: &str = "TokenReview";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiVersion {
    V1,
    V1beta1,
}

impl ApiVersion {
    pub fn parse(s: &str) -> Option<ApiVersion> {
        match s {
            "authentication.k8s.io/v1" => Some(ApiVersion::V1),
            "authentication.k8s.io/v1beta1" => Some(ApiVersion::V1beta1),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ApiVersion::V1 => "authentication.k8s.io/v1",
            ApiVersion::V1beta1 => "authentication.k8s.io/v1beta1",
        }
    }

    /// For metric and log labels.
    pub(crate) fn short(self) -> &'static str {
        match self {
            ApiVersion::V1 => "v1",
            ApiVersion::V1beta1 => "v1beta1",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenReviewRequest {
    #[serde(default)]
    pub(crate) api_version: String,
    #[serde(default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) spec: Option<TokenReviewSpec>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub(crate) struct TokenReviewSpec {
    #[serde(default)]
    pub(crate) token: String,
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenReviewResponse<'a> {
    pub(crate) api_version: &'static str,
    pub(crate) kind: &'static str,
    pub(crate) status: TokenReviewStatus<'a>,
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct TokenReviewStatus<'a> {
    pub(crate) authenticated: bool,
    /// A `UserInfo`, encoded once when the token was verified.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) user: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) audiences: Vec<String>,
    /// Set only when the token could not be checked: the apiserver logs it and
    /// does not cache the answer. A definite "no" leaves it empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserInfo {
    pub(crate) username: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uid: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) groups: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) extra: BTreeMap<String, Vec<String>>,
}
