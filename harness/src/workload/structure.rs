//! The structural pass: walks the parsed YAML against the [`schema`](super::schema)
//! tables and reports every unknown key, wrong type, out-of-range number, unknown
//! choice and missing required field, all at once (serde would stop at the first).
//!
//! Invalid entries are removed from the tree as they are reported, and their paths
//! remembered, so that serde can then deserialize what is left and the semantic pass
//! can go on checking the rest without repeating an error about a value it never saw.

use std::collections::HashSet;

use serde_yaml::{Mapping, Value};

use super::locate::{Anchor, FieldPath};
use super::schema::{BlockDoc, Choice, FieldDoc, Kind, Presence, BLOCKS};
use super::Problem;

/// Checks `value` (the whole document) against `block`; prunes what is invalid.
pub(crate) fn check_document(block: &'static BlockDoc, value: &mut Value) -> (Vec<Problem>, HashSet<FieldPath>) {
    let mut walker = Walker { problems: Vec::new(), invalid: HashSet::new() };
    match value {
        Value::Mapping(mapping) => walker.block(block, mapping, &FieldPath::root()),
        Value::Null => walker.problems.push(Problem::new(
            FieldPath::root(),
            Anchor::Value,
            "the file is empty",
            Some("a workload needs at least topics, partitionsPerTopic, messageSize, producersPerTopic and testDurationMinutes (or testDurationSeconds)".to_string()),
        )),
        other => walker.problems.push(Problem::new(
            FieldPath::root(),
            Anchor::Value,
            format!("expected a mapping of fields, found {}", describe(other)),
            Some("a workload is a YAML mapping such as `topics: 1`, one field per line".to_string()),
        )),
    }
    (walker.problems, walker.invalid)
}

struct Walker {
    problems: Vec<Problem>,
    invalid: HashSet<FieldPath>,
}

impl Walker {
    fn report(&mut self, path: FieldPath, anchor: Anchor, message: impl Into<String>, hint: Option<String>) {
        self.problems.push(Problem::new(path, anchor, message, hint));
    }

    fn block(&mut self, block: &'static BlockDoc, mapping: &mut Mapping, path: &FieldPath) {
        let mut remove = Vec::new();
        let mut seen = HashSet::new();
        // Required fields an unknown key was probably meant to be: its "did you mean"
        // already says so, so they are not reported missing as well.
        let mut suggested = HashSet::new();
        for (key_value, value) in mapping.iter_mut() {
            let Some(key) = key_value.as_str() else {
                self.report(
                    path.clone(),
                    Anchor::Value,
                    format!("keys must be strings, found {}", describe(key_value)),
                    None,
                );
                remove.push(key_value.clone());
                continue;
            };
            let field_path = path.key(key);
            let Some(field) = block.field(key) else {
                let names: Vec<&str> = block.fields.iter().map(|field| field.key).collect();
                if let Some(name) = suggest(key, &names) {
                    suggested.insert(name);
                }
                let hint = unknown_key_hint(key, block);
                self.report(field_path, Anchor::Key, format!("unknown field `{key}`"), Some(hint));
                remove.push(key_value.clone());
                continue;
            };
            if value.is_null() {
                // `payloadFile:` with nothing after it means absent, as serde reads it.
                remove.push(key_value.clone());
                continue;
            }
            seen.insert(field.key);
            if !self.value(field, value, &field_path) {
                self.invalid.insert(field_path);
                remove.push(key_value.clone());
            }
        }
        for key in remove {
            mapping.remove(&key);
        }
        for field in block.fields {
            let absent = !seen.contains(field.key);
            if absent && suggested.contains(field.key) {
                self.invalid.insert(path.key(field.key));
            } else if absent && matches!(field.presence, Presence::Required) {
                self.report(
                    path.key(field.key),
                    Anchor::Key,
                    "required field is missing",
                    Some(format!("{} ({})", first_sentence(field.doc), kind_summary(&field.kind))),
                );
                self.invalid.insert(path.key(field.key));
            }
        }
    }

