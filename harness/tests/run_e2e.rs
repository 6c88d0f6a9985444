//! End to end: `corelog run` on a short workload against a broker it starts itself,
//! then checks what it wrote: counts that add up, percentiles in order, one window
//! per measured second, a report that embeds every chart, PNGs that decode, and
//! HdrHistogram logs; and the exit status: 0 with a PASS closing line when every
//! guarantee held, 1 naming the guarantee when one failed.

mod common;

use std::path::Path;
use std::process::Command;

use common::{BrokerOptions, BrokerProcess};

/// The last line `corelog run` wrote to stderr: its closing line.
fn closing_line(stderr: &str) -> &str {
    stderr.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("")
}

fn number(value: &serde_json::Value, field: &str) -> f64 {
    value[field].as_f64().unwrap_or_else(|| panic!("{field} missing or not a number in result.json"))
}

#[test]
fn a_short_run_writes_consistent_results_and_a_complete_report() {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("run-e2e-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let workload = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/run/short.yaml");
    let output = Command::new(env!("CARGO_BIN_EXE_corelog"))
        .arg("run")
        .arg(&workload)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run corelog");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "corelog run failed: {stderr}");
    assert_eq!(closing_line(&stderr), "corelog run: PASS: at-least-once", "{stderr}");

    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).expect("result.json"))
            .expect("valid JSON");
    let counts = &result["counts"];
    let (produced, acknowledged, consumed) =
        (number(counts, "produced"), number(counts, "acknowledged"), number(counts, "consumed"));
    assert!(produced >= 2000.0 * 4.0, "about 2000 msg/s for 5 s, got {produced}");
    assert_eq!(produced, acknowledged, "every produced message acknowledged");
    assert_eq!(acknowledged, consumed, "every acknowledged message consumed once");
    assert_eq!(number(counts, "errors"), 0.0);

    // One window per measured second (the last may be cut by the stop).
    let windows = result["publishRate"].as_array().expect("publishRate").len();
    assert!((3..=5).contains(&windows), "4 s measured should give about 4 windows, got {windows}");
    assert_eq!(result["windowEndMs"].as_array().expect("windowEndMs").len(), windows);
    let rate = result["publishRate"].as_array().expect("rates").iter().map(|r| r.as_f64().expect("rate")).sum::<f64>()
        / windows as f64;
    assert!((1500.0..=2500.0).contains(&rate), "the fixed rate of 2000 msg/s is kept, got {rate}");

    for kind in ["aggregatedPublishLatency", "aggregatedEndToEndLatency", "aggregatedPublishCorrectedLatency"] {
        let stats: Vec<f64> = ["50pct", "75pct", "95pct", "99pct", "999pct", "9999pct", "Max"]
            .iter()
            .map(|stat| number(&result, &format!("{kind}{stat}")))
            .collect();
        assert!(stats.windows(2).all(|pair| pair[0] <= pair[1]), "{kind} percentiles must not decrease: {stats:?}");
        assert!(stats[0] > 0.0, "{kind} p50 is a real latency");
    }
    // Corrected latency includes the service time.
    assert!(
        number(&result, "aggregatedPublishCorrectedLatency99pct") >= number(&result, "aggregatedPublishLatency50pct")
    );
    assert_eq!(result["deliveryGuarantee"], "at-least-once");
    assert!(result["environment"]["cpuCores"].as_u64().expect("cores") >= 1);
    assert!(result["environment"]["pinning"].as_str().expect("pinning").contains("broker-0 on CPU "));
    // One broker, one shard: on the first online CPU.
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("the online CPUs");
    let first: String = online.trim().chars().take_while(char::is_ascii_digit).collect();
    assert_eq!(
        result["environment"]["brokerCpus"],
        serde_json::json!([{"broker": "broker-0", "shards": 1, "cpus": first}])
    );

    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    let pngs: Vec<_> = std::fs::read_dir(&out)
        .expect("list out")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    assert!(pngs.len() >= 3, "throughput, latency over time and quantile charts at least: {pngs:?}");
    let embedded = html.matches("data:image/png;base64,").count();
    assert_eq!(embedded, pngs.len(), "the HTML embeds every chart");
    for png in &pngs {
        let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png).expect("open png")));
        let reader = decoder.read_info().unwrap_or_else(|e| panic!("{} does not decode: {e}", png.display()));
        assert!(reader.info().width >= 400 && reader.info().height >= 200, "{} is a real chart", png.display());
    }
    for log in ["publish-latency.hlog", "end-to-end-latency.hlog"] {
        let text = std::fs::read_to_string(out.join(log)).expect("hlog");
        assert!(
            text.lines().filter(|l| !l.starts_with('#') && !l.starts_with('"')).count() >= 3,
            "{log} has interval lines"
        );
    }
    std::fs::remove_dir_all(&out).expect("clean up");
}

