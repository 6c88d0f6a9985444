//! A chaos result rendered: the headline each report opens with, the per-fault
//! figures, and charts whose legends cover no data.

mod common;

use common::synthetic_run;
use corelog_reports::charts::ChartBody;
use corelog_reports::html::Headline;
use corelog_reports::model::Guarantee;
use corelog_reports::{build_charts, render_report, ChartRenderer, PngRenderer, RunResult};

/// The synthetic run: a broker crash from 20 s to 30 s, a proxy latency fault from
/// 40 s to 45 s and a connection reset at 50 s.
fn chaos_run() -> RunResult {
    synthetic_run("baseline", Guarantee::AtLeastOnce, 1.0)
}

fn render_html(runs: &[RunResult]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = render_report(runs, dir.path()).expect("render");
    std::fs::read_to_string(&files.html).expect("read html")
}

/// The table rows (`<tr>…</tr>`) of the page after `marker`, up to the next `</table>`.
fn rows_after<'a>(html: &'a str, marker: &str) -> Vec<&'a str> {
    let start = html.find(marker).unwrap_or_else(|| panic!("no {marker} in the page"));
    let table = &html[start..];
    let table = &table[..table.find("</table>").expect("table end")];
    table.split("<tr>").skip(2).collect()
}

#[test]
fn a_chaos_report_opens_with_one_headline_line_per_run() {
    let mut interrupted = synthetic_run("candidate", Guarantee::AtLeastOnce, 1.25);
    interrupted.partial = true;
    let html = render_html(&[chaos_run(), interrupted]);
    let headline =
        html.split("<ul class=\"headline\">").nth(1).expect("a headline").split("</ul>").next().expect("end");
    let lines: Vec<&str> = headline.lines().filter(|line| line.starts_with("<li>")).collect();
    assert_eq!(
        lines,
        [
            "<li><b>baseline</b>: 8,753 msg/s (8.96 MB/s), p99 publish 6.35 ms, p99 end-to-end 19.06 ms, \
             <span class=\"verdict pass\">PASS</span></li>",
            "<li><b>candidate</b>: 10,942 msg/s (11.20 MB/s), p99 publish 5.08 ms, p99 end-to-end 15.25 ms, \
             <span class=\"verdict pass\">PASS</span> <span class=\"partial\">PARTIAL: interrupted</span></li>",
        ]
    );
    // It opens the page: before the navigation and every section.
    assert!(html.find("class=\"headline\"").expect("headline") < html.find("<nav>").expect("nav"));
    assert_eq!(Headline::of(&chaos_run(), "x").publish_megabytes.map(|mb| (mb * 100.0).round()), Some(896.0));
}

#[test]
fn the_faults_table_gives_each_faults_figures_and_only_the_parameters_its_kind_uses() {
    let html = render_html(&[chaos_run()]);
    let rows = rows_after(&html, "<section id=\"faults\">");
    assert_eq!(rows.len(), 3, "{rows:?}");
    let cells = |row: &str| -> Vec<String> {
        row.split("<td")
            .skip(1)
            .map(|cell| cell.split('>').nth(1).unwrap_or("").split('<').next().unwrap_or("").to_string())
            .collect()
    };
    // run, kind, target, start, end, leaders moved, no acks, rate back, parameters.
    let crash = cells(rows[0]);
    assert_eq!(crash[1..9], ["crash", "broker-1", "20.0", "30.0", "2.4", "0.0", "10.0", ""]);
    assert!(rows[0].contains("<code>–</code>"), "a crash uses no parameters: {}", rows[0]);
    assert!(rows[1].contains("<code>delay_ms: 200, jitter_ms: 50</code>"), "{}", rows[1]);
    assert!(!html.contains("restartAfterMs") && !html.contains("delayMs"), "parameters spelled as in the workload");

    // Latency split into the steady and the fault periods, fault's higher.
    let periods = rows_after(&html, "<h3>Latency in steady and fault periods</h3>");
    assert_eq!(periods.len(), 2, "{periods:?}");
    let figures = |row: &str| -> Vec<f64> {
        cells(row)[2..].iter().map(|c| c.replace(',', "").parse().expect("a number")).collect()
    };
    let (steady, fault) = (figures(periods[0]), figures(periods[1]));
    assert!(periods[0].contains("<td>steady</td>") && periods[1].contains("<td>fault</td>"));
    // Windows: 60 minus the 16 of faults (20–30, 40–45, 50) and the 14 of their 5 s margins.
    assert_eq!((steady[0], fault[0]), (30.0, 16.0));
    for column in 1..7 {
        assert!(fault[column] > steady[column], "column {column}: steady {steady:?}, fault {fault:?}");
    }
}