    /// Checks one value against its field; `false` if it must be removed.
    fn value(&mut self, field: &'static FieldDoc, value: &mut Value, path: &FieldPath) -> bool {
        match &field.kind {
            Kind::Integer { min, max } => self.integer(value, *min, *max, path),
            Kind::Number { min, max } => self.number(value, *min, *max, "", path),
            Kind::Seconds { min, max } => self.number(value, *min, *max, " seconds", path),
            Kind::Bool => self.boolean(value, path),
            Kind::Text => {
                // OMB (Jackson) reads a number or boolean into a string field; so does corelog.
                let text = match value {
                    Value::String(text) => Some(text.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    _ => None,
                };
                self.text(text, value, path)
            }
            Kind::Path => {
                let text = value.as_str().map(str::to_string);
                self.text(text, value, path)
            }
            Kind::Pattern(_) => {
                // A number spells some patterns (`cpus: 1`); the pattern's own check reads it.
                let text = match value {
                    Value::String(text) => Some(text.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                };
                self.text(text, value, path)
            }
            Kind::OneOf(choices) => self.one_of(value, choices, path),
            Kind::ListOf(choices) => self.choice_list(value, choices, path),
            Kind::HostPorts => self.host_ports(value, path),
            Kind::Map(what) => self.map(value, what, path),
            Kind::Groups => self.groups(value, path),
            Kind::Block(block) => self.nested_block(block, value, path),
            Kind::Blocks(block) => self.blocks(block, value, path),
        }
    }

    fn integer(&mut self, value: &Value, min: i128, max: i128, path: &FieldPath) -> bool {
        let number = match value {
            Value::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
            _ => None,
        };
        match number {
            Some(n) if n < min || n > max => {
                self.report(path.clone(), Anchor::Value, range_message(n, min, max), None);
                false
            }
            Some(_) => true,
            None => {
                self.report(
                    path.clone(),
                    Anchor::Value,
                    format!("expected a whole number, found {}", describe(value)),
                    quoted_number_hint(value),
                );
                false
            }
        }
    }

    /// A number between `min` and `max`; `unit` is `" seconds"` for a duration, else empty.
    fn number(&mut self, value: &Value, min: f64, max: f64, unit: &str, path: &FieldPath) -> bool {
        match value.as_f64() {
            Some(n) if !n.is_finite() => {
                self.report(path.clone(), Anchor::Value, "expected a finite number", None);
                false
            }
            Some(n) if n < min || n > max => {
                self.report(
                    path.clone(),
                    Anchor::Value,
                    format!("must be between {min} and {max}{unit} (got {n})"),
                    None,
                );
                false
            }
            Some(_) => true,
            None => {
                let what = if unit.is_empty() { "a number" } else { "a number of seconds" };
                self.report(
                    path.clone(),
                    Anchor::Value,
                    format!("expected {what}, found {}", describe(value)),
                    quoted_number_hint(value),
                );
                false
            }
        }
    }

    /// A `Kind::Groups` field: a list of non-empty lists of whole numbers.
    fn groups(&mut self, value: &Value, path: &FieldPath) -> bool {
        let Value::Sequence(groups) = value else {
            self.report(
                path.clone(),
                Anchor::Value,
                format!("expected a list of lists of broker ids, found {}", describe(value)),
                Some("for example `[[0], [1, 2]]`".to_string()),
            );
            return false;
        };
        let mut valid = true;
        for (index, group) in groups.iter().enumerate() {
            let ids = match group {
                Value::Sequence(ids) if !ids.is_empty() => ids,
                _ => {
                    let found = if group.is_sequence() { "an empty list".to_string() } else { describe(group) };
                    self.report(
                        path.index(index),
                        Anchor::Value,
                        format!("expected a non-empty list of broker ids, found {found}"),
                        Some("for example `[1, 2]`".to_string()),
                    );
                    valid = false;
                    continue;
                }
            };
            for (position, id) in ids.iter().enumerate() {
                valid &= self.integer(id, 0, i128::from(u32::MAX), &path.index(index).index(position));
            }
        }
        valid
    }

    fn boolean(&mut self, value: &Value, path: &FieldPath) -> bool {
        if value.is_bool() {
            return true;
        }
        let hint = match value.as_str() {
            Some(text) if ["yes", "no", "on", "off", "True", "False", "TRUE", "FALSE"].contains(&text) => {
                Some("YAML 1.2 booleans are `true` and `false` only".to_string())
            }
            _ => None,
        };
        self.report(path.clone(), Anchor::Value, format!("expected true or false, found {}", describe(value)), hint);
        false
    }

    fn one_of(&mut self, value: &Value, choices: &[Choice], path: &FieldPath) -> bool {
        match value.as_str() {
            Some(text) => self.choice(text, choices, path),
            None => {
                self.report(
                    path.clone(),
                    Anchor::Value,
                    format!("expected one of {}, found {}", choice_list(choices), describe(value)),
                    None,
                );
                false
            }
        }
    }

    /// A `Kind::Block` field: a mapping checked against `block`.
    fn nested_block(&mut self, block: &'static BlockDoc, value: &mut Value, path: &FieldPath) -> bool {
        match value {
            Value::Mapping(mapping) => {
                self.block(block, mapping, path);
                true
            }
            other => {
                self.report(
                    path.clone(),
                    Anchor::Value,
                    format!("expected a block of fields, found {}", describe(other)),
                    Some(format!("fields of `{}`: {}", path, key_list(block))),
                );
                false
            }
        }
    }

    /// A `Kind::Blocks` field: a list of mappings, each checked against `block`.
    fn blocks(&mut self, block: &'static BlockDoc, value: &mut Value, path: &FieldPath) -> bool {
        let Value::Sequence(items) = value else {
            self.report(
                path.clone(),
                Anchor::Value,
                format!("expected a list, found {}", describe(value)),
                Some("write each entry on its own line starting with `- `".to_string()),
            );
            return false;
        };
        let mut all_mappings = true;
        for (index, item) in items.iter_mut().enumerate() {
            match item {
                Value::Mapping(mapping) => self.block(block, mapping, &path.index(index)),
                other => {
                    self.report(
                        path.index(index),
                        Anchor::Value,
                        format!("expected a block of fields, found {}", describe(other)),
                        Some(format!("fields of each entry: {}", key_list(block))),
                    );
                    all_mappings = false;
                }
            }
        }
        all_mappings
    }

    fn text(&mut self, text: Option<String>, value: &mut Value, path: &FieldPath) -> bool {
        match text {
            Some(text) if !text.trim().is_empty() => {
                *value = Value::String(text);
                true
            }
            Some(_) => {
                self.report(path.clone(), Anchor::Value, "must not be empty", None);
                false
            }
            None => {
                self.report(path.clone(), Anchor::Value, format!("expected a string, found {}", describe(value)), None);
                false
            }
        }
    }

    fn choice(&mut self, text: &str, choices: &[Choice], path: &FieldPath) -> bool {
        if choices.iter().any(|choice| choice.name == text) {
            return true;
        }
        let names: Vec<&str> = choices.iter().map(|choice| choice.name).collect();
        let hint = match suggest(text, &names) {
            Some(name) => format!("did you mean `{name}`? (expected one of {})", choice_list(choices)),
            None => format!("expected one of {}", choice_list(choices)),
        };
        self.report(path.clone(), Anchor::Value, format!("unknown value `{text}`"), Some(hint));
        false
    }

    fn choice_list(&mut self, value: &Value, choices: &[Choice], path: &FieldPath) -> bool {
        let Value::Sequence(items) = value else {
            let example = match value.as_str() {
                Some(text) if choices.iter().any(|choice| choice.name == text) => text,
                _ => choices.first().map_or("", |choice| choice.name),
            };
            self.report(
                path.clone(),
                Anchor::Value,
                format!("expected a list, found {}", describe(value)),
                Some(format!("write a list even for one value: `[{example}]`")),
            );
            return false;
        };
        if items.is_empty() {
            self.report(
                path.clone(),
                Anchor::Value,
                "the list is empty",
                Some(format!("give at least one of {}", choice_list(choices))),
            );
            return false;
        }
        let mut valid = true;
        let mut seen = HashSet::new();
        for (index, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(text) => {
                    if !self.choice(text, choices, &path.index(index)) {
                        valid = false;
                    } else if !seen.insert(text) {
                        self.report(path.index(index), Anchor::Value, format!("`{text}` is listed twice"), None);
                        valid = false;
                    }
                }
                None => {
                    self.report(
                        path.index(index),
                        Anchor::Value,
                        format!("expected one of {}, found {}", choice_list(choices), describe(item)),
                        None,
                    );
                    valid = false;
                }
            }
        }
        valid
    }

    fn host_ports(&mut self, value: &Value, path: &FieldPath) -> bool {
        let entries: Vec<(FieldPath, String)> = match value {
            Value::String(text) => text.split(',').map(|part| (path.clone(), part.trim().to_string())).collect(),
            Value::Sequence(items) => {
                let mut entries = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    match item.as_str() {
                        Some(text) => entries.push((path.index(index), text.trim().to_string())),
                        None => {
                            self.report(
                                path.index(index),
                                Anchor::Value,
                                format!("expected host:port, found {}", describe(item)),
                                None,
                            );
                            return false;
                        }
                    }
                }
                entries
            }
            other => {
                self.report(
                    path.clone(),
                    Anchor::Value,
                    format!("expected host:port addresses, found {}", describe(other)),
                    Some("e.g. `bootstrap: [kafka-1:9092, kafka-2:9092]`".to_string()),
                );
                return false;
            }
        };
        if entries.is_empty() {
            self.report(path.clone(), Anchor::Value, "no address given", None);
            return false;
        }
        let mut valid = true;
        for (entry_path, entry) in entries {
            let well_formed = match entry.rsplit_once(':') {
                Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|port| port > 0),
                None => false,
            };
            if !well_formed {
                self.report(
                    entry_path,
                    Anchor::Value,
                    format!("`{entry}` is not host:port"),
                    Some("e.g. `kafka-1.example.com:9092`".to_string()),
                );
                valid = false;
            }
        }
        valid
    }

    fn map(&mut self, value: &mut Value, what: &str, path: &FieldPath) -> bool {
        let Value::Mapping(mapping) = value else {
            self.report(
                path.clone(),
                Anchor::Value,
                format!("expected a mapping of {what} to value, found {}", describe(value)),
                None,
            );
            return false;
        };
        let mut remove = Vec::new();
        for (key, entry) in mapping.iter() {
            let Some(name) = key.as_str() else {
                self.report(
                    path.clone(),
                    Anchor::Value,
                    format!("keys must be strings, found {}", describe(key)),
                    None,
                );
                remove.push(key.clone());
                continue;
            };
            if name.is_empty() || name.chars().any(char::is_whitespace) {
                self.report(path.key(name), Anchor::Key, format!("`{name}` is not a {what}"), None);
                remove.push(key.clone());
                continue;
            }
            let scalar = matches!(entry, Value::String(_) | Value::Number(_) | Value::Bool(_));
            if !scalar {
                self.report(
                    path.key(name),
                    Anchor::Value,
                    format!("expected a string, number or boolean, found {}", describe(entry)),
                    Some(format!("each {what} takes one value, as in Kafka's .properties files")),
                );
                self.invalid.insert(path.key(name));
                remove.push(key.clone());
            }
        }
        for key in remove {
            mapping.remove(&key);
        }
        true
    }
}