#[test]
fn a_bad_workload_fails_before_anything_starts_with_exit_code_2() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("run-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let workload = dir.join("bad.yaml");
    std::fs::write(
        &workload,
        "name: bad\ntopics: 1\npartitionsPerTopic: 0\nmessageSize: 10\nproducersPerTopic: 1\ntestDurationSeconds: 1\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_corelog"))
        .arg("run")
        .arg(&workload)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.yaml:3") && stderr.contains("partitionsPerTopic"), "{stderr}");
    assert!(!dir.join("out").exists(), "nothing is written for an invalid workload");
}

#[test]
fn cpus_that_are_not_online_fail_the_run_before_anything_starts_with_exit_code_2() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("run-cpus-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let workload = dir.join("cpus.yaml");
    std::fs::write(
        &workload,
        "name: cpus\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 10\nproducersPerTopic: 1\n\
         testDurationSeconds: 1\ncluster: {brokers: 3, cores: 1, cpus: \"0,8191\"}\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_corelog"))
        .arg("run")
        .arg(&workload)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").expect("the online CPUs");
    let expected = format!("cluster.cpus: CPU 8191 is not online (online CPUs: {})", online.trim());
    assert!(stderr.contains(&expected), "{stderr}");
    assert!(!dir.join("out").exists(), "nothing is written");
}

