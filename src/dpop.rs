//! DPoP (RFC 9449): the proof of possession that binds an access token to a key the client
//! holds. Pure checks of one proof ([`check_proof`]), the RFC 7638 thumbprint, `htu`
//! normalisation (RFC 3986 §6.2.2-6.2.3), and the per-replica replay store ([`ReplayStore`]).
//!
//! What the gate does with them, in the contract's order (after the token itself is valid):
//! the scheme and the token's `cnf.jkt` must agree, the proof must pass [`check_proof`], its
//! thumbprint must equal `cnf.jkt`, and its `jti` must be new ([`ReplayStore::check_and_insert`]).
//!
//! The proof's signature is verified from the proof's own `jwk` by the token path's code: the
//! JWK is parsed by [`crate::keys::parse_jwk`] and checked by [`VerifyingKey::verify`].
//! [`ProofAlg`] keeps `EdDSA` and `Ed25519` apart only so that `dpop.algorithms` (and the
//! challenge's `algs`) say what the operator wrote.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

use crate::algorithm::Algorithm;
use crate::error::AuthError;
use crate::keys::VerifyingKey;

/// Longest proof read; a proof is a JOSE header with one public key and five short claims, and
/// even an 8192-bit RSA key keeps it under 3 KiB.
pub const MAX_PROOF_BYTES: usize = 8192;

/// JSON's safe integer range (RFC 7493 §2.2), as for the token's NumericDates.
const MAX_SAFE: f64 = 9_007_199_254_740_991.0;

/// A proof algorithm (RFC 7518 §3.1, RFC 8037, RFC 9864's `Ed25519`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProofAlg {
    ES256,
    ES384,
    ES512,
    EdDSA,
    Ed25519,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
}

impl ProofAlg {
    /// Every proof algorithm, by its JOSE name.
    pub const ALL: &[(&str, ProofAlg)] = &[
        ("ES256", ProofAlg::ES256),
        ("ES384", ProofAlg::ES384),
        ("ES512", ProofAlg::ES512),
        ("EdDSA", ProofAlg::EdDSA),
        ("Ed25519", ProofAlg::Ed25519),
        ("RS256", ProofAlg::RS256),
        ("RS384", ProofAlg::RS384),
        ("RS512", ProofAlg::RS512),
        ("PS256", ProofAlg::PS256),
        ("PS384", ProofAlg::PS384),
        ("PS512", ProofAlg::PS512),
    ];

    /// Parses a JOSE algorithm name (exact case).
    pub fn parse(name: &str) -> Option<ProofAlg> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
    }

    /// The JOSE name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, a)| *a == self).map(|(n, _)| *n).expect("listed")
    }

    /// True when an allow-list holding `self` admits `other`: `EdDSA` and `Ed25519` are one entry
    /// for Ed25519 keys, as for tokens (contract, `algorithms`).
    fn admits(self, other: ProofAlg) -> bool {
        let ed = |a| matches!(a, ProofAlg::EdDSA | ProofAlg::Ed25519);
        self == other || (ed(self) && ed(other))
    }
}

/// The `dpop:` configuration block.
#[derive(Debug, Clone)]
pub struct DpopConfig {
    /// Accepted proof algorithms; also the challenge's `algs`.
    pub algorithms: Vec<ProofAlg>,
    /// A proof's `iat` may be at most this far in the past; also how long a `jti` is remembered.
    pub max_age_seconds: u64,
    /// A proof's `iat` may be at most this far in the future.
    pub leeway_seconds: u64,
    /// Replaces the scheme of `X-Original-URL` (TLS ended before nginx).
    pub external_scheme: Option<String>,
    /// The replay store's bound, in bytes (see [`ReplayStore`]).
    pub replay_cache_bytes: usize,
}

impl Default for DpopConfig {
    fn default() -> DpopConfig {
        DpopConfig {
            algorithms: [
                ProofAlg::ES256,
                ProofAlg::ES384,
                ProofAlg::ES512,
                ProofAlg::EdDSA,
                ProofAlg::Ed25519,
                ProofAlg::RS256,
                ProofAlg::PS256,
            ]
            .to_vec(),
            max_age_seconds: 300,
            leeway_seconds: 30,
            external_scheme: None,
            replay_cache_bytes: 16 << 20,
        }
    }
}

