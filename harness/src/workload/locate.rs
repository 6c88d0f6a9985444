//! Field paths, and finding a path's line and column in the YAML text.
//!
//! serde_yaml 0.9 keeps no positions in its `Value` tree, but its deserializer stamps
//! an error raised inside a visitor with the position of the YAML event being read.
//! [`locate`] uses that: it deserializes the source with a seed that follows the path
//! (skipping everything else) and fails on purpose when it reaches the key or the
//! value; the error's location is the answer. The position therefore comes from the
//! same parser that read the workload, for block and flow style, quoting and
//! comments alike. Aliases report the position of the alias; keys brought in by a
//! merge (`<<: *base`) are not found, and the caller falls back to the nearest
//! enclosing path that is.

use std::fmt;

use serde::de::{self, Deserialize, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// One step of a path: a mapping key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// Where a field is: `faults[2].target`, `cluster.topic_config."retention.bytes"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct FieldPath(pub Vec<Segment>);

impl FieldPath {
    pub fn root() -> FieldPath {
        FieldPath(Vec::new())
    }

    pub fn key(&self, key: &str) -> FieldPath {
        let mut path = self.clone();
        path.0.push(Segment::Key(key.to_string()));
        path
    }

    pub fn index(&self, index: usize) -> FieldPath {
        let mut path = self.clone();
        path.0.push(Segment::Index(index));
        path
    }

    pub fn parent(&self) -> Option<FieldPath> {
        let (_, parent) = self.0.split_last()?;
        Some(FieldPath(parent.to_vec()))
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => {
                    if position > 0 {
                        f.write_str(".")?;
                    }
                    let plain =
                        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if plain {
                        f.write_str(key)?;
                    } else {
                        write!(f, "{key:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Which part of a mapping entry to point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Anchor {
    /// The key (`partitionsPerTopic:`): for unknown keys and conflicts.
    Key,
    /// The value: for type and range errors.
    Value,
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Position {
    pub line: usize,
    pub column: usize,
}

/// The position of `path` in `source`, or of its nearest enclosing path that can be
/// found, or 1:1 for the document.
pub(crate) fn locate_or_enclosing(source: &str, path: &FieldPath, anchor: Anchor) -> Position {
    let mut current = Some((path.clone(), anchor));
    while let Some((path, anchor)) = current {
        if path.is_root() {
            break;
        }
        if let Some(position) = locate(source, &path, anchor) {
            return position;
        }
        current = path.parent().map(|parent| (parent, Anchor::Key));
    }
    Position { line: 1, column: 1 }
}

/// The position of `path`'s key or value in `source`, if the path exists there.
pub(crate) fn locate(source: &str, path: &FieldPath, anchor: Anchor) -> Option<Position> {
    if path.is_root() {
        return None;
    }
    let deserializer = serde_yaml::Deserializer::from_str(source);
    let seek = Seek { path: &path.0, anchor };
    match seek.deserialize(deserializer) {
        Ok(()) => None,
        // serde_yaml prefixes the message with its own path of the node (`a.b: …`).
        Err(error) if error.to_string().contains(FOUND) => {
            let location = error.location()?;
            Some(Position { line: location.line(), column: location.column() })
        }
        Err(_) => None,
    }
}

/// The message of the error that carries the found position.
const FOUND: &str = "corelog-locate: found";
/// The message when the path is not in the document.
const NOT_FOUND: &str = "corelog-locate: not found";

/// Follows `path` from the current node.
struct Seek<'p> {
    path: &'p [Segment],
    anchor: Anchor,
}

impl<'de> DeserializeSeed<'de> for Seek<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        match self.path.split_first() {
            None => deserializer.deserialize_any(Found),
            Some((Segment::Key(key), rest)) => {
                deserializer.deserialize_any(InMapping { key, rest, anchor: self.anchor })
            }
            Some((Segment::Index(index), rest)) => {
                deserializer.deserialize_any(InSequence { index: *index, rest, anchor: self.anchor })
            }
        }
    }
}

/// Fails with [`FOUND`] on whatever node it is asked to read, so that the
/// deserializer stamps the error with that node's position.
struct Found;

macro_rules! found_on {
    ($($method:ident($($arg:ty),*)),* $(,)?) => {
        $(fn $method<E: de::Error>(self, $(_: $arg),*) -> Result<(), E> {
            Err(E::custom(FOUND))
        })*
    };
}

impl<'de> Visitor<'de> for Found {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    found_on!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_i128(i128),
        visit_u128(u128),
        visit_f64(f64),
        visit_str(&str),
        visit_unit(),
        visit_none(),
    );

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(de::Error::custom(FOUND))
    }
}

/// In a mapping, finds `key` and goes on with `rest` in its value (or fails on the
/// key itself when it is the last step and the anchor is the key).
struct InMapping<'p> {
    key: &'p str,
    rest: &'p [Segment],
    anchor: Anchor,
}

