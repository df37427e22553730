//! Identity headers: which claim goes to which header, and how a claim value becomes a header
//! value that nginx and every upstream read the same way.
//!
//! Encoding (documented in the README, "Identity headers"). Every value decodes one way only:
//! - strings are sent as they are, numbers and booleans as their JSON text, objects as compact
//!   JSON;
//! - a non-empty array is joined with `,` when every element is a string, number or boolean
//!   whose text is not empty, contains no `,` or `"`, does not start with `[` and needs no
//!   encoding; otherwise (`["x,admin"]`, `[]`, a nested array or object, a null element) the
//!   array is sent as compact JSON, so `["admin,ops"]` and `["admin","ops"]` never look alike. A
//!   reader decodes an array header one way: JSON when it starts with `[`, else split on `,`;
//! - a result that is not plain visible ASCII (any byte outside 0x20..=0x7E, a leading or
//!   trailing space) or that contains an encoded-word marker `=?` anywhere is sent as RFC 2047
//!   encoded words, `=?UTF-8?B?<standard base64 of the UTF-8 bytes>?=`, each at most 75
//!   characters (RFC 2047 §2) and holding whole UTF-8 characters (§5), separated by single spaces
//!   (which decoders drop between adjacent encoded words, §6.2). That is lossless and can never
//!   carry CR, LF, NUL or any other control character.

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use serde_json::Value;

use crate::claims::ClaimPath;

/// One identity header: a claim (dotted path or JSON pointer) and the header it is written to
/// (the config's `claims_to_headers` entries).
#[derive(Debug, Clone)]
pub struct ClaimHeader {
    pub claim: ClaimPath,
    pub header: HeaderName,
}

/// Renders a claim value as text, before header encoding. `false` for null (header left out).
fn claim_text(v: &Value, out: &mut String) -> bool {
    match v {
        Value::Null => return false,
        Value::String(s) => out.push_str(s),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Object(_) => out.push_str(&v.to_string()),
        Value::Array(items) if items.is_empty() => out.push_str("[]"),
        Value::Array(items) => {
            let start = out.len();
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let element = out.len();
                let scalar = matches!(item, Value::String(_) | Value::Number(_) | Value::Bool(_));
                if !scalar || !claim_text(item, out) || !joinable(&out[element..]) {
                    // Not joinable without ambiguity: the whole array as compact JSON.
                    out.truncate(start);
                    out.push_str(&v.to_string());
                    break;
                }
            }
        }
    }
    true
}

/// An array element that can be joined with `,` and still read back exactly.
fn joinable(text: &str) -> bool {
    !text.is_empty() && !text.starts_with('[') && !text.contains([',', '"']) && is_plain(text)
}

/// Text that is sent as it is: visible ASCII and inner spaces only, and no encoded-word marker.
fn is_plain(text: &str) -> bool {
    text.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !text.starts_with(' ')
        && !text.ends_with(' ')
        && !text.contains("=?")
}

/// The longest encoded word RFC 2047 §2 allows.
pub const MAX_ENCODED_WORD: usize = 75;
const WORD_PREFIX: &str = "=?UTF-8?B?";
const WORD_SUFFIX: &str = "?=";
/// Bytes of text per encoded word: the base64 of 45 bytes is 60 characters, and
/// 10 + 60 + 2 = 72 <= 75 (the next multiple of 3, 48 bytes, would give 76).
const WORD_TEXT_BYTES: usize = (MAX_ENCODED_WORD - WORD_PREFIX.len() - WORD_SUFFIX.len()) / 4 * 3;

