//! A key set: the usable verification keys parsed from one JWKS document, and the rules for
//! picking the key that may verify a given token. Pure: no IO, no clock.
//!
//! Entries that are unusable or weak are skipped with a stated reason, never trusted, and one
//! bad entry never discards the good ones: RSA under 2048 bits (or with a bad exponent), `oct`
//! keys, `use` other than `sig`, `key_ops` without `verify`, curves other than P-256, P-384, P-521
//! and Ed25519, EC points not on their curve, a JWK `alg` that does not fit the key, and entries
//! that publish private key material.
//!
//! Signatures are verified by [`VerifyingKey::verify`]: jsonwebtoken (on aws-lc-rs) for every
//! algorithm it has, aws-lc-rs directly for ES512, which jsonwebtoken lacks. Both sit behind the
//! same key-binding rules ([`VerifyingKey::fits`], [`KeySet::select`]).

use std::sync::Arc;

use aws_lc_rs::signature as sig;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::DecodingKey;
use serde_json::Value;

use crate::algorithm::Algorithm;
use crate::error::AuthError;

/// The kind of key material, which decides the algorithms it can verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    Rsa,
    EcP256,
    EcP384,
    EcP521,
    Ed25519,
}

impl KeyFamily {
    /// The family an algorithm needs (RFC 7518 §3.1, RFC 8037 §3.1).
    pub fn for_algorithm(alg: Algorithm) -> Option<KeyFamily> {
        match alg {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => Some(KeyFamily::Rsa),
            Algorithm::ES256 => Some(KeyFamily::EcP256),
            Algorithm::ES384 => Some(KeyFamily::EcP384),
            Algorithm::ES512 => Some(KeyFamily::EcP521),
            Algorithm::EdDSA => Some(KeyFamily::Ed25519),
        }
    }
}

/// One usable verification key.
pub struct VerifyingKey {
    pub kid: Option<String>,
    pub family: KeyFamily,
    /// The JWK's `alg`, when it has one: then only that algorithm may use the key.
    pub alg: Option<Algorithm>,
    verifier: Verifier,
    /// The public key material, to recognise the same key across refreshes.
    material: Vec<u8>,
}

/// What checks a signature with the key.
enum Verifier {
    /// Every algorithm jsonwebtoken has.
    Jwt(DecodingKey),
    /// ES512: ECDSA P-521 with SHA-512, the point parsed (and checked on the curve) at load time.
    P521(sig::ParsedPublicKey),
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("family", &self.family)
            .field("alg", &self.alg)
            .finish()
    }
}

impl VerifyingKey {
    /// True when this key may verify a token signed with `alg`.
    pub fn fits(&self, alg: Algorithm) -> bool {
        KeyFamily::for_algorithm(alg) == Some(self.family) && self.alg.is_none_or(|a| a == alg)
    }

    /// Checks `signature` (base64url, as in the token) over `message` with `alg`. The caller
    /// has checked that the key [`fits`](Self::fits) `alg`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &str) -> bool {
        match (&self.verifier, alg.jsonwebtoken()) {
            (Verifier::Jwt(key), Some(alg)) => {
                jsonwebtoken::crypto::verify(signature, message, key, alg).unwrap_or(false)
            }
            // RFC 7518 §3.4: the signature is R || S, each 66 octets for P-521; anything else
            // (DER, truncated, padded) is refused by the fixed-length verifier.
            (Verifier::P521(key), None) => {
                URL_SAFE_NO_PAD.decode(signature).is_ok_and(|s| key.verify_sig(message, &s).is_ok())
            }
            _ => false,
        }
    }

    fn same_key(&self, other: &VerifyingKey) -> bool {
        self.kid == other.kid && self.family == other.family && self.alg == other.alg && self.material == other.material
    }
}

/// The usable keys of one issuer, immutable once built.
#[derive(Debug, Default, Clone)]
pub struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
}

