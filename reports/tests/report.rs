//! The result model, report.html, the PNG charts and the change table, checked
//! against golden files (tests/golden/, rewritten only with UPDATE_GOLDEN=1) and
//! decoded.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{check_golden, normalise_data_uris, synthetic_run, WINDOWS};
use corelog_reports::compare::Judgement;
use corelog_reports::model::{Guarantee, LatencyKind, LatencyStat, OMB_SCHEMA_VERSION};
use corelog_reports::{
    compare, load_result, parse_result, render_report, save_result, ChangeTable, ReportError, RunResult, SCHEMA_VERSION,
};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn base_run() -> RunResult {
    synthetic_run("baseline", Guarantee::AtLeastOnce, 1.0)
}

fn new_run() -> RunResult {
    synthetic_run("candidate", Guarantee::ExactlyOnce, 1.25)
}

#[test]
fn schema_round_trips() {
    let run = base_run();
    let json = serde_json::to_string(&run).expect("serialize");
    let back: RunResult = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, run);

    let empty = RunResult::new();
    let json = serde_json::to_string(&empty).expect("serialize");
    assert_eq!(parse_result(&json, Path::new("empty.json")).expect("parse"), empty);
}

#[test]
fn schema_matches_golden() {
    let json = serde_json::to_string_pretty(&base_run()).expect("serialize");
    check_golden("result.json", &(json + "\n"));
}

#[test]
fn schema_uses_omb_field_names() {
    let value = serde_json::to_value(base_run()).expect("serialize");
    let object = value.as_object().expect("object");
    for key in [
        "workload",
        "driver",
        "messageSize",
        "topics",
        "partitions",
        "producersPerTopic",
        "consumersPerTopic",
        "publishRate",
        "publishErrorRate",
        "consumeRate",
        "backlog",
        "publishLatencyAvg",
        "publishLatency50pct",
        "publishLatency75pct",
        "publishLatency95pct",
        "publishLatency99pct",
        "publishLatency999pct",
        "publishLatency9999pct",
        "publishLatency99999pct",
        "publishLatencyMax",
        "publishDelayLatencyAvg",
        "publishDelayLatency50pct",
        "publishDelayLatencyMax",
        "aggregatedPublishLatencyAvg",
        "aggregatedPublishLatency50pct",
        "aggregatedPublishLatency99pct",
        "aggregatedPublishLatency9999pct",
        "aggregatedPublishLatencyMax",
        "aggregatedPublishDelayLatency99pct",
        "aggregatedPublishLatencyQuantiles",
        "aggregatedPublishDelayLatencyQuantiles",
        "endToEndLatencyAvg",
        "endToEndLatency50pct",
        "endToEndLatency999pct",
        "endToEndLatencyMax",
        "aggregatedEndToEndLatencyQuantiles",
        "aggregatedEndToEndLatencyAvg",
        "aggregatedEndToEndLatency99pct",
        "aggregatedEndToEndLatencyMax",
        "schemaVersion",
        "windowEndMs",
        "faultWindows",
        "checker",
        "environment",
        "counts",
        "outOfRangeSamples",
        "workloadEcho",
    ] {
        assert!(object.contains_key(key), "result.json lacks {key}");
    }
    assert_eq!(object["schemaVersion"], SCHEMA_VERSION);
    let quantiles = object["aggregatedPublishLatencyQuantiles"].as_object().expect("map");
    assert!(quantiles.contains_key("0.0"), "{:?}", quantiles.keys().take(5).collect::<Vec<_>>());
}

