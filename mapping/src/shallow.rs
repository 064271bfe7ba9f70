//! A JSON object body parsed one level deep, for [`RuleSet::apply_lazily`](crate::RuleSet).
//!
//! Building serde_json's whole tree (an allocation per key, string and nested object, then as
//! many frees, then serialising it all again) is most of what mapping a request body costs,
//! while typical rules touch a few top-level members. Here the top level is read with
//! serde_json (`RawValue`: each member's text is checked, not decoded), and a member becomes a
//! [`Value`] only when a rule reaches into it. The body is written back from the client's bytes
//! for every member no rule touched, and serialised by serde_json for the others, keeping the
//! members' order (and, for a repeated key, serde_json's: the last value in the first place).
//!
//! The whole body is first checked the way serde_json parses it (every number range-checked,
//! every escape decoded, nesting within serde_json's recursion limit), without allocating.
//! Anything that check or the top-level read refuses is parsed whole with [`parse_unbounded`],
//! whose values and errors are the reference: a body that is not an object, that is not valid
//! JSON (a number out of range, a lone surrogate), that nests too deep (a body nested 10,000
//! levels deep is refused as without this module), or that repeats a key.
//!
//! One difference remains, on purpose: an untouched member keeps the client's exact text, so a
//! number serde_json would round (an integer past 64 bits, a long decimal) reaches the upstream
//! as sent.

use crate::body::parse_unbounded;
use crate::error::MappingError;
use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use std::ops::Range;

/// A JSON object whose members are parsed on first use.
#[derive(Clone, Debug, PartialEq)]
pub struct Shallow {
    /// The body as received; untouched members are written back from it.
    source: Bytes,
    members: Vec<(String, Member)>,
}

#[derive(Clone, Debug, PartialEq)]
enum Member {
    /// Not reached by any rule yet: where its text is in `source`.
    Raw(Range<usize>),
    Parsed(Value),
}

/// What reading a body gave.
pub(crate) enum Parsed {
    Shallow(Shallow),
    Whole(Value),
}

impl Shallow {
    /// Reads `bytes` one level deep when it is a JSON object this module can keep (see the
    /// module's doc), else parses it whole.
    pub(crate) fn parse(bytes: &Bytes) -> Result<Parsed, MappingError> {
        match Self::read_top_level(bytes) {
            Some(shallow) => Ok(Parsed::Shallow(shallow)),
            None => parse_unbounded(bytes).map(Parsed::Whole),
        }
    }

    fn read_top_level(bytes: &Bytes) -> Option<Shallow> {
        serde_json::from_slice::<Checked>(bytes).ok()?;
        let Members(raw) = serde_json::from_slice(bytes).ok()?;
        if repeats_a_key(&raw) {
            return None;
        }
        let base = bytes.as_ptr() as usize;
        let mut members = Vec::with_capacity(raw.len());
        for (key, value) in raw {
            // A borrowed `RawValue` is a slice of `bytes`: its place in them.
            let start = (value.get().as_ptr() as usize).checked_sub(base)?;
            let end = start + value.get().len();
            (end <= bytes.len()).then_some(())?;
            members.push((key, Member::Raw(start..end)));
        }
        Some(Shallow {
            source: bytes.clone(),
            members,
        })
    }

    /// The member `key`, parsed, if there is one.
    pub(crate) fn get(&mut self, key: &str) -> Result<Option<&mut Value>, MappingError> {
        let Some(index) = self.position(key) else {
            return Ok(None);
        };
        self.parsed(index).map(Some)
    }

    /// The member `key`, parsed, or a new `null` one after the others.
    pub(crate) fn get_or_insert(&mut self, key: &str) -> Result<&mut Value, MappingError> {
        let index = match self.position(key) {
            Some(index) => index,
            None => {
                self.members
                    .push((key.to_owned(), Member::Parsed(Value::Null)));
                self.members.len() - 1
            }
        };
        self.parsed(index)
    }

    /// Removes the member `key` (the others keep their order) and returns its value.
    pub(crate) fn remove(&mut self, key: &str) -> Result<Option<Value>, MappingError> {
        let Some(index) = self.position(key) else {
            return Ok(None);
        };
        let (_, member) = self.members.remove(index);
        value_of(&self.source, member).map(Some)
    }

    /// The whole body as serde_json's value.
    pub(crate) fn into_value(self) -> Result<Value, MappingError> {
        let Shallow { source, members } = self;
        let mut map = Map::with_capacity(members.len());
        for (key, member) in members {
            map.insert(key, value_of(&source, member)?);
        }
        Ok(Value::Object(map))
    }

