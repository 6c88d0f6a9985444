//! Shared test support: a fixed synthetic run, and golden-file checks.

#![allow(dead_code)]

use std::path::PathBuf;

use corelog_reports::model::{
    BrokerCpus, CheckerCounts, CheckerResult, Environment, ErrorCount, Evidence, FaultWindow, Guarantee, LeaderChange,
    OutOfRangeSamples, Quantiles, RawCounts, RunResult, Verdict, VerdictStatus,
};

/// Windows in the synthetic run (one per second).
pub const WINDOWS: usize = 60;

/// A deterministic one-minute run under `guarantee`, with a broker crash from 20 s
/// to 30 s (throughput dips, backlog and latency climb), a proxy latency fault from
/// 40 s to 45 s and an instant connection reset at 50 s. `speed` scales the rates
/// and divides the latencies, so a second run differs from the first.
pub fn synthetic_run(label: &str, guarantee: Guarantee, speed: f64) -> RunResult {
    let mut run = RunResult::new();
    run.label = Some(label.to_string());
    run.workload = "1-topic-16-partitions-1kb".into();
    run.driver = "kafka".into();
    run.message_size = 1024;
    run.topics = 1;
    run.partitions = 16;
    run.producers_per_topic = 1;
    run.consumers_per_topic = 1;
    run.started_at_ms = Some(1_700_000_000_000);
    run.delivery_guarantee = Some(guarantee);

    let in_crash = |t: usize| (20..30).contains(&t);
    let in_delay = |t: usize| (40..45).contains(&t);
    let mut backlog: i64 = 0;
    for t in 0..WINDOWS {
        let wobble = ((t as f64) * 0.7).sin() * 150.0;
        let publish = if in_crash(t) { 2_500.0 } else { 10_000.0 + wobble } * speed;
        let consume = if in_crash(t) {
            1_000.0 * speed
        } else if (30..36).contains(&t) {
            14_000.0 * speed
        } else {
            publish - wobble * 0.5
        };
        backlog = (backlog + (publish - consume) as i64).max(0);
        run.window_end_ms.push((t as u64 + 1) * 1000);
        run.publish_rate.push(round(publish));
        run.consume_rate.push(round(consume));
        run.publish_error_rate.push(if in_crash(t) { 40.0 } else { 0.0 });
        run.backlog.push(backlog);

        let factor = if in_crash(t) {
            40.0
        } else if in_delay(t) {
            8.0
        } else {
            1.0
        } / speed;
        let base = (1.0 + ((t as f64) * 0.3).cos() * 0.2) * factor;
        let stats = [1.2, 1.0, 1.4, 2.2, 4.0, 9.0, 15.0, 20.0, 25.0].map(|m| round(base * m));
        let windows = [
            &mut run.publish_latency_avg,
            &mut run.publish_latency_50pct,
            &mut run.publish_latency_75pct,
            &mut run.publish_latency_95pct,
            &mut run.publish_latency_99pct,
            &mut run.publish_latency_999pct,
            &mut run.publish_latency_9999pct,
            &mut run.publish_latency_99999pct,
            &mut run.publish_latency_max,
        ];
        for (series, value) in windows.into_iter().zip(stats) {
            series.push(Some(value));
        }
        let corrected = stats.map(|v| round(v * 1.5));
        let windows = [
            &mut run.publish_corrected_latency_avg,
            &mut run.publish_corrected_latency_50pct,
            &mut run.publish_corrected_latency_75pct,
            &mut run.publish_corrected_latency_95pct,
            &mut run.publish_corrected_latency_99pct,
            &mut run.publish_corrected_latency_999pct,
            &mut run.publish_corrected_latency_9999pct,
            &mut run.publish_corrected_latency_99999pct,
            &mut run.publish_corrected_latency_max,
        ];
        for (series, value) in windows.into_iter().zip(corrected) {
            series.push(Some(value));
        }
        // End-to-end: nothing consumed in the first window (a gap), else 3× publish.
        let e2e = stats.map(|v| if t == 0 { None } else { Some(round(v * 3.0)) });
        let windows = [
            &mut run.end_to_end_latency_avg,
            &mut run.end_to_end_latency_50pct,
            &mut run.end_to_end_latency_75pct,
            &mut run.end_to_end_latency_95pct,
            &mut run.end_to_end_latency_99pct,
            &mut run.end_to_end_latency_999pct,
            &mut run.end_to_end_latency_9999pct,
            &mut run.end_to_end_latency_99999pct,
            &mut run.end_to_end_latency_max,
        ];
        for (series, value) in windows.into_iter().zip(e2e) {
            series.push(value);
        }
        let delay = stats.map(|v| Some(round(v * 20.0)));
        let windows = [
            &mut run.publish_delay_latency_avg,
            &mut run.publish_delay_latency_50pct,
            &mut run.publish_delay_latency_75pct,
            &mut run.publish_delay_latency_95pct,
            &mut run.publish_delay_latency_99pct,
            &mut run.publish_delay_latency_999pct,
            &mut run.publish_delay_latency_9999pct,
            &mut run.publish_delay_latency_99999pct,
            &mut run.publish_delay_latency_max,
        ];
        for (series, value) in windows.into_iter().zip(delay) {
            series.push(value);
        }
    }

    // Aggregates and quantiles from one formula: latency(q) = a / (1 - q)^0.45.
    let latency_at = |scale: f64, percentile: f64| {
        let tail = (1.0 - percentile / 100.0).max(1e-6);
        round(scale / speed * tail.powf(-0.45))
    };
    let percentiles: Vec<f64> = (0..=60).map(|i| 100.0 * (1.0 - 10f64.powf(-(i as f64) / 12.0))).map(round).collect();
    let quantiles = |scale: f64| Quantiles::from_points(percentiles.iter().map(|&p| (p, latency_at(scale, p))));
    run.aggregated_publish_latency_quantiles = quantiles(0.8);
    run.aggregated_publish_corrected_latency_quantiles = quantiles(1.2);
    run.aggregated_end_to_end_latency_quantiles = quantiles(2.4);
    run.aggregated_publish_delay_latency_quantiles = quantiles(16.0);
    let aggregate = |scale: f64| {
        [None, Some(50.0), Some(75.0), Some(95.0), Some(99.0), Some(99.9), Some(99.99), Some(99.999), Some(100.0)].map(
            |p| match p {
                None => Some(round(scale * 1.6 / speed)),
                Some(p) => Some(latency_at(scale, p)),
            },
        )
    };
    let [avg, p50, p75, p95, p99, p999, p9999, p99999, max] = aggregate(0.8);
    run.aggregated_publish_latency_avg = avg;
    run.aggregated_publish_latency_50pct = p50;
    run.aggregated_publish_latency_75pct = p75;
    run.aggregated_publish_latency_95pct = p95;
    run.aggregated_publish_latency_99pct = p99;
    run.aggregated_publish_latency_999pct = p999;
    run.aggregated_publish_latency_9999pct = p9999;
    run.aggregated_publish_latency_99999pct = p99999;
    run.aggregated_publish_latency_max = max;
    let [avg, p50, p75, p95, p99, p999, p9999, p99999, max] = aggregate(1.2);
    run.aggregated_publish_corrected_latency_avg = avg;
    run.aggregated_publish_corrected_latency_50pct = p50;
    run.aggregated_publish_corrected_latency_75pct = p75;
    run.aggregated_publish_corrected_latency_95pct = p95;
    run.aggregated_publish_corrected_latency_99pct = p99;
    run.aggregated_publish_corrected_latency_999pct = p999;
    run.aggregated_publish_corrected_latency_9999pct = p9999;
    run.aggregated_publish_corrected_latency_99999pct = p99999;
    run.aggregated_publish_corrected_latency_max = max;
    let [avg, p50, p75, p95, p99, p999, p9999, p99999, max] = aggregate(2.4);
    run.aggregated_end_to_end_latency_avg = avg;
    run.aggregated_end_to_end_latency_50pct = p50;
    run.aggregated_end_to_end_latency_75pct = p75;
    run.aggregated_end_to_end_latency_95pct = p95;
    run.aggregated_end_to_end_latency_99pct = p99;
    run.aggregated_end_to_end_latency_999pct = p999;
    run.aggregated_end_to_end_latency_9999pct = p9999;
    run.aggregated_end_to_end_latency_99999pct = p99999;
    run.aggregated_end_to_end_latency_max = max;
    let [avg, p50, p75, p95, p99, p999, p9999, p99999, max] = aggregate(16.0);
    run.aggregated_publish_delay_latency_avg = avg;
    run.aggregated_publish_delay_latency_50pct = p50;
    run.aggregated_publish_delay_latency_75pct = p75;
    run.aggregated_publish_delay_latency_95pct = p95;
    run.aggregated_publish_delay_latency_99pct = p99;
    run.aggregated_publish_delay_latency_999pct = p999;
    run.aggregated_publish_delay_latency_9999pct = p9999;
    run.aggregated_publish_delay_latency_99999pct = p99999;
    run.aggregated_publish_delay_latency_max = max;

    run.workload_echo = serde_json::json!({
        "name": "1-topic-16-partitions-1kb",
        "topics": 1,
        "partitionsPerTopic": 16,
        "messageSize": 1024,
        "producerRate": 10000,
        "testDurationMinutes": 1,
        "guarantees": [guarantee.as_str()],
        "faults": [{"at": "20s", "duration": "10s", "kind": "crash", "target": "broker-1"}],
    });
    run.workload_source = Some(format!(
        "name: 1-topic-16-partitions-1kb\ntopics: 1\npartitionsPerTopic: 16\nmessageSize: 1024\n\
         producerRate: 10000\ntestDurationMinutes: 1\nguarantees: [{guarantee}]\n\
         faults:\n  - {{at: 20s, duration: 10s, kind: crash, target: broker-1}}\n"
    ));
    run.environment = Environment {
        cpu_model: Some("AMD EPYC 7B13".into()),
        cpu_cores: Some(2),
        pinning: Some("broker shards on cores 0-1".into()),
        broker_cpus: (0..3)
            .map(|id| BrokerCpus { broker: format!("broker-{id}"), shards: 1, cpus: (id % 2).to_string() })
            .collect(),
        kernel: Some("6.1.0-18-amd64".into()),
        os: Some("Debian GNU/Linux 12 (bookworm)".into()),
        memory_bytes: Some(24 << 30),
        hostname: Some("bench-1".into()),
        corelog_version: Some("0.1.0".into()),
        git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
        extra: [("librdkafka".to_string(), "2.12.0".to_string())].into_iter().collect(),
    };
    let produced = (run.publish_rate.iter().sum::<f64>()) as u64;
    run.counts = RawCounts { produced: produced + 400, acknowledged: produced, consumed: produced + 12, errors: 400 };
    run.out_of_range_samples = OutOfRangeSamples { end_to_end_latency: 3, ..Default::default() };
    run.errors = vec![
        ErrorCount {
            operation: "produce".into(),
            error: "REQUEST_TIMED_OUT".into(),
            count: 390,
            first_ms: Some(20_150),
            example: Some("p0:20311 (ambiguous: it may have been written)".into()),
        },
        ErrorCount {
            operation: "produce".into(),
            error: "NOT_LEADER_OR_FOLLOWER <broker-1>".into(),
            count: 10,
            first_ms: Some(20_010),
            example: None,
        },
    ];
    run.fault_windows = vec![
        FaultWindow {
            kind: "crash".into(),
            target: "broker-1".into(),
            start_ms: 20_000,
            end_ms: Some(30_000),
            parameters: serde_json::json!({"signal": "SIGKILL", "restartAfterMs": 10000}),
            leader_change: Some(LeaderChange { partitions: 5, moved_ms: Some(2_400), watched_ms: 2_400 }),
            no_ack_ms: Some(0),
            publish_recovered_ms: Some(10_000),
        },
        FaultWindow {
            kind: "latency".into(),
            target: "proxy broker-0 client->broker".into(),
            start_ms: 40_000,
            end_ms: Some(45_000),
            parameters: serde_json::json!({"delayMs": 200, "jitterMs": 50}),
            leader_change: None,
            no_ack_ms: Some(0),
            publish_recovered_ms: Some(0),
        },
        FaultWindow {
            kind: "reset".into(),
            target: "proxy broker-2".into(),
            start_ms: 50_000,
            end_ms: Some(50_000),
            parameters: serde_json::Value::Null,
            leader_change: None,
            no_ack_ms: Some(0),
            publish_recovered_ms: Some(0),
        },
    ];
    let (counts, verdict) = match guarantee {
        Guarantee::AtLeastOnce => (
            CheckerCounts {
                attempted: produced + 400,
                acknowledged: produced,
                consumed: produced,
                duplicate: 12,
                ambiguous: 9,
                ..Default::default()
            },
            Verdict {
                status: VerdictStatus::Pass,
                promise: "no acknowledged message lost".into(),
                reasons: vec![],
                evidence: vec![Evidence {
                    category: "duplicate".into(),
                    message_ids: vec!["p0:1042".into(), "p0:1043".into()],
                }],
            },
        ),
        _ => (
            CheckerCounts {
                attempted: produced + 400,
                acknowledged: produced,
                consumed: produced - 3,
                lost: 3,
                reordered: 1,
                ambiguous: 9,
                ..Default::default()
            },
            Verdict {
                status: VerdictStatus::Fail,
                promise: "no loss, no duplicates, no aborted reads".into(),
                reasons: vec![
                    "3 acknowledged messages were never read".into(),
                    "1 message read out of order in orders-7".into(),
                ],
                evidence: vec![
                    Evidence {
                        category: "lost".into(),
                        message_ids: vec!["p1:20077 @ orders-3".into(), "p1:20078 @ orders-3".into()],
                    },
                    Evidence { category: "reordered".into(), message_ids: vec!["p0:31000 @ orders-7:5531".into()] },
                ],
            },
        ),
    };
    run.checker = Some(CheckerResult { guarantee, counts, verdict });
    run
}