/// A JWKS entry that was not taken, and why (logged as a warning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub index: usize,
    pub kid: Option<String>,
    pub why: String,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn keys(&self) -> &[Arc<VerifyingKey>] {
        &self.keys
    }

    /// Parses a JWKS document, keeping at most `max_keys` usable keys.
    pub fn from_jwks(body: &[u8], max_keys: usize) -> Result<(KeySet, Vec<Skipped>), String> {
        let doc: Value = serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
        let entries = doc.get("keys").and_then(Value::as_array).ok_or("JWKS has no `keys` array")?;
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for (index, entry) in entries.iter().enumerate() {
            let kid = entry.get("kid").and_then(Value::as_str).map(str::to_string);
            if keys.len() >= max_keys {
                skipped.push(Skipped { index, kid, why: format!("more than {max_keys} keys") });
                continue;
            }
            match parse_jwk(entry) {
                Ok(k) => keys.push(Arc::new(k)),
                Err(why) => skipped.push(Skipped { index, kid, why }),
            }
        }
        Ok((KeySet { keys }, skipped))
    }

    /// Keeps the `Arc` of every key that `previous` already had, so that anything holding a
    /// `Weak` to a key (the verified-token cache) stays valid exactly while the key is published.
    pub fn reuse_from(mut self, previous: &KeySet) -> KeySet {
        for k in &mut self.keys {
            if let Some(old) = previous.keys.iter().find(|o| o.same_key(k)) {
                *k = old.clone();
            }
        }
        self
    }

    /// Picks the key that may verify a token with this `kid` and `alg`.
    ///
    /// With a `kid`, only keys carrying that `kid` are candidates; without one, the token is
    /// accepted only when exactly one key fits the algorithm. A `kid` that is published but
    /// does not fit the algorithm is an algorithm error, not an unknown key (no refetch).
    pub fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&Arc<VerifyingKey>, AuthError> {
        match kid {
            Some(kid) => {
                let mut named = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).peekable();
                if named.peek().is_none() {
                    return Err(AuthError::UnknownKey);
                }
                let mut fitting = named.filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Ok(k),
                    (None, _) => Err(AuthError::Algorithm),
                    // Two different keys under one kid for one algorithm: ambiguous, refuse.
                    (Some(_), Some(_)) => Err(AuthError::UnknownKey),
                }
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(k), None) => Ok(k),
                    _ => Err(AuthError::UnknownKey),
                }
            }
        }
    }

    /// True when `key` (by identity) is still part of this set.
    pub fn contains(&self, key: &Arc<VerifyingKey>) -> bool {
        self.keys.iter().any(|k| Arc::ptr_eq(k, key))
    }
}

fn b64_field(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    let s = jwk.get(name).and_then(Value::as_str).ok_or_else(|| format!("missing `{name}`"))?;
    URL_SAFE_NO_PAD.decode(s).map_err(|_| format!("`{name}` is not base64url"))
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// The ROCA test (Nemec et al., CCS 2017; CVE-2017-15361): moduli generated by the affected
/// Infineon library satisfy, for each small prime p below, `n mod p` lies in the subgroup of
/// (Z/pZ)* generated by 65537. A random modulus passes all of them with negligible probability.
fn has_roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107,
        109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&p| {
        let residue = n.iter().fold(0u32, |r, &b| (r * 256 + b as u32) % p);
        let g = 65537 % p;
        let mut x = 1u32;
        // Walk the cyclic subgroup generated by g (its order divides p - 1).
        for _ in 0..p {
            if x == residue {
                return true;
            }
            x = x * g % p;
            if x == 1 {
                break;
            }
        }
        false
    })
}

