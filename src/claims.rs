//! Claims: the path language that names one ([`ClaimPath`], used by `claims_to_headers` and by
//! `claim.` requirements alike), the verified claims set an identity keeps ([`Claims`]), and the
//! claim requirements from the `auth-url` query: `claim.PATH=v1,v2`.
//!
//! PATH is a dotted path, or an RFC 6901 JSON pointer when it starts with `/`. A requirement is met when
//! the claim at PATH equals one of the listed values (any-of); every requirement of a query must
//! be met (all-of). Strings compare exactly; numbers and booleans compare by their JSON text
//! (`claim.email_verified=true`, `claim.tier=2`); an array claim matches when any of its elements
//! does; a missing or null claim, an object, or an array nested in an array never matches.

use serde_json::Value;

/// Where a claim lives in the claims set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimPath {
    /// `realm_access.roles`: member names separated by dots.
    Dotted(Vec<String>),
    /// `/https:~1~1example.com~1roles`: an RFC 6901 JSON pointer, for claim names containing dots
    /// or slashes (Auth0's namespaced claims).
    Pointer(String),
}

impl ClaimPath {
    /// Parses a `claims_to_headers[].claim` value: a leading `/` means a JSON pointer.
    pub fn parse(s: &str) -> Result<ClaimPath, &'static str> {
        if s.starts_with('/') {
            // RFC 6901: `~` must be followed by 0 or 1.
            let b = s.as_bytes();
            for (i, &c) in b.iter().enumerate() {
                if c == b'~' && !matches!(b.get(i + 1), Some(b'0' | b'1')) {
                    return Err("is not a valid JSON pointer (`~` must be followed by 0 or 1)");
                }
            }
            return Ok(ClaimPath::Pointer(s.to_string()));
        }
        let parts: Vec<String> = s.split('.').map(str::to_string).collect();
        if parts.iter().any(String::is_empty) {
            return Err("is not a valid dotted claim path");
        }
        Ok(ClaimPath::Dotted(parts))
    }

    /// Heap bytes this path holds (for byte-bounded memories of parsed queries).
    pub fn heap_bytes(&self) -> usize {
        match self {
            ClaimPath::Pointer(p) => p.capacity(),
            ClaimPath::Dotted(parts) => parts.iter().map(|p| p.capacity() + std::mem::size_of::<String>()).sum(),
        }
    }

    /// Finds the claim in a claims set.
    pub fn lookup<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        match self {
            ClaimPath::Pointer(p) => claims.pointer(p),
            ClaimPath::Dotted(parts) => parts.iter().try_fold(claims, |v, part| v.get(part)),
        }
    }
}

/// A verified claims set, kept with the cached identity so that requirements and policies run on
/// every request, cache hit or miss. It knows roughly how much memory it holds, so that the
/// token cache can be bounded by bytes ([`crate::token_cache`]).
#[derive(Clone)]
pub struct Claims {
    json: Value,
    heap_bytes: usize,
}

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Claim values are personal data: never in a debug dump that may reach a log.
        f.write_str("Claims(..)")
    }
}

impl Claims {
    pub fn new(json: Value) -> Claims {
        let heap_bytes = heap_bytes(&json);
        Claims { json, heap_bytes }
    }

    /// The claims set as JSON.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// A top-level claim.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.json.get(name)
    }

    /// An estimate of the heap memory this claims set holds.
    pub fn heap_bytes(&self) -> usize {
        self.heap_bytes
    }
}