    /// The body to send: untouched members as received, the others serialised.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = Vec::with_capacity(self.source.len() + 16);
        out.push(b'{');
        for (index, (key, member)) in self.members.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            // Writing a string or a `Value` into memory cannot fail (see `body::to_bytes`).
            if serde_json::to_writer(&mut out, key).is_err() {
                return Bytes::from_static(b"null");
            }
            out.push(b':');
            match member {
                Member::Raw(range) => out.extend_from_slice(&self.source[range.clone()]),
                Member::Parsed(value) => {
                    if serde_json::to_writer(&mut out, value).is_err() {
                        return Bytes::from_static(b"null");
                    }
                }
            }
        }
        out.push(b'}');
        Bytes::from(out)
    }

    fn position(&self, key: &str) -> Option<usize> {
        self.members.iter().position(|(name, _)| name == key)
    }

    fn parsed(&mut self, index: usize) -> Result<&mut Value, MappingError> {
        let member = &mut self.members[index].1;
        if let Member::Raw(range) = member {
            *member = Member::Parsed(parse_unbounded(&self.source[range.clone()])?);
        }
        match member {
            Member::Parsed(value) => Ok(value),
            Member::Raw(_) => Err(MappingError::InvalidJson("unparsed member".to_owned())),
        }
    }
}

fn value_of(source: &[u8], member: Member) -> Result<Value, MappingError> {
    match member {
        Member::Raw(range) => parse_unbounded(&source[range]),
        Member::Parsed(value) => Ok(value),
    }
}

/// The top-level members of a JSON object, each value as its text.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
        let mut members = Vec::new();
        while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
            members.push(member);
        }
        Ok(Members(members))
    }
}

/// Any JSON value, checked as serde_json parses one into a `Value` (numbers, escapes, UTF-8,
/// nesting) but kept nowhere: nothing is allocated.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
    }
}

fn repeats_a_key(members: &[(String, &RawValue)]) -> bool {
    if members.len() <= 16 {
        return members
            .iter()
            .enumerate()
            .any(|(i, (key, _))| members[..i].iter().any(|(seen, _)| seen == key));
    }
    let mut seen = HashSet::with_capacity(members.len());
    !members.iter().all(|(key, _)| seen.insert(key.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shallow(text: &str) -> Shallow {
        match Shallow::parse(&Bytes::from(text.to_owned())) {
            Ok(Parsed::Shallow(shallow)) => shallow,
            Ok(Parsed::Whole(value)) => panic!("parsed whole: {value}"),
            Err(error) => panic!("{error}"),
        }
    }

    fn whole(text: &str) -> Result<Value, MappingError> {
        match Shallow::parse(&Bytes::from(text.to_owned()))? {
            Parsed::Whole(value) => Ok(value),
            Parsed::Shallow(_) => panic!("kept shallow: {text}"),
        }
    }

    #[test]
    fn untouched_members_keep_their_bytes() {
        let mut body = shallow(r#" { "a" : [1, 2.50, {"x": "\u00e9"}], "b":"t", "c": {"d": 1} } "#);
        *body.get_or_insert("b").expect("parses") = Value::from(7);
        assert_eq!(
            body.remove("c").expect("parses"),
            Some(serde_json::json!({"d": 1}))
        );
        *body.get_or_insert("n").expect("new") = Value::from(true);
        assert_eq!(
            body.to_bytes(),
            Bytes::from_static(br#"{"a":[1, 2.50, {"x": "\u00e9"}],"b":7,"n":true}"#)
        );
        assert_eq!(
            body.into_value().expect("parses"),
            serde_json::json!({"a": [1, 2.5, {"x": "é"}], "b": 7, "n": true})
        );
    }

    #[test]
    fn other_bodies_are_parsed_whole() {
        assert_eq!(whole("[1, 2]").expect("array"), serde_json::json!([1, 2]));
        assert_eq!(whole("3").expect("number"), serde_json::json!(3));
        // A repeated key: serde_json keeps the last value in the first place.
        assert_eq!(
            whole(r#"{"a": 1, "b": 2, "a": 3}"#).expect("object"),
            serde_json::json!({"a": 3, "b": 2})
        );
        let broken = [
            "{",
            r#"{"a": }"#,
            r#"{"a": 1} x"#,
            "{\"a\": \"\u{1}\"}",
            r#"{"n": 1e400, "u": 1}"#,
            r#"{"s": "\ud800", "u": 1}"#,
            r#"{"s": "\udc00"}"#,
        ];
        for broken in broken {
            let expected = serde_json::from_str::<Value>(broken).expect_err("invalid");
            let error = whole(broken).expect_err("refused");
            assert_eq!(
                error.to_string(),
                MappingError::InvalidJson(expected.to_string()).to_string()
            );
        }
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(whole(&deep), Err(MappingError::InvalidJson(_))));
    }
}
