//! A development identity provider: fresh keys in memory, a discovery document and a JWKS on
//! loopback, and a signer. `jwtgate demo` trusts one; the tests and benches drive one with its
//! switches (failures, hangs, garbage, keys added and removed, hit counters). Never reachable
//! from `serve`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, KeyPair as _};
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::algorithm::Algorithm;

/// How the JWKS and discovery endpoints behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Serve the documents.
    Normal,
    /// Answer 500.
    Error,
    /// Accept the request and hold the answer while the mode stays `Hang` (forever, unless a
    /// test switches the mode: then the held requests answer as the new mode says).
    Hang,
    /// Answer 200 with a body that is not JSON.
    Garbage,
}

enum Signer {
    Rsa(aws_lc_rs::rsa::KeyPair),
    Ec(sig::EcdsaKeyPair),
    Ed(sig::Ed25519KeyPair),
}

struct DevKey {
    kid: String,
    alg: Algorithm,
    signer: Signer,
    jwk: Value,
    published: bool,
}

/// Signing keys and their public JWKs, without any server: for unit tests, benches and fuzzing.
#[derive(Default)]
pub struct KeyRing {
    keys: Vec<DevKey>,
}

impl KeyRing {
    /// A ring with one RS256, one ES256 and one EdDSA key (`rs256-1`, `es256-1`, `eddsa-1`).
    pub fn standard() -> KeyRing {
        let mut ring = KeyRing::default();
        for (kid, alg) in [("rs256-1", Algorithm::RS256), ("es256-1", Algorithm::ES256), ("eddsa-1", Algorithm::EdDSA)]
        {
            ring.add_key(kid, alg);
        }
        ring
    }

    /// Generates and publishes a key.
    pub fn add_key(&mut self, kid: &str, alg: Algorithm) {
        self.keys.push(generate(alg, kid));
    }

    fn key(&self, kid: &str) -> &DevKey {
        self.keys.iter().find(|k| k.kid == kid).unwrap_or_else(|| panic!("no key {kid}"))
    }

    /// The public JWK of a key.
    pub fn public_jwk(&self, kid: &str) -> Value {
        self.key(kid).jwk.clone()
    }

    /// The JWKS document of the published keys.
    pub fn jwks(&self) -> Value {
        json!({ "keys": self.keys.iter().filter(|k| k.published).map(|k| k.jwk.clone()).collect::<Vec<_>>() })
    }

