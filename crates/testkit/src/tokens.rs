//! Tokens and keys beyond what the issuer serves: refused-token floods, the
//! EFA "JWT certificate", and keys parsed once for the benchmarks.

use jsonwebtoken::Algorithm;
use kube_authn_webhook::cmd::demo::issuer::{DevKey, dex_claims};
use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PKCS_RSA_SHA256};
use serde_json::json;

/// A self-signed X.509 certificate for `key`, like the "JWT certificate"
/// EFA distributes.
pub fn efa_certificate_pem(key: &DevKey, common_name: &str) -> Result<String, String> {
    let alg = match key.alg {
        Algorithm::RS256 => &PKCS_RSA_SHA256,
        Algorithm::ES256 => &PKCS_ECDSA_P256_SHA256,
        _ => &PKCS_ED25519,
    };
    let kp = KeyPair::from_pkcs8_der_and_sign_algo(&key.pkcs8_der().into(), alg)
        .map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "Extreme Networks");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    Ok(params.self_signed(&kp).map_err(|e| e.to_string())?.pem())
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    let _ = aws_lc_rs::rand::fill(&mut buf);
    hex::encode(buf)
}

/// The `i`th token of a refused-token flood, a third of each kind that is
/// refused before any key lookup: not a JWT, a JWT from an issuer nobody
/// configured, and an expired token of `issuer`. All distinct.
pub fn refused_token(i: usize, issuer: &str, now: u64, key: &DevKey) -> String {
    match i % 3 {
        0 => format!("garbage-{i}-{}", random_hex(96)),
        1 => key.sign(&dex_claims(
            "https://unknown.example.com/dex",
            now,
            Some(&format!("mallory{i}@example.com")),
            "mallory",
            &["developers"],
        )),
        _ => {
            let mut c = dex_claims(
                issuer,
                now - 2 * 86_400,
                Some(&format!("old{i}@example.com")),
                "old",
                &["developers"],
            );
            c["exp"] = json!(now - 86_400);
            key.sign(&c)
        }
    }
}
