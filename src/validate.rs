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
use serde_json::{Map, Value};

use crate::algorithm::Algorithm;
use crate::claims::Claims;
use crate::config::IssuerConfig;
use crate::error::{AuthError, Refused};
use crate::headers::ClaimHeader;
use crate::keys::{KeySet, VerifyingKey};
use crate::policy::Policy;
use crate::rules::Policies;

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
        // An empty payload is a legal JWS (RFC 7515 §7.1); it fails later as a claims set.
        if h.is_empty() {
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
        self.verify_with(keys.select(self.header.kid.as_deref(), self.header.alg)?)
    }

    /// Verifies the signature with `key`, which [`KeySet::select`] picked for this token.
    pub fn verify_with(&self, key: &Arc<VerifyingKey>) -> Result<Arc<VerifyingKey>, AuthError> {
        if key.verify(self.header.alg, self.signing_input.as_bytes(), self.signature) {
            Ok(key.clone())
        } else {
            Err(AuthError::BadSignature)
        }
    }

    /// The signature segment's length in bytes (never its value: `jwtgate explain` prints this).
    pub fn signature_len(&self) -> usize {
        // Unpadded base64url: every 4 characters carry 3 bytes, a partial group its whole bytes.
        self.signature.len() * 3 / 4
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
        Some(Value::String(s)) => Algorithm::parse(s).ok_or(AuthError::Algorithm)?,
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
    /// The values of the issuer's audience claim, read once by [`precheck`].
    pub audiences: Vec<String>,
    /// `cnf.jkt`, the DPoP binding, read once by [`precheck`].
    pub jkt: Option<Box<str>>,
}

/// A verified identity: what the token cache keeps and what headers are rendered from.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: usize,
    pub exp: i64,
    /// The values of the issuer's audience claim (`aud` by default).
    pub audiences: Box<[Box<str>]>,
    /// Granted scopes from the issuer's scope claims.
    pub scopes: Box<[Box<str>]>,
    /// Identity headers, rendered once at verification.
    pub headers: Box<[(HeaderName, HeaderValue)]>,
    /// `cnf.jkt` (RFC 9449 §6.1): the thumbprint of the key this token is bound to, if any.
    pub jkt: Option<Box<str>>,
    /// The verified claims set: what `claim.`, step-up and policies read on every request.
    pub claims: Claims,
}