    /// Signs `claims` with key `kid` and a standard header `{"alg", "typ": "JWT", "kid"}`.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        let alg = self.key(kid).alg;
        let header = json!({"alg": alg.name(), "typ": "JWT", "kid": kid});
        self.sign_raw(kid, alg, header.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// The RFC 7638 thumbprint of a key: the `cnf.jkt` of tokens bound to it.
    pub fn thumbprint(&self, kid: &str) -> String {
        crate::dpop::thumbprint(self.key(kid).jwk.as_object().expect("object")).expect("complete jwk")
    }

    /// A DPoP proof (RFC 9449 §4.2) made with key `kid` as a client would: `typ: dpop+jwt`, the
    /// key's algorithm, its public `jwk`, and `jti`, `htm`, `htu`, `iat`, and `ath` of `token`.
    pub fn dpop_proof(&self, kid: &str, htm: &str, htu: &str, token: &str, iat: i64, jti: &str) -> String {
        let claims =
            json!({"jti": jti, "htm": htm, "htu": htu, "iat": iat, "ath": crate::dpop::access_token_hash(token)});
        self.dpop_proof_raw(kid, json!({}), &claims)
    }

    /// A DPoP proof with these claims; `header` members override the standard ones.
    pub fn dpop_proof_raw(&self, kid: &str, header: Value, claims: &Value) -> String {
        let key = self.key(kid);
        let mut jwk = key.jwk.clone();
        jwk.as_object_mut().expect("object").retain(|k, _| !matches!(k.as_str(), "kid" | "use" | "alg"));
        let mut h = json!({"typ": "dpop+jwt", "alg": format!("{:?}", key.alg), "jwk": jwk});
        for (k, v) in header.as_object().expect("object") {
            h[k] = v.clone();
        }
        self.sign_raw(kid, key.alg, h.to_string().as_bytes(), claims.to_string().as_bytes())
    }

    /// Signs arbitrary header and payload bytes with key `kid` using `alg` (which may differ
    /// from the key's own, to build hostile tokens).
    pub fn sign_raw(&self, kid: &str, alg: Algorithm, header: &[u8], payload: &[u8]) -> String {
        let input = format!("{}.{}", b64(header), b64(payload));
        let signature = sign_bytes(self.key(kid), alg, input.as_bytes());
        format!("{input}.{}", b64(&signature))
    }
}

struct Shared {
    issuer: String,
    keys: Mutex<KeyRing>,
    mode: Mutex<Mode>,
    mode_changed: tokio::sync::Notify,
    max_age: Mutex<Option<u64>>,
    extra_entries: Mutex<Vec<Value>>,
    jwks_hits: AtomicUsize,
    discovery_hits: AtomicUsize,
}

/// A running development issuer. Dropping it stops the server.
pub struct DevIssuer {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for DevIssuer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn generate(alg: Algorithm, kid: &str) -> DevKey {
    let (signer, mut jwk) = match alg {
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => {
            let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA keygen");
            let public = kp.public_key();
            let jwk = json!({"kty": "RSA", "n": b64(public.modulus().big_endian_without_leading_zero()), "e": b64(public.exponent().big_endian_without_leading_zero())});
            (Signer::Rsa(kp), jwk)
        }
        Algorithm::ES256 | Algorithm::ES384 | Algorithm::ES512 => {
            let (signing, crv, len) = match alg {
                Algorithm::ES256 => (&sig::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256", 32),
                Algorithm::ES384 => (&sig::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384", 48),
                _ => (&sig::ECDSA_P521_SHA512_FIXED_SIGNING, "P-521", 66),
            };
            let kp = sig::EcdsaKeyPair::generate(signing).expect("EC keygen");
            let point = kp.public_key().as_ref().to_vec();
            let jwk = json!({"kty": "EC", "crv": crv, "x": b64(&point[1..1 + len]), "y": b64(&point[1 + len..])});
            (Signer::Ec(kp), jwk)
        }
        Algorithm::EdDSA => {
            let kp = sig::Ed25519KeyPair::generate().expect("Ed25519 keygen");
            let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(kp.public_key().as_ref())});
            (Signer::Ed(kp), jwk)
        }
    };
    jwk["kid"] = json!(kid);
    jwk["use"] = json!("sig");
    jwk["alg"] = json!(alg.name());
    DevKey { kid: kid.to_string(), alg, signer, jwk, published: true }
}

fn sign_bytes(key: &DevKey, alg: Algorithm, msg: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    match &key.signer {
        Signer::Rsa(kp) => {
            let padding: &'static dyn sig::RsaEncoding = match alg {
                Algorithm::RS256 => &sig::RSA_PKCS1_SHA256,
                Algorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                Algorithm::RS512 => &sig::RSA_PKCS1_SHA512,
                Algorithm::PS256 => &sig::RSA_PSS_SHA256,
                Algorithm::PS384 => &sig::RSA_PSS_SHA384,
                Algorithm::PS512 => &sig::RSA_PSS_SHA512,
                other => panic!("{other:?} is not an RSA algorithm"),
            };
            let mut out = vec![0; kp.public_modulus_len()];
            kp.sign(padding, &rng, msg, &mut out).expect("RSA sign");
            out
        }
        Signer::Ec(kp) => kp.sign(&rng, msg).expect("ECDSA sign").as_ref().to_vec(),
        Signer::Ed(kp) => kp.sign(msg).as_ref().to_vec(),
    }
}

impl DevIssuer {
    /// Starts on `addr` (port 0 for any free port) with one RS256, one ES256 and one EdDSA key.
    pub async fn start(addr: SocketAddr) -> std::io::Result<DevIssuer> {
        let issuer = DevIssuer::start_empty(addr).await?;
        issuer.add_key("rs256-1", Algorithm::RS256);
        issuer.add_key("es256-1", Algorithm::ES256);
        issuer.add_key("eddsa-1", Algorithm::EdDSA);
        Ok(issuer)
    }

