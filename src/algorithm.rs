//! The JWS signature algorithms jwtgate accepts, by their JOSE names.
//!
//! jsonwebtoken verifies most of them; it has no ES512 (ECDSA on P-521 with SHA-512, RFC 7518
//! §3.4), which [`crate::keys::VerifyingKey::verify`] checks with aws-lc-rs directly. HMAC and
//! `none` are not representable here, so they can never be configured or accepted.
//!
//! RFC 9864 deprecates the polymorphic `EdDSA` in favour of fully-specified names; `Ed25519` is
//! EdDSA on the Ed25519 curve, the only EdDSA curve jwtgate accepts. The two names are therefore
//! one algorithm: [`Algorithm::parse`] reads either as [`Algorithm::EdDSA`], so an allow-list,
//! a token header or a JWK `alg` naming either allows the other.

/// One asymmetric JWS algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    /// EdDSA on Ed25519: the JOSE names `EdDSA` (RFC 8037) and `Ed25519` (RFC 9864).
    EdDSA,
}

/// Every name jwtgate accepts, in `algorithms:`, a token's `alg` header and a JWK's `alg`.
pub const NAMES: &[(&str, Algorithm)] = &[
    ("RS256", Algorithm::RS256),
    ("RS384", Algorithm::RS384),
    ("RS512", Algorithm::RS512),
    ("PS256", Algorithm::PS256),
    ("PS384", Algorithm::PS384),
    ("PS512", Algorithm::PS512),
    ("ES256", Algorithm::ES256),
    ("ES384", Algorithm::ES384),
    ("ES512", Algorithm::ES512),
    ("EdDSA", Algorithm::EdDSA),
    ("Ed25519", Algorithm::EdDSA),
];

impl Algorithm {
    /// Parses a JOSE algorithm name (exact case, as JOSE requires). `Ed25519` is `EdDSA`.
    pub fn parse(name: &str) -> Option<Algorithm> {
        NAMES.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
    }

    /// The JOSE name (`EdDSA` for both Ed25519 spellings).
    pub fn name(self) -> &'static str {
        NAMES.iter().find(|(_, a)| *a == self).map(|(n, _)| *n).expect("every algorithm has a name")
    }

    /// The jsonwebtoken algorithm that verifies this one, or `None` for ES512 (not in jsonwebtoken).
    pub fn jsonwebtoken(self) -> Option<jsonwebtoken::Algorithm> {
        use jsonwebtoken::Algorithm as J;
        Some(match self {
            Algorithm::RS256 => J::RS256,
            Algorithm::RS384 => J::RS384,
            Algorithm::RS512 => J::RS512,
            Algorithm::PS256 => J::PS256,
            Algorithm::PS384 => J::PS384,
            Algorithm::PS512 => J::PS512,
            Algorithm::ES256 => J::ES256,
            Algorithm::ES384 => J::ES384,
            Algorithm::EdDSA => J::EdDSA,
            Algorithm::ES512 => return None,
        })
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ed25519_is_the_fully_specified_name_of_eddsa() {
        assert_eq!(Algorithm::parse("Ed25519"), Some(Algorithm::EdDSA));
        assert_eq!(Algorithm::parse("EdDSA"), Some(Algorithm::EdDSA));
        assert_eq!(Algorithm::EdDSA.name(), "EdDSA");
    }

    #[test]
    fn names_are_exact_case_and_never_symmetric() {
        for bad in ["none", "HS256", "es512", "ES521", "Ed448", "ED25519", ""] {
            assert_eq!(Algorithm::parse(bad), None, "{bad}");
        }
        for (name, alg) in NAMES {
            assert_eq!(Algorithm::parse(name), Some(*alg));
        }
    }

    #[test]
    fn only_es512_is_verified_outside_jsonwebtoken() {
        for (_, alg) in NAMES {
            assert_eq!(alg.jsonwebtoken().is_none(), *alg == Algorithm::ES512, "{alg}");
        }
    }
}
