//! Per-Ingress policy from the `auth-url` query string: `issuer=a,b`, `aud=x,y`, `scope=s1 s2`.
//!
//! One deployment serves every Ingress, each with its own policy. Anything not understood is a
//! misconfiguration and answered 400 (nginx turns it into 500): never silently ignored.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::IssuerConfig;
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
}

fn split_list(value: &str) -> impl Iterator<Item = &str> {
    value.split([',', ' ']).filter(|s| !s.is_empty())
}

impl Policy {
    /// Parses the raw query string (`None` when the URL has none).
    pub fn parse(query: Option<&str>, issuers: &[IssuerConfig]) -> Result<Policy, AuthError> {
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
                            .ok_or_else(|| AuthError::BadPolicy(format!("unknown issuer `{name}`")))?;
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
                other => {
                    let shown: String = other.chars().take(40).filter(|c| !c.is_control()).collect();
                    return Err(AuthError::BadPolicy(format!("unknown parameter `{shown}`")));
                }
            }
            if !any {
                return Err(AuthError::BadPolicy(format!("empty `{key}`")));
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

    /// Issuer, audience and scopes: what a cached identity must pass on every request.
    pub fn authorize(&self, identity: &crate::validate::Identity, issuers: &[IssuerConfig]) -> Result<(), AuthError> {
        self.check_issuer(identity.issuer)?;
        self.check_audience(&identity.audiences, &issuers[identity.issuer])?;
        self.check_scopes(&identity.scopes)
    }
}

/// Distinct queries [`PolicyMemo`] keeps; past this, new ones are parsed on every request.
pub const POLICY_MEMO_MAX: usize = 1024;

/// Parsed policies by raw query string. Every request from one Ingress sends the same `auth-url`
/// query, so each distinct query is parsed once (parsing was a fifth of a cached decision). Reads
/// are lock-free; an insert copies the map, which happens at most [`POLICY_MEMO_MAX`] times. A
/// client that reaches jwtgate directly with ever new queries fills it and then only makes its
/// own queries parse each time. Refused queries (400) are never kept.
pub struct PolicyMemo {
    map: ArcSwap<HashMap<Box<str>, Arc<Policy>>>,
    none: Arc<Policy>,
}

impl Default for PolicyMemo {
    fn default() -> PolicyMemo {
        PolicyMemo { map: ArcSwap::from_pointee(HashMap::new()), none: Arc::new(Policy::default()) }
    }
}

impl PolicyMemo {
    /// The policy of a query string, parsed once per distinct query (see [`Policy::parse`]).
    pub fn get(&self, query: Option<&str>, issuers: &[IssuerConfig]) -> Result<Arc<Policy>, AuthError> {
        let Some(query) = query.filter(|q| !q.is_empty()) else {
            return Ok(self.none.clone());
        };
        if let Some(policy) = self.map.load().get(query) {
            return Ok(policy.clone());
        }
        let policy = Arc::new(Policy::parse(Some(query), issuers)?);
        if self.map.load().len() < POLICY_MEMO_MAX {
            self.map.rcu(|map| {
                let mut map = HashMap::clone(map);
                if map.len() < POLICY_MEMO_MAX {
                    map.entry(query.into()).or_insert_with(|| policy.clone());
                }
                map
            });
        }
        Ok(policy)
    }

    /// Distinct queries kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.load().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn issuers() -> Vec<IssuerConfig> {
        Config::from_yaml(
            "issuers:\n  - {name: a, issuer: 'https://a.example', audiences: [x]}\n  - {name: b, issuer: 'https://b.example', audiences: [y]}\n",
        )
        .unwrap()
        .issuers
    }

    #[test]
    fn empty_query_is_the_default_policy() {
        assert_eq!(Policy::parse(None, &issuers()).unwrap(), Policy::default());
        assert_eq!(Policy::parse(Some(""), &issuers()).unwrap(), Policy::default());
    }

    #[test]
    fn all_three_parameters_parse() {
        let p = Policy::parse(Some("issuer=b&aud=p,q&scope=read%20write,admin"), &issuers()).unwrap();
        assert_eq!(p.issuers, Some(vec![1]));
        assert_eq!(p.audiences, Some(vec!["p".to_string(), "q".to_string()]));
        assert_eq!(p.scopes, ["read", "write", "admin"]);
        let plus = Policy::parse(Some("scope=read+write"), &issuers()).unwrap();
        assert_eq!(plus.scopes, ["read", "write"]);
    }

    #[test]
    fn unknown_parameter_is_bad_policy() {
        let e = Policy::parse(Some("audience=x"), &issuers()).unwrap_err();
        assert_eq!(e.reason(), "bad_policy");
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn unknown_issuer_name_is_bad_policy() {
        assert_eq!(Policy::parse(Some("issuer=zzz"), &issuers()).unwrap_err().reason(), "bad_policy");
    }

    #[test]
    fn empty_parameter_value_is_bad_policy() {
        for q in ["aud=", "scope=", "issuer=,"] {
            assert_eq!(Policy::parse(Some(q), &issuers()).unwrap_err().reason(), "bad_policy", "{q}");
        }
    }

    #[test]
    fn missing_scope_names_every_required_scope() {
        let p = Policy::parse(Some("scope=a b"), &issuers()).unwrap();
        assert_eq!(p.check_scopes(&["a"]).unwrap_err(), AuthError::Scope("a b".into()));
        assert!(p.check_scopes(&["b", "a"]).is_ok());
    }

    #[test]
    fn aud_override_replaces_configured_audiences() {
        let iss = issuers();
        let p = Policy::parse(Some("aud=other"), &iss).unwrap();
        assert!(p.check_audience(&["x"], &iss[0]).is_err());
        assert!(p.check_audience(&["other"], &iss[0]).is_ok());
    }

    #[test]
    fn memo_parses_each_query_once_and_returns_the_same_policy() {
        let iss = issuers();
        let memo = PolicyMemo::default();
        let a = memo.get(Some("aud=p&scope=read"), &iss).unwrap();
        let b = memo.get(Some("aud=p&scope=read"), &iss).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(*a, Policy::parse(Some("aud=p&scope=read"), &iss).unwrap());
        assert_eq!(memo.len(), 1);
        // No query and an empty one are the default policy, without an entry.
        assert_eq!(*memo.get(None, &iss).unwrap(), Policy::default());
        assert_eq!(*memo.get(Some(""), &iss).unwrap(), Policy::default());
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn memo_never_keeps_a_refused_query() {
        let iss = issuers();
        let memo = PolicyMemo::default();
        for _ in 0..2 {
            assert_eq!(memo.get(Some("audience=x"), &iss).unwrap_err().reason(), "bad_policy");
        }
        assert_eq!(memo.len(), 0);
    }

    #[test]
    fn memo_is_bounded_and_still_answers_past_the_bound() {
        let iss = issuers();
        let memo = PolicyMemo::default();
        for i in 0..POLICY_MEMO_MAX + 10 {
            let q = format!("aud=a{i}");
            assert_eq!(memo.get(Some(&q), &iss).unwrap().audiences, Some(vec![format!("a{i}")]));
        }
        assert_eq!(memo.len(), POLICY_MEMO_MAX);
        let late = format!("aud=a{}", POLICY_MEMO_MAX + 5);
        assert_eq!(memo.get(Some(&late), &iss).unwrap().audiences, Some(vec![format!("a{}", POLICY_MEMO_MAX + 5)]));
    }
}
