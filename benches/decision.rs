//! Criterion benches of the pure decision core, each signature group next to a raw
//! `jsonwebtoken::decode` of the same token with an equivalent `Validation` (same algorithm,
//! audience, issuer and leeway; the `DecodingKey` built once, outside the loop).
//!
//! Run: `cargo bench --bench decision` (numbers and the load benchmark: BENCHMARKS.md). The
//! `gate_decide_dpop` group is the DPoP decision on a cached token (ES256 and EdDSA proofs).
//! Benches report, tests assert: nothing here checks a timing.

use std::future::Future;
use std::hint::black_box;
use std::pin::{Pin, pin};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self as sig, ParsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group};
use http::HeaderMap;
use jsonwebtoken::{DecodingKey, Validation};
use jwtgate::algorithm::Algorithm;
use serde_json::{Value, json};

use jwtgate::authorization::authorize;
use jwtgate::config::Config;
use jwtgate::dev_issuer::KeyRing;
use jwtgate::gate::{Gate, Issuer};
use jwtgate::jwks::{Fetched, IssuerKeys, KeySource};
use jwtgate::keys::KeySet;
use jwtgate::policy::Policy;
use jwtgate::token_cache::{self, TokenCache};
use jwtgate::validate;

const ISS: &str = "https://idp.bench.example/realms/main";
const AUD: &str = "orders-api";
const LEEWAY: u64 = 30;
/// A typical per-Ingress `auth-url` query.
const QUERY: &str = "issuer=main&aud=orders-api&scope=orders:read";
/// The same with one typical `claim.` requirement.
const QUERY_CLAIM: &str = "issuer=main&aud=orders-api&scope=orders:read&claim.realm_access.roles=editor";
/// The same with one typical CEL policy (`editors`, in the bench config).
const QUERY_POLICY: &str = "issuer=main&aud=orders-api&scope=orders:read&policy=editors";

/// The signing algorithms benched, with the kid of the key that signs each.
const ALGS: &[(&str, Algorithm)] = &[
    ("rs256", Algorithm::RS256),
    ("ps256", Algorithm::PS256),
    ("es256", Algorithm::ES256),
    ("es384", Algorithm::ES384),
    ("eddsa", Algorithm::EdDSA),
];

fn config_yaml() -> String {
    format!(
        r#"
listen: "127.0.0.1:0"
issuers:
  - name: main
    issuer: "{ISS}"
    jwks_uri: "https://idp.bench.example/realms/main/certs"
    audiences: ["{AUD}"]
    algorithms: ["RS256", "PS256", "ES256", "ES384", "EdDSA"]
    leeway_seconds: {LEEWAY}
claims_to_headers:
  - {{claim: sub, header: X-Auth-Subject}}
  - {{claim: iss, header: X-Auth-Issuer}}
  - {{claim: email, header: X-Auth-Email}}
  - {{claim: realm_access.roles, header: X-Auth-Roles}}
policies:
  editors: 'claims.realm_access.roles.exists(r, r == "editor")'
"#
    )
}

fn now() -> i64 {
    jwtgate::gate::unix_now()
}

/// A claims set shaped like a Keycloak access token, valid for an hour.
fn claims(sub: &str, now: i64) -> Value {
    json!({
        "iss": ISS, "sub": sub, "aud": AUD, "azp": "orders-web", "typ": "Bearer",
        "iat": now, "exp": now + 3600, "jti": format!("{sub}-{now}"),
        "email": format!("{sub}@example.com"), "email_verified": true, "name": "Bench User",
        "scope": "openid email orders:read orders:write",
        "realm_access": {"roles": ["viewer", "editor", "offline_access"]},
    })
}

/// Everything the benches share: keys, config, one token per algorithm.
struct Fixture {
    ring: KeyRing,
    config: Config,
    keys: KeySet,
    now: i64,
    tokens: Vec<(&'static str, Algorithm, String)>,
}

/// Built once: RSA key generation is slow, and `cargo test --all-targets` runs every bench once.
static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| build_fixture(ALGS));

