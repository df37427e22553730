//! The one refusal type of the decision path, and how each refusal maps to an HTTP status and a
//! bounded [`Reason`] (shared by the `jwtgate_decisions_total` label, the log field and the
//! README's reason table, all generated from the one list in [`reasons!`]).

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
    /// The `auth-url` query string is not a valid policy. The text names the problem, with every
    /// client-controlled part already made log-safe.
    BadPolicy(LogSafe),
    /// More request headers, or more header bytes, than jwtgate decides on (see [`crate::http`]).
    HeadersTooLarge,
    /// The DPoP proof is missing, repeated or invalid, or the original request it must match is
    /// unknown (RFC 9449 §7.1 `invalid_dpop_proof`). The detail is a short, fixed description.
    DpopProof(&'static str),
    /// The token's DPoP binding is not honoured: the proof's key is not the token's `cnf.jkt`, a
    /// bound token came as `Bearer`, an unbound one as `DPoP`, or `?dpop=required` got an unbound
    /// token (`invalid_token`).
    DpopBinding(&'static str),
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
    pub error: Option<LogSafe>,
}

impl AuthError {
    /// A bad `auth-url` policy; the whole text goes through [`LogSafe::new`], so names taken from
    /// the query can never forge a log line.
    pub fn bad_policy(problem: impl AsRef<str>) -> AuthError {
        AuthError::BadPolicy(LogSafe::new(problem.as_ref()))
    }

    /// The HTTP status the contract gives this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Scope(_) | AuthError::Claim(_) | AuthError::Policy(_) => StatusCode::FORBIDDEN,
            AuthError::KeysUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::BadPolicy(_) => StatusCode::BAD_REQUEST,
            AuthError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// The bounded reason: metrics and logs use this and nothing else. The match is exhaustive, so
    /// a new refusal cannot compile without naming its reason.
    pub fn kind(&self) -> Reason {
        match self {
            AuthError::MissingToken => Reason::MissingToken,
            AuthError::TooLarge => Reason::TooLarge,
            AuthError::Malformed(_) => Reason::Malformed,
            AuthError::BadSignature => Reason::BadSignature,
            AuthError::Expired => Reason::Expired,
            AuthError::NotYetValid => Reason::NotYetValid,
            AuthError::Lifetime => Reason::Lifetime,
            AuthError::Issuer => Reason::Issuer,
            AuthError::Audience => Reason::Audience,
            AuthError::Algorithm => Reason::Algorithm,
            AuthError::TokenType => Reason::TokenType,
            AuthError::UnknownKey => Reason::UnknownKey,
            AuthError::Scope(_) => Reason::Scope,
            AuthError::KeysUnavailable => Reason::KeysUnavailable,
            AuthError::BadPolicy(_) => Reason::BadPolicy,
            AuthError::HeadersTooLarge => Reason::HeadersTooLarge,
            AuthError::DpopProof(_) | AuthError::DpopBinding(_) => Reason::Dpop,
            AuthError::StepUp(_) => Reason::StepUp,
            AuthError::Claim(_) => Reason::Claim,
            AuthError::Policy(_) => Reason::Policy,
        }
    }

    /// The reason's label (`kind().label()`): the metric label value and the log field.
    pub fn reason(&self) -> &'static str {
        self.kind().label()
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
            AuthError::HeadersTooLarge => "request headers too large",
            AuthError::DpopProof(detail) | AuthError::DpopBinding(detail) => detail,
            AuthError::StepUp(s) => s.description,
            AuthError::Claim(_) => "claim requirement not met",
            AuthError::Policy(_) => "policy not met",
        }
    }
}

