//! Per-Ingress policy from the `auth-url` query string: `issuer=a,b`, `aud=x,y`, `scope=s1 s2`,
//! `claim.PATH=v1,v2`, `policy=a,b`, and the step-up parameters `acr=v1,v2` and `max_age=N`.
//!
//! One deployment serves every Ingress, each with its own policy. Anything not understood is a
//! misconfiguration and answered 400 (nginx turns it into 500): never silently ignored.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::claims::ClaimRequirement;
use crate::config::{Config, IssuerConfig};
use crate::error::AuthError;

/// What one request's `auth-url` demands on top of the issuer configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Only these issuers (indices into the configuration); `None` means any configured issuer.
    pub issuers: Option<Vec<usize>>,
    /// Replaces the issuer's configured `audiences` when present.
    pub audiences: Option<Vec<String>>,
    /// Every one must be granted.
    pub scopes: Vec<String>,
    /// `dpop=required`: only DPoP-bound tokens with a valid proof (RFC 9449).
    pub dpop_required: bool,
    /// `claim.PATH=v1,v2`: every requirement must be met (all-of; any-of within one).
    pub claims: Vec<ClaimRequirement>,
    /// `policy=a,b`: indices into the config's `policies`; every one must evaluate to `true`.
    pub policies: Vec<usize>,
    /// One of the named policies reads `request`: the decision holds for this request only.
    pub reads_request: bool,
    /// The top-level claims the named policies read, or `None` when one reads `claims` whole.
    pub policy_claims: Option<Vec<Box<str>>>,
    /// `acr=v1,v2`: the token's `acr` must be one of these (RFC 9470).
    pub acr: Option<Vec<String>>,
    /// `max_age=N`: the token's `auth_time` must be at most N seconds (plus leeway) ago.
    pub max_age: Option<u64>,
}

/// An `acr` value as it can travel in a challenge's quoted `acr_values` (RFC 6750 §3 charset,
/// and no space, which separates the values there).
fn valid_acr(v: &str) -> bool {
    v.bytes().all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e))
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split([',', ' ']).filter(|s| !s.is_empty())
}