/// The token's DPoP binding, `cnf.jkt` (RFC 9449 §6.1, RFC 7800 §3.1). Other confirmation
/// methods (`x5t#S256` for mTLS, RFC 8705) are not a DPoP binding and leave the token unbound.
fn dpop_binding(claims: &Map<String, Value>) -> Result<Option<Box<str>>, AuthError> {
    match claims.get("cnf") {
        None => Ok(None),
        Some(Value::Object(cnf)) => match cnf.get("jkt") {
            None => Ok(None),
            Some(Value::String(jkt)) if !jkt.is_empty() => Ok(Some(jkt.as_str().into())),
            Some(_) => Err(AuthError::Malformed("cnf.jkt is not a thumbprint")),
        },
        Some(_) => Err(AuthError::Malformed("cnf is not an object")),
    }
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
fn scopes(claims: &Map<String, Value>, names: &[String]) -> Vec<Box<str>> {
    let mut out = Vec::new();
    for name in names {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_whitespace().map(Box::from)),
            Some(Value::Array(items)) => {
                out.extend(items.iter().filter_map(Value::as_str).flat_map(str::split_whitespace).map(Box::from))
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

/// One named check of the decision, in the order the pipeline runs them: what
/// `jwtgate explain` lists, each with its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A bearer token is present and at most `token.max_bytes` ([`crate::gate::extract_token`]).
    Token,
    /// Compact JWS, strict JOSE header, a supported asymmetric `alg`.
    Header,
    /// The payload is a JSON object without duplicate members.
    Claims,
    /// `iss` is a configured issuer, and one the `auth-url` query allows.
    Issuer,
    /// The `alg` is in the issuer's `algorithms`.
    Algorithm,
    /// The issuer's `required_typ`, when configured.
    TokenType,
    /// `exp` (required), `nbf` and `iat`, with the issuer's leeway.
    Time,
    /// The issuer's `max_token_lifetime_seconds`, when configured.
    Lifetime,
    /// The audience claim holds an accepted audience.
    Audience,
    /// The issuer has usable keys (never loaded or past `max_stale_seconds`: 503).
    Keys,
    /// One key of the issuer fits the token's `kid` and `alg`.
    Key,
    /// The signature verifies with that key.
    Signature,
    /// DPoP (RFC 9449): the token's `cnf.jkt` binding and `?dpop=required` (the proof itself is
    /// checked by `/verify` only: `jwtgate explain` takes none).
    Dpop,
    /// Step-up (RFC 9470): the query's `acr=` and `max_age=`, when it has them.
    StepUp,
    /// Every scope the `auth-url` query requires is granted.
    Scope,
    /// Every `claim.PATH=` requirement of the query is met.
    ClaimRequirements,
    /// Every named policy of the query (`policy=`) evaluates to `true`.
    Policies,
}

impl Check {
    /// Every check, in pipeline order.
    pub const ALL: [Check; 17] = [
        Check::Token,
        Check::Header,
        Check::Claims,
        Check::Issuer,
        Check::Algorithm,
        Check::TokenType,
        Check::Time,
        Check::Lifetime,
        Check::Audience,
        Check::Keys,
        Check::Key,
        Check::Signature,
        Check::Dpop,
        Check::StepUp,
        Check::Scope,
        Check::ClaimRequirements,
        Check::Policies,
    ];

    /// Its name in `jwtgate explain` output.
    pub fn name(self) -> &'static str {
        match self {
            Check::Token => "token",
            Check::Header => "header",
            Check::Claims => "claims",
            Check::Issuer => "issuer",
            Check::Algorithm => "algorithm",
            Check::TokenType => "typ",
            Check::Time => "time",
            Check::Lifetime => "lifetime",
            Check::Audience => "audience",
            Check::Keys => "keys",
            Check::Key => "key",
            Check::Signature => "signature",
            Check::StepUp => "step-up",
            Check::Scope => "scope",
            Check::ClaimRequirements => "claim",
            Check::Policies => "policy",
            Check::Dpop => "dpop",
        }
    }
}

/// Watches the checks as the pipeline runs them. The service passes `()`, which records
/// nothing; `jwtgate explain` records each outcome. The decision itself never depends on it.
pub trait Observe {
    /// `check` ran: passed when `error` is `None`.
    fn check(&mut self, check: Check, error: Option<&AuthError>);
    /// `check` was not run, for the reason given (not configured, `--offline`).
    fn skip(&mut self, check: Check, why: &'static str);
    /// Records the outcome of `result` as `check` and returns it.
    fn on<T>(&mut self, check: Check, result: Result<T, AuthError>) -> Result<T, AuthError> {
        self.check(check, result.as_ref().err());
        result
    }
}

impl Observe for () {
    #[inline]
    fn check(&mut self, _: Check, _: Option<&AuthError>) {}
    #[inline]
    fn skip(&mut self, _: Check, _: &'static str) {}
}

/// Every check that needs no key material, cheapest first. Refusals after the issuer is
/// known name it.
pub fn precheck<'a>(
    token: &'a str,
    issuers: &[IssuerConfig],
    policy: &Policy,
    now: i64,
) -> Result<Candidate<'a>, Refused> {
    precheck_observed(token, issuers, policy, now, &mut ())
}

/// [`precheck`], telling `obs` the outcome of each check.
pub fn precheck_observed<'a>(
    token: &'a str,
    issuers: &[IssuerConfig],
    policy: &Policy,
    now: i64,
    obs: &mut impl Observe,
) -> Result<Candidate<'a>, Refused> {
    let jws = obs.on(Check::Header, Jws::parse(token))?;
    let claims = obs.on(Check::Claims, crate::json::parse_object(&jws.payload).map_err(AuthError::Malformed))?;

    // RFC 7519 §4.1.1: `iss` is a single StringOrURI; an array is not an issuer.
    let index = obs.on(
        Check::Issuer,
        match claims.get("iss") {
            Some(Value::String(s)) => issuers.iter().position(|i| i.issuer == *s).ok_or(AuthError::Issuer),
            Some(_) => Err(AuthError::Malformed("iss is not a string")),
            None => Err(AuthError::Issuer),
        },
    )?;
    check_claims(jws, claims, &issuers[index], index, policy, now, obs).map_err(|e| e.at(index))
}