#[test]
fn omb_result_loads() {
    let run = load_result(&fixture("omb-result.json")).expect("OMB result loads");
    assert_eq!(run.schema_version, OMB_SCHEMA_VERSION);
    assert!(run.is_omb());
    assert_eq!(run.label.as_deref(), Some("omb-result"));
    assert_eq!(run.workload, "1 topic / 16 partitions / 1Kb");
    assert_eq!(run.publish_rate, [49983.4, 50012.1, 49998.7]);
    assert_eq!(run.backlog, [32, 44, 18]);
    assert_eq!(run.publish_delay_latency_50pct, [Some(8.0), Some(8.0), Some(9.0)]);
    assert!(run.publish_latency_99999pct.is_empty());
    let publish = run.latency(LatencyKind::Publish);
    assert_eq!(publish.aggregated(LatencyStat::P99), Some(5.107));
    assert_eq!(publish.quantiles.points().first(), Some(&(0.0, 0.912)));
    assert_eq!(publish.quantiles.points().last(), Some(&(100.0, 23.4)));
    let e2e = run.latency(LatencyKind::EndToEnd);
    assert_eq!(e2e.quantiles.points().first(), Some(&(0.0001, 1.0)), "Java's 1.0E-4 key");
    // OMB windows are 10 s and carry no timestamps.
    assert_eq!(run.window_end_seconds(2), 30.0);
    assert!(run.checker.is_none() && run.fault_windows.is_empty());

    // And it renders: OMB results can be reported and compared like corelog's.
    let dir = tempfile::tempdir().expect("temp dir");
    let files = render_report(&[run], dir.path()).expect("render OMB result");
    assert_eq!(files.charts.len(), 4, "no guarantee chart without a checker");
}

#[test]
fn wrong_schema_versions_are_refused_clearly() {
    let mut value = serde_json::to_value(base_run()).expect("serialize");
    value["schemaVersion"] = serde_json::json!(SCHEMA_VERSION + 1);
    let error = parse_result(&value.to_string(), Path::new("out/result.json")).expect_err("newer");
    assert!(matches!(error, ReportError::SchemaVersion { .. }), "{error:?}");
    let message = error.to_string();
    assert!(
        message.contains("out/result.json") && message.contains("version 2") && message.contains("newer corelog"),
        "{message}"
    );

    value["schemaVersion"] = serde_json::json!("one");
    let error = parse_result(&value.to_string(), Path::new("x.json")).expect_err("not a number");
    assert!(error.to_string().contains("\"one\""), "{error}");

    let error = parse_result("{\"hello\": 1}", Path::new("x.json")).expect_err("not a result");
    assert!(matches!(error, ReportError::NotAResult { .. }), "{error:?}");
    assert!(error.to_string().contains("publishRate"), "{error}");
    let error = parse_result("[1, 2]", Path::new("x.json")).expect_err("not an object");
    assert!(matches!(error, ReportError::NotAResult { .. }), "{error:?}");
}

#[test]
fn save_then_load_is_identity() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("result.json");
    let run = base_run();
    save_result(&run, &path).expect("save");
    assert!(!dir.path().join("result.json.tmp").exists());
    assert_eq!(load_result(&path).expect("load"), run);

    let mut broken = run.clone();
    broken.publish_rate[3] = f64::NAN;
    broken.aggregated_end_to_end_latency_99pct = Some(f64::INFINITY);
    let error = save_result(&broken, &dir.path().join("broken.json")).expect_err("NaN refused");
    assert_eq!(
        error.to_string(),
        "cannot save the result: publishRate, end-to-end aggregated p99 hold NaN or infinity, which JSON cannot carry"
    );

    let mut unlabelled = run.clone();
    unlabelled.label = None;
    let run_dir = dir.path().join("at-least-once");
    std::fs::create_dir(&run_dir).expect("mkdir");
    save_result(&unlabelled, &run_dir.join("result.json")).expect("save");
    let loaded = load_result(&run_dir.join("result.json")).expect("load");
    assert_eq!(loaded.label.as_deref(), Some("at-least-once"), "labelled by its directory");
}

/// The chart files of a full report and their expected pixel sizes.
fn expected_charts() -> BTreeMap<&'static str, (u32, u32)> {
    [
        // Two panels: msg/s and MB/s.
        ("throughput.png", (1200, 804)),
        ("backlog.png", (1200, 424)),
        // Three panels: publish, publish (corrected), end-to-end.
        ("latency-over-time.png", (1200, 1184)),
        ("latency-quantiles.png", (1200, 560)),
        ("guarantee-counts.png", (1200, 560)),
    ]
    .into_iter()
    .collect()
}

