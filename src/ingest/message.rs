//! A JSON object read one level deep: its top-level fields in order, each
//! value the exact JSON the client sent (borrowed from the request body),
//! or what ingest put in its place.
//!
//! Segment ingest looks at a few top-level fields of each message and keeps
//! the rest as sent. Building a `serde_json::Value` tree for every message
//! and serialising it back cost more than half of a Segment event's ingest
//! CPU (BENCHMARKS.md); here nested values are never built, only checked
//! ([`Checked`]: every number in range, every string escape valid, so the
//! mappers can read them later) and copied back as slices.

use std::borrow::Cow;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// What kind of JSON value a raw value is (its first byte says).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

pub fn kind_of(raw: &RawValue) -> Kind {
    match raw.get().as_bytes().first() {
        Some(b'n') => Kind::Null,
        Some(b't' | b'f') => Kind::Bool,
        Some(b'"') => Kind::String,
        Some(b'[') => Kind::Array,
        Some(b'{') => Kind::Object,
        _ => Kind::Number,
    }
}

/// `raw` when it is a string (unescaped); `None` otherwise.
pub fn string_of(raw: &RawValue) -> Option<String> {
    match kind_of(raw) {
        Kind::String => serde_json::from_str(raw.get()).ok(),
        _ => None,
    }
}

/// `value` unless it is absent or `null`.
pub fn non_null(value: Option<&RawValue>) -> Option<&RawValue> {
    value.filter(|value| kind_of(value) != Kind::Null)
}

/// One JSON object, one level deep. A key that appears twice keeps its
/// first position and its last value, as `serde_json::Map` does.
#[derive(Debug, Clone, Default)]
pub struct Message<'a> {
    fields: Vec<(Cow<'a, str>, Cow<'a, RawValue>)>,
}

impl<'a> Message<'a> {
    /// Reads `text`, which must be one JSON object. Nested values are only
    /// delimited here; run [`check`] over `text` first to validate them.
    pub fn parse(text: &'a str) -> Result<Message<'a>, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The raw value of `key`, if the object has it.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.fields
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_ref())
    }

    /// The kind of `key`'s value; `None` when absent.
    pub fn kind(&self, key: &str) -> Option<Kind> {
        self.get(key).map(kind_of)
    }

    /// `key`'s value when it is a string (unescaped); `None` otherwise.
    pub fn string(&self, key: &str) -> Option<String> {
        self.get(key).and_then(string_of)
    }

    /// `key`'s value unless it is absent or `null`.
    pub fn non_null(&self, key: &str) -> Option<&RawValue> {
        non_null(self.get(key))
    }

    /// Whether `key`'s value is the empty string.
    pub fn is_empty_string(&self, key: &str) -> bool {
        self.get(key).is_some_and(|raw| raw.get() == "\"\"")
    }

    /// Sets `key` to `value`: in place when present, else at the end.
    pub fn set(&mut self, key: &str, value: Box<RawValue>) {
        match self.fields.iter_mut().find(|(name, _)| name == key) {
            Some((_, slot)) => *slot = Cow::Owned(value),
            None => self
                .fields
                .push((Cow::Owned(key.to_owned()), Cow::Owned(value))),
        }
    }

    /// Sets `key` to the JSON string `text`.
    pub fn set_string(&mut self, key: &str, text: &str) {
        self.set(key, to_raw(&text));
    }

    /// Removes `key`, keeping the order of the rest.
    pub fn remove(&mut self, key: &str) {
        self.fields.retain(|(name, _)| name != key);
    }

    /// The object as JSON text: the fields in order, values as they are.
    pub fn to_json(&self) -> String {
        let size: usize = self
            .fields
            .iter()
            .map(|(name, value)| name.len() + value.get().len() + 4)
            .sum();
        let mut out = Vec::with_capacity(size + 2);
        out.push(b'{');
        for (n, (name, value)) in self.fields.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, name.as_ref()).expect("a string always serialises");
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
        out.push(b'}');
        String::from_utf8(out).expect("JSON text is UTF-8")
    }
}

/// Any value as raw JSON.
pub fn to_raw<T: serde::Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("a JSON value always serialises")
}