/// Parses one JWK into a verification key, or says why it is not usable.
pub fn parse_jwk(jwk: &Value) -> Result<VerifyingKey, String> {
    if !jwk.is_object() {
        return Err("not a JSON object".into());
    }
    if let Some(u) = jwk.get("use")
        && u.as_str() != Some("sig")
    {
        return Err("`use` is not `sig`".into());
    }
    if let Some(ops) = jwk.get("key_ops") {
        let verify = ops.as_array().is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
        if !verify {
            return Err("`key_ops` does not allow `verify`".into());
        }
    }
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("`kid` is not a string".into()),
    };
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(s)) => match Algorithm::parse(s) {
            Some(a) => Some(a),
            None => return Err(format!("`alg` {s} is not a supported signature algorithm")),
        },
        Some(_) => return Err("`alg` is not a string".into()),
    };
    // A published private part means the key is compromised, or the wrong document is served.
    for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
        if jwk.get(private).is_some() && jwk.get("kty").and_then(Value::as_str) != Some("oct") {
            return Err(format!("publishes private key material (`{private}`)"));
        }
    }
    let kty = jwk.get("kty").and_then(Value::as_str).ok_or("missing `kty`")?;
    let (family, verifier, material) = match kty {
        "RSA" => {
            let n = b64_field(jwk, "n")?;
            let e = b64_field(jwk, "e")?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            // An empty (or all-zero) modulus is 0 bits, not an underflow (reproduced with fuzz target `jwks`).
            let bits = n.len() * 8 - n.first().map_or(0, |b| b.leading_zeros() as usize);
            if bits < 2048 {
                return Err(format!("RSA key of {bits} bits is under 2048"));
            }
            if bits > 8192 {
                return Err(format!("RSA key of {bits} bits is over 8192"));
            }
            if has_roca_fingerprint(n) {
                return Err("RSA modulus has the ROCA fingerprint (CVE-2017-15361)".into());
            }
            // e must be odd and at least 3 (e = 1 makes every signature trivially forgeable).
            if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b & 1 == 0) || (e.len() == 1 && e[0] < 3) {
                return Err("RSA exponent is not acceptable".into());
            }
            let mut material = n.to_vec();
            material.extend_from_slice(e);
            (KeyFamily::Rsa, Verifier::Jwt(DecodingKey::from_rsa_raw_components(n, e)), material)
        }
        "EC" => {
            let crv = jwk.get("crv").and_then(Value::as_str).ok_or("missing `crv`")?;
            let (family, len, check) = match crv {
                "P-256" => (KeyFamily::EcP256, 32, &sig::ECDSA_P256_SHA256_FIXED),
                "P-384" => (KeyFamily::EcP384, 48, &sig::ECDSA_P384_SHA384_FIXED),
                "P-521" => (KeyFamily::EcP521, 66, &sig::ECDSA_P521_SHA512_FIXED),
                other => return Err(format!("curve {other} is not supported")),
            };
            let x = b64_field(jwk, "x")?;
            let y = b64_field(jwk, "y")?;
            if x.len() != len || y.len() != len {
                return Err(format!("{crv} coordinates must be {len} bytes"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            // Refuse points that are not on the curve (invalid-curve attacks) at load time.
            let parsed =
                sig::ParsedPublicKey::new(check, &point).map_err(|_| format!("{crv} point is not on the curve"))?;
            let verifier = match family {
                KeyFamily::EcP521 => Verifier::P521(parsed),
                _ => Verifier::Jwt(DecodingKey::from_ec_der(&point)),
            };
            (family, verifier, point)
        }
        "OKP" => {
            let crv = jwk.get("crv").and_then(Value::as_str).ok_or("missing `crv`")?;
            if crv != "Ed25519" {
                return Err(format!("curve {crv} is not supported"));
            }
            let x = b64_field(jwk, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 `x` must be 32 bytes".into());
            }
            sig::ParsedPublicKey::new(&sig::ED25519, &x).map_err(|_| "Ed25519 key is not valid".to_string())?;
            (KeyFamily::Ed25519, Verifier::Jwt(DecodingKey::from_ed_der(&x)), x)
        }
        "oct" => return Err("symmetric (`oct`) keys are never trusted".into()),
        other => return Err(format!("key type {other} is not supported")),
    };
    if let Some(a) = alg
        && KeyFamily::for_algorithm(a) != Some(family)
    {
        return Err(format!("`alg` {a} does not fit a {family:?} key"));
    }
    Ok(VerifyingKey { kid, family, alg, verifier, material })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // A real 2048-bit RSA public key and a P-256 point, from RFC 7517 Appendix A.1.
    const RSA_N: &str = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
    const EC_X: &str = "MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4";
    const EC_Y: &str = "4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM";

    fn rsa(kid: &str) -> Value {
        json!({"kty": "RSA", "kid": kid, "n": RSA_N, "e": "AQAB"})
    }

    fn set(keys: Vec<Value>) -> (KeySet, Vec<Skipped>) {
        KeySet::from_jwks(json!({ "keys": keys }).to_string().as_bytes(), 100).unwrap()
    }

    #[test]
    fn good_keys_are_kept_next_to_skipped_bad_ones() {
        let (ks, skipped) = set(vec![
            rsa("good"),
            json!({"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}),
            json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": RSA_N, "e": "AQAB"}),
            json!({"kty": "RSA", "kid": "small", "n": "AQAB", "e": "AQAB"}),
            json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": EC_X, "y": EC_Y}),
            json!({"kty": "OKP", "kid": "x448", "crv": "Ed448", "x": EC_X}),
            json!({"kty": "EC", "kid": "ec", "crv": "P-256", "x": EC_X, "y": EC_Y}),
        ]);
        let kids: Vec<_> = ks.keys().iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["good", "ec"]);
        assert_eq!(skipped.len(), 5);
    }

    // RFC 7520 Figure 3: a P-521 public key.
    const P521_X: &str = "AHKZLLOsCOzz5cY97ewNUajB957y-C-U88c3v13nmGZx6sYl_oJXu9A5RkTKqjqvjyekWF-7ytDyRXYgCF5cj0Kt";
    const P521_Y: &str = "AdymlHvOiLxXkEhayXQnNCvDX4h9htZaCJN34kfmC6pV5OhQHiraVySsUdaQkAgDPrwQrJmbnX9cwlGfP-HqHZR1";

    #[test]
    fn p521_keys_are_kept_and_fit_only_es512() {
        let (ks, skipped) = set(vec![json!({"kty": "EC", "kid": "p", "crv": "P-521", "x": P521_X, "y": P521_Y})]);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(ks.keys()[0].family, KeyFamily::EcP521);
        assert!(ks.select(Some("p"), Algorithm::ES512).is_ok());
        for other in [Algorithm::ES256, Algorithm::ES384, Algorithm::RS512, Algorithm::EdDSA] {
            assert_eq!(ks.select(Some("p"), other).unwrap_err(), AuthError::Algorithm, "{other}");
        }
    }

    #[test]
    fn p521_points_off_the_curve_or_short_and_mismatched_alg_are_skipped() {
        let off = json!({"kty": "EC", "crv": "P-521", "x": P521_X, "y": P521_X});
        let short = json!({"kty": "EC", "crv": "P-521", "x": EC_X, "y": EC_Y});
        let p256_says_es512 = json!({"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y, "alg": "ES512"});
        let p521_says_es256 = json!({"kty": "EC", "crv": "P-521", "x": P521_X, "y": P521_Y, "alg": "ES256"});
        let (ks, skipped) = set(vec![off, short, p256_says_es512, p521_says_es256]);
        assert!(ks.is_empty());
        assert_eq!(skipped.len(), 4);
        assert!(skipped[0].why.contains("not on the curve"), "{:?}", skipped[0]);
    }

    #[test]
    fn rsa_exponent_one_is_skipped() {
        let (ks, _) = set(vec![json!({"kty": "RSA", "n": RSA_N, "e": "AQ"})]);
        assert!(ks.is_empty());
    }

    #[test]
    fn ec_point_off_the_curve_is_skipped() {
        let (ks, skipped) = set(vec![json!({"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_X})]);
        assert!(ks.is_empty());
        assert!(skipped[0].why.contains("not on the curve"));
    }

    #[test]
    fn jwk_alg_that_does_not_fit_the_key_type_is_skipped() {
        let mut k = rsa("a");
        k["alg"] = json!("ES256");
        assert!(set(vec![k]).0.is_empty());
        let mut k = rsa("a");
        k["alg"] = json!("HS256");
        assert!(set(vec![k]).0.is_empty());
    }

    #[test]
    fn published_private_key_material_is_skipped() {
        let mut k = rsa("a");
        k["d"] = json!("AQAB");
        assert!(set(vec![k]).0.is_empty());
    }

    #[test]
    fn unknown_kid_is_unknown_key() {
        let (ks, _) = set(vec![rsa("a")]);
        assert_eq!(ks.select(Some("b"), Algorithm::RS256).unwrap_err(), AuthError::UnknownKey);
    }

    #[test]
    fn known_kid_with_wrong_family_is_an_algorithm_error() {
        let (ks, _) = set(vec![rsa("a")]);
        assert_eq!(ks.select(Some("a"), Algorithm::ES256).unwrap_err(), AuthError::Algorithm);
    }

    #[test]
    fn jwk_alg_pins_the_algorithm() {
        let mut k = rsa("a");
        k["alg"] = json!("RS256");
        let (ks, _) = set(vec![k]);
        assert!(ks.select(Some("a"), Algorithm::RS256).is_ok());
        assert_eq!(ks.select(Some("a"), Algorithm::PS256).unwrap_err(), AuthError::Algorithm);
    }

    #[test]
    fn token_without_kid_needs_exactly_one_fitting_key() {
        let (one, _) = set(vec![rsa("a"), json!({"kty": "EC", "crv": "P-256", "x": EC_X, "y": EC_Y})]);
        assert!(one.select(None, Algorithm::RS256).is_ok());
        let (two, _) = set(vec![rsa("a"), rsa("b")]);
        assert_eq!(two.select(None, Algorithm::RS256).unwrap_err(), AuthError::UnknownKey);
    }

    #[test]
    fn reuse_keeps_identity_of_unchanged_keys_only() {
        let (old, _) = set(vec![rsa("a"), rsa("b")]);
        let (new, _) = set(vec![rsa("a"), rsa("c")]);
        let new = new.reuse_from(&old);
        assert!(Arc::ptr_eq(&new.keys()[0], &old.keys()[0]));
        assert!(!old.contains(&new.keys()[1]));
        assert!(!new.contains(&old.keys()[1]));
    }

    #[test]
    fn key_count_is_capped() {
        let (ks, skipped) =
            KeySet::from_jwks(json!({"keys": [rsa("a"), rsa("b"), rsa("c")]}).to_string().as_bytes(), 2).unwrap();
        assert_eq!(ks.len(), 2);
        assert_eq!(skipped.len(), 1);
    }
}
