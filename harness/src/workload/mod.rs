//! Workload files: the YAML schema, its validation, and the validated model.
//!
//! A workload file is OpenMessaging Benchmark's workload format (every OMB field, as
//! OMB spells and defines it, so an OMB file runs unmodified) plus corelog's blocks:
//! the cluster, the driver, client configs, delivery guarantees, faults and a
//! nemesis, and seconds-based durations. `schema.rs` defines each field once; the
//! checks, `corelog check`'s hints and `docs/workload-reference.md` come from there.
//!
//! Loading runs in passes, and reports every problem it finds, not just the first:
//!
//! 1. YAML syntax (serde_yaml to a `Value`; merge keys applied). A syntax error stops here.
//! 2. Structure (`structure.rs`): unknown keys, types, ranges, choices, required
//!    fields, driven by the schema tables. Invalid entries are reported and removed.
//! 3. serde: what is left deserializes into the `Raw*` structs (`deny_unknown_fields`).
//! 4. Semantics (`semantic.rs`): rules across fields (one test duration, payload file
//!    size, cluster and driver combinations, fault targets and windows, …), and the
//!    typed [`Workload`] with defaults applied.
//!
//! Every problem carries a field path; `locate.rs` turns it into the line and column
//! of the key or value in the file, so messages read `file:line:column: field: …`.
//!
//! Limits: YAML tags are refused; a key brought in by a merge (`<<: *base`) is
//! reported at the nearest enclosing key found in the text; librdkafka property
//! names in `producerConfig`/`consumerConfig` are checked when the clients start,
//! not here.

mod locate;
mod model;
mod reference;
mod schema;
mod semantic;
mod structure;

use std::fmt;
use std::path::{Path, PathBuf};

pub use model::*;
pub use reference::reference_markdown;
pub(crate) use structure::suggest;

use locate::{locate_or_enclosing, Anchor, FieldPath, Position};

/// One problem in a workload file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file as it was named.
    pub file: PathBuf,
    /// 1-based line and column; `None` when the file could not be read.
    pub line_column: Option<(usize, usize)>,
    /// The field's path, e.g. `faults[1].target`; empty for the document as a whole.
    pub field: String,
    pub message: String,
    pub hint: Option<String>,
}

impl fmt::Display for Diagnostic {
    /// `file:line:column: field: message`, then `    hint: …` on its own line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, column)) = self.line_column {
            write!(f, ":{line}:{column}")?;
        }
        f.write_str(": ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n    hint: {hint}")?;
        }
        Ok(())
    }
}

/// A problem found by a pass, before it is located in the text.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub path: FieldPath,
    pub anchor: Anchor,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    pub fn new(path: FieldPath, anchor: Anchor, message: impl Into<String>, hint: Option<String>) -> Problem {
        Problem { path, anchor, message: message.into(), hint }
    }
}

/// Reads and validates the workload file at `path`.
pub fn load(path: &Path) -> Result<Workload, Vec<Diagnostic>> {
    match std::fs::read_to_string(path) {
        Ok(source) => parse(&source, path),
        Err(error) => Err(vec![Diagnostic {
            file: path.to_path_buf(),
            line_column: None,
            field: String::new(),
            message: format!("cannot read the file: {error}"),
            hint: None,
        }]),
    }
}

/// Validates a workload's text. `path` names it in messages, and relative paths in
/// it (`payloadFile`) are resolved from its directory.
pub fn parse(source: &str, path: &Path) -> Result<Workload, Vec<Diagnostic>> {
    let diagnostic = |position: Position, field: String, message: String, hint: Option<String>| Diagnostic {
        file: path.to_path_buf(),
        line_column: Some((position.line, position.column)),
        field,
        message,
        hint,
    };
    let mut value: serde_yaml::Value = match serde_yaml::from_str(source) {
        Ok(value) => value,
        Err(error) => {
            // serde_yaml places a duplicate key at the start of its mapping; point at the key.
            let duplicate = error.to_string().contains("duplicate entry");
            let position = duplicate
                .then(|| locate::locate_duplicate_key(source))
                .flatten()
                .or_else(|| error.location().map(|l| Position { line: l.line(), column: l.column() }))
                .unwrap_or(Position { line: 1, column: 1 });
            return Err(vec![diagnostic(position, String::new(), syntax_message(&error), None)]);
        }
    };
    if let Err(error) = value.apply_merge() {
        return Err(vec![diagnostic(
            Position { line: 1, column: 1 },
            String::new(),
            format!("merge key: {error}"),
            None,
        )]);
    }

    let (mut problems, invalid) = structure::check_document(&schema::WORKLOAD, &mut value);
    let mut workload = None;
    if value.is_mapping() {
        match serde_yaml::from_value::<schema::RawWorkload>(value) {
            Ok(raw) => {
                let base_dir = match path.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                let (semantic_problems, checked) = semantic::check(&raw, &invalid, path, &base_dir);
                problems.extend(semantic_problems);
                workload = checked;
            }
            // The structural pass accepts only what the Raw structs can hold; this is a
            // mismatch between a field's kind and its Rust type in schema.rs.
            Err(error) => problems.push(Problem::new(
                FieldPath::root(),
                Anchor::Value,
                format!("internal error: the checked workload does not deserialize: {error}"),
                Some("please report this with the workload file".to_string()),
            )),
        }
    }

    match workload {
        Some(workload) if problems.is_empty() => Ok(workload),
        _ => {
            let mut diagnostics: Vec<(Position, Diagnostic)> = problems
                .into_iter()
                .map(|problem| {
                    let position = locate_or_enclosing(source, &problem.path, problem.anchor);
                    (position, diagnostic(position, problem.path.to_string(), problem.message, problem.hint))
                })
                .collect();
            diagnostics.sort_by(|(a, da), (b, db)| a.cmp(b).then_with(|| da.field.cmp(&db.field)));
            diagnostics.dedup_by(|(_, a), (_, b)| a == b);
            Err(diagnostics.into_iter().map(|(_, diagnostic)| diagnostic).collect())
        }
    }
}

/// serde_yaml's message (it names the construct being parsed, with its own position).
fn syntax_message(error: &serde_yaml::Error) -> String {
    format!("YAML syntax: {error}")
}

#[cfg(test)]
mod tests;