fn fixture() -> &'static Fixture {
    &FIXTURE
}

/// Keys (and a token) for `algs` only; the configuration allows all of [`ALGS`].
fn build_fixture(algs: &[(&'static str, Algorithm)]) -> Fixture {
    let mut ring = KeyRing::default();
    for (kid, alg) in algs {
        ring.add_key(kid, *alg);
    }
    let config = Config::from_yaml(&config_yaml()).expect("bench config");
    let (keys, skipped) = KeySet::from_jwks(ring.jwks().to_string().as_bytes(), 100).expect("JWKS");
    assert!(skipped.is_empty(), "{skipped:?}");
    let now = now();
    let c = claims("user-1", now);
    let tokens = algs.iter().map(|(kid, alg)| (*kid, *alg, ring.sign(kid, &c))).collect();
    Fixture { ring, config, keys, now, tokens }
}

/// What a jsonwebtoken user would write for the same checks.
fn raw_validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg.jsonwebtoken().expect("jsonwebtoken has it"));
    v.leeway = LEEWAY;
    v.validate_nbf = true;
    v.set_audience(&[AUD]);
    v.set_issuer(&[ISS]);
    v
}

fn raw_key(ring: &KeyRing, kid: &str) -> DecodingKey {
    let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(ring.public_jwk(kid)).expect("JWK");
    DecodingKey::from_jwk(&jwk).expect("DecodingKey")
}

/// Polls a future that must complete without waiting (the gate's paths when keys are known).
fn ready<F: Future>(f: F) -> F::Output {
    let mut f: Pin<&mut F> = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the decision waited on IO"),
    }
}

/// The gate's cache-hit path: digest, `TokenCache::get`, the authorize stage, the rendered
/// headers cloned; with no further requirement, one `claim.` requirement, and one CEL policy.
fn cache_hit(c: &mut Criterion) {
    let fx = fixture();
    let (_, _, token) = fx.tokens.iter().find(|t| t.0 == "rs256").expect("rs256 token");
    let candidate = validate::precheck(token, &fx.config.issuers, &Policy::default(), fx.now).expect("precheck");
    let (identity, key) =
        validate::finish(candidate, &fx.config.issuers, &fx.keys, &fx.config.claims_to_headers).expect("finish");
    let cache = TokenCache::new(100_000, 1 << 30, Duration::from_secs(300));
    cache.insert(token_cache::digest(token), identity, &key, fx.now);
    let validation = raw_validation(Algorithm::RS256);
    let raw = raw_key(&fx.ring, "rs256");
    let request = HeaderMap::new();

    let mut g = c.benchmark_group("cache_hit");
    for (name, query) in
        [("jwtgate_hit", QUERY), ("jwtgate_hit_claim", QUERY_CLAIM), ("jwtgate_hit_policy", QUERY_POLICY)]
    {
        let policy = Policy::parse(Some(query), &fx.config).expect("policy");
        g.bench_function(name, |b| {
            b.iter(|| {
                let digest = token_cache::digest(black_box(token));
                let entry = cache.get(&digest).expect("hit");
                authorize(&entry.identity, &policy, &fx.config.issuers[0], &fx.config.policies, &request, fx.now)
                    .expect("allowed");
                black_box(entry.identity.headers.clone())
            })
        });
    }
    // Its largest part: the SHA-256 of the token (the cache key).
    g.bench_function(format!("token_digest_only_{}_bytes", token.len()), |b| {
        b.iter(|| token_cache::digest(black_box(token)))
    });
    g.bench_function("jsonwebtoken_decode_rs256", |b| {
        b.iter(|| jsonwebtoken::decode::<Value>(black_box(token), &raw, &validation).expect("valid"))
    });
    g.finish();
}