impl DpopConfig {
    /// The challenge's `algs` value: the configured algorithms, space-separated.
    pub fn algs(&self) -> String {
        self.algorithms.iter().map(|a| a.name()).collect::<Vec<_>>().join(" ")
    }
}

/// A proof that passed every check that needs neither the token's binding nor memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// RFC 7638 thumbprint of the proof's `jwk`, base64url: must equal the token's `cnf.jkt`.
    pub jkt: String,
    /// The proof's `iat`.
    pub iat: i64,
    /// What the replay store remembers: a digest of the thumbprint and `jti`.
    pub replay_id: [u8; 16],
}

/// The original request a proof must be made for, from nginx's `X-Original-Method` and
/// `X-Original-URL`.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub method: &'a str,
    pub url: &'a str,
}

/// The binding rule (RFC 9449 §7.1): the scheme, the token's `cnf.jkt` and `?dpop=required` must
/// agree. `Ok(true)` when a proof must then be checked, `Ok(false)` for a plain bearer token.
pub fn binding(dpop_scheme: bool, bound: bool, required: bool) -> Result<bool, AuthError> {
    match (dpop_scheme, bound) {
        (true, true) => Ok(true),
        (true, false) => Err(AuthError::DpopBinding("token is not DPoP-bound")),
        // A bound token is never a bearer token, wherever it came from.
        (false, true) => Err(AuthError::DpopBinding("DPoP-bound token sent as a bearer token")),
        (false, false) if required => Err(AuthError::DpopBinding("DPoP-bound token required")),
        // An unbound bearer token: a `DPoP` header beside it is not ours to judge (§7.2).
        (false, false) => Ok(false),
    }
}

fn proof_error(detail: &'static str) -> AuthError {
    AuthError::DpopProof(detail)
}

/// Checks one proof against the access token and the original request (RFC 9449 §4.3, steps
/// 1-11 but the nonce, which jwtgate never asks for): cheap checks first, the signature last.
pub fn check_proof(
    proof: &str,
    access_token: &str,
    target: Target<'_>,
    config: &DpopConfig,
    now: i64,
) -> Result<Proof, AuthError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(proof_error("DPoP proof too large"));
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(proof_error("DPoP proof is not a compact JWS"));
    };
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s).map_err(|_| proof_error("DPoP proof is not base64url"));
    // Duplicate members are refused as in the token (RFC 8725 §2.6).
    let header = crate::json::parse_object(&b64(h)?).map_err(|_| proof_error("DPoP proof header is not JSON"))?;
    let claims = crate::json::parse_object(&b64(p)?).map_err(|_| proof_error("DPoP proof claims are not JSON"))?;
    // The signature segment's encoding is checked now, so a bad one is malformed.
    b64(s)?;

    // RFC 7515 §4.1.11 and the token path's rules: nothing we do not understand changes meaning.
    if header.contains_key("crit") || header.contains_key("b64") {
        return Err(proof_error("DPoP proof has a crit or b64 header"));
    }
    if header.contains_key("enc") || header.contains_key("zip") {
        return Err(proof_error("DPoP proof has JWE header parameters"));
    }
    // RFC 9449 §4.2: `typ` is `dpop+jwt` (a media type: case-insensitive, RFC 7515 §4.1.9).
    let typ = header.get("typ").and_then(Value::as_str).map(str::to_ascii_lowercase);
    if !matches!(typ.as_deref(), Some("dpop+jwt" | "application/dpop+jwt")) {
        return Err(proof_error("DPoP proof typ is not dpop+jwt"));
    }
    let alg = header.get("alg").and_then(Value::as_str).and_then(ProofAlg::parse);
    let alg = match alg {
        Some(a) if config.algorithms.iter().any(|c| c.admits(a)) => a,
        _ => return Err(proof_error("DPoP proof algorithm not accepted")),
    };
    let jwk = header.get("jwk").ok_or(proof_error("DPoP proof has no jwk header"))?;
    let (key, key_alg) = public_key(jwk, alg)?;

    let string = |name: &str| claims.get(name).and_then(Value::as_str);
    let jti = string("jti").filter(|j| !j.is_empty()).ok_or(proof_error("DPoP proof has no jti"))?;
    let htm = string("htm").ok_or(proof_error("DPoP proof has no htm"))?;
    let htu = string("htu").ok_or(proof_error("DPoP proof has no htu"))?;
    if htm != target.method {
        return Err(proof_error("DPoP proof htm does not match the request method"));
    }
    let want = normalize_htu(target.url, config.external_scheme.as_deref())
        .ok_or(proof_error("X-Original-URL is not an http(s) URL"))?;
    if normalize_htu(htu, None).as_deref() != Some(want.as_str()) {
        return Err(proof_error("DPoP proof htu does not match the request URL"));
    }
    let iat = match claims.get("iat") {
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() && v.abs() <= MAX_SAFE => v.floor() as i64,
            _ => return Err(proof_error("DPoP proof iat out of range")),
        },
        _ => return Err(proof_error("DPoP proof has no numeric iat")),
    };
    if iat < now.saturating_sub(config.max_age_seconds as i64) {
        return Err(proof_error("DPoP proof iat too old"));
    }
    if iat > now.saturating_add(config.leeway_seconds as i64) {
        return Err(proof_error("DPoP proof iat in the future"));
    }
    if string("ath") != Some(access_token_hash(access_token).as_str()) {
        return Err(proof_error("DPoP proof ath does not match the access token"));
    }
    if !key.verify(key_alg, &proof.as_bytes()[..h.len() + 1 + p.len()], s) {
        return Err(proof_error("DPoP proof signature does not verify"));
    }
    let jkt = thumbprint(jwk.as_object().expect("checked by public_key"))?;
    Ok(Proof { replay_id: replay_id(&jkt, jti), jkt, iat })
}

