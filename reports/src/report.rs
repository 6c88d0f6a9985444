//! Loading and saving results, and writing reports. [`output_path`] is the one
//! place that names a file this crate (or the harness, for `result.json`) writes.

use std::fs;
use std::path::{Path, PathBuf};

use crate::charts::{build_charts, ChartId, ChartRenderer, PngRenderer};
use crate::compare::ChangeTable;
use crate::error::{ReportError, Result};
use crate::html::{render_html, EmbeddedChart};
use crate::metrics::run_labels;
use crate::model::{RunResult, OMB_SCHEMA_VERSION, SCHEMA_VERSION};

/// A file in a run's output directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The run's `result.json`.
    Result,
    /// `report.html`.
    Html,
    /// One chart image, with the renderer's extension.
    Chart { id: ChartId, extension: &'static str },
}

/// The path of `output` in `dir`. Every output path is built here.
pub fn output_path(dir: &Path, output: Output) -> PathBuf {
    match output {
        Output::Result => dir.join("result.json"),
        Output::Html => dir.join("report.html"),
        Output::Chart { id, extension } => dir.join(format!("{}.{extension}", id.file_stem())),
    }
}

/// The files a report wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    pub html: PathBuf,
    /// The chart images, in report order.
    pub charts: Vec<PathBuf>,
}

/// What `corelog compare` prints and writes.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// The change table as aligned text, for the terminal.
    pub table_text: String,
    pub table: ChangeTable,
    /// report.html (with the change table and all runs overlaid) and its charts.
    pub files: ReportFiles,
}

/// Reads a `result.json` written by corelog, or an OMB result (no `schemaVersion`).
///
/// A result of another schema version is refused with [`ReportError::SchemaVersion`],
/// which names the file, the version found and the one supported. A result without
/// a `label` is labelled with its file's name (or its directory's, for a file
/// called `result.json`), so that several runs of one workload stay apart in
/// charts.
pub fn load_result(path: &Path) -> Result<RunResult> {
    let text = fs::read_to_string(path).map_err(|source| ReportError::Io {
        operation: "read result",
        path: path.to_path_buf(),
        source,
    })?;
    let mut result = parse_result(&text, path)?;
    if result.label.is_none() {
        result.label = label_from_path(path);
    }
    Ok(result)
}

/// Parses a result's JSON text; `origin` names it in errors.
pub fn parse_result(text: &str, origin: &Path) -> Result<RunResult> {
    let not_a_result = |source: serde_json::Error| ReportError::NotAResult { path: origin.to_path_buf(), source };
    let value: serde_json::Value = serde_json::from_str(text).map_err(not_a_result)?;
    let Some(object) = value.as_object() else {
        return Err(not_a_result(serde::de::Error::custom("the top level is not a JSON object")));
    };
    match object.get("schemaVersion") {
        None => {
            if !object.contains_key("publishRate") {
                return Err(not_a_result(serde::de::Error::custom(
                    "it has neither corelog's `schemaVersion` nor OMB's `publishRate`",
                )));
            }
        }
        Some(version) if version.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
        Some(version) => {
            let newer = version.as_u64().is_some_and(|v| v > u64::from(SCHEMA_VERSION));
            return Err(ReportError::SchemaVersion {
                path: origin.to_path_buf(),
                found: version.to_string(),
                supported: SCHEMA_VERSION,
                hint: if newer {
                    "it was written by a newer corelog: render it with that version"
                } else {
                    "this version cannot be read; re-run the workload to get a current result"
                },
            });
        }
    }
    let result: RunResult = serde_json::from_value(value).map_err(not_a_result)?;
    debug_assert!(result.schema_version == SCHEMA_VERSION || result.schema_version == OMB_SCHEMA_VERSION);
    Ok(result)
}

