//! Ed25519 public keys that must never be trusted. aws-lc-rs checks a
//! signature against any 32 bytes it is given; a small-order point (the
//! identity, for one) lets anyone make a "signature" that verifies for every
//! message, and an encoding that is not a point verifies nothing. Both are
//! refused when the key is loaded. Field arithmetic is num-bigint's; this runs
//! once per key per fetch, never per token.

use num_bigint::BigUint;

/// The y coordinate of the order-8 points (little-endian, as encoded); the
/// other order-8 points have y = p - this. With y = 0 (order 4), 1 (the
/// identity) and p - 1 (order 2) these are every small-order point
/// (the torsion subgroup has 8 points), whatever the sign bit says.
const ORDER_8_Y: [u8; 32] = [
    0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0,
    0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05,
];

/// Why a raw Ed25519 public key (RFC 8032 5.1.2 encoding) cannot be trusted,
/// if it cannot: not 32 bytes, y not reduced mod p (a non-canonical encoding,
/// which is how the small-order points 0 and 1 are written a second way),
/// a small-order point, or no point at all.
pub(crate) fn ed25519_usable(encoded: &[u8]) -> Result<(), String> {
    let Ok(bytes) = <[u8; 32]>::try_from(encoded) else {
        return Err(format!(
            "Ed25519 public key of {} bytes (must be 32)",
            encoded.len()
        ));
    };
    let one = BigUint::from(1u8);
    let p: BigUint = (BigUint::from(1u8) << 255u32) - 19u32;
    let mut y_bytes = bytes;
    y_bytes[31] &= 0x7f;
    let y = BigUint::from_bytes_le(&y_bytes);
    if y >= p {
        return Err("Ed25519 public key is not a canonical encoding (y >= p)".to_owned());
    }
    let order_8 = BigUint::from_bytes_le(&ORDER_8_Y);
    let p_minus_1 = &p - 1u32;
    if y == BigUint::ZERO || y == one || y == p_minus_1 || y == order_8 || y == &p - &order_8 {
        return Err(
            "Ed25519 public key is a small-order point: anyone could forge signatures for it"
                .to_owned(),
        );
    }
    // x^2 = (y^2 - 1) / (d y^2 + 1), d = -121665/121666: a point only if
    // that is a square mod p (Euler's criterion). u is not 0 here (y is not
    // +-1), and v never is (d is not a square).
    let inverse = |v: &BigUint| v.modpow(&(&p - 2u32), &p);
    let d = (&p - 121_665u32) * inverse(&BigUint::from(121_666u32)) % &p;
    let y2 = &y * &y % &p;
    let u = (&y2 + &p_minus_1) % &p;
    let v = (d * &y2 + &one) % &p;
    let x2 = u * inverse(&v) % &p;
    if x2.modpow(&(&p_minus_1 >> 1u32), &p) != one {
        return Err("Ed25519 public key is not a point on the curve".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoding(y: &BigUint, sign: bool) -> Vec<u8> {
        let mut b = y.to_bytes_le();
        b.resize(32, 0);
        if sign {
            b[31] |= 0x80;
        }
        b
    }

    /// Every small-order point, with either sign bit, and the non-canonical
    /// encodings of 0 and 1 (y = p, p + 1), as libsodium's blocklist has them.
    #[test]
    fn small_order_and_non_canonical_points_are_refused() {
        let p: BigUint = (BigUint::from(1u8) << 255u32) - 19u32;
        let y8 = BigUint::from_bytes_le(&ORDER_8_Y);
        let ys = [
            BigUint::ZERO,
            BigUint::from(1u8),
            &p - 1u32,
            y8.clone(),
            &p - &y8,
            p.clone(),
            &p + 1u32,
        ];
        for y in &ys {
            for sign in [false, true] {
                let e = encoding(y, sign);
                let err = ed25519_usable(&e).unwrap_err();
                assert!(
                    err.contains("small-order") || err.contains("canonical"),
                    "{}: {err}",
                    hex::encode(&e)
                );
            }
        }
        // The all-ones y (2^255 - 1) is non-canonical too.
        assert!(
            ed25519_usable(&[0xff; 32])
                .unwrap_err()
                .contains("canonical")
        );
    }

    #[test]
    fn off_curve_and_short_keys_are_refused_real_keys_pass() {
        // y = 2 has no x on the curve; y = 3 has one (and large order).
        let err = ed25519_usable(&encoding(&BigUint::from(2u8), false)).unwrap_err();
        assert!(err.contains("not a point"), "{err}");
        assert!(ed25519_usable(&encoding(&BigUint::from(3u8), false)).is_ok());
        assert!(ed25519_usable(&[1; 31]).unwrap_err().contains("31 bytes"));
        let dev =
            crate::cmd::demo::issuer::DevKey::generate(jsonwebtoken::Algorithm::EdDSA).unwrap();
        let x = dev.jwk["x"].as_str().unwrap();
        let raw =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, x).unwrap();
        assert_eq!(ed25519_usable(&raw), Ok(()));
    }
}
