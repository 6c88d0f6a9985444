//! report.html: one self-contained file. Charts are embedded as data URIs, the
//! style sheet is inline, and nothing is fetched from anywhere, so the file can be
//! mailed, archived or opened offline.
//!
//! Sections, in order: verdicts (when a checker ran), changes (compare only, in
//! place of the summary) or summary, charts, delivery guarantees (when a checker ran), faults, errors,
//! workload, environment. Every value from a result is HTML-escaped.

use base64::Engine as _;

use crate::charts::ChartId;
use crate::compare::ChangeTable;
use crate::metrics::metrics;
use crate::model::{RunResult, VerdictStatus, SCHEMA_VERSION};

/// Appends formatted text to a `String` (infallible, unlike `write!`'s signature).
macro_rules! out {
    ($buffer:expr, $($arg:tt)*) => {
        $buffer.push_str(&format!($($arg)*))
    };
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($buffer:expr, $($arg:tt)*) => {{
        $buffer.push_str(&format!($($arg)*));
        $buffer.push('\n');
    }};
}

/// A rendered chart, as the page embeds it.
#[derive(Debug, Clone)]
pub struct EmbeddedChart {
    pub id: ChartId,
    pub title: String,
    pub caption: String,
    /// The image's file name beside report.html.
    pub file_name: String,
    pub mime_type: &'static str,
    pub bytes: Vec<u8>,
}