/// For a number written as a string (`"5"`, `!!str 5`): say so.
fn quoted_number_hint(value: &Value) -> Option<String> {
    let text = value.as_str()?;
    text.trim().parse::<f64>().ok()?;
    Some(format!("`{text}` is a string here; write the number without quotes or tags"))
}

/// `must be between 1 and 10000 (got 0)`.
fn range_message(n: i128, min: i128, max: i128) -> String {
    if max >= i128::from(i64::MAX) {
        format!("must be at least {min} (got {n})")
    } else {
        format!("must be between {min} and {max} (got {n})")
    }
}

/// A short description of a YAML value for error messages.
pub(crate) fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing".to_string(),
        Value::Bool(b) => format!("`{b}`"),
        Value::Number(n) => format!("the number `{n}`"),
        Value::String(s) => format!("the string `{s}`"),
        Value::Sequence(_) => "a list".to_string(),
        Value::Mapping(_) => "a mapping".to_string(),
        Value::Tagged(tagged) => format!("a value tagged `{}` (tags are not supported)", tagged.tag),
    }
}

fn choice_list(choices: &[Choice]) -> String {
    choices.iter().map(|choice| format!("`{}`", choice.name)).collect::<Vec<_>>().join(", ")
}

fn key_list(block: &BlockDoc) -> String {
    block.fields.iter().map(|field| format!("`{}`", field.key)).collect::<Vec<_>>().join(", ")
}