impl AuthError {
    /// What the request asked for and did not get, for the refusal's log line: the scopes, the
    /// `claim.` PATH, the policy name, or the step-up `acr=` / `max_age=`, as the `auth-url` wrote
    /// them (client-controlled text, so escaped for the log). Never a value from the token.
    pub fn requirement(&self) -> Option<LogSafe> {
        let text = match self {
            AuthError::Scope(required) => format!("scope={required}"),
            AuthError::Claim(path) => format!("claim.{path}"),
            AuthError::Policy(denial) => format!("policy={}", denial.name),
            AuthError::StepUp(s) => {
                let acr = s.acr_values.as_deref().map(|a| format!("acr={}", a.replace(' ', ",")));
                let max_age = s.max_age.map(|m| format!("max_age={m}"));
                acr.into_iter().chain(max_age).collect::<Vec<_>>().join("&")
            }
            _ => return None,
        };
        Some(LogSafe::new(&text))
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

/// Declares [`Reason`] from one list: its variants, [`Reason::ALL`], the labels, the decision and
/// status each stands for, and the README table. Nothing else lists reasons.
macro_rules! reasons {
    ($($variant:ident => $label:literal, $status:literal, $meaning:literal;)*) => {
        /// The bounded set of `reason` values of `jwtgate_decisions_total` and of the log.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reason {
            $(#[doc = $meaning] $variant,)*
        }

        impl Reason {
            /// Every reason, in declaration order (`reason as usize` is its index).
            pub const ALL: &[Reason] = &[$(Reason::$variant,)*];

            /// The label value.
            pub const fn label(self) -> &'static str {
                match self {
                    $(Reason::$variant => $label,)*
                }
            }

            /// The HTTP status (or statuses) `/verify` answers with this reason, as documented.
            pub const fn status(self) -> &'static str {
                match self {
                    $(Reason::$variant => $status,)*
                }
            }

            /// What the reason means, as documented.
            pub const fn meaning(self) -> &'static str {
                match self {
                    $(Reason::$variant => $meaning,)*
                }
            }
        }
    };
}

reasons! {
    Ok => "ok", "200", "allowed";
    MissingToken => "missing_token", "401", "no `Authorization: Bearer` token (nor the configured cookie)";
    TooLarge => "too_large", "401", "token longer than `token.max_bytes`, refused before parsing";
    Malformed => "malformed", "401", "not a well-formed compact JWS/JWT, or a claim of the wrong type";
    BadSignature => "bad_signature", "401", "the signature does not verify";
    Expired => "expired", "401", "`exp` (plus leeway) has passed";
    NotYetValid => "not_yet_valid", "401", "`nbf` or `iat` (minus leeway) is in the future";
    Lifetime => "lifetime", "401", "`exp` further ahead than `max_token_lifetime_seconds`";
    Issuer => "issuer", "401", "`iss` is not a configured issuer, or not one `?issuer=` allows";
    Audience => "audience", "401", "`aud` holds none of the accepted audiences";
    Algorithm => "algorithm", "401", "the algorithm is not allowed, or does not fit the key";
    TokenType => "token_type", "401", "the `typ` header is not the issuer's `required_typ`";
    UnknownKey => "unknown_key", "401", "no key of the issuer matches the token's `kid`";
    Scope => "scope", "403", "a scope `?scope=` requires is not granted";
    Claim => "claim", "403", "a `?claim.PATH=` requirement is not met";
    Policy => "policy", "403", "a named `?policy=` did not evaluate to `true`";
    StepUp => "step_up", "401", "`?acr=` or `?max_age=` not met (RFC 9470 step-up)";
    Dpop => "dpop", "401", "DPoP proof missing or invalid, or the token's binding not honoured";
    KeysUnavailable => "keys_unavailable", "503", "no usable keys for the token's issuer";
    BadPolicy => "bad_policy", "400", "the `auth-url` query is not a valid policy";
    HeadersTooLarge => "headers_too_large", "431", "more than 256 request headers or 64 KiB of them";
}

impl Reason {
    /// How many reasons there are.
    pub const COUNT: usize = Reason::ALL.len();

    /// The decision label: `allow` for [`Reason::Ok`], else `deny`.
    pub const fn decision(self) -> &'static str {
        match self {
            Reason::Ok => "allow",
            _ => "deny",
        }
    }

    /// The README's reason table (Markdown), generated from the list above.
    pub fn markdown_table() -> String {
        let mut out = String::from("| `reason` | decision | status | when |\n|---|---|---|---|\n");
        for r in Reason::ALL {
            out.push_str(&format!("| `{}` | {} | {} | {} |\n", r.label(), r.decision(), r.status(), r.meaning()));
        }
        out
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.label() == *other
    }
}

/// Text that is safe to write into a log line in either format: made only by [`LogSafe::new`],
/// which is the one path client-controlled text takes to the log. Visible ASCII and spaces pass;
/// everything else (CR, LF, ESC, other C0 and C1 controls, DEL, and every non-ASCII character,
/// bidirectional overrides included) is written as `\u{XX}`, and a backslash as `\\`, so the
/// original can be read back. Longer text is cut at [`LogSafe::MAX_CHARS`] characters with `…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSafe(String);