/// RFC 9449 §4.2 `ath`: base64url of the SHA-256 of the access token's ASCII.
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, token.as_bytes()))
}

fn replay_id(jkt: &str, jti: &str) -> [u8; 16] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(jkt.as_bytes());
    ctx.update(&[0]);
    ctx.update(jti.as_bytes());
    let mut out = [0u8; 16];
    out.copy_from_slice(&ctx.finish().as_ref()[..16]);
    out
}

/// The RFC 7638 thumbprint (SHA-256, base64url) of a public JWK: the required members only, in
/// lexicographic order, with no whitespace (RFC 7638 §3.2-3.3).
pub fn thumbprint(jwk: &Map<String, Value>) -> Result<String, AuthError> {
    let member =
        |name: &str| jwk.get(name).and_then(Value::as_str).ok_or(proof_error("DPoP proof jwk lacks a required member"));
    // serde_json's string serialisation is JSON's minimal escaping, as RFC 7638 §3.3 asks.
    let s = |v: &str| Value::String(v.to_string()).to_string();
    let canonical = match member("kty")? {
        "RSA" => format!(r#"{{"e":{},"kty":"RSA","n":{}}}"#, s(member("e")?), s(member("n")?)),
        "EC" => {
            format!(r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#, s(member("crv")?), s(member("x")?), s(member("y")?))
        }
        "OKP" => format!(r#"{{"crv":{},"kty":"OKP","x":{}}}"#, s(member("crv")?), s(member("x")?)),
        _ => return Err(proof_error("DPoP proof jwk has an unsupported kty")),
    };
    Ok(URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, canonical.as_bytes())))
}

/// The proof's public key, parsed by the same code as an issuer's JWKS entries
/// ([`crate::keys::parse_jwk`]: RSA 2048 to 8192 bits and no ROCA modulus, EC points on their
/// curve, `alg`/`use` consistent), and checked to fit the proof's algorithm.
fn public_key(jwk: &Value, alg: ProofAlg) -> Result<(VerifyingKey, Algorithm), AuthError> {
    let object = jwk.as_object().ok_or(proof_error("DPoP proof has no jwk header"))?;
    // RFC 9449 §4.3 step 7: the key must not be a private key.
    for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
        if object.contains_key(private) {
            return Err(proof_error("DPoP proof jwk holds private key material"));
        }
    }
    let key = crate::keys::parse_jwk(jwk).map_err(|_| proof_error("DPoP proof jwk is not a usable public key"))?;
    let alg = Algorithm::parse(alg.name()).expect("every proof algorithm is a token algorithm");
    if !key.fits(alg) {
        return Err(proof_error("DPoP proof jwk does not fit its algorithm"));
    }
    Ok((key, alg))
}