/// Uncached verification per algorithm: `validate::validate` against a raw `jsonwebtoken::decode`.
fn uncached(c: &mut Criterion) {
    let fx = fixture();
    let policy = Policy::default();
    for (kid, alg, token) in &fx.tokens {
        let validation = raw_validation(*alg);
        let raw = raw_key(&fx.ring, kid);
        let mut g = c.benchmark_group(format!("uncached_{kid}"));
        g.bench_function("jwtgate_validate", |b| {
            b.iter(|| {
                validate::validate(
                    black_box(token),
                    &fx.config.issuers,
                    &[&fx.keys],
                    &fx.config.claims_to_headers,
                    &policy,
                    fx.now,
                )
                .expect("valid")
            })
        });
        g.bench_function("jsonwebtoken_decode", |b| {
            b.iter(|| jsonwebtoken::decode::<Value>(black_box(token), &raw, &validation).expect("valid"))
        });
        // The cryptographic floor, signature already decoded: with the public key parsed on every
        // call (what jsonwebtoken's aws-lc backend does, and so jwtgate), and parsed once.
        let (input, signature) = token.rsplit_once('.').expect("compact JWS");
        let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
        let crypto = Crypto::new(&fx.ring.public_jwk(kid), *alg);
        g.bench_function("aws_lc_verify_key_parsed_per_call", |b| {
            b.iter(|| crypto.verify_unparsed(black_box(input.as_bytes()), &signature))
        });
        g.bench_function("aws_lc_verify_key_parsed_once", |b| {
            b.iter(|| crypto.parsed.verify_sig(black_box(input.as_bytes()), &signature).expect("valid"))
        });
        g.finish();
    }
}

/// The raw aws-lc-rs verification of one algorithm with one public key.
struct Crypto {
    alg: Algorithm,
    /// RSA modulus and exponent, or the EC / Ed25519 public point.
    material: (Vec<u8>, Vec<u8>),
    parsed: ParsedPublicKey,
}

impl Crypto {
    fn new(jwk: &Value, alg: Algorithm) -> Crypto {
        let field = |name: &str| URL_SAFE_NO_PAD.decode(jwk[name].as_str().expect("JWK field")).expect("base64url");
        let (material, parsed) = match alg {
            Algorithm::RS256 | Algorithm::PS256 => {
                let (n, e) = (field("n"), field("e"));
                let parsed = sig::RsaPublicKeyComponents { n: &n, e: &e }
                    .to_parsed_public_key(Crypto::rsa_params(alg))
                    .expect("RSA key");
                ((n, e), parsed)
            }
            Algorithm::ES256 | Algorithm::ES384 | Algorithm::EdDSA => {
                let point = match alg {
                    Algorithm::EdDSA => field("x"),
                    _ => [vec![4], field("x"), field("y")].concat(),
                };
                let parsed = ParsedPublicKey::new(Crypto::point_alg(alg), &point).expect("EC key");
                ((point, Vec::new()), parsed)
            }
            other => panic!("{other:?} is not benched"),
        };
        Crypto { alg, material, parsed }
    }

    fn rsa_params(alg: Algorithm) -> &'static sig::RsaParameters {
        match alg {
            Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            _ => &sig::RSA_PSS_2048_8192_SHA256,
        }
    }

    fn point_alg(alg: Algorithm) -> &'static dyn sig::VerificationAlgorithm {
        match alg {
            Algorithm::ES256 => &sig::ECDSA_P256_SHA256_FIXED,
            Algorithm::ES384 => &sig::ECDSA_P384_SHA384_FIXED,
            _ => &sig::ED25519,
        }
    }

    fn verify_unparsed(&self, message: &[u8], signature: &[u8]) {
        let (a, b) = &self.material;
        match self.alg {
            Algorithm::RS256 | Algorithm::PS256 => {
                sig::RsaPublicKeyComponents { n: a, e: b }.verify(Crypto::rsa_params(self.alg), message, signature)
            }
            _ => sig::UnparsedPublicKey::new(Crypto::point_alg(self.alg), a).verify(message, signature),
        }
        .expect("valid")
    }
}

