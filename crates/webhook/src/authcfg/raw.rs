//! An AuthenticationConfiguration as written (`apiserver.config.k8s.io/v1`
//! and `v1beta1`: the `jwt[]` fields are the same), decoded strictly as the
//! kube-apiserver does: an unknown field is an error.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct AuthenticationConfiguration {
    pub(crate) api_version: Option<String>,
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) jwt: Vec<Jwt>,
    /// The apiserver's anonymous authenticator: nothing a webhook does.
    pub(crate) anonymous: Option<serde_norway::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Jwt {
    pub(crate) issuer: Issuer,
    #[serde(default)]
    pub(crate) claim_validation_rules: Vec<ClaimValidationRule>,
    #[serde(default)]
    pub(crate) claim_mappings: ClaimMappings,
    #[serde(default)]
    pub(crate) user_validation_rules: Vec<UserValidationRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct Issuer {
    #[serde(default)]
    pub(crate) url: String,
    #[serde(rename = "discoveryURL")]
    pub(crate) discovery_url: Option<String>,
    pub(crate) certificate_authority: Option<String>,
    #[serde(default)]
    pub(crate) audiences: Vec<String>,
    pub(crate) audience_match_policy: Option<String>,
    /// The apiserver's egress selector: a webhook connects directly.
    pub(crate) egress_selector_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ClaimValidationRule {
    pub(crate) claim: Option<String>,
    pub(crate) required_value: Option<String>,
    pub(crate) expression: Option<String>,
    pub(crate) message: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ClaimMappings {
    pub(crate) username: Option<PrefixedClaimOrExpression>,
    pub(crate) groups: Option<PrefixedClaimOrExpression>,
    pub(crate) uid: Option<ClaimOrExpression>,
    #[serde(default)]
    pub(crate) extra: Vec<ExtraMapping>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct PrefixedClaimOrExpression {
    pub(crate) claim: Option<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) expression: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ClaimOrExpression {
    pub(crate) claim: Option<String>,
    pub(crate) expression: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct ExtraMapping {
    #[serde(default)]
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value_expression: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(crate) struct UserValidationRule {
    #[serde(default)]
    pub(crate) expression: String,
    pub(crate) message: Option<String>,
}