/// `unreserved` of RFC 3986 §2.3: percent-encodings of these are decoded (§6.2.2.2).
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Percent-encoding normalisation (RFC 3986 §6.2.2.1-2): hex digits upper case, unreserved
/// characters decoded, and (in a path, `encode`) any other character a URI may not hold
/// percent-encoded as its UTF-8 bytes, as URL libraries do before sending, so `a b` and `a%20b`
/// compare equal. `None` for a `%` not followed by two hex digits, or (in a host) a character a
/// URI may not hold.
fn normalize_percent(s: &str, lower: bool, encode: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            let v = u8::from_str_radix(hex, 16).ok()?;
            if unreserved(v) {
                out.push(if lower { v.to_ascii_lowercase() } else { v } as char);
            } else {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
            i += 3;
            continue;
        }
        // RFC 3986 §2: the characters a URI may hold (gen-delims, sub-delims, unreserved).
        if unreserved(c) || b":/?#[]@!$&'()*+,;=".contains(&c) {
            out.push(if lower { c.to_ascii_lowercase() } else { c } as char);
        } else if encode {
            out.push_str(&format!("%{c:02X}"));
        } else {
            return None;
        }
        i += 1;
    }
    Some(out)
}

/// Removes `.` and `..` segments (RFC 3986 §5.2.4).
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() { "/".into() } else { s }
}

/// Normalises an `htu` or an `X-Original-URL` for comparison: query and fragment dropped, then
/// RFC 3986 §6.2.2 (case, percent-encoding, dot-segments) and §6.2.3 (default port, empty path
/// as `/`). `scheme` replaces the URL's own (`dpop.external_scheme`). `None` when the URL is not
/// an absolute http(s) URL.
pub fn normalize_htu(url: &str, scheme: Option<&str>) -> Option<String> {
    let url = url.split('#').next()?.split('?').next()?;
    let (own_scheme, rest) = url.split_once("://")?;
    let scheme = scheme.unwrap_or(own_scheme).to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    // RFC 9110 §4.2.4: http(s) URIs carry no userinfo.
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => (&authority[..i], Some(&authority[i + 1..])),
        _ => (authority, None),
    };
    let host = normalize_percent(host, true, false)?;
    // A `:`, `[` or `]` belongs only to an IP literal in brackets (RFC 3986 §3.2.2).
    let literal = host.starts_with('[') && host.ends_with(']') && host.len() > 2;
    let inner = if literal { &host[1..host.len() - 1] } else { host.as_str() };
    if inner.is_empty() || inner.contains(['[', ']']) || (!literal && inner.contains(':')) {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u32 = p.parse().ok().filter(|n| *n <= 65535)?;
            (n != default_port).then_some(n)
        }
        Some(_) => return None,
    };
    let path = remove_dot_segments(&normalize_percent(path, false, true)?);
    Some(match port {
        Some(n) => format!("{scheme}://{host}:{n}{path}"),
        None => format!("{scheme}://{host}{path}"),
    })
}

/// Why [`ReplayStore::check_and_insert`] refused a proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// This proof was already accepted.
    Seen,
    /// The store was full and forgot the proofs of this proof's second: it can no longer tell,
    /// so it refuses (fail closed).
    Forgotten,
}

/// Buckets the window is cut into: forgetting one under memory pressure loses this fraction.
const BUCKETS_PER_WINDOW: i64 = 64;

struct Bucket {
    /// First `iat` second of the bucket.
    start: i64,
    ids: HashSet<[u8; 16]>,
    /// Bytes accounted for `ids` (see [`table_bytes`]).
    bytes: usize,
}

/// Bytes a hash set of this capacity holds: hashbrown allocates a power of two of slots at a load
/// factor of 7/8, each slot the 16-byte id and one control byte, plus a group of control bytes.
fn table_bytes(capacity: usize) -> usize {
    if capacity == 0 {
        return 0;
    }
    let slots = (capacity * 8 / 7).max(capacity + 1).next_power_of_two();
    slots * 17 + 16
}

/// What a bucket costs besides its table.
const BUCKET_BYTES: usize = std::mem::size_of::<Bucket>() + 48;

struct Ring {
    /// Contiguous buckets by `start`, oldest first.
    buckets: VecDeque<Bucket>,
    bytes: usize,
    /// Proofs with an `iat` below this were forgotten under memory pressure: refused.
    floor: i64,
}