/// Writes `result` as pretty JSON to `path`, through a temporary file renamed into
/// place, so an interrupted write never leaves half a result. Refuses a result
/// with NaN or infinite values: JSON would carry them as null, which either fails
/// to load (rates) or silently reads as "no samples" (latencies).
pub fn save_result(result: &RunResult, path: &Path) -> Result<()> {
    let non_finite = result.non_finite_fields();
    if !non_finite.is_empty() {
        return Err(ReportError::NonFinite { fields: non_finite.join(", ") });
    }
    let json = serde_json::to_vec_pretty(result).map_err(ReportError::Encode)?;
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = PathBuf::from(temporary);
    fs::write(&temporary, json).map_err(|source| ReportError::Io {
        operation: "write result",
        path: temporary.clone(),
        source,
    })?;
    fs::rename(&temporary, path).map_err(|source| ReportError::Io {
        operation: "rename result into place",
        path: path.to_path_buf(),
        source,
    })
}

/// Writes report.html and one PNG per chart for `results` into `out_dir`
/// (created if missing). Several results are overlaid in every chart.
pub fn render_report(results: &[RunResult], out_dir: &Path) -> Result<ReportFiles> {
    render_report_with(&PngRenderer::default(), results, None, out_dir)
}

/// Compares `new` runs against `base`: the change table (as text and in
/// report.html) and a report of all runs overlaid, written into `out_dir`.
pub fn compare(base: &RunResult, new: &[RunResult], out_dir: &Path) -> Result<Comparison> {
    let new: Vec<Vec<RunResult>> = new.iter().map(|run| vec![run.clone()]).collect();
    compare_repeats(std::slice::from_ref(base), &new, out_dir)
}

/// [`compare`] with each side given as its repeats (`corelog run --repeat N`): the
/// change table judges noise from them, and the report overlays every repeat.
pub fn compare_repeats(base: &[RunResult], new: &[Vec<RunResult>], out_dir: &Path) -> Result<Comparison> {
    if new.is_empty() || new.iter().any(Vec::is_empty) {
        return Err(ReportError::NothingToCompare);
    }
    if base.is_empty() {
        return Err(ReportError::NoResults);
    }
    let table = ChangeTable::of_repeats(base, new);
    let runs: Vec<RunResult> = base.iter().chain(new.iter().flatten()).cloned().collect();
    let files = render_report_with(&PngRenderer::default(), &runs, Some(&table), out_dir)?;
    Ok(Comparison { table_text: table.to_text(), table, files })
}

/// [`render_report`] with any renderer, and optionally a change table at the top.
pub fn render_report_with(
    renderer: &dyn ChartRenderer,
    results: &[RunResult],
    changes: Option<&ChangeTable>,
    out_dir: &Path,
) -> Result<ReportFiles> {
    if results.is_empty() {
        return Err(ReportError::NoResults);
    }
    fs::create_dir_all(out_dir).map_err(|source| ReportError::Io {
        operation: "create report directory",
        path: out_dir.to_path_buf(),
        source,
    })?;
    let labels = run_labels(results);
    let mut embedded = Vec::new();
    let mut chart_paths = Vec::new();
    for chart in build_charts(results, &labels) {
        let bytes = renderer.render(&chart)?;
        let path = output_path(out_dir, Output::Chart { id: chart.id, extension: renderer.extension() });
        write_file(&path, &bytes, "write chart")?;
        embedded.push(EmbeddedChart {
            id: chart.id,
            title: chart.title,
            caption: chart.caption,
            file_name: file_name(&path),
            mime_type: renderer.mime_type(),
            bytes,
        });
        chart_paths.push(path);
    }
    let html = render_html(results, &labels, &embedded, changes);
    let html_path = output_path(out_dir, Output::Html);
    write_file(&html_path, html.as_bytes(), "write report")?;
    Ok(ReportFiles { html: html_path, charts: chart_paths })
}

fn write_file(path: &Path, bytes: &[u8], operation: &'static str) -> Result<()> {
    fs::write(path, bytes).map_err(|source| ReportError::Io { operation, path: path.to_path_buf(), source })
}

fn file_name(path: &Path) -> String {
    path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// "run-a" for `run-a.json`; "run-a" for `run-a/result.json`.
fn label_from_path(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_string_lossy().into_owned();
    if stem == "result" {
        let parent = path.parent()?.file_name()?.to_string_lossy().into_owned();
        return Some(parent);
    }
    Some(stem)
}