#[test]
fn errors_are_listed_with_kind_count_and_first_example() {
    let html = render_html(&[chaos_run()]);
    let rows = rows_after(&html, "<section id=\"errors\">");
    assert_eq!(rows.len(), 2);
    assert!(rows[0].contains("REQUEST_TIMED_OUT") && rows[0].contains(">390<"), "{}", rows[0]);
    assert!(rows[0].contains("<code>p0:20311 (ambiguous: it may have been written)</code>"), "{}", rows[0]);
}

/// A decoded PNG: width and RGB pixels.
fn decode(bytes: &[u8]) -> (usize, Vec<[u8; 3]>) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().expect("png header");
    let mut buffer = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut buffer).expect("png data");
    buffer.truncate(info.buffer_size());
    (info.width as usize, buffer.chunks(3).map(|p| [p[0], p[1], p[2]]).collect())
}

#[test]
fn no_legend_box_covers_a_data_point() {
    // Each chart rendered twice, with and without its legends: the pixels that
    // differ are the legends. Within each band of rows (a panel), their bounding
    // box must hold no pixel of a data series in the chart without legends.
    let with = PngRenderer::default();
    let without = PngRenderer { draw_legends: false, ..with };
    let series: Vec<[u8; 3]> = with.series_colors();
    for runs in [vec![chaos_run()], vec![chaos_run(), synthetic_run("candidate", Guarantee::Idempotent, 1.25)]] {
        let labels: Vec<String> = runs.iter().map(RunResult::display_label).collect();
        for chart in build_charts(&runs, &labels) {
            let (width, legend) = decode(&with.render(&chart).expect("render"));
            let (_, plain) = decode(&without.render(&chart).expect("render"));
            let panels = match &chart.body {
                ChartBody::TimeSeries(series) => series.panels.len(),
                _ => 1,
            };
            let height = plain.len() / width;
            let data_pixels = plain.iter().filter(|p| series.contains(p)).count();
            assert!(data_pixels > 500, "{:?}: {data_pixels} data pixels", chart.id);
            let panel_rows = height / panels;
            for panel in 0..panels {
                let rows = panel * panel_rows..(panel + 1) * panel_rows;
                let differing: Vec<(usize, usize)> = rows
                    .clone()
                    .flat_map(|y| (0..width).map(move |x| (x, y)))
                    .filter(|&(x, y)| legend[y * width + x] != plain[y * width + x])
                    .collect();
                assert!(!differing.is_empty(), "{:?} panel {panel}: no legend drawn", chart.id);
                let (x0, x1) =
                    (differing.iter().map(|p| p.0).min().unwrap(), differing.iter().map(|p| p.0).max().unwrap());
                let (y0, y1) =
                    (differing.iter().map(|p| p.1).min().unwrap(), differing.iter().map(|p| p.1).max().unwrap());
                for y in y0..=y1 {
                    for x in x0..=x1 {
                        assert!(
                            !series.contains(&plain[y * width + x]),
                            "{:?} panel {panel}: the legend box ({x0},{y0})-({x1},{y1}) covers data at ({x},{y})",
                            chart.id
                        );
                    }
                }
            }
        }
    }
}