/// The `jti`s of accepted proofs, per replica, remembered while their `iat` is in the window
/// (`dpop.max_age_seconds` back, `dpop.leeway_seconds` ahead), in at most
/// `dpop.replay_cache_bytes` (the table memory as hashbrown allocates it; a table that doubles
/// holds its old allocation too for the moment of the copy).
///
/// A proof is filed under its `iat` second in one of about [`BUCKETS_PER_WINDOW`] buckets that
/// cover the window; a replay carries the same `iat`, so a lookup is one hash probe and an insert
/// is O(1) (amortised over table growth). Whole buckets leave as the window moves. When the
/// bound is reached the oldest bucket is dropped and its seconds become the *floor*: proofs with
/// an older `iat` are then refused ([`Replay::Forgotten`]), never accepted twice. Under a flood
/// of valid proofs the accepted window shrinks (fresh proofs, made just before their request,
/// still pass); memory never grows.
pub struct ReplayStore {
    ring: Mutex<Ring>,
    max_bytes: usize,
    bucket_secs: i64,
    window_back: i64,
}

impl ReplayStore {
    /// A store for this configuration.
    pub fn new(config: &DpopConfig) -> ReplayStore {
        let window = (config.max_age_seconds + config.leeway_seconds) as i64;
        ReplayStore {
            ring: Mutex::new(Ring { buckets: VecDeque::new(), bytes: 0, floor: i64::MIN }),
            max_bytes: config.replay_cache_bytes,
            bucket_secs: (window / BUCKETS_PER_WINDOW).max(1),
            window_back: config.max_age_seconds as i64,
        }
    }

    /// Records a proof's id under its `iat`, or says why it must be refused. Call only for
    /// proofs that passed every other check, so that only accepted proofs take memory.
    pub fn check_and_insert(&self, id: [u8; 16], iat: i64, now: i64) -> Result<(), Replay> {
        let b = self.bucket_secs;
        let start = iat.div_euclid(b) * b;
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let ring = &mut *ring;
        // Buckets whose every second is out of the window can never match a valid proof again.
        let oldest = now.saturating_sub(self.window_back);
        while ring.buckets.front().is_some_and(|f| f.start + b <= oldest) {
            let gone = ring.buckets.pop_front().expect("front");
            ring.bytes -= gone.bytes + BUCKET_BYTES;
        }
        if iat < ring.floor {
            return Err(Replay::Forgotten);
        }
        // Keep the buckets contiguous, so that one is found by arithmetic.
        if ring.buckets.is_empty() {
            ring.buckets.push_back(Bucket { start, ids: HashSet::new(), bytes: 0 });
            ring.bytes += BUCKET_BYTES;
        }
        while ring.buckets.front().expect("non-empty").start > start {
            let s = ring.buckets.front().expect("non-empty").start - b;
            ring.buckets.push_front(Bucket { start: s, ids: HashSet::new(), bytes: 0 });
            ring.bytes += BUCKET_BYTES;
        }
        while ring.buckets.back().expect("non-empty").start < start {
            let s = ring.buckets.back().expect("non-empty").start + b;
            ring.buckets.push_back(Bucket { start: s, ids: HashSet::new(), bytes: 0 });
            ring.bytes += BUCKET_BYTES;
        }
        let index = ((start - ring.buckets[0].start) / b) as usize;
        let bucket = &mut ring.buckets[index];
        if !bucket.ids.insert(id) {
            return Err(Replay::Seen);
        }
        let bytes = table_bytes(bucket.ids.capacity());
        ring.bytes = ring.bytes + bytes - bucket.bytes;
        bucket.bytes = bytes;
        while ring.bytes > self.max_bytes {
            let Some(gone) = ring.buckets.pop_front() else { break };
            ring.bytes -= gone.bytes + BUCKET_BYTES;
            ring.floor = ring.floor.max(gone.start + b);
        }
        Ok(())
    }

    /// Bytes accounted now.
    pub fn bytes(&self) -> usize {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }

    /// Proof ids remembered now.
    pub fn len(&self) -> usize {
        self.ring.lock().unwrap_or_else(|e| e.into_inner()).buckets.iter().map(|b| b.ids.len()).sum()
    }

    /// True when no proof is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dev_issuer::KeyRing;
    use serde_json::json;
    use std::sync::OnceLock;

    const NOW: i64 = 1_800_000_000;
    const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln";
    const URL: &str = "https://api.example.com/orders/7?x=1";