impl Policy {
    /// Parses the raw query string (`None` when the URL has none) against the config's issuer and
    /// policy names.
    pub fn parse(query: Option<&str>, config: &Config) -> Result<Policy, AuthError> {
        let issuers = &config.issuers;
        let mut policy = Policy::default();
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return Ok(policy);
        };
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            let mut any = false;
            match key.as_ref() {
                "issuer" => {
                    let list = policy.issuers.get_or_insert_with(Vec::new);
                    for name in value.split(',').filter(|s| !s.is_empty()) {
                        any = true;
                        let index = issuers
                            .iter()
                            .position(|i| i.name == name)
                            .ok_or_else(|| AuthError::bad_policy(format!("unknown issuer `{name}`")))?;
                        list.push(index);
                    }
                }
                "aud" => {
                    let list = policy.audiences.get_or_insert_with(Vec::new);
                    for a in value.split(',').filter(|s| !s.is_empty()) {
                        any = true;
                        list.push(a.to_string());
                    }
                }
                "scope" => {
                    for s in split_list(&value) {
                        any = true;
                        policy.scopes.push(s.to_string());
                    }
                }
                "dpop" => match value.as_ref() {
                    "required" => {
                        any = true;
                        policy.dpop_required = true;
                    }
                    "" => {}
                    _ => return Err(AuthError::bad_policy("`dpop` must be `required`")),
                },
                "policy" => {
                    for name in value.split(',').filter(|s| !s.is_empty()) {
                        any = true;
                        let index = config
                            .policies
                            .position(name)
                            .ok_or_else(|| AuthError::bad_policy(format!("unknown policy `{name}`")))?;
                        let named = config.policies.get(index);
                        policy.reads_request |= named.reads_request;
                        policy.policy_claims =
                            match (policy.policies.is_empty(), policy.policy_claims.take(), &named.claims_read) {
                                (true, _, Some(read)) => Some(read.to_vec()),
                                (false, Some(mut so_far), Some(read)) => {
                                    so_far.extend(
                                        read.iter().filter(|n| !so_far.contains(n)).cloned().collect::<Vec<_>>(),
                                    );
                                    Some(so_far)
                                }
                                _ => None,
                            };
                        policy.policies.push(index);
                    }
                }
                "acr" => {
                    let list = policy.acr.get_or_insert_with(Vec::new);
                    for v in value.split(',').filter(|s| !s.is_empty()) {
                        any = true;
                        if !valid_acr(v) {
                            return Err(AuthError::bad_policy(format!(
                                "acr value `{v}` has a character a challenge cannot carry"
                            )));
                        }
                        list.push(v.to_string());
                    }
                }
                "max_age" => {
                    if value.is_empty() {
                        return Err(AuthError::bad_policy("empty `max_age`"));
                    }
                    // RFC 9470 §4: a non-negative decimal integer, and nothing else (no sign).
                    let n = value
                        .bytes()
                        .all(|b| b.is_ascii_digit())
                        .then(|| value.parse::<u64>().ok())
                        .flatten()
                        .filter(|n| *n <= i64::MAX as u64)
                        .ok_or_else(|| {
                            AuthError::bad_policy(format!("max_age `{value}` is not a non-negative integer"))
                        })?;
                    any = true;
                    // Repeated: the strictest wins.
                    policy.max_age = Some(policy.max_age.map_or(n, |m| m.min(n)));
                }
                other => match other.strip_prefix("claim.") {
                    Some(path) => {
                        policy.claims.push(ClaimRequirement::parse(path, &value).map_err(AuthError::bad_policy)?);
                        any = true;
                    }
                    None => return Err(AuthError::bad_policy(format!("unknown parameter `{other}`"))),
                },
            }
            if !any {
                return Err(AuthError::bad_policy(format!("empty `{key}`")));
            }
        }
        Ok(policy)
    }

    /// The token's issuer must be one this policy allows.
    pub fn check_issuer(&self, issuer: usize) -> Result<(), AuthError> {
        match &self.issuers {
            Some(list) if !list.contains(&issuer) => Err(AuthError::Issuer),
            _ => Ok(()),
        }
    }

    /// The token's audiences must contain one accepted audience (RFC 7519 §4.1.3).
    pub fn check_audience(&self, token_audiences: &[impl AsRef<str>], issuer: &IssuerConfig) -> Result<(), AuthError> {
        let accepted = self.audiences.as_deref().unwrap_or(&issuer.audiences);
        if token_audiences.iter().any(|a| accepted.iter().any(|x| x == a.as_ref())) {
            Ok(())
        } else {
            Err(AuthError::Audience)
        }
    }

    /// Every required scope must be granted; the error names them all (RFC 6750 §3).
    pub fn check_scopes(&self, granted: &[impl AsRef<str>]) -> Result<(), AuthError> {
        if self.scopes.iter().all(|s| granted.iter().any(|g| g.as_ref() == s)) {
            Ok(())
        } else {
            Err(AuthError::Scope(self.scopes.join(" ")))
        }
    }
}

/// The longest query [`PolicyMemo`] keeps. A real `auth-url` query (a few issuers, audiences,
/// scopes and claim requirements) is a few hundred bytes; a longer one is parsed on every request
/// and never kept, so a client cannot make the gate hold its 64 KiB queries.
pub const POLICY_MEMO_MAX_QUERY_BYTES: usize = 2048;

/// The bytes one generation of [`PolicyMemo`] may hold (queries, parsed policies and bookkeeping,
/// see [`memo_weight`]); with the previous generation the memo holds at most twice this.
pub const POLICY_MEMO_GENERATION_BYTES: usize = 128 * 1024;

/// What keeping one parsed query costs, in bytes: the query, the parsed policy's strings and
/// vectors, and a fixed allowance for the map slot, the `Arc` and allocator rounding.
pub fn memo_weight(query: &str, policy: &Policy) -> usize {
    const SLOT: usize = 96;
    let strings = |v: &[String]| v.iter().map(|s| s.capacity() + std::mem::size_of::<String>()).sum::<usize>();
    let boxed = |v: &[Box<str>]| v.iter().map(|s| s.len() + std::mem::size_of::<Box<str>>()).sum::<usize>();
    SLOT + query.len()
        + std::mem::size_of::<Policy>()
        + policy.issuers.as_ref().map_or(0, |v| v.capacity() * std::mem::size_of::<usize>())
        + policy.audiences.as_deref().map_or(0, strings)
        + strings(&policy.scopes)
        + policy.acr.as_deref().map_or(0, strings)
        + policy.policies.capacity() * std::mem::size_of::<usize>()
        + policy.policy_claims.as_deref().map_or(0, boxed)
        + policy
            .claims
            .iter()
            .map(|c| std::mem::size_of::<ClaimRequirement>() + c.raw.len() + c.path.heap_bytes() + boxed(&c.values))
            .sum::<usize>()
}