fn decode_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).expect("open png");
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().expect("png header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut pixels).expect("png data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    pixels.truncate(info.buffer_size());
    (info.width, info.height, pixels)
}

#[test]
fn pngs_decode_with_expected_sizes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = render_report(&[base_run(), new_run()], dir.path()).expect("render");
    let names: Vec<String> =
        files.charts.iter().map(|p| p.file_name().expect("name").to_string_lossy().into_owned()).collect();
    let expected = expected_charts();
    assert_eq!(
        names,
        ["throughput.png", "backlog.png", "latency-over-time.png", "latency-quantiles.png", "guarantee-counts.png"]
    );
    for path in &files.charts {
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let (width, height, pixels) = decode_png(path);
        assert_eq!((width, height), expected[name.as_str()], "{name}");
        // Something was drawn: not a blank canvas.
        let non_white = pixels.chunks(3).filter(|p| p != &[255, 255, 255]).count();
        assert!(non_white > 10_000, "{name} is nearly blank ({non_white} pixels drawn)");
    }
}

#[test]
fn chart_text_is_drawn_with_the_embedded_font() {
    // The title strip (the top 44 pixels) holds only the title's text: dark pixels
    // there mean glyphs were rasterised from the font compiled into the crate.
    let dir = tempfile::tempdir().expect("temp dir");
    let files = render_report(&[base_run()], dir.path()).expect("render");
    for path in &files.charts {
        let (width, _, pixels) = decode_png(path);
        let title_strip = &pixels[..(width as usize * 44 * 3)];
        let dark = title_strip.chunks(3).filter(|p| p.iter().all(|&c| c < 100)).count();
        assert!(dark > 200, "{} has no title text ({dark} dark pixels)", path.display());
    }
}

#[test]
fn html_matches_golden() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = render_report(&[base_run(), new_run()], dir.path()).expect("render");
    let html = std::fs::read_to_string(&files.html).expect("read html");
    check_golden("report.html", &normalise_data_uris(&html));
}

#[test]
fn html_is_self_contained_and_embeds_every_chart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = render_report(&[base_run(), new_run()], dir.path()).expect("render");
    let html = std::fs::read_to_string(&files.html).expect("read html");
    for chart in &files.charts {
        let name = chart.file_name().expect("name").to_string_lossy().into_owned();
        assert!(html.contains(&format!("data-file=\"{name}\"")), "report.html does not embed {name}");
    }
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), files.charts.len());
    assert_eq!(html.matches("src=\"").count(), files.charts.len(), "every src is a data URI");
    for external in ["<link", "<script", "url(", "src=\"http", "href=\"http", "@import"] {
        assert!(!html.contains(external), "report.html contains {external}");
    }
    // Verdicts come first, before the summary.
    let verdicts = html.find("id=\"verdicts\"").expect("verdicts section");
    let summary = html.find("id=\"summary\"").expect("summary section");
    assert!(verdicts < summary);
    assert!(html.contains("<span class=\"verdict fail\">FAIL</span>"));
    assert!(html.contains("<span class=\"verdict pass\">PASS</span>"));
    // Values from results are escaped.
    assert!(html.contains("NOT_LEADER_OR_FOLLOWER &lt;broker-1&gt;"));
}

/// The `#` targets of the navigation and the ids of the `<section>`s, in page order.
fn navigation_and_section_ids(html: &str) -> (Vec<String>, Vec<String>) {
    let ids_after = |text: &str, marker: &str| -> Vec<String> {
        text.split(marker).skip(1).map(|rest| rest.split('"').next().expect("closing quote").to_string()).collect()
    };
    let nav = html.split("<nav>").nth(1).and_then(|rest| rest.split("</nav>").next()).expect("a navigation");
    (ids_after(nav, "<a href=\"#"), ids_after(html, "<section id=\""))
}

