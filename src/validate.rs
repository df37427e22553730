//! The decision core: from a compact JWS to a verified [`Identity`], as pure functions of
//! (token, issuers, key sets, policy, now). No IO, no clock reads, no globals.
//!
//! Order of work (cheap refusals first, and never a fetch for them):
//! 1. [`Jws::parse`]: three base64url segments, strict JOSE header (no duplicate members, no
//!    `crit`/`b64`/`enc`/`zip`, an allowed asymmetric `alg`).
//! 2. [`precheck`]: strict claims set, issuer chosen by `iss`, algorithm allow-list, `typ`,
//!    `exp`/`nbf`/`iat` with leeway, audience — all before any signature work.
//! 3. [`finish`]: key selection by `kid` within that issuer's keys only, signature verification
//!    with `jsonwebtoken` (aws-lc-rs), and the identity headers.
//! 4. [`crate::policy::Policy::check_scopes`]: required scopes (403).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::config::{ClaimHeader, IssuerConfig};
use crate::error::{AuthError, Refused};
use crate::keys::{KeySet, VerifyingKey};
use crate::policy::Policy;

/// Longest `kid` accepted; anything longer is malformed (no lookups, no negative-cache growth).
pub const MAX_KID_BYTES: usize = 256;

/// JSON's safe integer range (RFC 7493 §2.2): NumericDates outside it are malformed.
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

/// The parts of a JOSE header that jwtgate acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoseHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// A compact JWS split and its header checked; payload still raw bytes.
#[derive(Debug)]
pub struct Jws<'a> {
    pub header: JoseHeader,
    pub payload: Vec<u8>,
    /// `base64url(header) "." base64url(payload)`: what the signature covers.
    signing_input: &'a str,
    signature: &'a str,
}

/// Decodes one base64url segment: the unpadded alphabet only, canonical trailing bits.
fn segment(s: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD.decode(s).map_err(|_| AuthError::Malformed("invalid base64url"))
}

impl<'a> Jws<'a> {
    /// Splits and checks a compact JWS (RFC 7515 §7.1).
    pub fn parse(token: &'a str) -> Result<Jws<'a>, AuthError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            // Two dots exactly: JWE (five segments) and anything else are refused here.
            return Err(AuthError::Malformed("not a compact JWS"));
        };
        if h.is_empty() || p.is_empty() {
            return Err(AuthError::Malformed("empty segment"));
        }
        let header = parse_header(&segment(h)?)?;
        if s.is_empty() {
            return Err(AuthError::Malformed("missing signature"));
        }
        // Check the signature segment's encoding now, so a bad one is malformed, not bad_signature.
        let mut buf = [0u8; 1024];
        URL_SAFE_NO_PAD.decode_slice(s, &mut buf).map_err(|_| AuthError::Malformed("invalid base64url"))?;
        let payload = segment(p)?;
        Ok(Jws { header, payload, signing_input: &token[..h.len() + 1 + p.len()], signature: s })
    }

    /// Picks the key in `keys` for this token and verifies the signature with it.
    pub fn verify(&self, keys: &KeySet) -> Result<Arc<VerifyingKey>, AuthError> {
        let key = keys.select(self.header.kid.as_deref(), self.header.alg)?;
        match jsonwebtoken::crypto::verify(
            self.signature,
            self.signing_input.as_bytes(),
            &key.decoding,
            self.header.alg,
        ) {
            Ok(true) => Ok(key.clone()),
            _ => Err(AuthError::BadSignature),
        }
    }
}

/// Checks the JOSE header (RFC 7515 §4, RFC 8725 §2.1 and §3.1).
fn parse_header(bytes: &[u8]) -> Result<JoseHeader, AuthError> {
    let h = crate::json::parse_object(bytes).map_err(AuthError::Malformed)?;
    // RFC 7515 §4.1.11: we understand no extension, so any `crit` is refused.
    if h.contains_key("crit") {
        return Err(AuthError::Malformed("unsupported crit header"));
    }
    // RFC 7797 unencoded payloads change what is signed: never.
    if h.contains_key("b64") {
        return Err(AuthError::Malformed("unsupported b64 header"));
    }
    // JWE parameters on a JWS: refuse rather than guess (RFC 7516 §4.1.2, §4.1.3).
    if h.contains_key("enc") || h.contains_key("zip") {
        return Err(AuthError::Malformed("JWE header parameters on a JWS"));
    }
    let alg = match h.get("alg") {
        Some(Value::String(s)) => crate::config::parse_algorithm(s).ok_or(AuthError::Algorithm)?,
        Some(_) => return Err(AuthError::Malformed("alg is not a string")),
        None => return Err(AuthError::Malformed("missing alg")),
    };
    let kid = match h.get("kid") {
        None => None,
        Some(Value::String(s)) if s.len() <= MAX_KID_BYTES => Some(s.clone()),
        Some(Value::String(_)) => return Err(AuthError::Malformed("kid too long")),
        Some(_) => return Err(AuthError::Malformed("kid is not a string")),
    };
    let typ = match h.get("typ") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(AuthError::Malformed("typ is not a string")),
    };
    // `jku`, `x5u`, `jwk` and `x5c` are deliberately never read: keys come only from the
    // configured issuer's JWKS (RFC 8725 §3.10).
    Ok(JoseHeader { alg, kid, typ })
}

/// A token that passed every check that needs no key: what [`finish`] completes.
#[derive(Debug)]
pub struct Candidate<'a> {
    pub jws: Jws<'a>,
    pub claims: Map<String, Value>,
    /// Index of the issuer in the configuration, chosen by `iss`.
    pub issuer: usize,
    pub exp: i64,
}