/// `KeySet::select` among ten keys, next to what a jsonwebtoken user does per request
/// (`JwkSet::find`, and `DecodingKey::from_jwk` when keys are not converted up front).
fn key_lookup(c: &mut Criterion) {
    let mut ring = KeyRing::default();
    let mix = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA, Algorithm::ES384, Algorithm::PS256];
    for i in 0..10 {
        ring.add_key(&format!("key-{i}"), mix[i % mix.len()]);
    }
    let jwks = ring.jwks().to_string();
    let (keys, _) = KeySet::from_jwks(jwks.as_bytes(), 100).expect("JWKS");
    assert_eq!(keys.len(), 10);
    let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&jwks).expect("JwkSet");

    let last_alg = mix[9 % mix.len()];

    let mut g = c.benchmark_group("key_lookup_10_keys");
    g.bench_function("jwtgate_select", |b| b.iter(|| keys.select(Some(black_box("key-9")), last_alg).expect("key")));
    g.bench_function("jsonwebtoken_jwkset_find", |b| b.iter(|| set.find(black_box("key-9")).expect("key")));
    g.bench_function("jsonwebtoken_jwkset_find_and_from_jwk", |b| {
        b.iter(|| DecodingKey::from_jwk(set.find(black_box("key-9")).expect("key")).expect("decoding key"))
    });
    g.finish();
}

/// `headers::render` with the four mappings of the config (sub, iss, email, realm_access.roles).
fn header_rendering(c: &mut Criterion) {
    let fx = fixture();
    let claims = claims("user-1", fx.now);
    assert_eq!(fx.config.claims_to_headers.len(), 4);
    let mut g = c.benchmark_group("headers");
    g.bench_function("jwtgate_render_4_mappings", |b| {
        b.iter(|| jwtgate::headers::render(black_box(&claims), &fx.config.claims_to_headers))
    });
    g.finish();
}

/// `Policy::parse` of a typical `auth-url` query.
fn policy_parse(c: &mut Criterion) {
    let fx = fixture();
    let mut g = c.benchmark_group("policy");
    g.bench_function("jwtgate_parse_typical_query", |b| {
        b.iter(|| Policy::parse(Some(black_box(QUERY)), &fx.config).expect("policy"))
    });
    g.bench_function("jwtgate_parse_empty_query", |b| {
        b.iter(|| Policy::parse(black_box(None), &fx.config).expect("policy"))
    });
    g.finish();
}

/// A key source that hands out a fixed key set: the gate without a network.
struct Static(KeySet);

impl KeySource for Static {
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Fetched> + Send + '_>> {
        let keys = self.0.clone();
        Box::pin(async move { Ok((keys, None)) })
    }
}

fn gate_with(fx: &Fixture) -> Gate {
    let mut gate = Gate::new(fx.config.clone()).expect("gate");
    let issuer = &fx.config.issuers[0];
    let keys = IssuerKeys::with_source(
        &issuer.name,
        fx.config.jwks.clone(),
        Box::new(Static(fx.keys.clone())),
        gate.metrics.clone(),
    );
    ready(keys.refresh()).expect("keys loaded");
    gate.issuers = vec![Issuer { config: issuer.clone(), keys: Arc::new(keys) }].into();
    gate
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse().expect("header"));
    h.insert("x-original-url", "http://app.example/orders/42".parse().expect("header"));
    h.insert("x-request-id", "0123456789abcdef0123456789abcdef".parse().expect("header"));
    h
}

