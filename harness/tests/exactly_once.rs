//! The exactly-once guarantee end to end: `corelog run` with its transactional
//! consume-transform-produce stage (processor child processes, real librdkafka
//! transactions against a real broker process), under processor crashes in the
//! middle of a transaction, aborts on purpose and a broker crash; and the same
//! stage run at least once (a test-only switch), which the checker must catch.

use std::path::{Path, PathBuf};
use std::process::Command;

fn out_dir(name: &str) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("exactly-once-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    out
}

fn chaos_workload(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../workloads/chaos").join(file)
}

/// Runs `corelog run` on a workload; returns result.json, stderr and whether it passed.
fn run(workload: &Path, out: &Path, extra: &[&str]) -> (serde_json::Value, String, bool) {
    let output = Command::new(env!("CARGO_BIN_EXE_corelog"))
        .arg("run")
        .arg(workload)
        .arg("--out")
        .arg(out)
        .arg("--quiet")
        .args(extra)
        .output()
        .expect("run corelog");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    let text = std::fs::read_to_string(out.join("result.json"))
        .unwrap_or_else(|error| panic!("result.json ({error}), exit {}: {stderr}", output.status));
    (serde_json::from_str(&text).expect("valid JSON"), stderr, output.status.success())
}

fn count(value: &serde_json::Value, field: &str) -> u64 {
    value[field].as_u64().unwrap_or_else(|| panic!("{field} missing in {value}"))
}

/// PASS with nothing lost, read twice, written twice or aborted read, and every
/// acknowledged message read from the output.
fn assert_exactly_once(result: &serde_json::Value, stderr: &str, acknowledged_min: u64) {
    let checker = &result["checker"];
    assert_eq!(checker["guarantee"], "exactly-once", "{stderr}");
    let counts = &checker["counts"];
    let acknowledged = count(counts, "acknowledged");
    assert!(acknowledged >= acknowledged_min, "acknowledged {acknowledged}: {stderr}");
    for anomaly in ["lost", "unseen", "duplicate", "writtenTwice", "reordered", "inconsistentOffsets", "abortedRead"] {
        assert_eq!(count(counts, anomaly), 0, "{anomaly}: {stderr}");
    }
    assert_eq!(count(counts, "consumed"), acknowledged, "every acknowledged input read once from the output: {stderr}");
    assert_eq!(checker["verdict"]["status"], "pass", "{stderr}");
}

#[test]
fn processors_killed_mid_transaction_and_aborts_on_purpose_leave_every_message_exactly_once() {
    let out = out_dir("processor-crash");
    let (result, stderr, passed) = run(&chaos_workload("exactly-once-processor-crash.yaml"), &out, &[]);
    assert!(passed, "{stderr}");
    assert_exactly_once(&result, &stderr, 10_000);

    let stage = &result["stage"];
    assert_eq!(stage["transactional"], true);
    assert_eq!(count(stage, "processors"), 2);
    assert!(count(stage, "committed") > 10, "{stage}");
    // A fifth of the transactions abort on purpose: their copies were in the
    // output's log, and no reader saw them.
    let planned = count(stage, "abortedPlanned");
    assert!(planned > 0, "abortRate 0.2 aborted nothing: {stage}");
    assert!(
        count(stage, "messagesCommitted") >= count(&result["checker"]["counts"], "acknowledged"),
        "every input was committed at least once (more after the crashes' aborts): {stage}"
    );
    let windows = result["faultWindows"].as_array().expect("faultWindows");
    let kinds: Vec<&str> = windows.iter().map(|w| w["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["processor-crash", "processor-crash"], "{windows:?}");
    assert_eq!(windows[0]["target"], "processor-0");
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.contains("exactly-once") && html.contains("PASS"), "the verdict is in the report");
}

#[test]
fn an_at_least_once_stage_writes_copies_twice_after_a_processor_crash_and_the_verdict_fails() {
    let out = out_dir("non-transactional");
    let (result, stderr, passed) =
        run(&chaos_workload("exactly-once-processor-crash.yaml"), &out, &["--test-non-transactional-stage"]);
    assert!(!passed, "the at-least-once stage must fail exactly-once: {stderr}");
    assert!(stderr.contains("TEST ONLY (--test-non-transactional-stage)"), "{stderr}");
    assert_eq!(result["workloadEcho"]["testNonTransactionalStage"], true);
    assert_eq!(result["stage"]["transactional"], false);
    let checker = &result["checker"];
    assert_eq!(checker["verdict"]["status"], "fail", "{stderr}");
    let counts = &checker["counts"];
    // The crashed processor's last batch was copied but its offsets not
    // committed: its successor copies it again, at new offsets of the output.
    assert!(count(counts, "writtenTwice") > 0, "{stderr}");
    assert_eq!(count(counts, "lost"), 0, "at least once still loses nothing: {stderr}");
    assert!(stderr.contains("written twice"), "the closing line says why: {stderr}");
}

#[test]
fn killing_the_broker_while_the_stage_commits_leaves_every_message_exactly_once() {
    let out = out_dir("broker-crash");
    let (result, stderr, passed) = run(&chaos_workload("exactly-once-broker-crash.yaml"), &out, &[]);
    assert!(passed, "{stderr}");
    assert_exactly_once(&result, &stderr, 10_000);
    let windows = result["faultWindows"].as_array().expect("faultWindows");
    assert_eq!(windows.len(), 1, "{windows:?}");
    assert_eq!(windows[0]["kind"], "crash");
    assert!(count(&result["stage"], "committed") > 10, "{}", result["stage"]);
}
