//! `corelog report` and `corelog compare`: thin wrappers over `corelog-reports`.

use std::path::PathBuf;

use anyhow::Context as _;

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
    /// The baseline result.json.
    base: PathBuf,
    /// One or more result.json files compared against the baseline.
    #[arg(required = true)]
    new: Vec<PathBuf>,
    /// Where the comparison report goes (default: ./compare).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn load(paths: &[PathBuf]) -> anyhow::Result<Vec<corelog_reports::model::RunResult>> {
    paths
        .iter()
        .map(|path| corelog_reports::load_result(path).with_context(|| format!("loading {}", path.display())))
        .collect()
}

pub fn report(args: ReportArgs) -> anyhow::Result<()> {
    let results = load(&args.results)?;
    let out = args.out.unwrap_or_else(|| args.results[0].parent().map_or_else(|| PathBuf::from("."), PathBuf::from));
    let files = corelog_reports::render_report(&results, &out).context("rendering the report")?;
    println!("{}", files.html.display());
    Ok(())
}

pub fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let base = corelog_reports::load_result(&args.base).with_context(|| format!("loading {}", args.base.display()))?;
    let new = load(&args.new)?;
    let out = args.out.unwrap_or_else(|| PathBuf::from("compare"));
    let comparison = corelog_reports::compare(&base, &new, &out).context("comparing")?;
    print!("{}", comparison.table_text);
    println!("{}", comparison.files.html.display());
    Ok(())
}