#[test]
fn the_navigation_links_every_section_on_the_page_and_no_other() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut no_checker = base_run();
    no_checker.checker = None;
    no_checker.fault_windows.clear();
    no_checker.errors.clear();
    let pages = [
        render_report(&[base_run(), new_run()], &dir.path().join("overlay")).expect("render").html,
        render_report(&[no_checker], &dir.path().join("plain")).expect("render").html,
        render_report(&[RunResult::new()], &dir.path().join("empty")).expect("render").html,
        compare(&base_run(), &[new_run()], &dir.path().join("compare")).expect("compare").files.html,
    ];
    for path in &pages {
        let html = std::fs::read_to_string(path).expect("read html");
        let (linked, sections) = navigation_and_section_ids(&html);
        assert!(sections.len() >= 4, "{}: {sections:?}", path.display());
        assert_eq!(linked, sections, "{}", path.display());
    }
}

#[test]
fn report_without_data_still_renders() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = render_report(&[RunResult::new()], dir.path()).expect("render empty result");
    assert!(files.charts.is_empty());
    let html = std::fs::read_to_string(&files.html).expect("read html");
    assert!(html.contains("No time series or latency data"));
    assert!(!html.contains("id=\"verdicts\""));

    let error = render_report(&[], dir.path()).expect_err("no results");
    assert!(matches!(error, ReportError::NoResults));
    let error = compare(&RunResult::new(), &[], dir.path()).expect_err("nothing to compare");
    assert!(matches!(error, ReportError::NothingToCompare));
}

#[test]
fn change_table_matches_golden() {
    let table = ChangeTable::new(&base_run(), &[new_run()]);
    check_golden("compare.txt", &table.to_text());
}

#[test]
fn compare_writes_an_overlay_report_with_the_change_table() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = base_run();
    let mut second = base_run();
    second.label = None; // falls back to workload and guarantee
    let comparison = compare(&base, &[new_run(), second], dir.path()).expect("compare");
    assert_eq!(comparison.table.new_labels, ["candidate", "1-topic-16-partitions-1kb (at-least-once)"]);
    let header = comparison.table_text.lines().next().expect("header");
    assert!(
        header.starts_with("metric") && header.contains("base: baseline") && header.contains("candidate"),
        "{header}"
    );
    let html = std::fs::read_to_string(&comparison.files.html).expect("read html");
    let changes = html.find("id=\"changes\"").expect("changes section");
    assert!(html.find("id=\"verdicts\"").expect("verdicts") < changes);
    assert!(!html.contains("id=\"summary\""), "the change table replaces the summary");
    assert_eq!(comparison.files.charts.len(), 5);
    check_golden("compare.html", &normalise_data_uris(&html));
}

#[test]
fn window_ends_and_gaps_are_kept() {
    let run = base_run();
    assert_eq!(run.window_count(), WINDOWS);
    assert_eq!(run.window_end_seconds(0), 1.0);
    // The first window consumed nothing: a gap, not a zero.
    assert_eq!(run.end_to_end_latency_99pct[0], None);
    let json = serde_json::to_value(&run).expect("serialize");
    assert!(json["endToEndLatency99pct"][0].is_null());
}

#[test]
fn the_synthetic_runs_fault_measures_are_the_ones_recovery_computes() {
    let run = base_run();
    let mut measured = run.clone();
    measured.fault_windows.iter_mut().for_each(|fault| (fault.no_ack_ms, fault.publish_recovered_ms) = (None, None));
    corelog_reports::recovery::measure_fault_windows(&mut measured, None);
    assert_eq!(measured.fault_windows, run.fault_windows);
}