impl<'de> Visitor<'de> for InMapping<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let fail_on_key = self.rest.is_empty() && self.anchor == Anchor::Key;
        while let Some(matched) = map.next_key_seed(KeyMatch { wanted: self.key, fail_on_key })? {
            if matched {
                return map.next_value_seed(Seek { path: self.rest, anchor: self.anchor });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom(NOT_FOUND))
    }
}

/// Reads one key; `true` if it is the wanted one.
struct KeyMatch<'p> {
    wanted: &'p str,
    fail_on_key: bool,
}

impl<'de> DeserializeSeed<'de> for KeyMatch<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyMatch<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<bool, E> {
        match (key == self.wanted, self.fail_on_key) {
            (true, true) => Err(E::custom(FOUND)),
            (matched, _) => Ok(matched),
        }
    }

    // Keys that are not strings (numbers, booleans, null, collections) never match.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_none<E: de::Error>(self) -> Result<bool, E> {
        Ok(false)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

/// In a sequence, skips to element `index` and goes on with `rest` there.
struct InSequence<'p> {
    index: usize,
    rest: &'p [Segment],
    anchor: Anchor,
}

impl<'de> Visitor<'de> for InSequence<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        for _ in 0..self.index {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom(NOT_FOUND));
            }
        }
        match seq.next_element_seed(Seek { path: self.rest, anchor: self.anchor })? {
            Some(()) => Err(de::Error::custom(NOT_FOUND)),
            None => Err(de::Error::custom(NOT_FOUND)),
        }
    }
}

/// The position of the first key that repeats a key of the same mapping, if any.
/// serde_yaml reports duplicate keys without a position; this finds it the same way
/// [`locate`] finds a path.
pub(crate) fn locate_duplicate_key(source: &str) -> Option<Position> {
    let deserializer = serde_yaml::Deserializer::from_str(source);
    match DuplicateSeek.deserialize(deserializer) {
        Err(error) if error.to_string().contains(FOUND) => {
            let location = error.location()?;
            Some(Position { line: location.line(), column: location.column() })
        }
        _ => None,
    }
}

/// Walks the whole document and fails on the first repeated key of a mapping.
struct DuplicateSeek;

impl<'de> DeserializeSeed<'de> for DuplicateSeek {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DuplicateSeek {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        Ok(())
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        let ((), variant) = data.variant_seed(IgnoreSeed)?;
        de::VariantAccess::newtype_variant_seed(variant, DuplicateSeek)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(DuplicateSeek)?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = std::collections::HashSet::new();
        while map.next_key_seed(UniqueKey { seen: &mut seen })?.is_some() {
            map.next_value_seed(DuplicateSeek)?;
        }
        Ok(())
    }
}

/// Reads a key; fails with [`FOUND`] if the mapping had it already.
struct UniqueKey<'s> {
    seen: &'s mut std::collections::HashSet<String>,
}

impl<'de> DeserializeSeed<'de> for UniqueKey<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for UniqueKey<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        if self.seen.insert(key.to_string()) {
            Ok(())
        } else {
            Err(E::custom(FOUND))
        }
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.visit_str(&value.to_string())
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.visit_str(&value.to_string())
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        self.visit_str(&value.to_string())
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.visit_str(&value.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.visit_str("~")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        DuplicateSeek.visit_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        DuplicateSeek.visit_seq(seq)
    }
}