/// A verified identity: what the token cache keeps and what headers are rendered from.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: usize,
    pub exp: i64,
    /// The values of the issuer's audience claim (`aud` by default).
    pub audiences: Vec<String>,
    /// Granted scopes from the issuer's scope claims.
    pub scopes: Vec<String>,
    /// Identity headers, rendered once at verification.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Reads a NumericDate claim: a JSON number within the safe integer range (RFC 7519 §2).
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<i64>, AuthError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && v.abs() <= MAX_SAFE => Ok(Some(v.floor() as i64)),
            _ => Err(AuthError::Malformed("time claim out of range")),
        },
        Some(_) => Err(AuthError::Malformed("time claim is not a number")),
    }
}

/// The values of a string-or-array-of-strings claim (`aud`, RFC 7519 §4.1.3).
fn string_or_array(v: Option<&Value>) -> Result<Vec<String>, AuthError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or(AuthError::Malformed("aud has a non-string member")))
            .collect(),
        Some(_) => Err(AuthError::Malformed("aud is not a string or array")),
    }
}

/// Granted scopes: the union of the issuer's scope claims, each a space-delimited string or an
/// array of strings (RFC 8693 §4.2 `scope`; `scp` as Okta and Entra ID issue it).
fn scopes(claims: &Map<String, Value>, names: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for name in names {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_whitespace().map(str::to_string)),
            Some(Value::Array(items)) => {
                out.extend(items.iter().filter_map(Value::as_str).flat_map(str::split_whitespace).map(str::to_string))
            }
            _ => {}
        }
    }
    out
}

/// `typ` comparison per RFC 7515 §4.1.9: case-insensitive, `application/` prefix optional.
fn typ_matches(got: Option<&str>, want: &str) -> bool {
    fn norm(s: &str) -> String {
        let l = s.to_ascii_lowercase();
        l.strip_prefix("application/").map(str::to_string).unwrap_or(l)
    }
    got.is_some_and(|g| norm(g) == norm(want))
}

/// Every check that needs no key material, cheapest first. Refusals after the issuer is
/// known name it.
pub fn precheck<'a>(
    token: &'a str,
    issuers: &[IssuerConfig],
    policy: &Policy,
    now: i64,
) -> Result<Candidate<'a>, Refused> {
    let jws = Jws::parse(token)?;
    let claims = crate::json::parse_object(&jws.payload).map_err(AuthError::Malformed)?;

    // RFC 7519 §4.1.1: `iss` is a single StringOrURI; an array is not an issuer.
    let iss = match claims.get("iss") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(AuthError::Malformed("iss is not a string").into()),
        None => return Err(AuthError::Issuer.into()),
    };
    let index = issuers.iter().position(|i| i.issuer == iss).ok_or(AuthError::Issuer)?;
    check_claims(jws, claims, &issuers[index], index, policy, now).map_err(|e| e.at(index))
}

/// The checks of [`precheck`] once the issuer is known.
fn check_claims<'a>(
    jws: Jws<'a>,
    claims: Map<String, Value>,
    issuer: &IssuerConfig,
    index: usize,
    policy: &Policy,
    now: i64,
) -> Result<Candidate<'a>, AuthError> {
    policy.check_issuer(index)?;

    if !issuer.algorithms.contains(&jws.header.alg) {
        return Err(AuthError::Algorithm);
    }
    if let Some(want) = &issuer.required_typ
        && !typ_matches(jws.header.typ.as_deref(), want)
    {
        return Err(AuthError::TokenType);
    }

    let leeway = issuer.leeway_seconds as i64;
    let exp = numeric_date(&claims, "exp")?.ok_or(AuthError::Malformed("missing exp"))?;
    let nbf = numeric_date(&claims, "nbf")?;
    let iat = numeric_date(&claims, "iat")?;
    if now >= exp.saturating_add(leeway) {
        return Err(AuthError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway))
        || iat.is_some_and(|iat| iat > now.saturating_add(leeway))
    {
        return Err(AuthError::NotYetValid);
    }
    if let Some(max) = issuer.max_token_lifetime_seconds
        && exp.saturating_sub(now) > (max as i64).saturating_add(leeway)
    {
        return Err(AuthError::Lifetime);
    }

    let audiences = string_or_array(claims.get(&issuer.audience_claim))?;
    policy.check_audience(&audiences, issuer)?;

    Ok(Candidate { jws, claims, issuer: index, exp })
}

/// Verifies the signature with the issuer's keys and builds the identity.
pub fn finish(
    candidate: Candidate<'_>,
    issuers: &[IssuerConfig],
    keys: &KeySet,
    mapping: &[ClaimHeader],
) -> Result<(Identity, Arc<VerifyingKey>), AuthError> {
    let key = candidate.jws.verify(keys)?;
    let issuer = &issuers[candidate.issuer];
    let audiences = string_or_array(candidate.claims.get(&issuer.audience_claim))?;
    let scopes = scopes(&candidate.claims, &issuer.scope_claims);
    let claims = Value::Object(candidate.claims);
    let headers = crate::headers::render(&claims, mapping);
    Ok((Identity { issuer: candidate.issuer, exp: candidate.exp, audiences, scopes, headers }, key))
}

/// The whole decision for one token with the keys in hand: [`precheck`], [`finish`], then the
/// policy's scopes. The service runs the same steps with a cache and a key refresh between them.
pub fn validate(
    token: &str,
    issuers: &[IssuerConfig],
    keys: &[&KeySet],
    mapping: &[ClaimHeader],
    policy: &Policy,
    now: i64,
) -> Result<Identity, AuthError> {
    let candidate = precheck(token, issuers, policy, now).map_err(|r| r.error)?;
    let ks = keys[candidate.issuer];
    let (identity, _) = finish(candidate, issuers, ks, mapping)?;
    policy.check_scopes(&identity.scopes)?;
    Ok(identity)
}