const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif;\
margin:0 auto;max-width:1260px;padding:0 20px 40px;color:#222;line-height:1.4}
h1{font-size:1.6em;margin:24px 0 4px}h2{font-size:1.25em;margin:32px 0 8px;\
border-bottom:1px solid #ddd;padding-bottom:4px}h3{font-size:1.05em;margin:16px 0 6px}
nav a{margin-right:12px}table{border-collapse:collapse;margin:6px 0 12px;font-size:.92em}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{margin:12px 0 24px}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{color:#555;font-size:.9em}pre{background:#f7f7f7;border:1px solid #e3e3e3;\
padding:10px;overflow:auto;font-size:.85em}
.verdict{font-weight:bold;padding:2px 8px;border-radius:3px;color:#fff}
.pass{background:#2e7d32}.fail{background:#c62828}.unknown{background:#6d6d6d}
.muted{color:#777}footer{margin-top:40px;color:#777;font-size:.85em}
";

/// The whole page.
pub fn render_html(
    runs: &[RunResult],
    labels: &[String],
    charts: &[EmbeddedChart],
    changes: Option<&ChangeTable>,
) -> String {
    let mut page = String::new();
    let title = format!("corelog report: {}", labels.join(" vs "));
    page.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    page.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    outln!(page, "<title>{}</title>", escape(&title));
    outln!(page, "<style>\n{STYLE}</style>\n</head>\n<body>");
    outln!(page, "<h1>{}</h1>", escape(&title));
    page.push_str(&runs_list(runs, labels));

    let has_verdicts = runs.iter().any(|r| r.checker.is_some());
    let has_faults = runs.iter().any(|r| !r.fault_windows.is_empty());
    let has_errors = runs.iter().any(|r| !r.errors.is_empty());
    let mut nav = Vec::new();
    if has_verdicts {
        nav.push(("verdicts", "Verdicts"));
    }
    if changes.is_some() {
        nav.push(("changes", "Changes"));
    }
    // A comparison's change table is its summary.
    if changes.is_none() {
        nav.push(("summary", "Summary"));
    }
    nav.push(("charts", "Charts"));
    if has_verdicts {
        nav.push(("guarantees", "Delivery guarantees"));
    }
    if has_faults {
        nav.push(("faults", "Faults"));
    }
    if has_errors {
        nav.push(("errors", "Errors"));
    }
    nav.push(("workload", "Workload"));
    nav.push(("environment", "Environment"));
    page.push_str("<nav>");
    for (id, name) in &nav {
        out!(page, "<a href=\"#{id}\">{name}</a>");
    }
    page.push_str("</nav>\n");

    if has_verdicts {
        page.push_str(&verdicts(runs, labels));
    }
    if let Some(changes) = changes {
        page.push_str(&change_table(changes));
    }
    if changes.is_none() {
        page.push_str(&summary(runs, labels));
    }
    page.push_str("<section id=\"charts\">\n<h2>Charts</h2>\n");
    let time_and_latency: Vec<&EmbeddedChart> = charts
        .iter()
        .filter(|c| c.id != ChartId::GuaranteeCounts)
        .collect();
    if time_and_latency.is_empty() {
        page.push_str("<p class=\"muted\">No time series or latency data in these results.</p>\n");
    }
    for chart in time_and_latency {
        page.push_str(&figure(chart));
    }
    page.push_str("</section>\n");
    if has_verdicts {
        page.push_str(&guarantees(runs, labels, charts));
    }
    if has_faults {
        page.push_str(&faults(runs, labels));
    }
    if has_errors {
        page.push_str(&errors(runs, labels));
    }
    page.push_str(&workload(runs, labels));
    page.push_str(&environment(runs, labels));
    outln!(
        page,
        "<footer>Generated by corelog-reports {} (result schema {}).</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION"),
        SCHEMA_VERSION
    );
    page
}

fn runs_list(runs: &[RunResult], labels: &[String]) -> String {
    let mut html = String::from("<ul class=\"runs\">\n");
    for (run, label) in runs.iter().zip(labels) {
        let mut facts = Vec::new();
        if !run.workload.is_empty() {
            facts.push(format!("workload {}", run.workload));
        }
        if !run.driver.is_empty() {
            facts.push(format!("driver {}", run.driver));
        }
        if let Some(guarantee) = run.delivery_guarantee {
            facts.push(guarantee.to_string());
        }
        if let Some(started) = run.started_at_ms {
            facts.push(format!("started {}", utc_time(started)));
        }
        let windows = run.window_count();
        if windows > 0 {
            facts.push(format!(
                "{windows} windows over {} s",
                seconds_text(run.window_end_seconds(windows - 1))
            ));
        }
        if run.is_omb() {
            facts.push("OpenMessaging Benchmark result".to_string());
        }
        outln!(
            html,
            "<li><b>{}</b>: {}</li>",
            escape(label),
            escape(&facts.join(", "))
        );
    }
    html.push_str("</ul>\n");
    html
}

fn verdicts(runs: &[RunResult], labels: &[String]) -> String {
    let mut html = String::from("<section id=\"verdicts\">\n<h2>Verdicts</h2>\n<table>\n");
    html.push_str("<tr><th>run</th><th>guarantee</th><th>verdict</th><th>promise</th><th>reasons</th><th>evidence</th></tr>\n");
    for (run, label) in runs.iter().zip(labels) {
        let Some(checker) = &run.checker else {
            continue;
        };
        let verdict = &checker.verdict;
        let class = match verdict.status {
            VerdictStatus::Pass => "pass",
            VerdictStatus::Fail => "fail",
            VerdictStatus::Unknown => "unknown",
        };
        let reasons: Vec<String> = verdict.reasons.iter().map(|r| escape(r)).collect();
        let evidence: Vec<String> = verdict
            .evidence
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    escape(&e.category),
                    escape(&e.message_ids.join(", "))
                )
            })
            .collect();
        outln!(
            html,
            "<tr><td>{}</td><td>{}</td><td><span class=\"verdict {class}\">{}</span></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(label),
            checker.guarantee,
            verdict.status.as_str(),
            escape(&verdict.promise),
            reasons.join("<br>"),
            evidence.join("<br>"),
        );
    }
    html.push_str("</table>\n</section>\n");
    html
}

