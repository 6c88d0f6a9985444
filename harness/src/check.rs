//! `corelog check`: validates workload files without running them, or prints the
//! workload reference.
//!
//! Every file is checked and every problem printed (to stderr, one
//! `file:line:column: field: message` line each, with a hint below), so one pass
//! fixes a file. Valid files get one `ok:` line on stdout saying what they run.
//! Exit code 2 if any file is invalid or unreadable.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use crate::workload;
use crate::UsageError;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Workload files to validate.
    #[arg(required_unless_present = "reference")]
    files: Vec<PathBuf>,
    /// Print the workload reference (every field, its type, default and meaning) as
    /// Markdown, the text of docs/workload-reference.md.
    #[arg(long, conflicts_with = "files")]
    reference: bool,
}

pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let stdout = std::io::stdout();
    let mut stdout = stdout.lock();
    if args.reference {
        stdout.write_all(workload::reference_markdown().as_bytes()).context("writing the reference")?;
        return Ok(());
    }
    let stderr = std::io::stderr();
    let mut stderr = stderr.lock();
    let mut invalid_files = 0;
    let mut problems = 0;
    for path in &args.files {
        match workload::load(path) {
            Ok(workload) => {
                writeln!(stdout, "ok: {}: {}: {}", path.display(), workload.name, workload.summary())
                    .context("writing to stdout")?;
            }
            Err(diagnostics) => {
                invalid_files += 1;
                problems += diagnostics.len();
                for diagnostic in &diagnostics {
                    writeln!(stderr, "{diagnostic}").context("writing to stderr")?;
                }
            }
        }
    }
    if invalid_files > 0 {
        let files = args.files.len();
        let noun = if problems == 1 { "problem" } else { "problems" };
        return Err(
            UsageError(format!("{invalid_files} of {files} workload file(s) invalid ({problems} {noun})")).into()
        );
    }
    Ok(())
}
