//! The authorize stage: what a verified identity must pass on every request, whether it was
//! verified just now or found in the cache. Pure: the identity, the request's [`Policy`], the
//! config, the original request's headers and `now` in; a grant or a refusal out.
//!
//! Refusals come in the contract's order: the issuer filter and audience (401, they are about the
//! token), step-up (401, RFC 9470), then scope, `claim.` requirements and named policies (403).

use http::HeaderMap;
use serde_json::Value;

use crate::config::IssuerConfig;
use crate::error::{AuthError, LogSafe, PolicyDenial, StepUp};
use crate::policy::Policy;
use crate::rules::{CelClaims, Policies, RequestVars};
use crate::validate::{Check, Identity, Observe};

/// What an allowed request's answer may be cached for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// Under `max_age=`: the second at which the authentication gets too old (`auth_time` +
    /// `max_age`); nginx must not reuse the answer past it.
    pub until: Option<i64>,
    /// A policy read `request`: the answer is for this request only.
    pub per_request: bool,
}

/// Runs every authorization check of `policy` on `identity` (verified by `issuer`), in the
/// contract's order. `policies` are the config's named policies; `request` the headers nginx sent.
pub fn authorize(
    identity: &Identity,
    policy: &Policy,
    issuer: &IssuerConfig,
    policies: &Policies,
    request: &HeaderMap,
    now: i64,
) -> Result<Grant, AuthError> {
    authorize_observed(identity, policy, issuer, policies, request, now, &mut ())
}

/// [`authorize`], telling `obs` each check's outcome (`jwtgate explain`).
pub fn authorize_observed(
    identity: &Identity,
    policy: &Policy,
    issuer: &IssuerConfig,
    policies: &Policies,
    request: &HeaderMap,
    now: i64,
    obs: &mut impl Observe,
) -> Result<Grant, AuthError> {
    // Checked before the signature on a miss too; here for every request, hits included.
    policy.check_issuer(identity.issuer)?;
    policy.check_audience(&identity.audiences, issuer)?;
    let until = if policy.acr.is_none() && policy.max_age.is_none() {
        obs.skip(Check::StepUp, "no acr= or max_age= in the query");
        None
    } else {
        obs.on(Check::StepUp, step_up(identity, policy, issuer.leeway_seconds as i64, now))?
    };
    obs.on(Check::Scope, policy.check_scopes(&identity.scopes))?;
    if policy.claims.is_empty() {
        obs.skip(Check::ClaimRequirements, "no claim. requirement in the query");
    } else {
        let failed = policy.claims.iter().find(|r| !r.is_met(identity.claims.json()));
        obs.on(Check::ClaimRequirements, failed.map_or(Ok(()), |r| Err(AuthError::Claim(r.raw.clone()))))?;
    }
    if policy.policies.is_empty() {
        obs.skip(Check::Policies, "no policy= in the query");
    } else {
        obs.on(Check::Policies, named_policies(identity, policy, policies, request))?;
    }
    Ok(Grant { until, per_request: policy.reads_request })
}

/// The query's named policies, in order: the first that is not `true` denies.
fn named_policies(
    identity: &Identity,
    policy: &Policy,
    policies: &Policies,
    request: &HeaderMap,
) -> Result<(), AuthError> {
    {
        let vars = policy.reads_request.then(|| request_vars(request));
        let claims = match &policy.policy_claims {
            Some(names) => CelClaims::only(&identity.claims, names),
            None => CelClaims::new(&identity.claims),
        };
        for &index in &policy.policies {
            if index >= policies.len() {
                // Parsed against another config's policies: never an allow.
                return Err(AuthError::Policy(PolicyDenial { name: "(unknown)".into(), error: None }));
            }
            let denial = match policies.evaluate(index, &claims, vars.as_ref()) {
                Ok(true) => continue,
                Ok(false) => None,
                Err(why) => Some(LogSafe::new(&why)),
            };
            let name = policies.get(index).name.clone();
            return Err(AuthError::Policy(PolicyDenial { name, error: denial }));
        }
    }
    Ok(())
}

/// `X-Original-Method` and `X-Original-URL` as a policy's `request` sees them.
fn request_vars(headers: &HeaderMap) -> RequestVars {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    RequestVars::new(text("x-original-method"), text("x-original-url"))
}