/// Ignores an enum's variant name.
struct IgnoreSeed;

impl<'de> DeserializeSeed<'de> for IgnoreSeed {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(segments: &[&str]) -> FieldPath {
        FieldPath(
            segments
                .iter()
                .map(|s| match s.parse::<usize>() {
                    Ok(index) => Segment::Index(index),
                    Err(_) => Segment::Key(s.to_string()),
                })
                .collect(),
        )
    }

    fn at(source: &str, segments: &[&str], anchor: Anchor) -> Option<(usize, usize)> {
        locate(source, &path(segments), anchor).map(|p| (p.line, p.column))
    }

    #[test]
    fn finds_keys_and_values_in_block_style() {
        let source = "# comment\nname: x\ncluster:\n  brokers: 3\n  topic_config:\n    retention.bytes: 10\n";
        assert_eq!(at(source, &["name"], Anchor::Key), Some((2, 1)));
        assert_eq!(at(source, &["name"], Anchor::Value), Some((2, 7)));
        assert_eq!(at(source, &["cluster", "brokers"], Anchor::Value), Some((4, 12)));
        assert_eq!(at(source, &["cluster", "topic_config", "retention.bytes"], Anchor::Key), Some((6, 5)));
        assert_eq!(at(source, &["cluster"], Anchor::Key), Some((3, 1)));
        assert_eq!(at(source, &["missing"], Anchor::Key), None);
        assert_eq!(at(source, &["cluster", "nope"], Anchor::Value), None);
    }

    #[test]
    fn finds_list_elements_and_flow_style() {
        let source = "faults:\n  - at: 1\n    kind: crash\n  - {at: 5, kind: pause, target: random}\nguarantees: [at-most-once, idempotent]\n";
        assert_eq!(at(source, &["faults", "0", "kind"], Anchor::Value), Some((3, 11)));
        assert_eq!(at(source, &["faults", "1", "target"], Anchor::Value), Some((4, 34)));
        assert_eq!(at(source, &["faults", "1", "kind"], Anchor::Key), Some((4, 13)));
        assert_eq!(at(source, &["guarantees", "1"], Anchor::Value), Some((5, 28)));
        assert_eq!(at(source, &["faults", "2"], Anchor::Value), None);
    }

    #[test]
    fn quoted_keys_and_values_and_aliases() {
        let source = "\"topics\": 1\nbase: &b 7\nmessageSize: *b\n";
        assert_eq!(at(source, &["topics"], Anchor::Key), Some((1, 1)));
        assert_eq!(at(source, &["messageSize"], Anchor::Key), Some((3, 1)));
        assert!(at(source, &["messageSize"], Anchor::Value).is_some());
    }

    #[test]
    fn falls_back_to_the_nearest_enclosing_path() {
        let source = "a: 1\ncluster:\n  brokers: 1\n";
        let position = locate_or_enclosing(source, &path(&["cluster", "commands", "kill"]), Anchor::Value);
        assert_eq!((position.line, position.column), (2, 1));
        let position = locate_or_enclosing(source, &path(&["nothing"]), Anchor::Value);
        assert_eq!((position.line, position.column), (1, 1));
    }

    #[test]
    fn finds_the_repeated_key() {
        let source = "a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n";
        assert_eq!(locate_duplicate_key(source), Some(Position { line: 5, column: 3 }));
        assert_eq!(locate_duplicate_key("a: 1\nb: {a: 1}\n"), None);
    }

    #[test]
    fn paths_display_like_the_yaml() {
        let p = FieldPath::root().key("faults").index(2).key("target");
        assert_eq!(p.to_string(), "faults[2].target");
        assert_eq!(
            FieldPath::root().key("cluster").key("topic_config").key("retention.bytes").to_string(),
            "cluster.topic_config.\"retention.bytes\""
        );
    }
}
