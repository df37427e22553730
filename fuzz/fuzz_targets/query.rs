//! Fuzzes the `auth-url` query parser and its memo (`Policy::parse`, `PolicyMemo::get`): any
//! query is parsed or refused with 400 `bad_policy`, never a crash; a refusal's problem text (which
//! is logged) is visible ASCII only and short, whatever control characters, line breaks, escape
//! sequences or non-ASCII the query carried; the memo answers exactly what a fresh parse does and
//! stays within its byte bound however many distinct queries arrive. The config has named
//! policies, so `policy=` names resolve, and every parsed requirement is well formed (`claim.`
//! paths non-empty with values, `acr` values a challenge can carry, policy indices in range).
#![no_main]

use std::sync::LazyLock;

use jwtgate::config::Config;
use jwtgate::error::{AuthError, LogSafe};
use jwtgate::policy::{POLICY_MEMO_GENERATION_BYTES, Policy, PolicyMemo};
use libfuzzer_sys::fuzz_target;

static CONFIG: LazyLock<Config> = LazyLock::new(|| {
    Config::from_yaml(
        "issuers:\n  - {name: main, issuer: 'https://a.example', audiences: [x]}\n  - {name: b-2, issuer: 'https://b.example', audiences: [y]}\npolicies:\n  admin: 'claims.roles.exists(r, r == \"admin\")'\n  get: 'request.method == \"GET\"'\n  all: 'size(claims) > 1'\n",
    )
    .unwrap()
});

// One memo for the whole run, so its byte bound is checked across every input.
static MEMO: LazyLock<PolicyMemo> = LazyLock::new(PolicyMemo::default);

fn log_safe(text: &str) {
    assert!(text.bytes().all(|b| (0x20..0x7f).contains(&b)), "control or non-ASCII in logged text: {text:?}");
    assert!(text.len() <= LogSafe::MAX_CHARS * 10 + 8, "logged text too long: {}", text.len());
}

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    let parsed = Policy::parse(Some(query), &CONFIG);
    let memo = MEMO.get(Some(query), &CONFIG);
    match (&parsed, &memo) {
        (Ok(p), Ok(m)) => assert_eq!(p, &**m, "the memo answers what a parse does"),
        (Err(e), Err(m)) => {
            assert_eq!(e, m);
            assert_eq!(e.reason(), "bad_policy");
            assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
            let AuthError::BadPolicy(problem) = e else { panic!("a query refusal that is not BadPolicy: {e:?}") };
            log_safe(problem.as_str());
        }
        _ => panic!("memo and parse disagree on {query:?}: {parsed:?} vs {memo:?}"),
    }
    if let Ok(p) = &parsed {
        for i in p.issuers.iter().flatten() {
            assert!(*i < CONFIG.issuers.len());
        }
        assert!(p.audiences.iter().flatten().all(|a| !a.is_empty()));
        assert!(p.scopes.iter().all(|s| !s.is_empty()));
        for c in &p.claims {
            assert!(!c.raw.is_empty() && !c.values.is_empty() && c.values.iter().all(|v| !v.is_empty()));
        }
        assert!(p.policies.iter().all(|i| *i < CONFIG.policies.len()));
        assert_eq!(p.reads_request, p.policies.iter().any(|i| CONFIG.policies.get(*i).reads_request));
        for acr in p.acr.iter().flatten() {
            assert!(!acr.is_empty() && acr.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\'), "{acr:?}");
        }
    }
    assert!(MEMO.bytes() <= 2 * POLICY_MEMO_GENERATION_BYTES, "memo over its bound: {}", MEMO.bytes());
    log_safe(LogSafe::new(query).as_str());
});