/// The first sentence of a doc text, on one line.
pub(crate) fn first_sentence(doc: &str) -> String {
    let flat = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.find(". ") {
        Some(end) => flat[..=end].to_string(),
        None => flat,
    }
}

/// `a whole number, 1 to 10000` and the like, for hints.
pub(crate) fn kind_summary(kind: &Kind) -> String {
    match kind {
        Kind::Integer { min, max } if *max >= i128::from(i64::MAX) => format!("a whole number, at least {min}"),
        Kind::Integer { min, max } => format!("a whole number, {min} to {max}"),
        Kind::Number { min, max } => format!("a number, {min} to {max}"),
        Kind::Seconds { min, max } => format!("seconds, {min} to {max}"),
        Kind::Bool => "`true` or `false`".to_string(),
        Kind::Text => "a string".to_string(),
        Kind::Path => "a file path".to_string(),
        Kind::Pattern(syntax) => format!("`{syntax}`"),
        Kind::OneOf(choices) => format!("one of {}", choice_list(choices)),
        Kind::ListOf(choices) => format!("a list of {}", choice_list(choices)),
        Kind::HostPorts => "host:port addresses".to_string(),
        Kind::Map(what) => format!("a mapping of {what} to value"),
        Kind::Groups => "a list of lists of broker ids".to_string(),
        Kind::Block(block) => format!("a `{}` block", block.name),
        Kind::Blocks(block) => format!("a list of `{}` blocks", block.name),
    }
}