#[test]
fn compare_marks_each_metric_better_worse_or_noise_and_puts_the_worst_regressions_first() {
    // The candidate is 25% faster (better rates and latencies) but loses 3
    // messages (worse, from 0: the largest regression) and reorders 1.
    let table = ChangeTable::new(&base_run(), &[new_run()]);
    let judged = |metric: &str| {
        let row = table.rows.iter().find(|row| row.metric == metric).unwrap_or_else(|| panic!("no {metric}"));
        row.changes[0].judgement
    };
    assert_eq!(judged("publish rate (avg)"), Some(Judgement::Better));
    assert_eq!(judged("publish latency p99"), Some(Judgement::Better), "lower latency is better");
    assert_eq!(judged("checker: lost"), Some(Judgement::Worse));
    assert_eq!(judged("errors"), Some(Judgement::WithinNoise), "400 both times");
    let order: Vec<Option<Judgement>> = table.rows.iter().map(|row| row.changes[0].judgement).collect();
    let first_noise = order.iter().position(|j| *j == Some(Judgement::WithinNoise)).expect("noise rows");
    let first_better = order.iter().position(|j| *j == Some(Judgement::Better)).expect("better rows");
    assert!(order[..first_noise].iter().all(|j| *j == Some(Judgement::Worse)), "{order:?}");
    assert!(first_noise < first_better && order[first_better..].iter().all(|j| *j != Some(Judgement::Worse)));
    assert_eq!(table.rows[0].metric, "checker: lost", "a regression from 0 is the largest");
    assert!(!table.noise_from_repeats());
    assert!(table.to_text().contains("no repeats, so a change within ±5%"));
}

#[test]
fn compare_judges_noise_from_the_repeats_and_ranks_larger_regressions_higher() {
    let repeats = |label: &str, speeds: &[f64]| -> Vec<RunResult> {
        speeds.iter().map(|&speed| synthetic_run(label, Guarantee::AtLeastOnce, speed)).collect()
    };
    // The base's repeats vary by ±10%; a candidate 4% slower is within that noise,
    // and one 30% slower is worse, its latency more so than its rate.
    let base = repeats("base", &[0.9, 1.0, 1.1]);
    let table = ChangeTable::of_repeats(&base, &[repeats("slightly slower", &[0.96]), repeats("slow", &[0.7])]);
    assert_eq!(table.repeats, [3, 1, 1]);
    assert!(table.noise_from_repeats());
    let rate = table.rows.iter().find(|row| row.metric == "publish rate (avg)").expect("rate row");
    let judgements: Vec<Option<Judgement>> = rate.changes.iter().map(|c| c.judgement).collect();
    assert_eq!(judgements, [Some(Judgement::WithinNoise), Some(Judgement::Worse)]);
    assert_eq!(rate.base, Some(rate_of(&base[1])), "a side's value is the median of its repeats");
    // Worse rows first, by the size of their change: latency (+43%) before rate (-30%).
    let worse: Vec<&str> = table
        .rows
        .iter()
        .take_while(|row| row.changes.iter().any(|c| c.judgement == Some(Judgement::Worse)))
        .map(|row| row.metric.as_str())
        .collect();
    let position =
        |metric: &str| worse.iter().position(|m| *m == metric).unwrap_or_else(|| panic!("{metric} in {worse:?}"));
    assert!(position("publish latency p99") < position("publish rate (avg)"), "{worse:?}");
}

fn rate_of(run: &RunResult) -> f64 {
    run.publish_rate.iter().sum::<f64>() / run.publish_rate.len() as f64
}

#[test]
fn a_run_with_an_exactly_once_stage_gets_its_transactions_section() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut staged = base_run();
    staged.stage = Some(corelog_reports::model::StageSummary {
        processors: 2,
        abort_rate: 0.2,
        transactional: true,
        committed: 1_234,
        aborted_planned: 300,
        aborted_on_error: 2,
        messages_committed: 98_765,
        commit_latency_p50_ms: 4.3,
        commit_latency_p99_ms: 17.5,
        commit_latency_max_ms: 80.0,
    });
    let path = render_report(&[staged, new_run()], &dir.path().join("staged")).expect("render").html;
    let html = std::fs::read_to_string(path).expect("read html");
    let section = html.split("<section id=\"transactions\">").nth(1).expect("the stage's section");
    let section = section.split("</section>").next().unwrap();
    for figure in ["1,234", "300", "98,765", "4.3", "17.5", "0.20"] {
        assert!(section.contains(figure), "{figure} missing in {section}");
    }
    assert_eq!(section.matches("<tr><td>").count(), 1, "a row only for the run with a stage: {section}");

    let path = render_report(&[base_run()], &dir.path().join("plain")).expect("render").html;
    let html = std::fs::read_to_string(path).expect("read html");
    assert!(!html.contains("id=\"transactions\""), "no stage, no section");
}