impl<'de> Deserialize<'de> for Message<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Message<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Message<'de>, A::Error> {
                let mut message = Message {
                    fields: Vec::with_capacity(map.size_hint().unwrap_or(16)),
                };
                while let Some(Key(name)) = map.next_key()? {
                    let value: &'de RawValue = map.next_value()?;
                    match message.fields.iter_mut().find(|(known, _)| *known == name) {
                        Some((_, slot)) => *slot = Cow::Borrowed(value),
                        None => message.fields.push((name, Cow::Borrowed(value))),
                    }
                }
                Ok(message)
            }
        }
        deserializer.deserialize_map(Fields)
    }
}

/// An object key, borrowed from the input unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl<'de> Visitor<'de> for Text {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(text.to_owned())))
            }
        }
        deserializer.deserialize_str(Text)
    }
}

/// Reads all of `text` as JSON without keeping any of it: fails on what
/// `serde_json::Value` would refuse (a number out of range such as `1e400`,
/// an invalid string escape), which delimiting a value does not check.
pub fn check(text: &str) -> Result<(), serde_json::Error> {
    serde_json::from_str::<Checked>(text).map(drop)
}

/// Any JSON value, read in full and dropped.
pub struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Any;
        impl<'de> Visitor<'de> for Any {
            type Value = Checked;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_unit<E>(self) -> Result<Checked, E> {
                Ok(Checked)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Checked, A::Error> {
                while seq.next_element::<Checked>()?.is_some() {}
                Ok(Checked)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, Checked>()?
                    .is_some()
                {}
                Ok(Checked)
            }
        }
        deserializer.deserialize_any(Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn a_message_reads_and_writes_back_its_fields_in_order_with_values_as_sent() {
        let text = r#"{"b": 1.50, "a": {"x" : [1,2]}, "c\n": "t\u00e9"}"#;
        let message = Message::parse(text).unwrap();
        assert_eq!(message.get("b").unwrap().get(), "1.50");
        assert_eq!(message.kind("a"), Some(Kind::Object));
        assert_eq!(message.string("c\n").as_deref(), Some("té"));
        assert_eq!(
            message.to_json(),
            r#"{"b":1.50,"a":{"x" : [1,2]},"c\n":"t\u00e9"}"#
        );
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value_like_serde_json() {
        let text = r#"{"a": 1, "b": 2, "a": 3}"#;
        let ours: Value = serde_json::from_str(&Message::parse(text).unwrap().to_json()).unwrap();
        let theirs: Value = serde_json::from_str(text).unwrap();
        assert_eq!(ours, theirs);
        let keys: Vec<&String> = ours.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn edits_replace_in_place_append_and_remove() {
        let mut message = Message::parse(r#"{"type":"track","event":"E"}"#).unwrap();
        message.set_string("type", "page");
        message.set_string("name", "N");
        message.remove("event");
        assert_eq!(message.to_json(), r#"{"type":"page","name":"N"}"#);
        assert!(!message.is_empty_string("name"));
        message.set_string("name", "");
        assert!(message.is_empty_string("name"));
    }

    #[test]
    fn kinds_come_from_the_first_byte() {
        let message =
            Message::parse(r#"{"n":null,"t":true,"f":false,"i":-1,"s":"x","a":[],"o":{}}"#)
                .unwrap();
        let kinds: Vec<Option<Kind>> = ["n", "t", "f", "i", "s", "a", "o", "missing"]
            .iter()
            .map(|key| message.kind(key))
            .collect();
        use Kind::*;
        assert_eq!(
            kinds,
            [
                Some(Null),
                Some(Bool),
                Some(Bool),
                Some(Number),
                Some(String),
                Some(Array),
                Some(Object),
                None
            ]
        );
        assert_eq!(message.string("i"), None);
    }

    #[test]
    fn check_refuses_what_a_value_tree_would_refuse() {
        assert!(check(&json!({"a": [1, "x", {"b": null}]}).to_string()).is_ok());
        assert!(check(r#"{"a": 1e400}"#).is_err());
        assert!(check(r#"{"a": "\ud800"}"#).is_err());
        assert!(Message::parse(r#"[1]"#).is_err());
    }
}
