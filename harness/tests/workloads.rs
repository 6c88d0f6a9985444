//! `corelog check` end to end: the workload library and OMB's own files are valid,
//! every bad file fails with exactly its golden messages, and the generated
//! reference matches `docs/workload-reference.md`.
//!
//! Golden files (`tests/workloads/bad/*.expected`, the reference) change only on
//! purpose: `UPDATE_GOLDEN=1 cargo test -p corelog-harness --test workloads`
//! rewrites them, and the diff is reviewed like code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn harness_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn repo_dir() -> PathBuf {
    harness_dir().join("..")
}

/// Runs `corelog <args>` in `dir`.
fn corelog(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corelog"))
        .args(args)
        .current_dir(dir)
        .env_remove("CORELOG_LOG")
        .output()
        .expect("run corelog")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn updating_golden() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|value| value == "1")
}

/// Compares `actual` with the golden file, or rewrites it under UPDATE_GOLDEN=1.
/// Returns a description of the mismatch, if any.
fn check_golden(golden: &Path, actual: &str) -> Option<String> {
    if updating_golden() {
        std::fs::write(golden, actual).unwrap_or_else(|e| panic!("writing {}: {e}", golden.display()));
        return None;
    }
    let expected = std::fs::read_to_string(golden).unwrap_or_default();
    if expected == actual {
        return None;
    }
    Some(format!(
        "{} differs (UPDATE_GOLDEN=1 rewrites it)\n--- expected\n{expected}\n--- actual\n{actual}",
        golden.display()
    ))
}

/// The `.yaml` files in `dir`, relative to `base`, sorted.
fn yaml_files(dir: &Path, base: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .map(|path| path.strip_prefix(base).expect("under base").to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

fn assert_all_ok(dir: &Path, files: &[String]) {
    let args: Vec<&str> = std::iter::once("check").chain(files.iter().map(String::as_str)).collect();
    let output = corelog(dir, &args);
    let stdout = text(&output.stdout);
    assert!(
        output.status.success(),
        "corelog check failed ({:?}):\n{}{}",
        output.status.code(),
        stdout,
        text(&output.stderr)
    );
    for file in files {
        assert!(stdout.contains(&format!("ok: {file}: ")), "no ok line for {file}:\n{stdout}");
    }
}

#[test]
fn every_library_workload_checks_ok() {
    let repo = repo_dir();
    let mut files = yaml_files(&repo.join("workloads"), &repo);
    files.extend(yaml_files(&repo.join("workloads/chaos"), &repo));
    assert!(files.iter().any(|file| file == "workloads/quickstart.yaml"), "{files:?}");
    assert!(files.iter().any(|file| file == "workloads/chaos/ci-broker-crash.yaml"), "{files:?}");
    assert!(files.len() >= 18, "{files:?}");
    assert_all_ok(&repo, &files);
}

#[test]
fn omb_workload_files_parse_unchanged() {
    // Copied verbatim from OMB's repository, checked from an OMB-like root so that
    // `payloadFile: payload/payload-1Kb.data` resolves as OMB resolves it.
    let omb = harness_dir().join("tests/workloads/omb");
    let files = yaml_files(&omb.join("workloads"), &omb);
    assert_eq!(files.len(), 2, "{files:?}");
    for file in &files {
        let source = std::fs::read_to_string(omb.join(file)).expect("read");
        assert!(source.starts_with("#\n# Licensed "), "{file}: not the verbatim OMB file (license header missing)");
    }
    assert_all_ok(&omb, &files);
}

#[test]
fn fault_schema_examples_check_ok() {
    let dir = harness_dir().join("tests/workloads");
    let files = yaml_files(&dir.join("good"), &dir);
    assert_all_ok(&dir, &files);
}

#[test]
fn bad_workloads_fail_with_their_golden_messages() {
    let dir = harness_dir().join("tests/workloads");
    let files = yaml_files(&dir.join("bad"), &dir);
    assert!(files.len() >= 15, "{files:?}");
    let mut mismatches = Vec::new();
    for file in &files {
        let output = corelog(&dir, &["check", file]);
        assert_eq!(output.status.code(), Some(2), "{file}: exit status\n{}", text(&output.stderr));
        assert!(output.stdout.is_empty(), "{file}: printed on stdout: {}", text(&output.stdout));
        let golden = dir.join(file).with_extension("expected");
        if let Some(mismatch) = check_golden(&golden, &text(&output.stderr)) {
            mismatches.push(mismatch);
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n\n"));
    // No golden file is left without its workload.
    for entry in std::fs::read_dir(dir.join("bad")).expect("bad/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|extension| extension == "expected") {
            assert!(path.with_extension("yaml").exists(), "{} has no .yaml", path.display());
        }
    }
}

#[test]
fn every_file_is_checked_and_every_error_printed() {
    let dir = harness_dir().join("tests/workloads");
    let output = corelog(
        &dir,
        &["check", "bad/durations.yaml", "good/chaos-schedule.yaml", "bad/backlog.yaml", "bad/no-such.yaml"],
    );
    assert_eq!(output.status.code(), Some(2));
    let stdout = text(&output.stdout);
    let stderr = text(&output.stderr);
    assert!(stdout.starts_with("ok: good/chaos-schedule.yaml: chaos schedule: "), "{stdout}");
    assert_eq!(stderr.lines().filter(|line| line.starts_with("bad/durations.yaml:")).count(), 2, "{stderr}");
    assert_eq!(stderr.lines().filter(|line| line.starts_with("bad/backlog.yaml:")).count(), 3, "{stderr}");
    assert!(stderr.contains("bad/no-such.yaml: cannot read the file: "), "{stderr}");
    assert!(stderr.ends_with("corelog: error: 3 of 4 workload file(s) invalid (6 problems)\n"), "{stderr}");
}

#[test]
fn check_needs_a_file() {
    let output = corelog(&harness_dir(), &["check"]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output.stderr));
}

#[test]
fn reference_is_up_to_date() {
    let output = corelog(&harness_dir(), &["check", "--reference"]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let reference = text(&output.stdout);
    for key in [
        "partitionsPerTopic",
        "backlogDrainRatio",
        "testDurationSeconds",
        "cluster.topic_config",
        "faults[].target",
        "nemesis.kinds",
    ] {
        assert!(reference.contains(&format!("### `{key}`")), "the reference has no section for {key}");
    }
    if let Some(mismatch) = check_golden(&repo_dir().join("docs/workload-reference.md"), &reference) {
        panic!("{mismatch}");
    }
}
