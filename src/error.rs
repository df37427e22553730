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
    /// Valid token, but the authentication behind it is not the one asked for (RFC 9470): 401
    /// with an `insufficient_user_authentication` challenge.
    StepUp(StepUp),
    /// Valid token, but a `claim.PATH=` requirement is not met. Holds PATH as the query wrote it.
    Claim(Box<str>),
    /// Valid token, but a named policy did not evaluate to `true`.
    Policy(PolicyDenial),
}

/// What a step-up challenge carries (RFC 9470 §3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUp {
    /// The `error_description`: fixed text, never token content.
    pub description: &'static str,
    /// `acr_values`: the `acr=` list, space-separated, when the query has one.
    pub acr_values: Option<Box<str>>,
    /// `max_age` when the query has one.
    pub max_age: Option<u64>,
}

/// A named policy that denied, and why when it did not simply evaluate to `false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDenial {
    pub name: Box<str>,
    /// The evaluation error (or non-boolean result), for the `warn` log line; `None` for `false`.
    pub error: Option<String>,
}

impl AuthError {
    /// The HTTP status the contract gives this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Scope(_) | AuthError::Claim(_) | AuthError::Policy(_) => StatusCode::FORBIDDEN,
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
            AuthError::StepUp(_) => "step_up",
            AuthError::Claim(_) => "claim",
            AuthError::Policy(_) => "policy",
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
            AuthError::StepUp(s) => s.description,
            AuthError::Claim(_) => "claim requirement not met",
            AuthError::Policy(_) => "policy not met",
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
    "claim",
    "policy",
    "step_up",
    "keys_unavailable",
    "bad_policy",
];
