//! The one refusal type of the decision path, and how each refusal maps to an HTTP status and a
//! bounded `reason` string (shared by the `jwtgate_decisions_total` label and the log field).

use http::StatusCode;

/// Why a request was not allowed. Every variant maps to exactly one contract status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization: Bearer` header (and no configured cookie).
    MissingToken,
    /// Longer than `token.max_bytes`: refused before any parsing.
    TooLarge,
    /// Not a well-formed compact JWS / JWT. The detail is a short, fixed description.
    Malformed(&'static str),
    /// The signature does not verify with the selected key.
    BadSignature,
    /// `exp` (plus leeway) is in the past.
    Expired,
    /// `nbf` or `iat` (minus leeway) is in the future.
    NotYetValid,
    /// `exp` further ahead than the issuer's `max_token_lifetime_seconds`.
    Lifetime,
    /// `iss` is not a configured issuer, or not one the request's policy allows.
    Issuer,
    /// `aud` contains none of the accepted audiences.
    Audience,
    /// The algorithm is not allowed, or does not fit the selected key.
    Algorithm,
    /// The `typ` header is not the issuer's `required_typ`.
    TokenType,
    /// No key in the issuer's key set matches the token's `kid`.
    UnknownKey,
    /// Valid token, but a required scope is missing. Holds the required scopes, space-separated.
    Scope(String),
    /// The gate cannot decide: no usable keys for the token's issuer.
    KeysUnavailable,
    /// The `auth-url` query string is not a valid policy. The text names the problem.
    BadPolicy(String),
}

impl AuthError {
    /// The HTTP status the contract gives this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Scope(_) => StatusCode::FORBIDDEN,
            AuthError::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::BadPolicy(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The bounded reason label: metrics and logs use this and nothing else.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing_token",
            AuthError::TooLarge => "too_large",
            AuthError::Malformed(_) => "malformed",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Lifetime => "lifetime",
            AuthError::Issuer => "issuer",
            AuthError::Audience => "audience",
            AuthError::Algorithm => "algorithm",
            AuthError::TokenType => "token_type",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Scope(_) => "scope",
            AuthError::KeysUnavailable => "keys_unavailable",
            AuthError::BadPolicy(_) => "bad_policy",
        }
    }

    /// The RFC 6750 `error_description`: short, fixed text that never echoes token content.
    pub fn description(&self) -> &'static str {
        match self {
            AuthError::MissingToken => "missing bearer token",
            AuthError::TooLarge => "token too large",
            AuthError::Malformed(detail) => detail,
            AuthError::BadSignature => "signature verification failed",
            AuthError::Expired => "token expired",
            AuthError::NotYetValid => "token not yet valid",
            AuthError::Lifetime => "token lifetime too long",
            AuthError::Issuer => "issuer not accepted",
            AuthError::Audience => "audience not accepted",
            AuthError::Algorithm => "algorithm not accepted",
            AuthError::TokenType => "token type not accepted",
            AuthError::UnknownKey => "signing key not found",
            AuthError::Scope(_) => "insufficient scope",
            AuthError::KeysUnavailable => "signing keys unavailable",
            AuthError::BadPolicy(_) => "bad policy",
        }
    }
}

/// A refusal and the issuer it concerns (`None` before the token's `iss` is known), which is
/// the `issuer` label of the decision metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub error: AuthError,
    pub issuer: Option<usize>,
}

impl From<AuthError> for Refused {
    fn from(error: AuthError) -> Self {
        Refused { error, issuer: None }
    }
}

impl AuthError {
    /// Attaches the issuer this refusal concerns.
    pub fn at(self, issuer: usize) -> Refused {
        Refused { error: self, issuer: Some(issuer) }
    }
}

/// Every reason label, for pre-registering metric series and for documentation.
pub const REASONS: &[&str] = &[
    "ok",
    "missing_token",
    "too_large",
    "malformed",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "lifetime",
    "issuer",
    "audience",
    "algorithm",
    "token_type",
    "unknown_key",
    "scope",
    "keys_unavailable",
    "bad_policy",
];