#[derive(Default)]
struct Generations {
    current: HashMap<Box<str>, Arc<Policy>>,
    current_bytes: usize,
    previous: HashMap<Box<str>, Arc<Policy>>,
}

/// Parsed policies by raw query string. Every request from one Ingress sends the same `auth-url`
/// query, so each distinct query is parsed once (parsing was a fifth of a cached decision).
///
/// Bounded by bytes, not by count (a client that reaches jwtgate directly chooses the queries):
/// queries longer than [`POLICY_MEMO_MAX_QUERY_BYTES`] are never kept, and the kept ones live in
/// two generations of at most [`POLICY_MEMO_GENERATION_BYTES`] each. When the current generation
/// is full it becomes the previous one and the old previous one is dropped; a query found in the
/// previous generation moves back into the current one, so the queries in use survive a stream of
/// new ones, which only costs them a parse now and then. An insert is O(1) (amortised: each entry
/// is dropped once). Refused queries (400) are never kept.
pub struct PolicyMemo {
    generations: RwLock<Generations>,
    none: Arc<Policy>,
}

impl Default for PolicyMemo {
    fn default() -> PolicyMemo {
        PolicyMemo { generations: RwLock::default(), none: Arc::new(Policy::default()) }
    }
}

impl PolicyMemo {
    /// The policy of a query string, parsed once per distinct query (see [`Policy::parse`]).
    pub fn get(&self, query: Option<&str>, config: &Config) -> Result<Arc<Policy>, AuthError> {
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return Ok(self.none.clone());
        };
        if query.len() > POLICY_MEMO_MAX_QUERY_BYTES {
            return Policy::parse(Some(query), config).map(Arc::new);
        }
        let previous = {
            let g = self.generations.read().unwrap_or_else(|e| e.into_inner());
            if let Some(policy) = g.current.get(query) {
                return Ok(policy.clone());
            }
            g.previous.get(query).cloned()
        };
        let policy = match previous {
            Some(policy) => policy,
            None => Arc::new(Policy::parse(Some(query), config)?),
        };
        let weight = memo_weight(query, &policy);
        let retired = {
            let mut g = self.generations.write().unwrap_or_else(|e| e.into_inner());
            let mut retired = None;
            if g.current.contains_key(query) {
                return Ok(policy);
            }
            if g.current_bytes + weight > POLICY_MEMO_GENERATION_BYTES {
                let full = std::mem::take(&mut g.current);
                retired = Some(std::mem::replace(&mut g.previous, full));
                g.current_bytes = 0;
            }
            g.current.insert(query.into(), policy.clone());
            g.current_bytes += weight;
            retired
        };
        // The retired generation is freed outside the lock.
        drop(retired);
        Ok(policy)
    }

    /// Distinct queries kept, in both generations.
    pub fn kept_queries(&self) -> usize {
        let g = self.generations.read().unwrap();
        g.current.len() + g.previous.keys().filter(|k| !g.current.contains_key(*k)).count()
    }

    /// Bytes kept, in both generations (by [`memo_weight`]); walks the previous generation, so it
    /// is for tests and fuzzing, not the request path.
    pub fn bytes(&self) -> usize {
        let g = self.generations.read().unwrap();
        g.current_bytes + g.previous.iter().map(|(q, p)| memo_weight(q, p)).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_yaml(
            "issuers:\n  - {name: a, issuer: 'https://a.example', audiences: [x]}\n  - {name: b, issuer: 'https://b.example', audiences: [y]}\npolicies:\n  admin: 'claims.role == \"admin\"'\n  get: 'request.method == \"GET\"'\n  whole: 'size(claims) > 0'\n",
        )
        .unwrap()
    }

    #[test]
    fn empty_query_is_the_default_policy() {
        assert_eq!(Policy::parse(None, &config()).unwrap(), Policy::default());
        assert_eq!(Policy::parse(Some(""), &config()).unwrap(), Policy::default());
    }

    #[test]
    fn all_three_parameters_parse() {
        let p = Policy::parse(Some("issuer=b&aud=p,q&scope=read%20write,admin"), &config()).unwrap();
        assert_eq!(p.issuers, Some(vec![1]));
        assert_eq!(p.audiences, Some(vec!["p".to_string(), "q".to_string()]));
        assert_eq!(p.scopes, ["read", "write", "admin"]);
        let plus = Policy::parse(Some("scope=read+write"), &config()).unwrap();
        assert_eq!(plus.scopes, ["read", "write"]);
    }

    #[test]
    fn dpop_required_parses_and_any_other_value_is_bad_policy() {
        assert!(Policy::parse(Some("dpop=required&aud=x"), &config()).unwrap().dpop_required);
        assert!(!Policy::parse(Some("aud=x"), &config()).unwrap().dpop_required);
        for q in ["dpop=", "dpop=optional", "dpop=Required", "dpop=required,required"] {
            assert_eq!(Policy::parse(Some(q), &config()).unwrap_err().reason(), "bad_policy", "{q}");
        }
    }

    #[test]
    fn unknown_parameter_is_bad_policy() {
        let e = Policy::parse(Some("audience=x"), &config()).unwrap_err();
        assert_eq!(e.reason(), "bad_policy");
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn unknown_issuer_name_is_bad_policy() {
        assert_eq!(Policy::parse(Some("issuer=zzz"), &config()).unwrap_err().reason(), "bad_policy");
    }

    #[test]
    fn empty_parameter_value_is_bad_policy() {
        for q in ["aud=", "scope=", "issuer=,"] {
            assert_eq!(Policy::parse(Some(q), &config()).unwrap_err().reason(), "bad_policy", "{q}");
        }
    }

    #[test]
    fn claim_policy_and_step_up_parameters_parse() {
        let c = config();
        let p = Policy::parse(
            Some("claim.realm_access.roles=admin,ops&claim.%2Fhttps:~1~1x.example~1r=a&policy=admin&acr=gold,urn:x:silver&max_age=300"),
            &c,
        )
        .unwrap();
        assert_eq!(p.claims.len(), 2);
        assert_eq!(&*p.claims[0].raw, "realm_access.roles");
        assert_eq!(&*p.claims[0].values, [Box::from("admin"), Box::from("ops")]);
        assert_eq!(&*p.claims[1].raw, "/https:~1~1x.example~1r");
        assert_eq!(p.policies, [c.policies.position("admin").unwrap()]);
        assert!(!p.reads_request);
        assert_eq!(p.acr, Some(vec!["gold".to_string(), "urn:x:silver".to_string()]));
        assert_eq!(p.max_age, Some(300));
        assert!(Policy::parse(Some("policy=admin,get"), &c).unwrap().reads_request);
        // The claims converted for an evaluation: the union of what the listed policies read.
        assert_eq!(Policy::parse(Some("policy=admin,get"), &c).unwrap().policy_claims, Some(vec![Box::from("role")]));
        assert_eq!(Policy::parse(Some("policy=get"), &c).unwrap().policy_claims, Some(vec![]));
        assert_eq!(Policy::parse(Some("policy=get,whole,admin"), &c).unwrap().policy_claims, None);
        // A repeated max_age: the strictest holds.
        assert_eq!(Policy::parse(Some("max_age=60&max_age=30&max_age=90"), &c).unwrap().max_age, Some(30));
    }

    #[test]
    fn bad_claim_policy_and_step_up_parameters_are_bad_policy() {
        let c = config();
        for q in [
            "claim.=x",
            "claim.a=",
            "claim.a=,",
            "claim.a..b=x",
            "claim./a~2=x",
            "claim.//a=x",
            "policy=nope",
            "policy=admin,nope",
            "policy=",
            "acr=",
            "acr=a%22b",
            "acr=a%5Cb",
            "acr=a+b",
            "max_age=abc",
            "max_age=",
            "max_age=-1",
            "max_age=%2B5",
            "max_age=1.5",
            "max_age=%205",
            "max_age=99999999999999999999",
        ] {
            let e = Policy::parse(Some(q), &c).unwrap_err();
            assert_eq!(e.reason(), "bad_policy", "{q}");
        }
    }

    #[test]
    fn missing_scope_names_every_required_scope() {
        let p = Policy::parse(Some("scope=a b"), &config()).unwrap();
        assert_eq!(p.check_scopes(&["a"]).unwrap_err(), AuthError::Scope("a b".into()));
        assert!(p.check_scopes(&["b", "a"]).is_ok());
    }

    #[test]
    fn aud_override_replaces_configured_audiences() {
        let iss = config();
        let p = Policy::parse(Some("aud=other"), &iss).unwrap();
        assert!(p.check_audience(&["x"], &iss.issuers[0]).is_err());
        assert!(p.check_audience(&["other"], &iss.issuers[0]).is_ok());
    }

    #[test]
    fn memo_parses_each_query_once_and_returns_the_same_policy() {
        let iss = config();
        let memo = PolicyMemo::default();
        let a = memo.get(Some("aud=p&scope=read"), &iss).unwrap();
        let b = memo.get(Some("aud=p&scope=read"), &iss).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*a, Policy::parse(Some("aud=p&scope=read"), &iss).unwrap());
        assert_eq!(memo.kept_queries(), 1);
        // No query and an empty one are the default policy, without an entry.
        assert_eq!(*memo.get(None, &iss).unwrap(), Policy::default());
        assert_eq!(*memo.get(Some(""), &iss).unwrap(), Policy::default());
        assert_eq!(memo.kept_queries(), 1);
    }

    #[test]
    fn memo_never_keeps_a_refused_query() {
        let iss = config();
        let memo = PolicyMemo::default();
        for _ in 0..2 {
            assert_eq!(memo.get(Some("audience=x"), &iss).unwrap_err().reason(), "bad_policy");
        }
        assert_eq!(memo.kept_queries(), 0);
    }

    #[test]
    fn memo_is_bounded_by_bytes_and_still_answers_past_the_bound() {
        let iss = config();
        let memo = PolicyMemo::default();
        let mut heaviest = 0;
        for i in 0..20_000 {
            let q = format!("aud=a{i},{}", "b".repeat(i % 1000));
            let policy = memo.get(Some(&q), &iss).unwrap();
            assert_eq!(policy.audiences.as_ref().unwrap()[0], format!("a{i}"));
            assert!(memo.bytes() <= 2 * POLICY_MEMO_GENERATION_BYTES, "{} bytes after {i}", memo.bytes());
            heaviest = heaviest.max(memo_weight(&q, &policy));
        }
        // At least one full generation is kept, whatever the phase of the rotation.
        let floor = POLICY_MEMO_GENERATION_BYTES / heaviest - 1;
        assert!(memo.kept_queries() >= floor, "the memo still keeps queries ({} < {floor})", memo.kept_queries());
    }

    #[test]
    fn memo_never_keeps_a_query_longer_than_an_auth_url_needs() {
        let iss = config();
        let memo = PolicyMemo::default();
        let long = format!("aud=q1{}", ",a".repeat(POLICY_MEMO_MAX_QUERY_BYTES));
        assert_eq!(
            memo.get(Some(&long), &iss).unwrap().audiences.as_ref().unwrap().len(),
            POLICY_MEMO_MAX_QUERY_BYTES + 1
        );
        assert_eq!(memo.kept_queries(), 0);
        assert_eq!(memo.bytes(), 0);
    }

    #[test]
    fn a_query_in_use_survives_a_stream_of_new_ones() {
        let iss = config();
        let memo = PolicyMemo::default();
        let hot = memo.get(Some("aud=hot"), &iss).unwrap();
        for i in 0..50_000 {
            memo.get(Some(&format!("aud=cold{i}")), &iss).unwrap();
            if i % 100 == 0 {
                assert!(Arc::ptr_eq(&hot, &memo.get(Some("aud=hot"), &iss).unwrap()), "re-parsed at {i}");
            }
        }
    }
}
