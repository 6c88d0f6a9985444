//! The crate's one error type.

use std::path::PathBuf;

/// Why loading, rendering or writing a report failed. IO errors keep the operation
/// and the path; none of these is a bug in the caller's data except
/// `SchemaVersion` and `NotAResult`, which say what to do.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot {operation} {}: {source}", path.display())]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a corelog or OMB result: {source}", path.display())]
    NotAResult {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{} has result schema version {found}, but this corelog reads version {supported} \
         (and OMB results, which have none); {hint}",
        path.display()
    )]
    SchemaVersion { path: PathBuf, found: String, supported: u32, hint: &'static str },
    #[error("cannot encode the result as JSON: {0}")]
    Encode(#[source] serde_json::Error),
    #[error("cannot render the {chart} chart: {message}")]
    Chart { chart: &'static str, message: String },
    #[error("the embedded chart font could not be loaded")]
    Font,
    #[error("nothing to report: no results were given")]
    NoResults,
    #[error("nothing to compare: give at least one result besides the base")]
    NothingToCompare,
    #[error("cannot save the result: {fields} hold NaN or infinity, which JSON cannot carry")]
    NonFinite { fields: String },
}

pub type Result<T, E = ReportError> = std::result::Result<T, E>;