/// The whole `Gate::decide` (policy parse, token extraction, digest, cache, metrics counters;
/// not the HTTP layer): a hit, and a miss with a distinct EdDSA token every time.
fn gate_decide(c: &mut Criterion) {
    let fx = fixture();
    let gate = gate_with(fx);
    let (_, _, token) = fx.tokens.iter().find(|t| t.0 == "rs256").expect("rs256 token");
    let hit_headers = bearer(token);
    ready(gate.decide(Some(QUERY), &hit_headers, fx.now)).expect("allowed");

    let mut g = c.benchmark_group("gate_decide");
    g.bench_function("hit", |b| {
        b.iter(|| ready(gate.decide(Some(black_box(QUERY)), &hit_headers, fx.now)).expect("allowed"))
    });
    // Every token is new to the cache, signed (untimed) in batches just before it is decided;
    // the cache fills up to `cache.max_entries` and then evicts, as in a long run.
    let mut signed = 0u64;
    g.bench_function("miss_eddsa_distinct_tokens", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(1024);
                let batch: Vec<HeaderMap> = (0..n)
                    .map(|_| {
                        signed += 1;
                        bearer(&fx.ring.sign("eddsa", &claims(&format!("user-{signed}"), fx.now)))
                    })
                    .collect();
                let start = Instant::now();
                for h in &batch {
                    black_box(ready(gate.decide(Some(QUERY), h, fx.now)).expect("allowed"));
                }
                spent += start.elapsed();
                left -= n;
            }
            spent
        })
    });
    g.finish();
}

/// The DPoP decision on a cached bound token (RFC 9449): `Gate::decide` on a hit with a fresh
/// proof every time (proofs made untimed in batches, as the miss bench does with tokens), next to
/// `dpop::check_proof` alone and the proof signature's raw aws-lc-rs verification, so that the
/// cost beyond the signature can be read off.
fn gate_decide_dpop(c: &mut Criterion) {
    let fx = fixture();
    let gate = gate_with(fx);
    let htu = "https://app.example/orders/42";
    let mut clients = KeyRing::default();
    clients.add_key("client-es256", Algorithm::ES256);
    clients.add_key("client-eddsa", Algorithm::EdDSA);
    let mut g = c.benchmark_group("gate_decide_dpop");
    for (kid, alg) in [("client-es256", Algorithm::ES256), ("client-eddsa", Algorithm::EdDSA)] {
        let mut bound = claims("user-dpop", fx.now);
        bound["cnf"] = json!({"jkt": clients.thumbprint(kid)});
        let token = fx.ring.sign("rs256", &bound);
        let headers = |proof: &str| {
            let mut h = HeaderMap::new();
            h.insert(http::header::AUTHORIZATION, format!("DPoP {token}").parse().expect("header"));
            h.insert("dpop", proof.parse().expect("header"));
            h.insert("x-original-method", "GET".parse().expect("header"));
            h.insert("x-original-url", format!("{htu}?page=2").parse().expect("header"));
            h.insert("x-request-id", "0123456789abcdef0123456789abcdef".parse().expect("header"));
            h
        };
        let mut made = 0u64;
        let mut proof = || {
            made += 1;
            clients.dpop_proof(kid, "GET", htu, &token, fx.now, &format!("{kid}-{made}"))
        };
        // Warm the token cache: every timed decision is a hit.
        assert!(ready(gate.decide(Some(QUERY), &headers(&proof()), fx.now)).expect("allowed").no_store);
        g.bench_function(format!("hit_{kid}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let n = left.min(1024);
                    let batch: Vec<HeaderMap> = (0..n).map(|_| headers(&proof())).collect();
                    let start = Instant::now();
                    for h in &batch {
                        black_box(ready(gate.decide(Some(QUERY), h, fx.now)).expect("allowed"));
                    }
                    spent += start.elapsed();
                    left -= n;
                }
                spent
            })
        });
        let one = proof();
        let target = jwtgate::dpop::Target { method: "GET", url: htu };
        g.bench_function(format!("check_proof_only_{kid}"), |b| {
            b.iter(|| {
                jwtgate::dpop::check_proof(black_box(&one), &token, target, &fx.config.dpop, fx.now).expect("valid")
            })
        });
        let (input, signature) = one.rsplit_once('.').expect("compact JWS");
        let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
        let crypto = Crypto::new(&clients.public_jwk(kid), alg);
        g.bench_function(format!("aws_lc_verify_proof_signature_{kid}"), |b| {
            b.iter(|| crypto.verify_unparsed(black_box(input.as_bytes()), &signature))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1)).sample_size(50);
    targets = cache_hit, uncached, key_lookup, header_rendering, policy_parse, gate_decide, gate_decide_dpop
}

