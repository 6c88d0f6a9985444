//! The change table of `corelog compare`: per summary metric, the base's value,
//! each new run's value, its change in percent, and whether that change is
//! better, worse or within noise. It answers "did it get worse?": the rows with a
//! regression come first, the largest first.
//!
//! Which way is better depends on the metric ([`Better`]: higher for rates and
//! messages delivered, lower for latencies, backlog, errors and anomalies).
//!
//! Noise. A side of the comparison is one run or the repeats of one (`corelog run
//! --repeat N`); its value is the median of its repeats. When either side has two
//! or more repeats, a change is noise when it is no larger than the spread (max −
//! min) that side's repeats show for the metric, the larger of the two sides'
//! spreads: a difference the same build shows between its own runs says nothing
//! about the change. Without repeats there is no measured noise, and a change
//! within ±[`NOISE_WITHOUT_REPEATS`] of the base is called noise; that default is
//! a guess at run-to-run variation on a quiet machine, not a measurement, and the
//! table says which rule it used.
//!
//! Limits: the spread of a few repeats underestimates the noise (three repeats
//! show less of it than thirty), and counts that are exactly 0 on both sides are
//! always within noise. A metric no run has a value for is left out; a change
//! against a base of 0 is "n/a" in percent but still judged.

use crate::metrics::{metrics, run_labels, Better, Metric};
use crate::model::RunResult;

/// Without repeats, a change within this fraction of the base is called noise.
pub const NOISE_WITHOUT_REPEATS: f64 = 0.05;

/// The comparison of one base with one or more new runs (each possibly repeated).
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeTable {
    pub base_label: String,
    pub new_labels: Vec<String>,
    /// Repeats per side: the base's, then each new run's.
    pub repeats: Vec<usize>,
    /// Rows with a regression first (the largest first), then those within noise,
    /// then improvements, then those that could not be judged; metric order within.
    pub rows: Vec<ChangeRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub metric: String,
    pub unit: &'static str,
    pub better: Better,
    pub base: Option<f64>,
    /// `base` formatted for display.
    pub base_text: String,
    /// One per new run.
    pub changes: Vec<Change>,
}

/// How a change compares with the noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Judgement {
    Worse,
    WithinNoise,
    Better,
}

impl Judgement {
    pub fn as_str(self) -> &'static str {
        match self {
            Judgement::Worse => "worse",
            Judgement::WithinNoise => "within noise",
            Judgement::Better => "better",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub value: Option<f64>,
    /// `value` formatted for display.
    pub value_text: String,
    /// (new − base) / base × 100; `None` if either is missing or base is 0.
    pub percent: Option<f64>,
    /// `percent` formatted: "+12.5%", "-3.0%", "0.0%", "n/a" or "–".
    pub percent_text: String,
    /// `None` when either side has no value.
    pub judgement: Option<Judgement>,
    /// The noise the change was held against, in the metric's unit.
    pub noise: Option<f64>,
}

impl ChangeTable {
    /// One run per side.
    pub fn new(base: &RunResult, new: &[RunResult]) -> ChangeTable {
        let new: Vec<Vec<RunResult>> = new.iter().map(|run| vec![run.clone()]).collect();
        ChangeTable::of_repeats(std::slice::from_ref(base), &new)
    }

    /// Each side as its repeats (at least one run each); labels come from each
    /// side's first run.
    pub fn of_repeats(base: &[RunResult], new: &[Vec<RunResult>]) -> ChangeTable {
        let firsts: Vec<RunResult> =
            base.iter().take(1).chain(new.iter().filter_map(|repeats| repeats.first())).cloned().collect();
        let mut labels = run_labels(&firsts).into_iter();
        let base_label = labels.next().unwrap_or_default();
        let new_labels: Vec<String> = labels.collect();
        let mut rows: Vec<ChangeRow> = metrics().iter().filter_map(|metric| change_row(metric, base, new)).collect();
        rows.sort_by(|a, b| row_order(a).total_cmp_key(&row_order(b)));
        let repeats = std::iter::once(base.len()).chain(new.iter().map(Vec::len)).collect();
        ChangeTable { base_label, new_labels, repeats, rows }
    }

    /// Whether the noise was measured from repeats (else the fixed default).
    pub fn noise_from_repeats(&self) -> bool {
        self.repeats.iter().any(|&n| n >= 2)
    }

