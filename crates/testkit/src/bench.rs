//! For the benchmarks and the load tool: a key parsed by aws-lc-rs once,
//! to measure what jsonwebtoken's per-check key parsing costs.

use aws_lc_rs::signature::ParsedPublicKey;
use jsonwebtoken::{Algorithm, DecodingKey};

/// `key` parsed by aws-lc-rs once for `alg`, with
/// the parameters jsonwebtoken's aws-lc-rs backend uses. jsonwebtoken parses
/// the key on every check (for RSA about a tenth of an RS256 check here);
/// the service keeps jsonwebtoken for every check, as the project decided, so
/// this measures what that decision costs. `None` for HMAC, and for a
/// key aws-lc-rs refuses (jsonwebtoken's check then refuses it too).
pub fn parse_public_key(key: &DecodingKey, alg: Algorithm) -> Option<ParsedPublicKey> {
    use aws_lc_rs::signature as s;
    use jsonwebtoken::DecodingKeyKind;
    let rsa: Option<&'static s::RsaParameters> = match alg {
        Algorithm::RS256 => Some(&s::RSA_PKCS1_2048_8192_SHA256),
        Algorithm::RS384 => Some(&s::RSA_PKCS1_2048_8192_SHA384),
        Algorithm::RS512 => Some(&s::RSA_PKCS1_2048_8192_SHA512),
        Algorithm::PS256 => Some(&s::RSA_PSS_2048_8192_SHA256),
        Algorithm::PS384 => Some(&s::RSA_PSS_2048_8192_SHA384),
        Algorithm::PS512 => Some(&s::RSA_PSS_2048_8192_SHA512),
        _ => None,
    };
    let params: &'static dyn s::VerificationAlgorithm = match (rsa, alg) {
        (Some(r), _) => r,
        (None, Algorithm::ES256) => &s::ECDSA_P256_SHA256_FIXED,
        (None, Algorithm::ES384) => &s::ECDSA_P384_SHA384_FIXED,
        (None, Algorithm::EdDSA) => &s::ED25519,
        _ => return None,
    };
    match key.kind() {
        DecodingKeyKind::SecretOrDer(bytes) => ParsedPublicKey::new(params, bytes).ok(),
        DecodingKeyKind::RsaModulusExponent { n, e } => s::RsaPublicKeyComponents { n, e }
            .to_parsed_public_key(rsa?)
            .ok(),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use kube_authn_webhook::cmd::demo::issuer::DevKey;
    use kube_authn_webhook::keys::{from_jwks, from_pem};

    use super::*;

    /// The benchmarks' pre-parsed check answers exactly as jsonwebtoken's,
    /// for keys from a JWKS and from PEM, on good and tampered signatures, so
    /// comparing their speed compares the same work.
    #[test]
    fn parsed_keys_agree_with_jsonwebtoken() {
        kube_authn_webhook::install_crypto_providers();
        for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
            let dev = DevKey::generate(alg).expect("key");
            let token = dev.sign(&serde_json::json!({"sub": "x", "exp": 1}));
            let (input, sig) = token.rsplit_once('.').expect("jws");
            let mut bad = sig.to_owned().into_bytes();
            bad[3] = if bad[3] == b'A' { b'B' } else { b'A' };
            let bad = String::from_utf8(bad).expect("ascii");
            let doc = serde_json::json!({"keys": [dev.jwk.clone()]}).to_string();
            let (mut keys, skipped) = from_jwks(doc.as_bytes()).expect("jwks");
            assert!(skipped.is_empty());
            keys.extend(from_pem(dev.public_pem.as_bytes()).expect("pem"));
            for k in &keys {
                let parsed = parse_public_key(k.decoding_key(), alg).expect("parsed");
                for (s, want) in [(sig, true), (bad.as_str(), false), ("", false)] {
                    let by_parsed = URL_SAFE_NO_PAD
                        .decode(s)
                        .is_ok_and(|b| parsed.verify_sig(input.as_bytes(), &b).is_ok());
                    assert_eq!(by_parsed, want, "{alg:?}: parsed key");
                    assert_eq!(k.verify(input, s, alg), want, "{alg:?}: jsonwebtoken");
                }
                // Never across families.
                assert!(!k.verify(input, sig, Algorithm::HS256));
            }
        }
    }
}