/// Heap bytes of a JSON value as serde_json lays it out: strings by capacity, arrays by their
/// element slots, objects as B-tree leaves of 11 (key, value) slots each (a small object still
/// takes a whole leaf, which is where most of the memory of a claims set goes).
fn heap_bytes(v: &Value) -> usize {
    const SLOT: usize = std::mem::size_of::<String>() + std::mem::size_of::<Value>();
    match v {
        Value::String(s) => s.capacity(),
        Value::Array(items) => {
            items.capacity() * std::mem::size_of::<Value>() + items.iter().map(heap_bytes).sum::<usize>()
        }
        Value::Object(map) => {
            let leaves = map.len().div_ceil(11).max(1);
            leaves * (11 * SLOT + 16) + map.iter().map(|(k, v)| k.capacity() + heap_bytes(v)).sum::<usize>()
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

/// One `claim.PATH=v1,v2` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRequirement {
    /// PATH as the query wrote it (after form decoding): what a refusal names.
    pub raw: Box<str>,
    pub path: ClaimPath,
    /// Accepted values; the claim must equal one of them.
    pub values: Box<[Box<str>]>,
}

impl ClaimRequirement {
    /// Parses the PATH (the part after `claim.`) and the value list of one parameter.
    pub fn parse(raw: &str, values: &str) -> Result<ClaimRequirement, String> {
        let shown = crate::claims::shown(raw);
        if raw.is_empty() {
            return Err("empty claim path in `claim.`".to_string());
        }
        // An empty reference token (`/a//b`, `/`) names a claim no issuer sends: a typo.
        if raw.starts_with('/') && raw.split('/').skip(1).any(str::is_empty) {
            return Err(format!("claim path `{shown}` has an empty segment"));
        }
        let path = ClaimPath::parse(raw).map_err(|why| format!("claim path `{shown}` {why}"))?;
        let values: Box<[Box<str>]> = values.split(',').filter(|v| !v.is_empty()).map(Box::from).collect();
        if values.is_empty() {
            return Err(format!("empty `claim.{shown}`"));
        }
        Ok(ClaimRequirement { raw: raw.into(), path, values })
    }

    /// True when the claim at the path equals one of the accepted values.
    pub fn is_met(&self, claims: &Value) -> bool {
        match self.path.lookup(claims) {
            Some(Value::Array(items)) => items.iter().any(|item| self.scalar_matches(item)),
            Some(v) => self.scalar_matches(v),
            None => false,
        }
    }

    /// A string, number or boolean equal (by its JSON text for the latter two) to an accepted value.
    fn scalar_matches(&self, v: &Value) -> bool {
        match v {
            Value::String(s) => self.values.iter().any(|x| **x == **s),
            Value::Bool(b) => {
                let text = if *b { "true" } else { "false" };
                self.values.iter().any(|x| &**x == text)
            }
            Value::Number(n) => {
                let text = n.to_string();
                self.values.iter().any(|x| **x == *text)
            }
            Value::Null | Value::Array(_) | Value::Object(_) => false,
        }
    }
}

/// Query text as it may appear in a log line or a 400's reason: at most 60 characters, no
/// control characters.
pub(crate) fn shown(s: &str) -> String {
    s.chars().take(60).filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(path: &str, values: &str) -> ClaimRequirement {
        ClaimRequirement::parse(path, values).unwrap()
    }

    fn claims() -> Value {
        json!({
            "sub": "alice",
            "email_verified": true,
            "tier": 2,
            "ratio": 1.5,
            "nothing": null,
            "groups": ["dev", "ops"],
            "mixed": ["x", 7, false, ["nested"], {"o": 1}],
            "realm_access": {"roles": ["admin", "user"]},
            "resource_access": {"orders-api": {"roles": ["reader"]}},
            "https://example.com/roles": ["editor"],
            "a.b": "dotted-name",
        })
    }

    #[test]
    fn a_string_claim_matches_one_of_the_values() {
        assert!(req("sub", "bob,alice").is_met(&claims()));
        assert!(!req("sub", "bob").is_met(&claims()));
        // Exact comparison: no case folding, no trimming, no prefix match.
        assert!(!req("sub", "Alice").is_met(&claims()));
        assert!(!req("sub", "alic").is_met(&claims()));
    }

    #[test]
    fn an_array_claim_matches_when_any_element_does() {
        assert!(req("groups", "ops").is_met(&claims()));
        assert!(req("groups", "qa,dev").is_met(&claims()));
        assert!(!req("groups", "qa").is_met(&claims()));
        assert!(req("mixed", "7").is_met(&claims()));
        assert!(req("mixed", "false").is_met(&claims()));
        // Nested arrays and objects inside an array never match, not even by their JSON text.
        assert!(!req("mixed", "nested").is_met(&claims()));
        assert!(!req("mixed", r#"["nested"]"#).is_met(&claims()));
        assert!(!req("mixed", r#"{"o":1}"#).is_met(&claims()));
    }

    #[test]
    fn numbers_and_booleans_compare_by_their_json_text() {
        assert!(req("email_verified", "true").is_met(&claims()));
        assert!(!req("email_verified", "false").is_met(&claims()));
        assert!(!req("email_verified", "True").is_met(&claims()));
        assert!(req("tier", "2").is_met(&claims()));
        assert!(!req("tier", "2.0").is_met(&claims()));
        assert!(req("ratio", "1.5").is_met(&claims()));
        // A string claim compares as the string it is.
        assert!(req("x", "true").is_met(&json!({"x": "true"})));
    }

    #[test]
    fn missing_null_and_object_claims_never_match() {
        assert!(!req("absent", "x").is_met(&claims()));
        assert!(!req("nothing", "null").is_met(&claims()));
        assert!(!req("realm_access", r#"{"roles":["admin","user"]}"#).is_met(&claims()));
        assert!(!req("sub.deeper", "alice").is_met(&claims()));
        assert!(!req("groups.0", "dev").is_met(&claims()), "dotted paths do not index arrays");
    }

    #[test]
    fn dotted_paths_and_json_pointers_reach_nested_and_namespaced_claims() {
        assert!(req("realm_access.roles", "admin").is_met(&claims()));
        assert!(req("resource_access.orders-api.roles", "reader").is_met(&claims()));
        assert!(req("/https:~1~1example.com~1roles", "editor").is_met(&claims()));
        assert!(req("/a.b", "dotted-name").is_met(&claims()));
        assert!(req("/groups/1", "ops").is_met(&claims()), "a pointer may index an array (RFC 6901)");
        // A dotted path splits on every dot, so a claim whose name contains one needs a pointer.
        assert!(!req("a.b", "dotted-name").is_met(&claims()));
    }

    #[test]
    fn bad_paths_and_empty_values_are_refused() {
        for (path, values) in [
            ("", "x"),
            ("/", "x"),
            ("/a//b", "x"),
            ("a..b", "x"),
            (".a", "x"),
            ("a.", "x"),
            ("/a~2b", "x"),
            ("/a~", "x"),
            ("a", ""),
            ("a", ",,"),
        ] {
            assert!(ClaimRequirement::parse(path, values).is_err(), "{path:?}={values:?}");
        }
    }

    #[test]
    fn the_memory_estimate_grows_with_the_claims_set() {
        let small = Claims::new(json!({"sub": "a"}));
        let big = Claims::new(claims());
        assert!(small.heap_bytes() >= 11 * 56, "a one-claim object still takes a whole leaf");
        assert!(big.heap_bytes() > small.heap_bytes() * 3, "{} vs {}", big.heap_bytes(), small.heap_bytes());
        let long = Claims::new(json!({"sub": "x".repeat(10_000)}));
        assert!(long.heap_bytes() >= 10_000);
    }

    #[test]
    fn empty_values_between_commas_are_dropped() {
        assert_eq!(&*req("sub", "a,,b,").values, [Box::from("a"), Box::from("b")]);
    }
}
