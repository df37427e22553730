//! Token generator for `benches/load.sh` (an example, never part of the service): one issuer's
//! fresh keys, its JWKS as a static file, one token to repeat (cache hits) and files of distinct
//! EdDSA tokens (one per line, every one different: cache misses).
//!
//! `cargo run --release --example gen_tokens -- DIR ISSUER AUDIENCE DISTINCT FILES TTL_SECONDS`
//! writes `DIR/jwks.json`, `DIR/token.txt` (RS256) and `DIR/tokens-1.txt` .. `DIR/tokens-FILES.txt`.

use std::io::{BufWriter, Write};
use std::path::PathBuf;

use jwtgate::algorithm::Algorithm;
use jwtgate::dev_issuer::KeyRing;
use serde_json::{Value, json};

/// A claims set shaped like a Keycloak access token.
fn claims(issuer: &str, audience: &str, sub: &str, now: i64, ttl: i64) -> Value {
    json!({
        "iss": issuer, "sub": sub, "aud": audience, "azp": "orders-web", "typ": "Bearer",
        "iat": now, "exp": now + ttl, "jti": format!("{sub}-{now}"),
        "email": format!("{sub}@example.com"), "email_verified": true, "name": "Load User",
        "scope": "openid email orders:read orders:write",
        "realm_access": {"roles": ["viewer", "editor", "offline_access"]},
    })
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, issuer, audience, distinct, files, ttl] = args.as_slice() else {
        eprintln!("usage: gen_tokens DIR ISSUER AUDIENCE DISTINCT FILES TTL_SECONDS");
        std::process::exit(2);
    };
    let dir = PathBuf::from(dir);
    let distinct: usize = distinct.parse().expect("DISTINCT is a number");
    let files: usize = files.parse().expect("FILES is a number");
    let ttl: i64 = ttl.parse().expect("TTL_SECONDS is a number");
    std::fs::create_dir_all(&dir).expect("create DIR");

    let mut ring = KeyRing::default();
    ring.add_key("rs256-1", Algorithm::RS256);
    ring.add_key("eddsa-1", Algorithm::EdDSA);
    std::fs::write(dir.join("jwks.json"), ring.jwks().to_string()).expect("write jwks.json");
    let now = jwtgate::gate::unix_now();
    let one = ring.sign("rs256-1", &claims(issuer, audience, "repeat-user", now, ttl));
    std::fs::write(dir.join("token.txt"), format!("{one}\n")).expect("write token.txt");

    let start = std::time::Instant::now();
    let ring = &ring;
    std::thread::scope(|s| {
        for f in 1..=files {
            let path = dir.join(format!("tokens-{f}.txt"));
            s.spawn(move || {
                let mut out = BufWriter::new(std::fs::File::create(&path).expect("create tokens file"));
                for i in 0..distinct {
                    let sub = format!("user-{f}-{i}");
                    writeln!(out, "{}", ring.sign("eddsa-1", &claims(issuer, audience, &sub, now, ttl)))
                        .expect("write");
                }
                out.flush().expect("flush");
            });
        }
    });
    eprintln!(
        "gen_tokens: {} files of {distinct} distinct EdDSA tokens and one RS256 token in {:.1}s",
        files,
        start.elapsed().as_secs_f64()
    );
}