    /// Starts with no keys.
    pub async fn start_empty(addr: SocketAddr) -> std::io::Result<DevIssuer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            keys: Mutex::new(KeyRing::default()),
            mode: Mutex::new(Mode::Normal),
            mode_changed: tokio::sync::Notify::new(),
            max_age: Mutex::new(None),
            extra_entries: Mutex::new(Vec::new()),
            jwks_hits: AtomicUsize::new(0),
            discovery_hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned()).await;
        });
        Ok(DevIssuer { shared, addr, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `iss` value, which is also the discovery base URL.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.shared.issuer)
    }

    /// Generates and publishes a key.
    pub fn add_key(&self, kid: &str, alg: Algorithm) {
        self.shared.keys.lock().unwrap().add_key(kid, alg);
    }

    fn set_published(&self, kid: &str, published: bool) {
        for k in self.shared.keys.lock().unwrap().keys.iter_mut().filter(|k| k.kid == kid) {
            k.published = published;
        }
    }

    /// Stops publishing a key (it can still sign: tokens from a retired key).
    pub fn unpublish(&self, kid: &str) {
        self.set_published(kid, false);
    }

    /// Publishes a previously unpublished key again.
    pub fn publish(&self, kid: &str) {
        self.set_published(kid, true);
    }

    /// Adds raw entries to the JWKS (weak or odd keys, for the skip rules).
    pub fn add_raw_jwk(&self, jwk: Value) {
        self.shared.extra_entries.lock().unwrap().push(jwk);
    }

    /// The public JWK of a key.
    pub fn public_jwk(&self, kid: &str) -> Value {
        self.shared.keys.lock().unwrap().public_jwk(kid)
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
        self.shared.mode_changed.notify_waiters();
    }

    /// Sends `Cache-Control: max-age=N` with the JWKS.
    pub fn set_max_age(&self, secs: Option<u64>) {
        *self.shared.max_age.lock().unwrap() = secs;
    }

    pub fn jwks_hits(&self) -> usize {
        self.shared.jwks_hits.load(Ordering::SeqCst)
    }

    pub fn discovery_hits(&self) -> usize {
        self.shared.discovery_hits.load(Ordering::SeqCst)
    }

    /// Signs `claims` with key `kid` and a standard header `{"alg", "typ": "JWT", "kid"}`.
    pub fn sign(&self, kid: &str, claims: &Value) -> String {
        self.shared.keys.lock().unwrap().sign(kid, claims)
    }

    /// Signs arbitrary header and payload bytes (see [`KeyRing::sign_raw`]).
    pub fn sign_raw(&self, kid: &str, alg: Algorithm, header: &[u8], payload: &[u8]) -> String {
        self.shared.keys.lock().unwrap().sign_raw(kid, alg, header, payload)
    }

    /// Claims for a token valid now for `ttl` seconds, with this issuer and audience.
    pub fn claims(&self, sub: &str, aud: &str, ttl: i64) -> Value {
        let now = crate::gate::unix_now();
        json!({"iss": self.issuer(), "sub": sub, "aud": aud, "iat": now, "exp": now + ttl})
    }
}

/// The failure response the current mode asks for, after hanging if it asks for that.
async fn misbehave(shared: &Shared) -> Option<Response> {
    loop {
        // Registered before reading the mode, so a switch in between is not missed.
        let changed = shared.mode_changed.notified();
        let mode = *shared.mode.lock().unwrap();
        return match mode {
            Mode::Normal => None,
            Mode::Error => Some((http::StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response()),
            Mode::Garbage => Some("<html>this is not JSON".into_response()),
            Mode::Hang => {
                changed.await;
                continue;
            }
        };
    }
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = misbehave(&shared).await {
        return r;
    }
    let body = json!({
        "issuer": shared.issuer,
        "jwks_uri": format!("{}/jwks", shared.issuer),
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
    });
    ([(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_hits.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = misbehave(&shared).await {
        return r;
    }
    let mut doc = shared.keys.lock().unwrap().jwks();
    let keys = doc["keys"].as_array_mut().expect("keys array");
    keys.extend(shared.extra_entries.lock().unwrap().iter().cloned());
    let body = doc.to_string();
    let mut response = ([(http::header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(secs) = *shared.max_age.lock().unwrap() {
        response.headers_mut().insert(http::header::CACHE_CONTROL, format!("max-age={secs}").parse().expect("digits"));
    }
    response
}