/// Runs `f` `n` times: the only function whose instructions `benches/load/instructions.sh` counts
/// (callgrind `--toggle-collect`), so setup and key generation stay out of the numbers.
#[inline(never)]
fn run_loop(n: u64, f: &mut dyn FnMut()) {
    for _ in 0..n {
        f();
    }
}

/// One case of `--count-instructions`, `n` times, with the keys and tokens of `fx`.
fn count_instructions(fx: &Fixture, case: &str, n: u64) {
    let (what, kid) = case.rsplit_once('_').unwrap_or((case, "rs256"));
    let issuers = &fx.config.issuers;
    let mapping = &fx.config.claims_to_headers;
    let token_of = |kid: &str| &fx.tokens.iter().find(|t| t.0 == kid).unwrap_or_else(|| panic!("no {kid}")).2;
    match what {
        "jwtgate_validate" => {
            let (token, policy) = (token_of(kid), Policy::default());
            run_loop(n, &mut || {
                black_box(validate::validate(token, issuers, &[&fx.keys], mapping, &policy, fx.now).expect("valid"));
            })
        }
        "jsonwebtoken_decode" => {
            let alg = ALGS.iter().find(|a| a.0 == kid).expect("algorithm").1;
            let (token, raw, validation) = (token_of(kid), raw_key(&fx.ring, kid), raw_validation(alg));
            run_loop(n, &mut || {
                black_box(jsonwebtoken::decode::<Value>(black_box(token), &raw, &validation).expect("valid"));
            })
        }
        "aws_lc_verify_key_parsed_per_call" | "aws_lc_verify_key_parsed_once" => {
            let alg = ALGS.iter().find(|a| a.0 == kid).expect("algorithm").1;
            let (input, signature) = token_of(kid).rsplit_once('.').expect("compact JWS");
            let signature = URL_SAFE_NO_PAD.decode(signature).expect("base64url");
            let crypto = Crypto::new(&fx.ring.public_jwk(kid), alg);
            if what.ends_with("per_call") {
                run_loop(n, &mut || crypto.verify_unparsed(black_box(input.as_bytes()), &signature))
            } else {
                run_loop(n, &mut || crypto.parsed.verify_sig(black_box(input.as_bytes()), &signature).expect("valid"))
            }
        }
        "jwtgate_hit" => {
            let token = token_of(kid);
            let policy = Policy::parse(Some(QUERY), &fx.config).expect("policy");
            let candidate = validate::precheck(token, issuers, &Policy::default(), fx.now).expect("precheck");
            let (identity, key) = validate::finish(candidate, issuers, &fx.keys, mapping).expect("finish");
            let cache = TokenCache::new(100_000, 1 << 30, Duration::from_secs(300));
            cache.insert(token_cache::digest(token), identity, &key, fx.now);
            run_loop(n, &mut || {
                let entry = cache.get(&token_cache::digest(black_box(token))).expect("hit");
                authorize(
                    &entry.identity,
                    &policy,
                    &fx.config.issuers[0],
                    &fx.config.policies,
                    &HeaderMap::new(),
                    fx.now,
                )
                .expect("allowed");
                black_box(entry.identity.headers.clone());
            })
        }
        "gate_decide_hit" => {
            let gate = gate_with(fx);
            let headers = bearer(token_of(kid));
            ready(gate.decide(Some(QUERY), &headers, fx.now)).expect("allowed"); // the one miss
            run_loop(n, &mut || {
                black_box(ready(gate.decide(Some(QUERY), &headers, fx.now)).expect("allowed"));
            })
        }
        "gate_decide_miss" => {
            let gate = gate_with(fx);
            let alg_kid = kid;
            let misses: Vec<HeaderMap> =
                (0..n).map(|i| bearer(&fx.ring.sign(alg_kid, &claims(&format!("user-{i}"), fx.now)))).collect();
            let mut next = misses.iter();
            run_loop(n, &mut || {
                let h = next.next().expect("one token per iteration");
                black_box(ready(gate.decide(Some(QUERY), h, fx.now)).expect("allowed"));
            })
        }
        "gate_decide_dpop" | "dpop_check_proof" => {
            // A bound token, cached; a fresh proof by a client key of `kid`'s algorithm each time.
            let alg = ALGS.iter().find(|a| a.0 == kid).expect("algorithm").1;
            let mut clients = KeyRing::default();
            clients.add_key("client", alg);
            let mut bound = claims("user-dpop", fx.now);
            bound["cnf"] = json!({"jkt": clients.thumbprint("client")});
            let token = fx.ring.sign("rs256", &bound);
            let htu = "https://app.example/orders/42";
            let proofs: Vec<String> =
                (0..=n).map(|i| clients.dpop_proof("client", "GET", htu, &token, fx.now, &format!("j{i}"))).collect();
            let headers = |proof: &str| {
                let mut h = bearer(&token);
                h.insert(http::header::AUTHORIZATION, format!("DPoP {token}").parse().expect("header"));
                h.insert("x-original-url", htu.parse().expect("header"));
                h.insert("x-original-method", "GET".parse().expect("header"));
                h.insert("dpop", proof.parse().expect("header"));
                h
            };
            if what == "dpop_check_proof" {
                let target = jwtgate::dpop::Target { method: "GET", url: htu };
                run_loop(n, &mut || {
                    black_box(
                        jwtgate::dpop::check_proof(&proofs[0], &token, target, &fx.config.dpop, fx.now).expect("valid"),
                    );
                })
            } else {
                let gate = gate_with(fx);
                let all: Vec<HeaderMap> = proofs.iter().map(|p| headers(p)).collect();
                ready(gate.decide(Some(QUERY), &all[0], fx.now)).expect("allowed"); // the one miss
                let mut next = all[1..].iter();
                run_loop(n, &mut || {
                    let h = next.next().expect("one proof per iteration");
                    black_box(ready(gate.decide(Some(QUERY), h, fx.now)).expect("allowed"));
                })
            }
        }
        _ => panic!(
            "unknown case {case}: jwtgate_validate_ALG, jsonwebtoken_decode_ALG, aws_lc_verify_key_parsed_per_call_ALG, \
             aws_lc_verify_key_parsed_once_ALG, jwtgate_hit_ALG, gate_decide_hit_ALG, gate_decide_miss_ALG, \
             gate_decide_dpop_ALG, dpop_check_proof_ALG \
             (ALG: rs256 ps256 es256 es384 eddsa)"
        ),
    }
}

/// `--count-instructions N CASE...`: each case `N` times and nothing else, in one process (the
/// same keys and tokens for every case), for callgrind. Timings on a shared machine are noisy;
/// instruction counts are not.
fn count_all(args: &[String]) {
    let n: u64 = args.first().and_then(|n| n.parse().ok()).expect("--count-instructions N CASE...");
    let cases = &args[1..];
    // Only the keys the cases use: key generation under valgrind is slow.
    let algs: Vec<_> =
        ALGS.iter().filter(|(kid, _)| cases.iter().any(|c| c.ends_with(&format!("_{kid}")))).copied().collect();
    let fx = build_fixture(&algs);
    for case in cases {
        count_instructions(&fx, case, n);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--count-instructions") {
        count_all(&args[i + 1..]);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
