//! The workload reference (`docs/workload-reference.md`), rendered from the schema
//! tables and the model's named enums, so it says exactly what the checks enforce.
//! `corelog check --reference` prints it; a golden test keeps the file in step.

use std::fmt::Write;

use super::model::FaultKind;
use super::schema::{BlockDoc, Choice, FieldDoc, Kind, Origin, Presence, BLOCKS};

const INTRO: &str = "\
A workload file is YAML. It accepts every field of an OpenMessaging Benchmark (OMB)
workload, spelled and defined as OMB's `Workload.java` does, so an OMB workload file
runs unmodified; corelog adds its own fields and blocks for the cluster, the driver,
client configs, delivery guarantees, faults and seconds-based durations.

Conventions:

- Top-level keys are camelCase, like OMB's (`partitionsPerTopic`); keys inside
  corelog's blocks (`cluster`, `faults`, `nemesis`) are snake_case; Kafka topic and
  client config keys keep Kafka's dotted names (`retention.bytes`, `linger.ms`).
- corelog's durations are seconds, decimals allowed; OMB's are whole minutes.
- Relative paths are resolved from the workload file's directory.
- Unknown fields and bad values are errors, reported with file, line, column and a
  hint before anything starts. `corelog check FILE...` runs the same checks alone and
  exits with 2 if a file is invalid.
";

/// The whole reference, in Markdown.
pub fn reference_markdown() -> String {
    let mut out = String::new();
    out.push_str("# Workload reference\n\n");
    out.push_str(
        "<!-- Generated from harness/src/workload/schema.rs by `corelog check --reference`; do not edit.\n     \
         The test `reference_is_up_to_date` fails when this file drifts; \
         `UPDATE_GOLDEN=1 cargo test -p corelog-harness --test workloads` rewrites it. -->\n\n",
    );
    out.push_str(INTRO);
    for block in BLOCKS.iter() {
        render_block(&mut out, block);
    }
    render_fault_kinds(&mut out);
    out
}

fn render_block(out: &mut String, block: &BlockDoc) {
    let title = if block.paths.is_empty() { "Top level".to_string() } else { block.paths.join(", ") };
    let _ = write!(out, "\n## {title}\n\n{}\n\n", paragraphs(block.doc));
    out.push_str("| Field | Type | Default | Defined by |\n|---|---|---|---|\n");
    for field in block.fields {
        let default = match field.presence {
            Presence::Required => "**required**".to_string(),
            Presence::Default(text) => text.to_string(),
        };
        let origin = match field.origin {
            Origin::Omb => "OMB",
            Origin::Corelog => "corelog",
        };
        let _ =
            writeln!(out, "| `{}` | {} | {} | {} |", field.key, cell(&type_text(&field.kind)), cell(&default), origin);
    }
    for field in block.fields {
        render_field(out, block, field);
    }
}

fn render_field(out: &mut String, block: &BlockDoc, field: &FieldDoc) {
    let heading = match block.paths.first() {
        Some(path) => format!("{path}.{}", field.key),
        None => field.key.to_string(),
    };
    let _ = write!(out, "\n### `{heading}`\n\n{}\n", paragraphs(field.doc));
    match &field.kind {
        Kind::OneOf(choices) | Kind::ListOf(choices) => render_choices(out, choices),
        Kind::Block(inner) | Kind::Blocks(inner) => {
            let place = inner.paths.first().copied().unwrap_or("");
            let _ = write!(out, "\nSee [{place}](#{}).\n", anchor(&inner.paths.join(", ")));
        }
        _ => {}
    }
}

fn render_choices(out: &mut String, choices: &[Choice]) {
    out.push('\n');
    for choice in choices {
        let _ = writeln!(out, "- `{}`: {}", choice.name, paragraphs(choice.doc).replace("\n\n", " "));
    }
}

fn render_fault_kinds(out: &mut String) {
    out.push_str("\n## Fault kinds\n\n");
    out.push_str(
        "What each `kind` of `faults[]` and `nemesis.kinds` does. Broker network faults act \
         through the fault proxy the harness puts in front of every broker it starts, so \
         they need local brokers; broker process faults on an external cluster run \
         `cluster.commands`.\n\n",
    );
    out.push_str("| Kind | Acts on | Duration | Parameters | What it does |\n|---|---|---|---|---|\n");
    for (kind, choice) in FaultKind::ALL.iter().zip(FaultKind::CHOICES) {
        let (required, optional) = kind.parameters();
        let mut parameters: Vec<String> = required.iter().map(|p| format!("`{p}` (required)")).collect();
        parameters.extend(optional.iter().map(|p| format!("`{p}`")));
        let parameters = if parameters.is_empty() { "none".to_string() } else { parameters.join(", ") };
        let duration = if kind.needs_duration() { "above 0" } else { "0 or more" };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            choice.name,
            kind.scope().describe(),
            duration,
            parameters,
            cell(&paragraphs(choice.doc))
        );
    }
}

/// The type column.
fn type_text(kind: &Kind) -> String {
    match kind {
        Kind::Integer { min, max } if *max >= i128::from(i64::MAX) => format!("integer ≥ {min}"),
        Kind::Integer { min, max } => format!("integer {min}–{max}"),
        Kind::Number { min, max } => format!("number {min:?}–{max:?}"),
        Kind::Seconds { min, max } => format!("seconds {min}–{max}"),
        Kind::Bool => "boolean".to_string(),
        Kind::Text => "string".to_string(),
        Kind::Path => "file path".to_string(),
        Kind::Pattern(syntax) => format!("`{syntax}`"),
        Kind::OneOf(choices) => choices.iter().map(|c| format!("`{}`", c.name)).collect::<Vec<_>>().join(" \\| "),
        Kind::ListOf(choices) => {
            format!("list of {}", choices.iter().map(|c| format!("`{}`", c.name)).collect::<Vec<_>>().join(", "))
        }
        Kind::HostPorts => "`host:port` list, or one comma-separated string".to_string(),
        Kind::Map(what) => format!("map: {what} → value"),
        Kind::Groups => "list of lists of broker ids".to_string(),
        Kind::Block(block) => format!("block: {}", block.paths.first().copied().unwrap_or(block.name)),
        Kind::Blocks(block) => format!("list of blocks: {}", block.paths.first().copied().unwrap_or(block.name)),
    }
}

/// Doc lines (from `///`) as Markdown paragraphs: lines joined, blank lines kept.
fn paragraphs(doc: &str) -> String {
    let mut result = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in doc.lines().map(str::trim) {
        if line.is_empty() {
            if !current.is_empty() {
                result.push(current.join(" "));
                current.clear();
            }
        } else {
            current.push(line);
        }
    }
    if !current.is_empty() {
        result.push(current.join(" "));
    }
    result.join("\n\n")
}

/// Text safe inside a table cell: one line, `|` escaped (unless already escaped).
fn cell(text: &str) -> String {
    let one_line = text.replace("\n\n", " ").replace('\n', " ");
    let mut escaped = String::with_capacity(one_line.len());
    let mut previous = ' ';
    for c in one_line.chars() {
        if c == '|' && previous != '\\' {
            escaped.push('\\');
        }
        escaped.push(c);
        previous = c;
    }
    escaped
}

/// GitHub's heading anchor: lowercase, spaces to `-`, punctuation other than `-` and `_` dropped.
fn anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}