    /// One sentence saying how noise was judged.
    pub fn noise_rule(&self) -> String {
        if self.noise_from_repeats() {
            let counts: Vec<String> = self.repeats.iter().map(ToString::to_string).collect();
            format!(
                "Noise: the larger spread (max - min) between the repeats of either side ({} repeats); \
                 a change no larger is within noise.",
                counts.join(" / ")
            )
        } else {
            format!(
                "Noise: no repeats, so a change within ±{:.0}% of the base is called within noise \
                 (a default, not a measurement; `corelog run --repeat N` measures it).",
                NOISE_WITHOUT_REPEATS * 100.0
            )
        }
    }

    /// The table as aligned plain text, for the terminal. Ends with a newline.
    pub fn to_text(&self) -> String {
        let mut header = vec!["metric".to_string(), "unit".to_string(), format!("base: {}", self.base_label)];
        for label in &self.new_labels {
            header.push(label.clone());
            header.push("change".to_string());
            header.push("verdict".to_string());
        }
        let mut rows: Vec<Vec<String>> = vec![header];
        for row in &self.rows {
            let mut cells = vec![row.metric.clone(), row.unit.to_string(), row.base_text.clone()];
            for change in &row.changes {
                cells.push(change.value_text.clone());
                cells.push(change.percent_text.clone());
                cells.push(change.judgement.map_or("–", Judgement::as_str).to_string());
            }
            rows.push(cells);
        }
        let mut text = aligned(&rows);
        text.push_str(&self.noise_rule());
        text.push('\n');
        text
    }
}

/// `rows` as columns padded to their widest cell, a rule under the first row.
/// Metric and unit read left to right; numbers line up on the right.
fn aligned(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for (row_index, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            let pad = widths[c].saturating_sub(cell.chars().count());
            if c > 0 {
                line.push_str("  ");
            }
            if c < 2 {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
        if row_index == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
            text.push_str(&"-".repeat(total));
            text.push('\n');
        }
    }
    text
}

/// One metric's row; `None` when no side has a value.
fn change_row(metric: &Metric, base: &[RunResult], new: &[Vec<RunResult>]) -> Option<ChangeRow> {
    let base_side = Side::of(metric, base);
    let changes: Vec<Change> = new
        .iter()
        .map(|repeats| {
            let side = Side::of(metric, repeats);
            let percent = percent_change(base_side.value, side.value);
            let (judgement, noise) = judge(metric.better, &base_side, &side);
            Change {
                value: side.value,
                value_text: metric.format(side.value),
                percent,
                percent_text: format_percent(base_side.value, side.value, percent),
                judgement,
                noise,
            }
        })
        .collect();
    if base_side.value.is_none() && changes.iter().all(|c| c.value.is_none()) {
        return None;
    }
    Some(ChangeRow {
        metric: metric.name.clone(),
        unit: metric.unit,
        better: metric.better,
        base: base_side.value,
        base_text: metric.format(base_side.value),
        changes,
    })
}

/// One side's value of a metric: the median of its repeats' values, and their
/// spread when there are two or more.
struct Side {
    value: Option<f64>,
    spread: Option<f64>,
}

impl Side {
    fn of(metric: &Metric, repeats: &[RunResult]) -> Side {
        let mut values: Vec<f64> = repeats.iter().filter_map(|run| metric.value(run)).collect();
        values.sort_by(f64::total_cmp);
        let value = match values.len() {
            0 => None,
            n if !n.is_multiple_of(2) => Some(values[n / 2]),
            n => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
        };
        let spread = (values.len() >= 2).then(|| values[values.len() - 1] - values[0]);
        Side { value, spread }
    }
}

/// Better, worse or within noise, and the noise used (see the module's doc).
fn judge(better: Better, base: &Side, new: &Side) -> (Option<Judgement>, Option<f64>) {
    let (Some(base_value), Some(new_value)) = (base.value, new.value) else { return (None, None) };
    let noise = match (base.spread, new.spread) {
        (None, None) => base_value.abs() * NOISE_WITHOUT_REPEATS,
        (a, b) => a.unwrap_or(0.0).max(b.unwrap_or(0.0)),
    };
    let difference = new_value - base_value;
    let judgement = if difference.abs() <= noise {
        Judgement::WithinNoise
    } else if (difference > 0.0) == (better == Better::Higher) {
        Judgement::Better
    } else {
        Judgement::Worse
    };
    (Some(judgement), Some(noise))
}

/// A row's place: its worst judgement (unjudged last), then, for regressions,
/// the largest relative change first (a change from 0 is the largest).
struct RowOrder {
    rank: u8,
    size: f64,
}

impl RowOrder {
    fn total_cmp_key(&self, other: &RowOrder) -> std::cmp::Ordering {
        self.rank.cmp(&other.rank).then(other.size.total_cmp(&self.size))
    }
}

fn row_order(row: &ChangeRow) -> RowOrder {
    let judgements = row.changes.iter().filter_map(|c| c.judgement);
    let rank = match judgements.min() {
        Some(Judgement::Worse) => 0,
        Some(Judgement::WithinNoise) => 1,
        Some(Judgement::Better) => 2,
        None => 3,
    };
    let size = if rank == 0 {
        row.changes
            .iter()
            .filter(|c| c.judgement == Some(Judgement::Worse))
            .map(|c| c.percent.map_or(f64::INFINITY, f64::abs))
            .fold(0.0, f64::max)
    } else {
        0.0
    };
    RowOrder { rank, size }
}

/// (new − base) / base × 100, if both exist and base is not 0.
pub fn percent_change(base: Option<f64>, new: Option<f64>) -> Option<f64> {
    let (base, new) = (base?, new?);
    (base != 0.0).then(|| (new - base) / base.abs() * 100.0)
}

fn format_percent(base: Option<f64>, new: Option<f64>, percent: Option<f64>) -> String {
    match (base, new, percent) {
        (_, _, Some(percent)) => {
            let text = format!("{percent:+.1}%");
            if text == "+0.0%" || text == "-0.0%" {
                "0.0%".to_string()
            } else {
                text
            }
        }
        (Some(base), Some(new), None) if base == new => "0.0%".to_string(),
        (Some(_), Some(_), None) => "n/a".to_string(),
        _ => "–".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percents() {
        let f = |b: Option<f64>, n: Option<f64>| format_percent(b, n, percent_change(b, n));
        assert_eq!(f(Some(100.0), Some(112.5)), "+12.5%");
        assert_eq!(f(Some(100.0), Some(97.0)), "-3.0%");
        assert_eq!(f(Some(100.0), Some(100.0)), "0.0%");
        assert_eq!(f(Some(0.0), Some(0.0)), "0.0%");
        assert_eq!(f(Some(0.0), Some(3.0)), "n/a");
        assert_eq!(f(None, Some(3.0)), "–");
    }

    fn side(values: &[f64]) -> Side {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let value = sorted.get(sorted.len() / 2).copied();
        let spread = (values.len() >= 2).then(|| sorted[sorted.len() - 1] - sorted[0]);
        Side { value, spread }
    }

    #[test]
    fn the_direction_that_is_better_depends_on_the_metric_and_small_changes_are_noise_without_repeats() {
        let judged = |better, base: f64, new: f64| judge(better, &side(&[base]), &side(&[new])).0;
        assert_eq!(judged(Better::Higher, 1000.0, 1200.0), Some(Judgement::Better));
        assert_eq!(judged(Better::Lower, 10.0, 12.0), Some(Judgement::Worse));
        assert_eq!(judged(Better::Lower, 10.0, 8.0), Some(Judgement::Better));
        assert_eq!(judged(Better::Higher, 1000.0, 800.0), Some(Judgement::Worse));
        // ±5% of the base, either way.
        assert_eq!(judged(Better::Higher, 1000.0, 1049.0), Some(Judgement::WithinNoise));
        assert_eq!(judged(Better::Lower, 10.0, 10.4), Some(Judgement::WithinNoise));
        // A count that leaves 0 is a change, one that stays there is not.
        assert_eq!(judged(Better::Lower, 0.0, 3.0), Some(Judgement::Worse));
        assert_eq!(judged(Better::Lower, 0.0, 0.0), Some(Judgement::WithinNoise));
        assert_eq!(judge(Better::Lower, &side(&[]), &side(&[1.0])).0, None);
    }

    #[test]
    fn with_repeats_the_noise_is_the_larger_spread_of_either_side() {
        // Base repeats 90..110 (spread 20): a new median 15 higher is noise,
        // 25 higher is not, although both are more than 5%.
        let base = side(&[90.0, 100.0, 110.0]);
        assert_eq!(judge(Better::Lower, &base, &side(&[115.0])), (Some(Judgement::WithinNoise), Some(20.0)));
        assert_eq!(judge(Better::Lower, &base, &side(&[125.0])), (Some(Judgement::Worse), Some(20.0)));
        // Tight repeats on both sides: a 2% change is real.
        let tight = side(&[100.0, 100.5, 100.2]);
        assert_eq!(judge(Better::Higher, &tight, &side(&[102.0, 102.2, 102.4])).0, Some(Judgement::Better));
    }
}