/// Rounded to 4 decimals, so golden JSON stays short and stable.
fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

pub fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name)
}

/// Compares `actual` with the golden file `name`. With UPDATE_GOLDEN=1 it writes
/// the file instead (review the diff before committing); it never does so
/// silently otherwise.
pub fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create golden directory");
        }
        std::fs::write(&path, actual).expect("write golden file");
        eprintln!("updated golden file {}", path.display());
        return;
    }
    let expected = match std::fs::read_to_string(&path) {
        Ok(expected) => expected,
        Err(error) => panic!(
            "cannot read golden file {} ({error}); run with UPDATE_GOLDEN=1 to create it, then review it",
            path.display()
        ),
    };
    if expected != actual {
        let first_difference = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        let line = |text: &str| text.lines().nth(first_difference).unwrap_or("<end of file>").to_string();
        panic!(
            "{} differs from the output, first at line {}:\n  golden: {}\n  actual: {}\n\
             If the change is intended, run with UPDATE_GOLDEN=1 and review the diff.",
            path.display(),
            first_difference + 1,
            line(&expected),
            line(actual),
        );
    }
}

/// report.html with every data URI's payload replaced by a placeholder, so the
/// golden file checks structure and text, not PNG bytes.
pub fn normalise_data_uris(html: &str) -> String {
    const MARKER: &str = ";base64,";
    let mut out = String::with_capacity(html.len());
    let mut rest = html;
    while let Some(start) = rest.find(MARKER) {
        let payload_start = start + MARKER.len();
        out.push_str(&rest[..payload_start]);
        let payload_len = rest[payload_start..].find('"').unwrap_or(rest.len() - payload_start);
        out.push_str("<DATA>");
        rest = &rest[payload_start + payload_len..];
    }
    out.push_str(rest);
    out
}