/// Turns text into a header value that is always well formed: plain when it is safe, else the
/// RFC 2047 encoded words described in the module documentation.
pub fn encode_value(text: &str) -> HeaderValue {
    if is_plain(text)
        && let Ok(v) = HeaderValue::from_str(text)
    {
        return v;
    }
    let mut encoded = String::with_capacity(text.len() * 4 / 3 + 16);
    let mut rest = text;
    loop {
        // Cut at a character boundary, so that no word splits a UTF-8 character (RFC 2047 §5).
        let mut cut = rest.len().min(WORD_TEXT_BYTES);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (word, tail) = rest.split_at(cut);
        if !encoded.is_empty() {
            encoded.push(' ');
        }
        encoded.push_str(WORD_PREFIX);
        base64::engine::general_purpose::STANDARD.encode_string(word.as_bytes(), &mut encoded);
        encoded.push_str(WORD_SUFFIX);
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    HeaderValue::from_str(&encoded).expect("base64 is visible ASCII")
}

/// The identity headers for one claims set, in `claims_to_headers` order. A claim that is absent
/// or null produces no header (nginx then clears any forged copy, see the README).
pub fn render(claims: &Value, mapping: &[ClaimHeader]) -> Vec<(HeaderName, HeaderValue)> {
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

    /// Found by the `headers` fuzz target: a float claim in an array sent as JSON must read back as
    /// the same number. serde_json parses floats correctly rounded only with `float_roundtrip`
    /// (now a feature of the product's own dependency); without it, `6.6e+26` (the shortest form of
    /// the claim's value) read back one ulp away. Test builds get that feature from a
    /// dev-dependency anyway, so the regression guard is the fuzz seed
    /// `fuzz/corpus/headers/float_in_array_roundtrip`, replayed by every fuzz smoke run.
    #[test]
    fn a_float_in_a_json_array_header_reads_back_as_the_same_number() {
        let claims: Value =
            serde_json::from_str(r#"{"c": ["[", 660000000000000000000006666666.66666666, 0.1, 1e300]}"#).unwrap();
        let out = rendered(claims.clone(), &[("c", "x-auth-c")]);
        let back: Value = serde_json::from_str(&out[0].1).unwrap();
        assert_eq!(back, claims["c"], "{}", out[0].1);
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

    /// Reads a header value back: plain text, or encoded words separated by spaces.
    pub fn decode(value: &str) -> String {
        if !value.starts_with(WORD_PREFIX) {
            return value.to_string();
        }
        let mut bytes = Vec::new();
        for word in value.split(' ') {
            assert!(word.len() <= MAX_ENCODED_WORD, "{word}");
            let b64 = word.strip_prefix(WORD_PREFIX).and_then(|w| w.strip_suffix(WORD_SUFFIX)).unwrap();
            let chunk = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
            assert!(std::str::from_utf8(&chunk).is_ok(), "a word splits a character: {word}");
            bytes.extend_from_slice(&chunk);
        }
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn crlf_nul_non_ascii_and_encoded_word_markers_are_encoded_losslessly() {
        for raw in [
            "a\r\nX-Injected: 1",
            "nul\0byte",
            "Zoë",
            " padded ",
            "=?UTF-8?B?looks-encoded?=",
            "x =?UTF-8?B?YWRtaW4=?=",
            "a=?b",
            "",
        ] {
            let v = encode_value(raw);
            let s = v.to_str().unwrap();
            if raw.is_empty() {
                assert_eq!(s, "");
                continue;
            }
            assert!(s.starts_with("=?UTF-8?B?") && s.ends_with("?="), "{raw:?} -> {s}");
            assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)));
            assert_eq!(decode(s), raw);
        }
    }

    #[test]
    fn long_values_become_several_words_within_75_characters_without_splitting_a_character() {
        for raw in ["é".repeat(100), "😀".repeat(50), format!("a{}", "€".repeat(60)), "\n".repeat(500)] {
            let s = encode_value(&raw).to_str().unwrap().to_string();
            assert!(s.split(' ').count() > 1);
            assert!(s.split(' ').all(|w| w.len() <= MAX_ENCODED_WORD));
            assert_eq!(decode(&s), raw);
        }
    }

    #[test]
    fn arrays_join_with_commas_only_when_that_reads_back_one_way() {
        let cases = [
            (json!(["admin", "ops"]), "admin,ops"),
            (json!(["a b", 1, true]), "a b,1,true"),
            (json!([]), "[]"),
            (json!(["[1]"]), r#"["[1]"]"#),
            (json!(["a\nb"]), r#"["a\nb"]"#),
            (json!(["admin,ops"]), r#"["admin,ops"]"#),
            (json!(["x,admin"]), r#"["x,admin"]"#),
            (json!(["say \"hi\""]), r#"["say \"hi\""]"#),
            (json!(["", "a"]), r#"["","a"]"#),
            (json!([" a"]), r#"[" a"]"#),
            (json!(["a", null]), r#"["a",null]"#),
            (json!([["a", "b"]]), r#"[["a","b"]]"#),
            (json!([{"k": "v"}]), r#"[{"k":"v"}]"#),
        ];
        for (claim, want) in cases {
            assert_eq!(rendered(json!({ "r": claim }), &[("r", "x-r")])[0].1, want, "{claim}");
        }
        // Not visible ASCII, or an encoded-word marker: the JSON form, itself encoded.
        for claim in [json!(["Zoë", "ops"]), json!(["=?UTF-8?B?YWRtaW4=?=", "x"])] {
            let got = &rendered(json!({ "r": claim }), &[("r", "x-r")])[0].1;
            assert!(got.starts_with("=?UTF-8?B?"), "{claim} -> {got}");
            assert_eq!(serde_json::from_str::<Value>(&decode(got)).unwrap(), claim);
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
