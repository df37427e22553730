//! Fuzzes the identity-header renderer (`headers::render`): any claim value (the input as JSON,
//! else as a string) becomes a header value of visible ASCII and spaces only, in encoded words of at
//! most 75 characters that never split a UTF-8 character, that decodes back one way only to the
//! claim: strings exactly; arrays as JSON when the value starts with `[`, else by splitting on `,`;
//! nothing is ever ambiguous between `["admin,ops"]` and `["admin","ops"]`.
#![no_main]

use base64::Engine as _;
use http::HeaderName;
use jwtgate::claims::ClaimPath;
use jwtgate::headers::{ClaimHeader, MAX_ENCODED_WORD, render};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fn decode(value: &str) -> String {
    if !value.starts_with("=?UTF-8?B?") {
        assert!(!value.contains("=?"), "a plain value with an encoded-word marker: {value}");
        return value.to_string();
    }
    let mut bytes = Vec::new();
    for word in value.split(' ') {
        assert!(word.len() <= MAX_ENCODED_WORD, "encoded word over 75 characters: {word}");
        let b64 = word.strip_prefix("=?UTF-8?B?").and_then(|w| w.strip_suffix("?=")).expect("an encoded word");
        let chunk = base64::engine::general_purpose::STANDARD.decode(b64).expect("base64");
        assert!(std::str::from_utf8(&chunk).is_ok(), "an encoded word splits a character: {word}");
        bytes.extend(chunk);
    }
    String::from_utf8(bytes).unwrap()
}

fuzz_target!(|data: &[u8]| {
    let claim = match serde_json::from_slice::<Value>(data) {
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(data).into_owned()),
    };
    let mapping = [ClaimHeader { claim: ClaimPath::parse("c").unwrap(), header: HeaderName::from_static("x-auth-c") }];
    let out = render(&json!({ "c": claim }), &mapping);
    if claim.is_null() {
        assert!(out.is_empty());
        return;
    }
    assert_eq!(out.len(), 1);
    let raw = out[0].1.as_bytes();
    assert!(raw.iter().all(|b| (0x20..0x7f).contains(b)), "not visible ASCII: {raw:?}");
    let text = decode(std::str::from_utf8(raw).unwrap());
    match &claim {
        Value::String(s) => assert_eq!(&text, s),
        Value::Array(_) if text.starts_with('[') => {
            assert_eq!(serde_json::from_str::<Value>(&text).expect("the JSON form parses"), claim)
        }
        Value::Array(items) => {
            let parts: Vec<&str> = text.split(',').collect();
            assert_eq!(parts.len(), items.len(), "{text:?} does not split back into {claim}");
            for (part, item) in parts.iter().zip(items) {
                match item {
                    Value::String(s) => assert_eq!(part, s),
                    Value::Number(_) | Value::Bool(_) => assert_eq!(*part, item.to_string()),
                    other => panic!("{other} joined rather than sent as JSON"),
                }
            }
        }
        other => assert_eq!(text, other.to_string()),
    }
});
