//! Renders the tests' synthetic runs into a directory, to look at the charts and
//! report.html by eye: `cargo run -p corelog-reports --example sample_report -- OUT_DIR`.
//! Writes OUT_DIR/single (one run), OUT_DIR/overlay (two runs) and OUT_DIR/compare.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::Instant;

use corelog_reports::model::Guarantee;
use corelog_reports::{compare, render_report};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::args().nth(1).ok_or("usage: sample_report OUT_DIR")?);
    let base = common::synthetic_run("baseline", Guarantee::AtLeastOnce, 1.0);
    let candidate = common::synthetic_run("candidate", Guarantee::ExactlyOnce, 1.25);

    let started = Instant::now();
    let files = render_report(std::slice::from_ref(&base), &out.join("single"))?;
    println!("{} ({:?})", files.html.display(), started.elapsed());

    let started = Instant::now();
    let files = render_report(&[base.clone(), candidate.clone()], &out.join("overlay"))?;
    println!("{} ({:?})", files.html.display(), started.elapsed());

    let comparison = compare(&base, &[candidate], &out.join("compare"))?;
    print!("{}", comparison.table_text);
    println!("{}", comparison.files.html.display());
    Ok(())
}