/// The checks of [`precheck`] once the issuer is known.
fn check_claims<'a>(
    jws: Jws<'a>,
    claims: Map<String, Value>,
    issuer: &IssuerConfig,
    index: usize,
    policy: &Policy,
    now: i64,
    obs: &mut impl Observe,
) -> Result<Candidate<'a>, AuthError> {
    obs.on(Check::Issuer, policy.check_issuer(index))?;

    obs.on(
        Check::Algorithm,
        if issuer.algorithms.contains(&jws.header.alg) { Ok(()) } else { Err(AuthError::Algorithm) },
    )?;
    match &issuer.required_typ {
        Some(want) => obs.on(
            Check::TokenType,
            if typ_matches(jws.header.typ.as_deref(), want) { Ok(()) } else { Err(AuthError::TokenType) },
        )?,
        None => obs.skip(Check::TokenType, "no required_typ configured"),
    }

    let leeway = issuer.leeway_seconds as i64;
    let exp = obs.on(Check::Time, check_time(&claims, leeway, now))?;
    match issuer.max_token_lifetime_seconds {
        Some(max) => obs.on(
            Check::Lifetime,
            if exp.saturating_sub(now) > (max as i64).saturating_add(leeway) {
                Err(AuthError::Lifetime)
            } else {
                Ok(())
            },
        )?,
        None => obs.skip(Check::Lifetime, "no max_token_lifetime_seconds configured"),
    }

    let audiences = obs.on(
        Check::Audience,
        string_or_array(claims.get(&issuer.audience_claim)).and_then(|a| policy.check_audience(&a, issuer).map(|()| a)),
    )?;

    let jkt = dpop_binding(&claims)?;

    Ok(Candidate { jws, claims, issuer: index, exp, audiences, jkt })
}

/// `exp` (required), `nbf` and `iat` against `now` with `leeway`; returns `exp`.
fn check_time(claims: &Map<String, Value>, leeway: i64, now: i64) -> Result<i64, AuthError> {
    let exp = numeric_date(claims, "exp")?.ok_or(AuthError::Malformed("missing exp"))?;
    let nbf = numeric_date(claims, "nbf")?;
    let iat = numeric_date(claims, "iat")?;
    if now >= exp.saturating_add(leeway) {
        return Err(AuthError::Expired);
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway))
        || iat.is_some_and(|iat| iat > now.saturating_add(leeway))
    {
        return Err(AuthError::NotYetValid);
    }
    Ok(exp)
}

/// Verifies the signature with the issuer's keys and builds the identity.
pub fn finish(
    candidate: Candidate<'_>,
    issuers: &[IssuerConfig],
    keys: &KeySet,
    mapping: &[ClaimHeader],
) -> Result<(Identity, Arc<VerifyingKey>), AuthError> {
    let key = candidate.jws.verify(keys)?;
    Ok((identity(candidate, issuers, mapping), key))
}

/// The identity of a candidate whose signature is verified (or, for `jwtgate explain
/// --offline` only, deliberately not checked): audiences, scopes and the identity headers.
pub fn identity(candidate: Candidate<'_>, issuers: &[IssuerConfig], mapping: &[ClaimHeader]) -> Identity {
    let issuer = &issuers[candidate.issuer];
    let audiences = candidate.audiences.into_iter().map(Box::from).collect();
    let scopes = scopes(&candidate.claims, &issuer.scope_claims).into_boxed_slice();
    let claims = Value::Object(candidate.claims);
    let headers = crate::headers::render(&claims, mapping).into_boxed_slice();
    let claims = Claims::new(claims);
    Identity { issuer: candidate.issuer, exp: candidate.exp, audiences, scopes, headers, claims, jkt: candidate.jkt }
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
    // No named policies here (and no original request): a `policy=` in `policy` denies.
    static NO_POLICIES: std::sync::LazyLock<Policies> = std::sync::LazyLock::new(Policies::default);
    let request = http::HeaderMap::new();
    validate_observed(token, issuers, |i| Ok(Some(keys[i])), mapping, policy, &NO_POLICIES, &request, now, &mut ())
        .map_err(|r| r.error)
}

