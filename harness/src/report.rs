//! `corelog report` and `corelog compare`: thin wrappers over `corelog-reports`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use corelog_reports::model::RunResult;

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// result.json files (corelog's, or OpenMessaging Benchmark's).
    #[arg(required = true)]
    results: Vec<PathBuf>,
    /// Where report.html and the charts go (default: the first result's directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// The baseline: a result.json, or the directory of a repeated run
    /// (`corelog run --repeat N`: its `repeat-*/result.json` are its repeats).
    base: PathBuf,
    /// One or more results compared against the baseline, each a result.json or
    /// a repeated run's directory.
    #[arg(required = true)]
    new: Vec<PathBuf>,
    /// Where the comparison report goes (default: ./compare).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn load(paths: &[PathBuf]) -> anyhow::Result<Vec<RunResult>> {
    paths.iter().map(|path| load_one(path)).collect()
}

fn load_one(path: &Path) -> anyhow::Result<RunResult> {
    corelog_reports::load_result(path).with_context(|| format!("loading {}", path.display()))
}

/// One side of a comparison: a result.json file is one run; a directory is its
/// `repeat-<i>/result.json` files in repeat order, or, without any, its
/// `result.json`.
fn load_side(path: &Path) -> anyhow::Result<Vec<RunResult>> {
    if !path.is_dir() {
        return Ok(vec![load_one(path)?]);
    }
    let entries = std::fs::read_dir(path).with_context(|| format!("reading {}", path.display()))?;
    let mut repeats: Vec<(u32, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", path.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(index) = name.strip_prefix("repeat-").and_then(|index| index.parse().ok()) {
            repeats.push((index, corelog_reports::output_path(&entry.path(), corelog_reports::Output::Result)));
        }
    }
    repeats.sort();
    if repeats.is_empty() {
        let result = corelog_reports::output_path(path, corelog_reports::Output::Result);
        if !result.is_file() {
            bail!("{} holds neither result.json nor repeat-*/result.json", path.display());
        }
        return Ok(vec![load_one(&result)?]);
    }
    repeats.iter().map(|(_, result)| load_one(result)).collect()
}

pub fn report(args: ReportArgs) -> anyhow::Result<()> {
    let results = load(&args.results)?;
    let out = args.out.unwrap_or_else(|| args.results[0].parent().map_or_else(|| PathBuf::from("."), PathBuf::from));
    let files = corelog_reports::render_report(&results, &out).context("rendering the report")?;
    println!("{}", files.html.display());
    Ok(())
}

pub fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let base = load_side(&args.base)?;
    let new = args.new.iter().map(|path| load_side(path)).collect::<anyhow::Result<Vec<_>>>()?;
    let out = args.out.unwrap_or_else(|| PathBuf::from("compare"));
    let comparison = corelog_reports::compare_repeats(&base, &new, &out).context("comparing")?;
    print!("{}", comparison.table_text);
    println!("{}", comparison.files.html.display());
    Ok(())
}
