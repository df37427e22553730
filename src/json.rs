//! Strict JSON for JOSE headers and claims sets (and the same strictness for the YAML config): duplicate member names are an error
//! (RFC 8725 §2.6, RFC 7515 §5.2: two parsers must never read one token two ways), and nesting
//! is bounded so a hostile token cannot make the parser recurse deeply.

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;

/// The deepest nesting accepted in a header or claims set.
pub const MAX_DEPTH: usize = 32;

/// Parses `bytes` as one JSON object, refusing duplicate keys at any depth.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, &'static str> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = StrictSeed { depth: 0 }.deserialize(&mut de).map_err(|e| {
        if e.to_string().contains("duplicate member") { "duplicate member name" } else { "invalid JSON" }
    })?;
    de.end().map_err(|_| "invalid JSON")?;
    match value {
        Value::Object(m) => Ok(m),
        _ => Err("not a JSON object"),
    }
}

/// Reads any serde format (the YAML config too) into a `Value`, refusing duplicate keys.
pub fn strict_value<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    StrictSeed { depth: 0 }.deserialize(d)
}

struct StrictSeed {
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for StrictSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor { depth: self.depth })
    }
}

struct StrictVisitor {
    depth: usize,
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("nested too deeply"));
        }
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(StrictSeed { depth: self.depth + 1 })? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("nested too deeply"));
        }
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate member `{key}`")));
            }
            let v = map.next_value_seed(StrictSeed { depth: self.depth + 1 })?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_top_level_member_is_refused() {
        assert_eq!(parse_object(br#"{"sub":"a","sub":"b"}"#), Err("duplicate member name"));
    }

    #[test]
    fn duplicate_nested_member_is_refused() {
        assert!(parse_object(br#"{"o":{"k":1,"k":2}}"#).is_err());
    }

    #[test]
    fn escaped_duplicate_member_is_refused() {
        // "s\u0075b" is "sub": the comparison is on decoded names.
        assert!(parse_object(br#"{"sub":"a","s\u0075b":"b"}"#).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200));
        assert!(parse_object(deep.as_bytes()).is_err());
    }

    #[test]
    fn trailing_garbage_and_non_objects_are_refused() {
        assert!(parse_object(br#"{"a":1} x"#).is_err());
        assert!(parse_object(b"[1]").is_err());
        assert!(parse_object(b"").is_err());
    }

    #[test]
    fn plain_object_parses() {
        let m = parse_object(br#"{"a":1,"b":[1,2,{"c":null}]}"#).unwrap();
        assert_eq!(m.len(), 2);
    }
}