/// The hint for an unknown key: the likely intended field, here or in another block.
fn unknown_key_hint(key: &str, block: &BlockDoc) -> String {
    let names: Vec<&str> = block.fields.iter().map(|field| field.key).collect();
    if let Some(name) = suggest(key, &names) {
        return format!("did you mean `{name}`?");
    }
    for other in BLOCKS.iter().filter(|other| !std::ptr::eq(**other, block)) {
        if let Some(field) = other.fields.iter().find(|field| normalize(field.key) == normalize(key)) {
            let place = other.paths.first().copied().unwrap_or("the top level");
            return format!("`{}` is a field of `{place}`, not of {}", field.key, block_place(block));
        }
    }
    if block.fields.len() <= 10 {
        format!("fields of {}: {}", block_place(block), key_list(block))
    } else {
        "every field is listed in docs/workload-reference.md (`corelog check --reference`)".to_string()
    }
}

fn block_place(block: &BlockDoc) -> String {
    match block.paths.first() {
        Some(path) => format!("`{path}`"),
        None => "the top level".to_string(),
    }
}

/// Lowercase without `_` and `-`: `partitions_per_topic` matches `partitionsPerTopic`.
fn normalize(text: &str) -> String {
    text.chars().filter(|c| *c != '_' && *c != '-').flat_map(char::to_lowercase).collect()
}

/// The candidate the user most likely meant: same words in another spelling, one
/// containing the other, or a small edit distance.
pub(crate) fn suggest<'a>(text: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let wanted = normalize(text);
    if wanted.is_empty() {
        return None;
    }
    if let Some(exact) = candidates.iter().find(|candidate| normalize(candidate) == wanted) {
        return Some(exact);
    }
    let (best, distance) = candidates
        .iter()
        .map(|candidate| (*candidate, edit_distance(&wanted, &normalize(candidate))))
        .min_by_key(|(_, distance)| *distance)?;
    if distance <= (wanted.chars().count() / 4).max(1) {
        return Some(best);
    }
    candidates.iter().copied().find(|candidate| {
        let normalized = normalize(candidate);
        wanted.len() >= 4 && (normalized.contains(&wanted) || wanted.contains(&normalized))
    })
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, a_char) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, b_char) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(a_char != *b_char);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_cover_spelling_case_and_typos() {
        let fields = ["partitionsPerTopic", "consumerPerSubscription", "testDurationSeconds"];
        assert_eq!(suggest("partitions_per_topic", &fields), Some("partitionsPerTopic"));
        assert_eq!(suggest("partitionPerTopic", &fields), Some("partitionsPerTopic"));
        assert_eq!(suggest("consumersPerSubscription", &fields), Some("consumerPerSubscription"));
        assert_eq!(suggest("test_duration_seconds", &fields), Some("testDurationSeconds"));
        assert_eq!(suggest("colour", &fields), None);
        let choices = ["NO_KEY", "KEY_ROUND_ROBIN", "RANDOM_NANO"];
        assert_eq!(suggest("ROUND_ROBIN", &choices), Some("KEY_ROUND_ROBIN"));
        assert_eq!(suggest("no-key", &choices), Some("NO_KEY"));
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