    fn ring() -> &'static KeyRing {
        static RING: OnceLock<KeyRing> = OnceLock::new();
        RING.get_or_init(|| {
            let mut r = KeyRing::standard();
            r.add_key("es384-1", Algorithm::ES384);
            r.add_key("ps256-1", Algorithm::PS256);
            r.add_key("es512-1", Algorithm::ES512);
            r
        })
    }

    /// The proof key's public JWK, without the dev issuer's `kid`/`alg`/`use` members.
    fn jwk(kid: &str) -> Value {
        let mut j = ring().public_jwk(kid);
        let o = j.as_object_mut().unwrap();
        o.retain(|k, _| matches!(k.as_str(), "kty" | "crv" | "x" | "y" | "n" | "e"));
        j
    }

    fn claims() -> Value {
        json!({"jti": "j-1", "htm": "GET", "htu": "https://api.example.com/orders/7", "iat": NOW, "ath": access_token_hash(TOKEN)})
    }

    fn make(kid: &str, alg: &str, header: Value, claims: &Value) -> String {
        let a = match alg {
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "ES512" => Algorithm::ES512,
            "EdDSA" | "Ed25519" => Algorithm::EdDSA,
            "PS256" => Algorithm::PS256,
            _ => Algorithm::RS256,
        };
        ring().sign_raw(kid, a, header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    fn proof(kid: &str, alg: &str, claims: &Value) -> String {
        make(kid, alg, json!({"typ": "dpop+jwt", "alg": alg, "jwk": jwk(kid)}), claims)
    }

    fn check(p: &str) -> Result<Proof, AuthError> {
        check_proof(p, TOKEN, Target { method: "GET", url: URL }, &DpopConfig::default(), NOW)
    }

    fn refused(p: &str) -> &'static str {
        match check(p) {
            Err(AuthError::DpopProof(why)) => why,
            other => panic!("expected a proof refusal, got {other:?}"),
        }
    }

    #[test]
    fn rfc7638_example_thumbprint() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(thumbprint(jwk.as_object().unwrap()).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn rfc9449_example_ath_and_ec_thumbprint() {
        // RFC 9449 §7.1: the access token and its `ath`; §6.1: the proof key's `jkt`.
        let token = "Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU";
        assert_eq!(access_token_hash(token), "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo");
        let jwk = json!({"kty": "EC", "x": "l8tFrhx-34tV3hRICRDY9zCkDlpBhF42UQUfWVAWBFs",
            "y": "9VE4jf_Ok_o64zbTTlcuNJajHmt6v9TDVrU0CdvGRDA", "crv": "P-256"});
        assert_eq!(thumbprint(jwk.as_object().unwrap()).unwrap(), "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I");
    }

    #[test]
    fn valid_proofs_of_each_key_type_pass_and_carry_the_thumbprint() {
        for (kid, alg) in [
            ("es256-1", "ES256"),
            ("eddsa-1", "EdDSA"),
            ("eddsa-1", "Ed25519"),
            ("es384-1", "ES384"),
            ("rs256-1", "RS256"),
            ("ps256-1", "PS256"),
            ("es512-1", "ES512"),
        ] {
            let p = check(&proof(kid, alg, &claims())).unwrap_or_else(|e| panic!("{alg}: {e:?}"));
            assert_eq!(p.jkt, thumbprint(jwk(kid).as_object().unwrap()).unwrap());
            assert_eq!(p.iat, NOW);
        }
    }

    #[test]
    fn htu_normalisation_table() {
        let same = [
            ("https://api.example.com/orders", "HTTPS://API.Example.COM/orders"),
            ("https://api.example.com/orders", "https://api.example.com:443/orders"),
            ("http://api.example.com/", "http://api.example.com:80"),
            ("http://api.example.com/", "http://api.example.com"),
            ("https://a.example/~x/y", "https://a.example/%7Ex/%79"),
            ("https://a.example/a%2Fb", "https://a.example/a%2fb"),
            ("https://a.example/a/c", "https://a.example/a/b/../c"),
            ("https://a.example/a/b/", "https://a.example/a/./b/."),
            ("https://a.example/a/", "https://a.example/a/b/.."),
            ("https://a.example/x", "https://a.example/x?q=1#frag"),
            ("https://a.example/x", "https://a.example/x#frag?not-a-query"),
            ("https://a.example:8443/x", "https://A.EXAMPLE:8443/x"),
            ("https://[::1]:8443/", "https://[::1]:8443"),
            ("https://[::1]/", "https://[::1]:443/"),
            // Characters a URI may not hold are compared percent-encoded, as clients send them.
            ("https://a.example/a%20b", "https://a.example/a b"),
            ("https://a.example/%C3%A9", "https://a.example/\u{e9}"),
            ("https://a.example/x%7Cy", "https://a.example/x|y"),
        ];
        for (a, b) in same {
            assert_eq!(normalize_htu(a, None), normalize_htu(b, None), "{a} vs {b}");
            assert!(normalize_htu(a, None).is_some(), "{a}");
        }
        let different = [
            ("https://a.example/x", "http://a.example/x"),
            ("https://a.example/x", "https://a.example:8443/x"),
            ("https://a.example/x", "https://a.example/X"),
            ("https://a.example/a%2Fb", "https://a.example/a/b"),
            ("https://a.example/x", "https://b.example/x"),
        ];
        for (a, b) in different {
            assert_ne!(normalize_htu(a, None), normalize_htu(b, None), "{a} vs {b}");
        }
        for bad in [
            "/relative",
            "ftp://a.example/",
            "https://user@a.example/",
            "https:///x",
            "https://a.example/%zz",
            "https://a.example/%4",
            "https://a b.example/",
            "https://\u{e9}.example/",
            "https://a.example:99999/",
            "https://a.example:x/",
            "http://a.example:80:80/",
            "https://[]/",
            "https://a]b/",
        ] {
            assert_eq!(normalize_htu(bad, None), None, "{bad}");
        }
        assert_eq!(
            normalize_htu("http://a.example/x", Some("https")).as_deref(),
            Some("https://a.example/x"),
            "external_scheme replaces the scheme"
        );
    }

    #[test]
    fn external_scheme_makes_an_http_original_url_match_an_https_htu() {
        let config = DpopConfig { external_scheme: Some("https".into()), ..DpopConfig::default() };
        let p = proof("es256-1", "ES256", &claims());
        let t = Target { method: "GET", url: "http://api.example.com/orders/7" };
        assert!(check_proof(&p, TOKEN, t, &config, NOW).is_ok());
        assert!(check_proof(&p, TOKEN, t, &DpopConfig::default(), NOW).is_err());
    }

    #[test]
    fn each_broken_proof_is_refused_with_its_reason() {
        let k = "es256-1";
        let with = |name: &str, v: Value| {
            let mut c = claims();
            c[name] = v;
            proof(k, "ES256", &c)
        };
        let without = |name: &str| {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(name);
            proof(k, "ES256", &c)
        };
        let header = |h: Value| make(k, "ES256", h, &claims());
        let mut private = ring().public_jwk(k);
        private["d"] = json!("AAAA");
        let cases: Vec<(String, &str)> = vec![
            ("a.b".into(), "not a compact JWS"),
            (format!("{}!", proof(k, "ES256", &claims())), "base64url"),
            (header(json!({"typ": "jwt", "alg": "ES256", "jwk": jwk(k)})), "typ"),
            (header(json!({"alg": "ES256", "jwk": jwk(k)})), "typ"),
            (header(json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": jwk(k)})), "algorithm"),
            (header(json!({"typ": "dpop+jwt", "alg": "none", "jwk": jwk(k)})), "algorithm"),
            (header(json!({"typ": "dpop+jwt", "alg": "ES256"})), "no jwk"),
            (header(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": private})), "private"),
            (header(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk("eddsa-1")})), "fit"),
            (header(json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk(k), "crit": ["x"]})), "crit"),
            (
                make("es256-1", "ES256", json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk("es384-1")}), &claims()),
                "fit",
            ),
            (with("htm", json!("POST")), "htm"),
            (with("htu", json!("https://api.example.com/orders/8")), "htu"),
            (with("htu", json!("https://evil.example/orders/7")), "htu"),
            (with("iat", json!(NOW - 301)), "too old"),
            (with("iat", json!(NOW + 31)), "future"),
            (with("iat", json!("now")), "iat"),
            (with("ath", json!(access_token_hash("another token"))), "ath"),
            (without("ath"), "ath"),
            (without("jti"), "jti"),
            (with("jti", json!("")), "jti"),
            (without("htm"), "htm"),
            (without("htu"), "htu"),
            ("x".repeat(MAX_PROOF_BYTES + 1), "too large"),
        ];
        for (p, why) in cases {
            let got = refused(&p);
            assert!(got.contains(why), "expected `{why}`, got `{got}`");
        }
        // Another key's signature over this proof's header (and its jwk).
        let forged = {
            let good = proof(k, "ES256", &claims());
            let other = make("es384-1", "ES384", json!({}), &claims());
            let sig = other.rsplit('.').next().unwrap();
            format!("{}.{sig}", good.rsplit_once('.').unwrap().0)
        };
        assert!(refused(&forged).contains("signature"));
        // Duplicate members in the header are malformed (RFC 8725 §2.6).
        let dup = format!(r#"{{"typ":"dpop+jwt","alg":"ES256","alg":"ES384","jwk":{}}}"#, jwk(k));
        let p = ring().sign_raw(k, Algorithm::ES256, dup.as_bytes(), claims().to_string().as_bytes());
        assert!(refused(&p).contains("header"));
    }

    #[test]
    fn an_algorithm_outside_dpop_algorithms_is_refused() {
        let config = DpopConfig { algorithms: vec![ProofAlg::ES256], ..DpopConfig::default() };
        let p = proof("eddsa-1", "EdDSA", &claims());
        let t = Target { method: "GET", url: URL };
        assert_eq!(
            check_proof(&p, TOKEN, t, &config, NOW),
            Err(AuthError::DpopProof("DPoP proof algorithm not accepted"))
        );
        // EdDSA and Ed25519 are one entry, as for tokens.
        let config = DpopConfig { algorithms: vec![ProofAlg::Ed25519], ..DpopConfig::default() };
        assert!(check_proof(&p, TOKEN, t, &config, NOW).is_ok());
    }

    #[test]
    fn the_iat_window_is_max_age_back_and_leeway_ahead() {
        for (iat, ok) in [(NOW - 300, true), (NOW - 301, false), (NOW + 30, true), (NOW + 31, false)] {
            let mut c = claims();
            c["iat"] = json!(iat);
            assert_eq!(check(&proof("es256-1", "ES256", &c)).is_ok(), ok, "iat {iat}");
        }
    }

    #[test]
    fn a_jti_is_accepted_once_per_key() {
        let store = ReplayStore::new(&DpopConfig::default());
        let p = check(&proof("es256-1", "ES256", &claims())).unwrap();
        assert_eq!(store.check_and_insert(p.replay_id, p.iat, NOW), Ok(()));
        assert_eq!(store.check_and_insert(p.replay_id, p.iat, NOW + 100), Err(Replay::Seen));
        // The same jti from another key is another proof.
        let q = check(&proof("eddsa-1", "EdDSA", &claims())).unwrap();
        assert_ne!(p.replay_id, q.replay_id);
        assert_eq!(store.check_and_insert(q.replay_id, q.iat, NOW), Ok(()));
    }

    #[test]
    fn the_replay_store_forgets_proofs_once_their_iat_leaves_the_window() {
        let store = ReplayStore::new(&DpopConfig::default());
        for i in 0..1000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            store.check_and_insert(id, NOW, NOW).unwrap();
        }
        assert_eq!(store.len(), 1000);
        // Past the window (and one bucket), everything is gone.
        store.check_and_insert([9; 16], NOW + 400, NOW + 400).unwrap();
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn the_replay_store_is_bounded_in_bytes_and_never_accepts_a_replay() {
        let config = DpopConfig { replay_cache_bytes: 256 * 1024, ..DpopConfig::default() };
        let store = ReplayStore::new(&config);
        let id = |i: u64| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.to_be_bytes());
            id
        };
        // A flood of proofs, ten seconds of iat each second, across the whole window.
        let mut accepted = Vec::new();
        for i in 0..200_000u64 {
            let now = NOW + (i / 1000) as i64;
            let iat = now - (i % 10) as i64;
            if store.check_and_insert(id(i), iat, now).is_ok() {
                accepted.push((i, iat));
            }
            assert!(store.bytes() <= config.replay_cache_bytes, "{} bytes at {i}", store.bytes());
        }
        let now = NOW + 200;
        // Fresh proofs still pass.
        assert_eq!(store.check_and_insert(id(u64::MAX), now, now), Ok(()));
        // No accepted proof that is still in the window is accepted again.
        for (i, iat) in accepted.iter().rev().take(50_000) {
            if *iat >= now - 300 {
                assert!(store.check_and_insert(id(*i), *iat, now).is_err(), "proof {i} accepted twice");
            }
        }
    }
}