/// Step-up (RFC 9470): `acr=` and `max_age=`. Returns when the authentication gets too old
/// under `max_age=`.
fn step_up(identity: &Identity, policy: &Policy, leeway: i64, now: i64) -> Result<Option<i64>, AuthError> {
    if policy.acr.is_none() && policy.max_age.is_none() {
        return Ok(None);
    }
    let challenge = |description: &'static str| {
        AuthError::StepUp(StepUp {
            description,
            acr_values: policy.acr.as_ref().map(|a| a.join(" ").into()),
            max_age: policy.max_age,
        })
    };
    if let Some(accepted) = &policy.acr {
        match identity.claims.get("acr") {
            Some(Value::String(acr)) if accepted.iter().any(|a| a == acr) => {}
            _ => return Err(challenge("a different authentication level is required")),
        }
    }
    let Some(max_age) = policy.max_age else { return Ok(None) };
    // OIDC Core §2: auth_time is a JSON number (seconds); anything else is as good as missing.
    let auth_time = match identity.claims.get("auth_time") {
        Some(Value::Number(n)) => n.as_f64().filter(|t| t.is_finite() && t.abs() <= 9_007_199_254_740_991.0),
        _ => None,
    };
    let Some(auth_time) = auth_time.map(|t| t.floor() as i64) else {
        return Err(challenge("authentication time is required"));
    };
    let until = auth_time.saturating_add(max_age as i64);
    if now > until.saturating_add(leeway) {
        return Err(challenge("more recent authentication is required"));
    }
    Ok(Some(until))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claims::Claims;
    use crate::config::Config;
    use serde_json::json;

    const NOW: i64 = 1_800_000_000;

    fn config() -> Config {
        Config::from_yaml(
            r#"
issuers:
  - {name: main, issuer: "https://idp.example", audiences: [api], leeway_seconds: 30}
policies:
  admin: 'claims.realm_access.roles.exists(r, r == "admin")'
  reads-only: 'request.method in ["GET", "HEAD"]'
  broken: 'claims.no_such_claim == "x"'
"#,
        )
        .unwrap()
    }

    fn identity(claims: Value) -> Identity {
        Identity {
            issuer: 0,
            exp: NOW + 300,
            audiences: vec![Box::from("api")].into(),
            scopes: vec![Box::from("read")].into(),
            headers: Box::new([]),
            jkt: None,
            claims: Claims::new(claims),
        }
    }

    fn run(claims: Value, query: &str, headers: &HeaderMap) -> Result<Grant, AuthError> {
        let cfg = config();
        let policy = Policy::parse(Some(query), &cfg).unwrap();
        authorize(&identity(claims), &policy, &cfg.issuers[0], &cfg.policies, headers, NOW)
    }

    fn step_up_error(r: Result<Grant, AuthError>) -> StepUp {
        match r {
            Err(AuthError::StepUp(s)) => s,
            other => panic!("expected a step-up refusal, got {other:?}"),
        }
    }

    #[test]
    fn no_requirements_grant_without_limits() {
        let g = run(json!({}), "", &HeaderMap::new()).unwrap();
        assert_eq!(g, Grant { until: None, per_request: false });
    }

    #[test]
    fn max_age_counts_from_auth_time_with_the_issuers_leeway() {
        let h = HeaderMap::new();
        // Exactly max_age old: allowed, and the grant ends at auth_time + max_age.
        let g = run(json!({"auth_time": NOW - 300}), "max_age=300", &h).unwrap();
        assert_eq!(g.until, Some(NOW));
        // Within the leeway past it: still allowed (the grant's end is already past).
        assert_eq!(run(json!({"auth_time": NOW - 330}), "max_age=300", &h).unwrap().until, Some(NOW - 30));
        // One second beyond the leeway: step-up.
        let s = step_up_error(run(json!({"auth_time": NOW - 331}), "max_age=300", &h));
        assert_eq!(s.description, "more recent authentication is required");
        assert_eq!((s.max_age, s.acr_values), (Some(300), None));
        // max_age=0: only an authentication within the leeway.
        assert!(run(json!({"auth_time": NOW}), "max_age=0", &h).is_ok());
        assert!(run(json!({"auth_time": NOW - 31}), "max_age=0", &h).is_err());
    }

    #[test]
    fn missing_or_non_numeric_auth_time_asks_for_step_up() {
        let h = HeaderMap::new();
        for claims in
            [json!({}), json!({"auth_time": "1800000000"}), json!({"auth_time": null}), json!({"auth_time": 1e300})]
        {
            let s = step_up_error(run(claims.clone(), "max_age=60", &h));
            assert_eq!(s.description, "authentication time is required", "{claims}");
        }
        // A fractional auth_time counts from its whole second.
        assert!(run(json!({"auth_time": (NOW - 60) as f64 + 0.9}), "max_age=60", &h).is_ok());
    }

    #[test]
    fn acr_must_be_one_of_the_listed_values() {
        let h = HeaderMap::new();
        assert!(run(json!({"acr": "gold"}), "acr=silver,gold", &h).is_ok());
        for claims in [json!({"acr": "bronze"}), json!({}), json!({"acr": ["gold"]}), json!({"acr": 2})] {
            let s = step_up_error(run(claims, "acr=silver,gold", &h));
            assert_eq!(s.acr_values.as_deref(), Some("silver gold"));
            assert_eq!(s.max_age, None);
        }
    }

    #[test]
    fn a_step_up_challenge_carries_both_parameters_when_both_were_asked() {
        let s = step_up_error(run(json!({"acr": "gold"}), "acr=gold&max_age=10", &HeaderMap::new()));
        assert_eq!(s.acr_values.as_deref(), Some("gold"));
        assert_eq!(s.max_age, Some(10));
    }

    #[test]
    fn refusals_follow_the_contracts_order() {
        let h = HeaderMap::new();
        let all = "aud=other&acr=gold&scope=write&claim.sub=bob&policy=admin";
        let claims = json!({"sub": "alice", "acr": "bronze", "realm_access": {"roles": []}});
        assert_eq!(run(claims.clone(), all, &h).unwrap_err(), AuthError::Audience);
        let no_aud = all.replace("aud=other&", "");
        assert_eq!(run(claims.clone(), &no_aud, &h).unwrap_err().reason(), "step_up");
        let no_step_up = no_aud.replace("acr=gold&", "");
        assert_eq!(run(claims.clone(), &no_step_up, &h).unwrap_err(), AuthError::Scope("write".into()));
        let no_scope = no_step_up.replace("scope=write&", "");
        assert_eq!(run(claims.clone(), &no_scope, &h).unwrap_err(), AuthError::Claim("sub".into()));
        let no_claim = no_scope.replace("claim.sub=bob&", "");
        assert_eq!(
            run(claims.clone(), &no_claim, &h).unwrap_err(),
            AuthError::Policy(PolicyDenial { name: "admin".into(), error: None })
        );
    }

    #[test]
    fn every_claim_requirement_must_hold_and_the_first_failing_one_is_named() {
        let h = HeaderMap::new();
        let c = json!({"groups": ["a", "b"], "tier": 2});
        assert!(run(c.clone(), "claim.groups=a&claim.groups=b&claim.tier=1,2", &h).is_ok());
        assert_eq!(
            run(c.clone(), "claim.groups=a&claim.groups=z&claim.tier=3", &h),
            Err(AuthError::Claim("groups".into()))
        );
        assert_eq!(run(c, "claim.groups=a&claim.tier=3", &h), Err(AuthError::Claim("tier".into())));
    }

    #[test]
    fn policy_evaluation_errors_deny_and_say_why() {
        let r = run(json!({}), "policy=broken", &HeaderMap::new()).unwrap_err();
        match r {
            AuthError::Policy(PolicyDenial { name, error: Some(why) }) => {
                assert_eq!(&*name, "broken");
                assert!(why.as_str().contains("no_such_claim"), "{why}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_policy_that_reads_request_makes_the_grant_per_request() {
        let mut h = HeaderMap::new();
        h.insert("x-original-method", "GET".parse().unwrap());
        h.insert("x-original-url", "https://a.example/x".parse().unwrap());
        let g = run(json!({}), "policy=reads-only", &h).unwrap();
        assert!(g.per_request);
        h.insert("x-original-method", "DELETE".parse().unwrap());
        assert_eq!(run(json!({}), "policy=reads-only", &h).unwrap_err().reason(), "policy");
        // Without X-Original-Method the policy cannot evaluate: denied, never allowed.
        assert_eq!(run(json!({}), "policy=reads-only", &HeaderMap::new()).unwrap_err().reason(), "policy");
        // Policies that do not read request leave the grant cacheable.
        let roles = json!({"realm_access": {"roles": ["admin"]}});
        assert!(!run(roles, "policy=admin", &HeaderMap::new()).unwrap().per_request);
    }
}
