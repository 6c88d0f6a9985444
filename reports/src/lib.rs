//! corelog-reports: the result model (`result.json`) and its renderers.
//!
//! This crate turns finished runs into files a person reads: PNG charts and one
//! self-contained `report.html`, plus the change table of `corelog compare`. It
//! knows nothing of the engine or of how results were measured: the harness fills
//! a [`RunResult`] and hands it over.
//!
//! The pieces, each in its own module:
//! - [`model`] holds the serde types of `result.json`, a superset of OpenMessaging
//!   Benchmark's `TestResult` ([`SCHEMA_VERSION`]).
//! - [`charts`] says what each chart shows ([`build_charts`], backend-neutral) and
//!   defines the [`ChartRenderer`] trait that draws it; [`PngRenderer`] draws with
//!   plotters, text in an embedded font.
//! - [`html`] writes report.html.
//! - [`compare`] builds the change table and judges each change better, worse or
//!   within noise.
//! - [`metrics`] is the one list of summary metrics both tables show.
//! - [`recovery`] measures, from a result's own series, how publishing fared
//!   around each fault (the longest stretch without acks, the time to the
//!   publish rate's recovery).
//! - `report.rs` builds every output path ([`output_path`]) and writes the files.
//!
//! Execution model: plain synchronous functions, no threads, no global state but
//! plotters' font table (written once). Rendering a report of a one-hour run takes
//! well under a second per chart.
//!
//! It is not: a live dashboard, an HdrHistogram reader (results carry percentiles
//! and quantile maps, not histograms), or a migrator of old schema versions (there
//! is only one so far; a reader of a newer version says so and stops).

#![forbid(unsafe_code)]

pub mod charts;
pub mod compare;
mod error;
pub mod html;
pub mod metrics;
pub mod model;
pub mod recovery;
mod report;

pub use charts::{build_charts, Chart, ChartId, ChartRenderer, PngRenderer};
pub use compare::ChangeTable;
pub use error::{ReportError, Result};
pub use model::{RunResult, SCHEMA_VERSION};
pub use report::{
    compare, compare_repeats, load_result, output_path, parse_result, render_report, render_report_with, save_result,
    Comparison, Output, ReportFiles,
};
