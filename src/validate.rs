//! The authenticate stage: from a compact JWS to a verified [`Identity`], as pure functions of
//! (token, issuers, key sets, now). No IO, no clock reads, no globals, and nothing that depends
//! on the request's `auth-url` policy, so what it proves is cached and reused by every Ingress.
//!
//! Order of work (cheap refusals first, and never a fetch for them):
//! 1. [`Jws::parse`]: three base64url segments, strict JOSE header (no duplicate members, no
//!    `crit`/`b64`/`enc`/`zip`, an allowed asymmetric `alg`).
//! 2. [`precheck`]: strict claims set, issuer chosen by `iss`, algorithm allow-list, `typ`,
//!    `exp`/`nbf`/`iat` with leeway, the audience claim's shape — all before any signature work.
//! 3. [`finish`]: key selection by `kid` within that issuer's keys only, signature verification
//!    with `jsonwebtoken` (aws-lc-rs), and the identity headers (the render stage, once per token).
//!
//! The policy of the request (issuer filter, audience, step-up, scope, claims, named policies) is
//! the authorize stage, [`crate::authorization::authorize`], run on every request.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderName, HeaderValue};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::claims::Claims;
use crate::config::Config;
use crate::config::IssuerConfig;
use crate::error::{AuthError, Refused};
use crate::headers::ClaimHeader;
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
    /// The values of the issuer's audience claim, read once by [`precheck`].
    pub audiences: Vec<String>,
}

/// A verified identity: what the token cache keeps and what headers are rendered from.
#[derive(Debug)]
pub struct Identity {
    pub issuer: usize,
    pub exp: i64,
    /// The values of the issuer's audience claim (`aud` by default).
    pub audiences: Box<[Box<str>]>,
    /// Granted scopes from the issuer's scope claims.
    pub scopes: Box<[Box<str>]>,
    /// Identity headers, rendered once at verification.
    pub headers: Box<[(HeaderName, HeaderValue)]>,
    /// The verified claims set: what `claim.`, step-up and policies read on every request.
    pub claims: Claims,
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

/// Every check that needs no key material, cheapest first. Refusals after the issuer is
/// known name it.
pub fn precheck<'a>(token: &'a str, issuers: &[IssuerConfig], now: i64) -> Result<Candidate<'a>, Refused> {
    let jws = Jws::parse(token)?;
    let claims = crate::json::parse_object(&jws.payload).map_err(AuthError::Malformed)?;

    // RFC 7519 §4.1.1: `iss` is a single StringOrURI; an array is not an issuer.
    let iss = match claims.get("iss") {
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(AuthError::Malformed("iss is not a string").into()),
        None => return Err(AuthError::Issuer.into()),
    };
    let index = issuers.iter().position(|i| i.issuer == iss).ok_or(AuthError::Issuer)?;
    check_claims(jws, claims, &issuers[index], index, now).map_err(|e| e.at(index))
}

/// The checks of [`precheck`] once the issuer is known.
fn check_claims<'a>(
    jws: Jws<'a>,
    claims: Map<String, Value>,
    issuer: &IssuerConfig,
    index: usize,
    now: i64,
) -> Result<Candidate<'a>, AuthError> {
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

    // Read (and its shape checked) here; which audience is accepted is the request's policy.
    let audiences = string_or_array(claims.get(&issuer.audience_claim))?;

    Ok(Candidate { jws, claims, issuer: index, exp, audiences })
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
    let audiences = candidate.audiences.into_iter().map(Box::from).collect();
    let scopes = scopes(&candidate.claims, &issuer.scope_claims).into_boxed_slice();
    let claims = Value::Object(candidate.claims);
    let headers = crate::headers::render(&claims, mapping).into_boxed_slice();
    let claims = Claims::new(claims);
    Ok((Identity { issuer: candidate.issuer, exp: candidate.exp, audiences, scopes, headers, claims }, key))
}

/// The whole decision for one token with the keys in hand (`keys[i]` for issuer `i`): authenticate
/// ([`precheck`], [`finish`]), then authorize with `policy`, for a request without
/// `X-Original-*` headers. The gate runs the same stages with a cache and a key refresh between.
pub fn validate(
    token: &str,
    config: &Config,
    keys: &[&KeySet],
    policy: &Policy,
    now: i64,
) -> Result<Identity, AuthError> {
    let candidate = precheck(token, &config.issuers, now).map_err(|r| r.error)?;
    let ks = keys[candidate.issuer];
    let (identity, _) = finish(candidate, &config.issuers, ks, &config.claims_to_headers)?;
    let issuer = &config.issuers[identity.issuer];
    crate::authorization::authorize(&identity, policy, issuer, &config.policies, &http::HeaderMap::new(), now)?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;
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
            r
        })
    }

    fn config(issuer_extra: &str) -> Config {
        Config::from_yaml(&format!(
            "issuers:\n  - name: main\n    issuer: \"{ISS}\"\n    audiences: [orders-api]\n    algorithms: [RS256, ES256, EdDSA, ES384]\n{issuer_extra}"
        ))
        .unwrap()
    }

    fn claims() -> Value {
        json!({"iss": ISS, "sub": "alice", "aud": "orders-api", "iat": NOW - 10, "exp": NOW + 300})
    }

    fn check_with(token: &str, cfg: &Config, query: Option<&str>) -> Result<Identity, AuthError> {
        let (keys, _) = KeySet::from_jwks(ring().jwks().to_string().as_bytes(), 100).unwrap();
        let policy = Policy::parse(query, cfg)?;
        validate(token, cfg, &[&keys], &policy, NOW)
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
        for kid in ["rs256-1", "es256-1", "eddsa-1", "es384-1"] {
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

    #[test]
    fn claims_with_control_characters_become_encoded_headers() {
        let id = check(&with_claim("sub", json!("eve\r\nX-Admin: 1"))).unwrap();
        let v = id.headers[0].1.to_str().unwrap();
        assert!(v.starts_with("=?UTF-8?B?") && !v.contains('\n'), "{v}");
    }
}
