//! Identity headers: which claim goes to which header, and how a claim value becomes a header
//! value that nginx and every upstream read the same way.
//!
//! Encoding (documented in the README, "Identity headers"):
//! - strings are sent as they are, numbers and booleans as their JSON text, objects as compact
//!   JSON, arrays joined with `,` (each element rendered by these same rules);
//! - a result that is not plain visible ASCII (any byte outside 0x20..=0x7E, a leading or
//!   trailing space, or a value that itself starts with `=?`) is sent instead as an RFC 2047
//!   encoded word, `=?UTF-8?B?<standard base64 of the UTF-8 bytes>?=`. That is lossless and can
//!   never carry CR, LF, NUL or any other control character.

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
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

    /// Finds the claim in a claims set.
    pub fn lookup<'a>(&self, claims: &'a Value) -> Option<&'a Value> {
        match self {
            ClaimPath::Pointer(p) => claims.pointer(p),
            ClaimPath::Dotted(parts) => parts.iter().try_fold(claims, |v, part| v.get(part)),
        }
    }
}

/// Renders a claim value as text, before header encoding. `None` for null (header left out).
fn claim_text(v: &Value, out: &mut String) -> bool {
    match v {
        Value::Null => return false,
        Value::String(s) => out.push_str(s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Object(_) => out.push_str(&v.to_string()),
        Value::Array(items) => {
            let mut first = true;
            for item in items {
                if item.is_null() {
                    continue;
                }
                if !first {
                    out.push(',');
                }
                first = false;
                match item {
                    Value::Array(_) => out.push_str(&item.to_string()),
                    _ => {
                        claim_text(item, out);
                    }
                }
            }
        }
    }
    true
}

/// Turns text into a header value that is always well formed: plain when it is safe, else the
/// RFC 2047 encoded word described in the module documentation.
pub fn encode_value(text: &str) -> HeaderValue {
    let plain = text.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.starts_with("=?");
    if plain && let Ok(v) = HeaderValue::from_str(text) {
        return v;
    }
    let encoded = format!("=?UTF-8?B?{}?=", base64::engine::general_purpose::STANDARD.encode(text.as_bytes()));
    HeaderValue::from_str(&encoded).expect("base64 is visible ASCII")
}

/// The identity headers for one claims set, in `claims_to_headers` order. A claim that is absent
/// or null produces no header (nginx then clears any forged copy, see the README).
pub fn render(claims: &Value, mapping: &[crate::config::ClaimHeader]) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(mapping.len());
    let mut text = String::new();
    for m in mapping {
        text.clear();
        if let Some(v) = m.claim.lookup(claims)
            && claim_text(v, &mut text)
        {
            out.push((m.header.clone(), encode_value(&text)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClaimHeader;
    use serde_json::json;

    fn map(pairs: &[(&str, &str)]) -> Vec<ClaimHeader> {
        pairs
            .iter()
            .map(|(c, h)| ClaimHeader {
                claim: ClaimPath::parse(c).unwrap(),
                header: HeaderName::from_bytes(h.as_bytes()).unwrap(),
            })
            .collect()
    }

    fn rendered(claims: Value, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        render(&claims, &map(pairs))
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn dotted_paths_reach_nested_claims_and_arrays_join_with_commas() {
        let got = rendered(
            json!({"sub": "u1", "realm_access": {"roles": ["admin", "user"]}}),
            &[("sub", "x-auth-subject"), ("realm_access.roles", "x-auth-roles")],
        );
        assert_eq!(got, [("x-auth-subject".into(), "u1".into()), ("x-auth-roles".into(), "admin,user".into())]);
    }

    #[test]
    fn json_pointer_reaches_namespaced_claims() {
        let got =
            rendered(json!({"https://example.com/roles": ["a", "b"]}), &[("/https:~1~1example.com~1roles", "x-roles")]);
        assert_eq!(got[0].1, "a,b");
    }

    #[test]
    fn numbers_booleans_and_objects_are_rendered_as_json_text() {
        let got = rendered(json!({"n": 42, "b": true, "o": {"k": "v"}}), &[("n", "x-n"), ("b", "x-b"), ("o", "x-o")]);
        assert_eq!(got[0].1, "42");
        assert_eq!(got[1].1, "true");
        assert_eq!(got[2].1, r#"{"k":"v"}"#);
    }

    #[test]
    fn absent_and_null_claims_produce_no_header() {
        assert!(rendered(json!({"email": null}), &[("email", "x-e"), ("missing", "x-m")]).is_empty());
    }

    #[test]
    fn crlf_nul_and_non_ascii_are_encoded_losslessly() {
        for raw in ["a\r\nX-Injected: 1", "nul\0byte", "Zoë", " padded ", "=?UTF-8?B?looks-encoded?="] {
            let v = encode_value(raw);
            let s = v.to_str().unwrap();
            assert!(s.starts_with("=?UTF-8?B?") && s.ends_with("?="), "{raw:?} -> {s}");
            assert!(s.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            let b64 = &s["=?UTF-8?B?".len()..s.len() - 2];
            let back = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
            assert_eq!(back, raw.as_bytes());
        }
    }

    #[test]
    fn plain_visible_ascii_is_sent_unchanged() {
        assert_eq!(encode_value("user@example.com").to_str().unwrap(), "user@example.com");
    }

    #[test]
    fn bad_claim_paths_are_refused() {
        assert!(ClaimPath::parse("a..b").is_err());
        assert!(ClaimPath::parse("/a~2b").is_err());
        assert!(ClaimPath::parse("/a~1b").is_ok());
    }
}