/// [`validate`], telling `obs` each check's outcome. `keys(issuer)` gives the keys to verify
/// with: `Ok(Some)`; `Err` when the issuer has none usable (503); `Ok(None)` skips the key and
/// signature checks, which only `jwtgate explain --offline` asks for and says so. Then the
/// authorize stage, with the config's named `policies` and the original `request`'s headers.
#[allow(clippy::too_many_arguments)]
pub fn validate_observed<'k>(
    token: &str,
    issuers: &[IssuerConfig],
    keys: impl FnOnce(usize) -> Result<Option<&'k KeySet>, AuthError>,
    mapping: &[ClaimHeader],
    policy: &Policy,
    policies: &Policies,
    request: &http::HeaderMap,
    now: i64,
    obs: &mut impl Observe,
) -> Result<Identity, Refused> {
    let candidate = precheck_observed(token, issuers, policy, now, obs)?;
    let index = candidate.issuer;
    let at = |e: AuthError| e.at(index);
    match keys(index) {
        Err(e) => {
            obs.check(Check::Keys, Some(&e));
            return Err(at(e));
        }
        Ok(Some(ks)) => {
            obs.check(Check::Keys, None);
            let key = obs.on(Check::Key, ks.select(candidate.jws.header.kid.as_deref(), candidate.jws.header.alg));
            obs.on(Check::Signature, candidate.jws.verify_with(key.map_err(at)?)).map_err(at)?;
        }
        Ok(None) => {
            obs.skip(Check::Keys, "--offline: no keys fetched");
            obs.skip(Check::Key, "--offline: no keys fetched");
            obs.skip(Check::Signature, "--offline: the signature was NOT checked");
        }
    }
    let identity = identity(candidate, issuers, mapping);
    crate::authorization::authorize_observed(&identity, policy, &issuers[index], policies, request, now, obs)
        .map_err(at)?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::dev_issuer::KeyRing;
    use serde_json::json;
    use std::sync::OnceLock;

    const ISS: &str = "https://idp.example.com/realms/main";
    const NOW: i64 = 1_800_000_000;

    fn ring() -> &'static KeyRing {
        static RING: OnceLock<KeyRing> = OnceLock::new();
        RING.get_or_init(|| {
            let mut r = KeyRing::standard();
            r.add_key("ps256-1", Algorithm::PS256);
            r.add_key("es384-1", Algorithm::ES384);
            r.add_key("es512-1", Algorithm::ES512);
            r
        })
    }

    fn config(issuer_extra: &str) -> Config {
        Config::from_yaml(&format!(
            "issuers:\n  - name: main\n    issuer: \"{ISS}\"\n    audiences: [orders-api]\n    algorithms: [RS256, ES256, EdDSA, ES384, ES512]\n{issuer_extra}"
        ))
        .unwrap()
    }

    fn claims() -> Value {
        json!({"iss": ISS, "sub": "alice", "aud": "orders-api", "iat": NOW - 10, "exp": NOW + 300})
    }

    fn check_with(token: &str, cfg: &Config, query: Option<&str>) -> Result<Identity, AuthError> {
        let (keys, _) = KeySet::from_jwks(ring().jwks().to_string().as_bytes(), 100).unwrap();
        let policy = Policy::parse(query, cfg)?;
        validate(token, &cfg.issuers, &[&keys], &cfg.claims_to_headers, &policy, NOW)
    }

    fn check(token: &str) -> Result<Identity, AuthError> {
        check_with(token, &config(""), None)
    }

    fn raw(kid: &str, alg: Algorithm, header: Value, claims: Value) -> String {
        ring().sign_raw(kid, alg, header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    fn with_claim(name: &str, v: Value) -> String {
        let mut c = claims();
        c[name] = v;
        ring().sign("rs256-1", &c)
    }

    fn b64(s: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn valid_tokens_of_every_allowed_algorithm_are_accepted() {
        for kid in ["rs256-1", "es256-1", "eddsa-1", "es384-1", "es512-1"] {
            let id = check(&ring().sign(kid, &claims())).unwrap_or_else(|e| panic!("{kid}: {e:?}"));
            assert_eq!(id.exp, NOW + 300);
            assert_eq!(id.headers[0].1, "alice");
        }
    }

    #[test]
    fn alg_none_is_refused() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            let h = b64(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
            let p = b64(claims().to_string().as_bytes());
            assert_eq!(check(&format!("{h}.{p}.")).unwrap_err(), AuthError::Algorithm, "{alg}");
            assert_eq!(check(&format!("{h}.{p}.c2ln")).unwrap_err(), AuthError::Algorithm, "{alg}");
        }
    }

    #[test]
    fn hs256_keyed_with_the_rsa_public_key_is_refused() {
        let jwk = ring().public_jwk("rs256-1");
        let h = b64(json!({"alg": "HS256", "kid": "rs256-1"}).to_string().as_bytes());
        let p = b64(claims().to_string().as_bytes());
        let input = format!("{h}.{p}");
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, jwk.to_string().as_bytes());
        let tag = aws_lc_rs::hmac::sign(&key, input.as_bytes());
        assert_eq!(check(&format!("{input}.{}", b64(tag.as_ref()))).unwrap_err(), AuthError::Algorithm);
    }

    #[test]
    fn algorithm_outside_the_issuer_allow_list_is_refused() {
        assert_eq!(check(&ring().sign("ps256-1", &claims())).unwrap_err(), AuthError::Algorithm);
    }

    #[test]
    fn algorithm_not_fitting_the_key_type_is_refused() {
        let t = raw("rs256-1", Algorithm::RS256, json!({"alg": "ES256", "kid": "rs256-1"}), claims());
        assert_eq!(check(&t).unwrap_err(), AuthError::Algorithm);
    }

    #[test]
    fn es512_is_bound_to_p521_keys_both_ways() {
        // ES512 claimed for a P-256 key, and ES256 claimed for the P-521 key.
        let t = raw("es256-1", Algorithm::ES256, json!({"alg": "ES512", "kid": "es256-1"}), claims());
        assert_eq!(check(&t).unwrap_err(), AuthError::Algorithm);
        let t = raw("es512-1", Algorithm::ES512, json!({"alg": "ES256", "kid": "es512-1"}), claims());
        assert_eq!(check(&t).unwrap_err(), AuthError::Algorithm);
        // Not in the allow-list: refused before any key is looked at.
        let cfg = config("");
        let mut no_es512 = cfg.clone();
        no_es512.issuers[0].algorithms.retain(|a| *a != Algorithm::ES512);
        let t = ring().sign("es512-1", &claims());
        assert!(check_with(&t, &cfg, None).is_ok());
        assert_eq!(check_with(&t, &no_es512, None).unwrap_err(), AuthError::Algorithm);
    }

    #[test]
    fn es512_signature_that_is_not_r_and_s_of_66_octets_is_a_bad_signature() {
        let t = ring().sign("es512-1", &claims());
        let (input, sig) = t.rsplit_once('.').unwrap();
        let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
        assert_eq!(sig.len(), 132);
        let mut flipped = sig.clone();
        flipped[70] ^= 1;
        let zero = vec![0u8; 132];
        // The same R and S, DER-encoded as X.509 tools emit them (RFC 7518 §3.4 forbids it).
        let der = {
            let int = |b: &[u8]| {
                let b = &b[b.iter().position(|&x| x != 0).unwrap_or(b.len() - 1)..];
                let pad = b[0] & 0x80 != 0;
                let mut v = vec![0x02, (b.len() + pad as usize) as u8];
                if pad {
                    v.push(0);
                }
                v.extend_from_slice(b);
                v
            };
            let body = [int(&sig[..66]), int(&sig[66..])].concat();
            [vec![0x30, 0x81, body.len() as u8], body].concat()
        };
        for bad in [flipped, zero, sig[..131].to_vec(), [sig.clone(), vec![0]].concat(), der] {
            assert_eq!(check(&format!("{input}.{}", b64(&bad))).unwrap_err(), AuthError::BadSignature);
        }
    }

    #[test]
    fn ed25519_and_eddsa_are_one_algorithm_in_headers_allow_lists_and_jwks() {
        // A token whose header says `Ed25519` (RFC 9864), under an allow-list that says `EdDSA`.
        let t = raw("eddsa-1", Algorithm::EdDSA, json!({"alg": "Ed25519", "kid": "eddsa-1"}), claims());
        assert!(check(&t).is_ok());
        // An allow-list that says only `Ed25519` allows both spellings, and nothing else.
        let cfg = Config::from_yaml(&format!(
            "issuers:\n  - {{name: main, issuer: \"{ISS}\", audiences: [orders-api], algorithms: [Ed25519]}}\n"
        ))
        .unwrap();
        assert!(check_with(&t, &cfg, None).is_ok());
        assert!(check_with(&ring().sign("eddsa-1", &claims()), &cfg, None).is_ok());
        assert_eq!(check_with(&ring().sign("es256-1", &claims()), &cfg, None).unwrap_err(), AuthError::Algorithm);
        // A JWK published with `alg: Ed25519` (Node's WebCrypto exports them so) is an Ed25519
        // key that verifies tokens of either spelling.
        let mut jwk = ring().public_jwk("eddsa-1");
        jwk["alg"] = json!("Ed25519");
        let (keys, skipped) = KeySet::from_jwks(json!({ "keys": [jwk] }).to_string().as_bytes(), 10).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let policy = Policy::default();
        for token in [t, ring().sign("eddsa-1", &claims())] {
            assert!(validate(&token, &cfg.issuers, &[&keys], &[], &policy, NOW).is_ok());
        }
    }

    #[test]
    fn rsa_pkcs1_and_pss_swapped_are_refused() {
        let mut cfg = config("");
        cfg.issuers[0].algorithms = vec![Algorithm::RS256, Algorithm::PS256];
        // Signed with PSS, labelled RS256 (and the key is pinned to PS256 by its JWK alg).
        let t = raw("ps256-1", Algorithm::PS256, json!({"alg": "RS256", "kid": "ps256-1"}), claims());
        assert!(check_with(&t, &cfg, None).is_err());
        let t = raw("rs256-1", Algorithm::RS256, json!({"alg": "PS256", "kid": "rs256-1"}), claims());
        assert!(check_with(&t, &cfg, None).is_err());
    }

    #[test]
    fn altered_payload_is_a_bad_signature() {
        let t = ring().sign("es256-1", &claims());
        let parts: Vec<&str> = t.split('.').collect();
        let mut c = claims();
        c["sub"] = json!("mallory");
        let forged = format!("{}.{}.{}", parts[0], b64(c.to_string().as_bytes()), parts[2]);
        assert_eq!(check(&forged).unwrap_err(), AuthError::BadSignature);
    }

    #[test]
    fn expired_token_is_refused_and_leeway_applies() {
        assert_eq!(check(&with_claim("exp", json!(NOW - 31))).unwrap_err(), AuthError::Expired);
        assert!(check(&with_claim("exp", json!(NOW - 29))).is_ok(), "inside the 30 s leeway");
    }

    #[test]
    fn not_yet_valid_nbf_is_refused() {
        assert_eq!(check(&with_claim("nbf", json!(NOW + 31))).unwrap_err(), AuthError::NotYetValid);
        assert!(check(&with_claim("nbf", json!(NOW + 29))).is_ok());
    }

    #[test]
    fn iat_in_the_future_is_refused() {
        assert_eq!(check(&with_claim("iat", json!(NOW + 3600))).unwrap_err(), AuthError::NotYetValid);
    }

    #[test]
    fn missing_exp_is_malformed() {
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_eq!(check(&ring().sign("rs256-1", &c)).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn time_claims_of_wrong_type_or_unsafe_range_are_malformed() {
        for name in ["exp", "nbf", "iat"] {
            for v in [
                json!("1800000300"),
                json!(true),
                json!([1]),
                json!({}),
                json!(9_007_199_254_740_993u64),
                json!(-1e300),
            ] {
                assert_eq!(check(&with_claim(name, v.clone())).unwrap_err().reason(), "malformed", "{name}={v}");
            }
        }
    }

    #[test]
    fn iss_given_as_an_array_is_refused() {
        assert_eq!(check(&with_claim("iss", json!([ISS]))).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn unknown_issuer_is_refused() {
        assert_eq!(check(&with_claim("iss", json!("https://evil.example"))).unwrap_err(), AuthError::Issuer);
        assert_eq!(check(&with_claim("iss", json!(format!("{ISS}/")))).unwrap_err(), AuthError::Issuer);
    }

    #[test]
    fn audience_must_contain_one_accepted_value() {
        assert_eq!(check(&with_claim("aud", json!("billing"))).unwrap_err(), AuthError::Audience);
        assert!(check(&with_claim("aud", json!(["billing", "orders-api"]))).is_ok());
        assert_eq!(check(&with_claim("aud", json!([]))).unwrap_err(), AuthError::Audience);
        assert_eq!(check(&with_claim("aud", json!("Orders-Api"))).unwrap_err(), AuthError::Audience);
        assert_eq!(check(&with_claim("aud", json!(7))).unwrap_err().reason(), "malformed");
        assert_eq!(check(&with_claim("aud", json!(["orders-api", 7]))).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn unknown_kid_is_unknown_key() {
        let t = raw("rs256-1", Algorithm::RS256, json!({"alg": "RS256", "kid": "nope"}), claims());
        assert_eq!(check(&t).unwrap_err(), AuthError::UnknownKey);
    }

    #[test]
    fn token_without_kid_uses_the_only_key_of_its_type() {
        let t = raw("eddsa-1", Algorithm::EdDSA, json!({"alg": "EdDSA"}), claims());
        assert!(check(&t).is_ok());
    }

    #[test]
    fn crit_b64_enc_and_zip_headers_are_refused() {
        for extra in [
            json!({"crit": ["exp"]}),
            json!({"crit": []}),
            json!({"b64": false}),
            json!({"enc": "A128GCM"}),
            json!({"zip": "DEF"}),
        ] {
            let mut h = json!({"alg": "RS256", "kid": "rs256-1"});
            h.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            assert_eq!(
                check(&raw("rs256-1", Algorithm::RS256, h, claims())).unwrap_err().reason(),
                "malformed",
                "{extra}"
            );
        }
    }

    #[test]
    fn embedded_jwk_jku_x5u_and_x5c_are_never_used() {
        let mut attacker = KeyRing::default();
        attacker.add_key("rs256-1", Algorithm::RS256);
        let h = json!({"alg": "RS256", "kid": "rs256-1", "jwk": attacker.public_jwk("rs256-1"),
            "jku": "https://evil.example/jwks", "x5u": "https://evil.example/cert", "x5c": ["MIIB"]});
        let t =
            attacker.sign_raw("rs256-1", Algorithm::RS256, h.to_string().as_bytes(), claims().to_string().as_bytes());
        assert_eq!(check(&t).unwrap_err(), AuthError::BadSignature);
    }

    #[test]
    fn duplicate_members_in_header_or_claims_are_malformed() {
        let dup_claims =
            format!(r#"{{"iss":"{ISS}","sub":"alice","sub":"admin","aud":"orders-api","exp":{}}}"#, NOW + 300);
        let hdr = json!({"alg": "RS256", "kid": "rs256-1"}).to_string();
        let t = ring().sign_raw("rs256-1", Algorithm::RS256, hdr.as_bytes(), dup_claims.as_bytes());
        assert_eq!(check(&t).unwrap_err().reason(), "malformed");
        let dup_hdr = r#"{"alg":"RS256","alg":"none","kid":"rs256-1"}"#;
        let t = ring().sign_raw("rs256-1", Algorithm::RS256, dup_hdr.as_bytes(), claims().to_string().as_bytes());
        assert_eq!(check(&t).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn wrong_segment_counts_padding_and_foreign_alphabets_are_malformed() {
        let t = ring().sign("rs256-1", &claims());
        for bad in [format!("{t}.x"), format!("{t}.x.y"), t.replacen('.', "", 1), format!("{t}="), t.replace('-', "+")]
        {
            if bad == t {
                continue;
            }
            assert_eq!(check(&bad).unwrap_err().reason(), "malformed", "{bad}");
        }
    }

    #[test]
    fn overlong_kid_is_malformed() {
        let t = raw("rs256-1", Algorithm::RS256, json!({"alg": "RS256", "kid": "k".repeat(300)}), claims());
        assert_eq!(check(&t).unwrap_err().reason(), "malformed");
    }

    #[test]
    fn typ_at_jwt_is_accepted_without_configuration() {
        let t = raw("rs256-1", Algorithm::RS256, json!({"alg": "RS256", "kid": "rs256-1", "typ": "at+jwt"}), claims());
        assert!(check(&t).is_ok());
    }

    #[test]
    fn required_typ_is_enforced_case_insensitively_with_optional_application_prefix() {
        let cfg = config("    required_typ: at+jwt\n");
        let hdr = |typ: &str| json!({"alg": "RS256", "kid": "rs256-1", "typ": typ});
        assert!(check_with(&raw("rs256-1", Algorithm::RS256, hdr("application/AT+JWT"), claims()), &cfg, None).is_ok());
        let jwt = raw("rs256-1", Algorithm::RS256, hdr("JWT"), claims());
        assert_eq!(check_with(&jwt, &cfg, None).unwrap_err(), AuthError::TokenType);
    }

    #[test]
    fn lifetime_beyond_the_issuer_maximum_is_refused() {
        let cfg = config("    max_token_lifetime_seconds: 3600\n");
        let long = with_claim("exp", json!(NOW + 7200));
        assert_eq!(check_with(&long, &cfg, None).unwrap_err(), AuthError::Lifetime);
        assert!(check_with(&with_claim("exp", json!(NOW + 3000)), &cfg, None).is_ok());
    }

    #[test]
    fn missing_scope_is_insufficient_scope() {
        let t = with_claim("scope", json!("orders:read"));
        assert!(check_with(&t, &config(""), Some("scope=orders:read")).is_ok());
        assert_eq!(check_with(&t, &config(""), Some("scope=admin")).unwrap_err(), AuthError::Scope("admin".into()));
    }

    #[test]
    fn audience_claim_can_be_client_id_for_cognito_access_tokens() {
        let cfg = config("    audience_claim: client_id\n");
        let mut c = claims();
        c.as_object_mut().unwrap().remove("aud");
        c["client_id"] = json!("orders-api");
        assert!(check_with(&ring().sign("rs256-1", &c), &cfg, None).is_ok());
        c["client_id"] = json!("other-client");
        assert_eq!(check_with(&ring().sign("rs256-1", &c), &cfg, None).unwrap_err(), AuthError::Audience);
    }

    #[derive(Default)]
    struct Order(Vec<(Check, bool)>);

    impl Observe for Order {
        fn check(&mut self, check: Check, error: Option<&AuthError>) {
            self.0.push((check, error.is_none()));
        }
        fn skip(&mut self, check: Check, _: &'static str) {
            self.0.push((check, true));
        }
    }

    #[test]
    fn the_observed_pipeline_runs_every_check_in_the_documented_order_and_stops_at_the_first_failure() {
        let cfg = config("    max_token_lifetime_seconds: 3600\n    required_typ: JWT\n");
        let (keys, _) = KeySet::from_jwks(ring().jwks().to_string().as_bytes(), 100).unwrap();
        let token = ring().sign("es512-1", &claims());
        let policy = Policy::parse(Some("scope=orders:read"), &cfg).unwrap();
        let mut order = Order::default();
        let scoped = with_claim("scope", json!("orders:read"));
        let run = |t: &str, obs: &mut Order| {
            let request = http::HeaderMap::new();
            validate_observed(
                t,
                &cfg.issuers,
                |_| Ok(Some(&keys)),
                &cfg.claims_to_headers,
                &policy,
                &cfg.policies,
                &request,
                NOW,
                obs,
            )
        };
        assert!(run(&scoped, &mut order).is_ok());
        let mut seen: Vec<Check> = order.0.iter().map(|(c, _)| *c).collect();
        seen.dedup();
        // Check::Token is the HTTP layer's (extract_token), before the pipeline; Check::Dpop needs
        // the request's scheme and proof, so the gate (and explain) run it between Signature and
        // StepUp, outside this pure pipeline.
        let expected: Vec<Check> = Check::ALL[1..].iter().copied().filter(|c| *c != Check::Dpop).collect();
        assert_eq!(seen, expected);
        assert!(order.0.iter().all(|(_, ok)| *ok));
        // A refusal: the failing check is the last one observed, and it is the one refused.
        let mut order = Order::default();
        assert_eq!(run(&token, &mut order).unwrap_err().error, AuthError::Scope("orders:read".into()));
        assert_eq!(order.0.last(), Some(&(Check::Scope, false)));
        let mut order = Order::default();
        assert_eq!(run(&with_claim("exp", json!(NOW - 100)), &mut order).unwrap_err().error, AuthError::Expired);
        assert_eq!(order.0.last(), Some(&(Check::Time, false)));
        assert!(!order.0.iter().any(|(c, _)| *c == Check::Signature));
    }

    #[test]
    fn claims_with_control_characters_become_encoded_headers() {
        let id = check(&with_claim("sub", json!("eve\r\nX-Admin: 1"))).unwrap();
        let v = id.headers[0].1.to_str().unwrap();
        assert!(v.starts_with("=?UTF-8?B?") && !v.contains('\n'), "{v}");
    }

    #[test]
    fn cnf_jkt_is_the_dpop_binding_and_a_malformed_cnf_is_refused() {
        assert_eq!(check(&ring().sign("rs256-1", &claims())).unwrap().jkt, None);
        let id = check(&with_claim("cnf", json!({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}))).unwrap();
        assert_eq!(id.jkt.as_deref(), Some("0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"));
        // An mTLS binding (RFC 8705) is not a DPoP binding.
        assert_eq!(check(&with_claim("cnf", json!({"x5t#S256": "abc"}))).unwrap().jkt, None);
        for bad in [json!("jkt"), json!({"jkt": 1}), json!({"jkt": ""}), json!([])] {
            assert!(matches!(check(&with_claim("cnf", bad.clone())), Err(AuthError::Malformed(_))), "{bad}");
        }
    }
}