fn change_table(changes: &ChangeTable) -> String {
    let mut html = String::from(
        "<section id=\"changes\">\n<h2>Changes</h2>\n<table>\n<tr><th>metric</th><th>unit</th>",
    );
    out!(html, "<th>base: {}</th>", escape(&changes.base_label));
    for label in &changes.new_labels {
        out!(html, "<th>{}</th><th>change</th>", escape(label));
    }
    html.push_str("</tr>\n");
    for row in &changes.rows {
        out!(
            html,
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td>",
            escape(&row.metric),
            escape(row.unit),
            escape(&row.base_text)
        );
        for change in &row.changes {
            out!(
                html,
                "<td class=\"num\">{}</td><td class=\"num\">{}</td>",
                escape(&change.value_text),
                escape(&change.percent_text)
            );
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n</section>\n");
    html
}

fn summary(runs: &[RunResult], labels: &[String]) -> String {
    let mut html = String::from(
        "<section id=\"summary\">\n<h2>Summary</h2>\n<table>\n<tr><th>metric</th><th>unit</th>",
    );
    for label in labels {
        out!(html, "<th>{}</th>", escape(label));
    }
    html.push_str("</tr>\n");
    for metric in metrics() {
        let values: Vec<Option<f64>> = runs.iter().map(|r| metric.value(r)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        out!(
            html,
            "<tr><td>{}</td><td>{}</td>",
            escape(&metric.name),
            escape(metric.unit)
        );
        for value in values {
            out!(
                html,
                "<td class=\"num\">{}</td>",
                escape(&metric.format(value))
            );
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n</section>\n");
    html
}

fn figure(chart: &EmbeddedChart) -> String {
    let data = base64::engine::general_purpose::STANDARD.encode(&chart.bytes);
    format!(
        "<figure id=\"chart-{id}\">\n<img src=\"data:{mime};base64,{data}\" alt=\"{title}\" data-file=\"{file}\">\n<figcaption><b>{title}.</b> {caption}</figcaption>\n</figure>\n",
        id = chart.id.file_stem(),
        mime = chart.mime_type,
        title = escape(&chart.title),
        file = escape(&chart.file_name),
        caption = escape(&chart.caption),
    )
}

fn guarantees(runs: &[RunResult], labels: &[String], charts: &[EmbeddedChart]) -> String {
    let mut html = String::from(
        "<section id=\"guarantees\">\n<h2>Delivery guarantees</h2>\n<table>\n<tr><th>count</th>",
    );
    let checked: Vec<(&RunResult, &String)> = runs
        .iter()
        .zip(labels)
        .filter(|(r, _)| r.checker.is_some())
        .collect();
    for (run, label) in &checked {
        if let Some(checker) = &run.checker {
            out!(
                html,
                "<th>{}<br><span class=\"muted\">{}</span></th>",
                checker.guarantee,
                escape(label)
            );
        }
    }
    html.push_str("</tr>\n");
    let names = crate::model::CheckerCounts::default()
        .all()
        .map(|(name, _)| name);
    for (index, name) in names.iter().enumerate() {
        out!(html, "<tr><td>{name}</td>");
        for (run, _) in &checked {
            let count = run
                .checker
                .as_ref()
                .and_then(|c| c.counts.all().get(index).map(|&(_, n)| n))
                .unwrap_or(0);
            out!(
                html,
                "<td class=\"num\">{}</td>",
                crate::metrics::group_thousands(count as f64)
            );
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    for chart in charts.iter().filter(|c| c.id == ChartId::GuaranteeCounts) {
        html.push_str(&figure(chart));
    }
    html.push_str("</section>\n");
    html
}

fn faults(runs: &[RunResult], labels: &[String]) -> String {
    let mut html = String::from(
        "<section id=\"faults\">\n<h2>Faults</h2>\n<table>\n<tr><th>run</th><th>kind</th><th>target</th><th>start (s)</th><th>end (s)</th><th>parameters</th></tr>\n",
    );
    // Runs of one schedule share their faults: list them once.
    let shared = runs.len() > 1
        && runs
            .windows(2)
            .all(|pair| pair[0].fault_windows == pair[1].fault_windows);
    let all_runs = ["all runs".to_string()];
    let (runs, labels) = if shared {
        (&runs[..1], &all_runs[..])
    } else {
        (runs, labels)
    };
    for (run, label) in runs.iter().zip(labels) {
        for fault in &run.fault_windows {
            let end = fault.end_ms.map_or("end of run".to_string(), seconds);
            let parameters = if fault.parameters.is_null() {
                "–".to_string()
            } else {
                fault.parameters.to_string()
            };
            outln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><code>{}</code></td></tr>",
                escape(label),
                escape(&fault.kind),
                escape(&fault.target),
                seconds(fault.start_ms),
                escape(&end),
                escape(&parameters)
            );
        }
    }
    html.push_str("</table>\n</section>\n");
    html
}

fn errors(runs: &[RunResult], labels: &[String]) -> String {
    let mut html = String::from(
        "<section id=\"errors\">\n<h2>Errors</h2>\n<table>\n<tr><th>run</th><th>operation</th><th>error</th><th>count</th><th>first seen (s)</th></tr>\n",
    );
    for (run, label) in runs.iter().zip(labels) {
        for error in &run.errors {
            outln!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
                escape(label),
                escape(&error.operation),
                escape(&error.error),
                crate::metrics::group_thousands(error.count as f64),
                error.first_ms.map_or("–".to_string(), seconds)
            );
        }
    }
    html.push_str("</table>\n</section>\n");
    html
}

fn workload(runs: &[RunResult], labels: &[String]) -> String {
    let mut html = String::from("<section id=\"workload\">\n<h2>Workload</h2>\n");
    let texts: Vec<String> = runs.iter().map(workload_text).collect();
    let all_same = texts.windows(2).all(|pair| pair[0] == pair[1]);
    if all_same && runs.len() > 1 {
        html.push_str("<p class=\"muted\">The same for every run.</p>\n");
    }
    for ((text, label), index) in texts.iter().zip(labels).zip(0..) {
        if all_same && index > 0 {
            break;
        }
        if !all_same || runs.len() == 1 {
            outln!(html, "<h3>{}</h3>", escape(label));
        }
        outln!(html, "<pre>{}</pre>", escape(text));
    }
    html.push_str("</section>\n");
    html
}

/// The workload as the user wrote it, else as run (pretty JSON), else a note.
fn workload_text(run: &RunResult) -> String {
    if let Some(source) = &run.workload_source {
        return source.clone();
    }
    if !run.workload_echo.is_null() {
        if let Ok(pretty) = serde_json::to_string_pretty(&run.workload_echo) {
            return pretty;
        }
    }
    let shape = format!(
        "workload: {}\ndriver: {}\ntopics: {}\npartitions: {}\nmessageSize: {}\nproducersPerTopic: {}\nconsumersPerTopic: {}",
        run.workload, run.driver, run.topics, run.partitions, run.message_size, run.producers_per_topic, run.consumers_per_topic
    );
    format!("# Not recorded; the result's own fields:\n{shape}")
}

fn environment(runs: &[RunResult], labels: &[String]) -> String {
    let mut html =
        String::from("<section id=\"environment\">\n<h2>Environment</h2>\n<table>\n<tr><th></th>");
    for label in labels {
        out!(html, "<th>{}</th>", escape(label));
    }
    html.push_str("</tr>\n");
    let opt = |value: &Option<String>| value.clone().unwrap_or_else(|| "–".to_string());
    type Field = Box<dyn Fn(&RunResult) -> String>;
    let rows: Vec<(&str, Field)> = vec![
        ("CPU", Box::new(move |r| opt(&r.environment.cpu_model))),
        (
            "cores",
            Box::new(|r| {
                r.environment
                    .cpu_cores
                    .map_or("–".into(), |c| c.to_string())
            }),
        ),
        ("pinning", Box::new(move |r| opt(&r.environment.pinning))),
        ("kernel", Box::new(move |r| opt(&r.environment.kernel))),
        ("OS", Box::new(move |r| opt(&r.environment.os))),
        (
            "memory",
            Box::new(|r| {
                r.environment.memory_bytes.map_or("–".into(), |b| {
                    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
                })
            }),
        ),
        ("host", Box::new(move |r| opt(&r.environment.hostname))),
        (
            "corelog version",
            Box::new(move |r| opt(&r.environment.corelog_version)),
        ),
        (
            "git commit",
            Box::new(move |r| opt(&r.environment.git_commit)),
        ),
    ];
    for (name, value) in &rows {
        out!(html, "<tr><th>{name}</th>");
        for run in runs {
            out!(html, "<td>{}</td>", escape(&value(run)));
        }
        html.push_str("</tr>\n");
    }
    let mut extra_keys: Vec<&String> = runs
        .iter()
        .flat_map(|r| r.environment.extra.keys())
        .collect();
    extra_keys.sort();
    extra_keys.dedup();
    for key in extra_keys {
        out!(html, "<tr><th>{}</th>", escape(key));
        for run in runs {
            let value = run.environment.extra.get(key).map_or("–", String::as_str);
            out!(html, "<td>{}</td>", escape(value));
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n</section>\n");
    html
}

fn seconds(ms: i64) -> String {
    format!("{:.1}", ms as f64 / 1000.0)
}

/// "60" for 60.0, "12.5" for 12.5.
fn seconds_text(seconds: f64) -> String {
    let text = format!("{seconds:.1}");
    text.strip_suffix(".0").map_or(text.clone(), str::to_string)
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&#39;"),
            _ => escaped.push(c),
        }
    }
    escaped
}

/// Unix milliseconds as "2025-01-31 13:45:07 UTC" (proleptic Gregorian calendar).
pub fn utc_time(unix_ms: u64) -> String {
    let seconds = unix_ms / 1000;
    let days = (seconds / 86_400) as i64;
    let second_of_day = seconds % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_escapes() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