/// At 20 msg/s the producer thread spends most of its time waiting for the next
/// send; acknowledgements must still be timed when they arrive (it waits on
/// librdkafka's report queue, not in a sleep), so the publish latency is the
/// broker's round trip, not the 50 ms between sends.
#[test]
fn acknowledgements_at_a_low_rate_are_timed_when_they_arrive_not_at_the_next_send() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("run-low-rate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let workload = dir.join("low-rate.yaml");
    std::fs::write(
        &workload,
        "name: low-rate\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 100\nproducersPerTopic: 1\n\
         subscriptionsPerTopic: 0\nproducerRate: 20\nwarmupDurationSeconds: 1\ntestDurationSeconds: 3\n\
         cluster:\n  brokers: 1\n  cores: 1\n",
    )
    .expect("write");
    let output = Command::new(env!("CARGO_BIN_EXE_corelog"))
        .arg("run")
        .arg(&workload)
        .arg("--out")
        .arg(dir.join("out"))
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "corelog run failed: {stderr}");
    // Nothing reads, so the verdict is UNKNOWN by construction and decides nothing.
    assert_eq!(
        closing_line(&stderr),
        "corelog run: done; no subscription reads the topics, so no delivery guarantee was checked"
    );
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("out/result.json")).expect("result.json"))
            .expect("valid JSON");
    let acknowledged = number(&result["counts"], "acknowledged");
    assert!((40.0..=90.0).contains(&acknowledged), "about 20 msg/s for 3 s (and the drain), got {acknowledged}");
    let p50_ms = number(&result, "aggregatedPublishLatency50pct");
    assert!(p50_ms < 20.0, "publish latency p50 {p50_ms} ms: acknowledgements waited for the next send (50 ms apart)");
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// The test-only switch makes the checker forget the reads of every 50th message
/// (the broker, the clients and the drain are all real), so at-least-once sees
/// them lost and FAILs, while at-most-once, which allows loss, passes: the run
/// exits 1 and its closing line names the guarantee that failed and why.
#[test]
fn a_failed_guarantee_makes_the_run_exit_1_and_the_closing_line_names_it() {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("run-verdict-fail-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let workload = dir.join("forgetful.yaml");
    std::fs::write(
        &workload,
        "name: forgetful\ntopics: 1\npartitionsPerTopic: 2\nmessageSize: 100\nproducersPerTopic: 1\n\
         subscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducerRate: 1000\nwarmupDurationSeconds: 1\ntestDurationSeconds: 2\n\
         guarantees: [at-most-once, at-least-once]\ncluster:\n  brokers: 1\n  cores: 1\n",
    )
    .expect("write");
    let out = dir.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_corelog"))
        .arg("run")
        .arg(&workload)
        .arg("--out")
        .arg(&out)
        .args(["--test-forget-reads", "50"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "a FAIL verdict is a failed run: {stderr}");
    assert!(stderr.contains("TEST ONLY (--test-forget-reads 50)"), "the run says it was sabotaged: {stderr}");
    // A forgotten message that ends its partition is never read rather than lost,
    // and the brief says so after the loss.
    let closing = closing_line(&stderr);
    assert!(closing.starts_with("corelog: error: FAIL: at-least-once (lost "), "{stderr}");
    assert!(closing.ends_with("); PASS: at-most-once"), "loss is what at-most-once allows: {stderr}");

    // Everything is still written, and the loss is exactly the forgotten messages.
    let result: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("at-least-once/result.json")).expect("result.json"))
            .expect("valid JSON");
    let checker = &result["checker"];
    assert_eq!(checker["verdict"]["status"], "fail", "{stderr}");
    let acknowledged = number(&checker["counts"], "acknowledged");
    assert_eq!(number(&result["counts"], "produced"), acknowledged, "every send acknowledged: {stderr}");
    let lost = number(&checker["counts"], "lost") + number(&checker["counts"], "unseen");
    assert_eq!(lost, (acknowledged / 50.0).ceil(), "sequences 0, 50, 100, … are the forgotten ones: {stderr}");
    assert_eq!(result["workloadEcho"]["testForgetReads"], 50);
    assert!(out.join("report.html").exists());
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// The topics `corelog topics list` shows on `bootstrap`, one per line.
fn listed_topics(bootstrap: &str) -> Vec<String> {
    let output = Command::new(env!("CARGO_BIN_EXE_corelog"))
        .args(["topics", "list", "--bootstrap", bootstrap])
        .output()
        .expect("corelog topics list");
    assert!(output.status.success(), "topics list: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(|line| line.trim().to_string()).collect()
}

#[test]
fn a_run_on_an_external_cluster_deletes_its_topics_unless_told_to_keep_them() {
    let broker = BrokerProcess::start(BrokerOptions::new("run-external-topics"));
    let bootstrap = broker.bootstrap();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("run-external-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    // Each run its own seed, so its own topic and consumer group names: a group
    // of the first run would keep its committed offsets for the second's topic.
    let run = |seed: u32, extra: &[&str]| {
        let workload = dir.join(format!("external-{seed}.yaml"));
        std::fs::write(
            &workload,
            format!(
                "name: external\ntopics: 1\npartitionsPerTopic: 1\nmessageSize: 100\nproducersPerTopic: 1\n\
                 subscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducerRate: 200\nwarmupDurationSeconds: 0\n\
                 testDurationSeconds: 1\nseed: {seed}\ncluster:\n  bootstrap: {bootstrap}\n"
            ),
        )
        .expect("write");
        let output = Command::new(env!("CARGO_BIN_EXE_corelog"))
            .arg("run")
            .arg(&workload)
            .arg("--out")
            .arg(dir.join(seed.to_string()))
            .args(extra)
            .output()
            .expect("run");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "{stderr}");
        stderr
    };
    // The seed names the topic: `external-at-least-once-0-000001`.
    let stderr = run(1, &[]);
    assert!(stderr.contains("deleted the run's topics (external-at-least-once-0-000001)"), "{stderr}");
    let topic = "external-at-least-once-0-000001".to_string();
    assert!(!listed_topics(&bootstrap).contains(&topic), "the run's topic is gone: {stderr}");

    let stderr = run(2, &["--keep-topics"]);
    assert!(!stderr.contains("deleted the run's topics"), "{stderr}");
    let topic = "external-at-least-once-0-000002".to_string();
    assert!(listed_topics(&bootstrap).contains(&topic), "--keep-topics keeps it: {stderr}");
    std::fs::remove_dir_all(&dir).expect("clean up");
}