impl LogSafe {
    /// Characters of client text kept in one field.
    pub const MAX_CHARS: usize = 200;

    /// Escapes `text` for the log (see the type's documentation).
    pub fn new(text: &str) -> LogSafe {
        let mut out = String::with_capacity(text.len().min(Self::MAX_CHARS * 2));
        for (n, c) in text.chars().enumerate() {
            if n == Self::MAX_CHARS {
                out.push_str("\\u{2026}");
                break;
            }
            match c {
                '\\' => out.push_str("\\\\"),
                ' '..='~' => out.push(c),
                _ => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            }
        }
        LogSafe(out)
    }

    /// The escaped text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for LogSafe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_the_contract_lists_exists_and_labels_are_unique() {
        for label in [
            "ok",
            "missing_token",
            "malformed",
            "bad_signature",
            "expired",
            "not_yet_valid",
            "issuer",
            "audience",
            "algorithm",
            "unknown_key",
            "scope",
            "claim",
            "policy",
            "step_up",
            "dpop",
            "keys_unavailable",
            "bad_policy",
        ] {
            assert!(Reason::ALL.iter().any(|r| r.label() == label), "{label} missing");
        }
        let mut labels: Vec<_> = Reason::ALL.iter().map(|r| r.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Reason::COUNT);
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }

    #[test]
    fn every_refusal_has_the_status_its_reason_documents() {
        let errors = [
            AuthError::MissingToken,
            AuthError::TooLarge,
            AuthError::Malformed("x"),
            AuthError::BadSignature,
            AuthError::Expired,
            AuthError::NotYetValid,
            AuthError::Lifetime,
            AuthError::Issuer,
            AuthError::Audience,
            AuthError::Algorithm,
            AuthError::TokenType,
            AuthError::UnknownKey,
            AuthError::Scope("s".into()),
            AuthError::KeysUnavailable,
            AuthError::BadPolicy(LogSafe::new("x")),
            AuthError::HeadersTooLarge,
            AuthError::DpopProof("x"),
            AuthError::DpopBinding("x"),
        ];
        for e in errors {
            assert_eq!(e.kind().status(), e.status().as_str(), "{e:?}");
            assert_eq!(e.kind().decision(), "deny");
        }
    }

    #[test]
    fn readme_reason_table_is_the_generated_one() {
        let readme = include_str!("../README.md");
        let table = Reason::markdown_table();
        assert!(readme.contains(&table), "README.md must contain the reason table exactly as generated:\n{table}");
    }

    #[test]
    fn a_refusal_names_the_failed_requirement_for_the_log_and_nothing_from_the_token() {
        assert_eq!(
            AuthError::Scope("orders:write admin".into()).requirement().unwrap().as_str(),
            "scope=orders:write admin"
        );
        // A claim PATH comes from the auth-url: client text, escaped on its way to the log.
        let claim = AuthError::Claim("roles\r\nFORGED\u{1b}[2J".into()).requirement().unwrap();
        assert_eq!(claim.as_str(), "claim.roles\\u{d}\\u{a}FORGED\\u{1b}[2J");
        let policy = AuthError::Policy(PolicyDenial { name: "admins-only".into(), error: None });
        assert_eq!(policy.requirement().unwrap().as_str(), "policy=admins-only");
        let step_up = AuthError::StepUp(StepUp {
            description: "authentication too old",
            acr_values: Some("gold silver".into()),
            max_age: Some(300),
        });
        assert_eq!(step_up.requirement().unwrap().as_str(), "acr=gold,silver&max_age=300");
        assert_eq!(AuthError::Audience.requirement(), None);
        assert_eq!(AuthError::Expired.requirement(), None);
    }

    #[test]
    fn log_safe_text_has_no_control_character_and_reads_back() {
        let s = LogSafe::new("a\r\nb\u{1b}[2J\u{9b}\u{202e}é\\ ok");
        assert_eq!(s.as_str(), "a\\u{d}\\u{a}b\\u{1b}[2J\\u{9b}\\u{202e}\\u{e9}\\\\ ok");
        assert!(s.as_str().bytes().all(|b| (0x20..0x7f).contains(&b)));
        let long = LogSafe::new(&"x".repeat(10_000));
        assert_eq!(long.as_str().len(), LogSafe::MAX_CHARS + "\\u{2026}".len());
    }
}
