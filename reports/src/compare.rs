//! The change table of `corelog compare`: per summary metric, the base run's value,
//! each new run's value and its change in percent.
//!
//! The table does not judge: a +10% is better for a rate and worse for a latency,
//! and the reader knows which. A metric no run has a value for is left out; a
//! change against a base of 0 is "n/a".

use crate::metrics::{metrics, run_labels};
use crate::model::RunResult;

/// The comparison of one base run with one or more new runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangeTable {
    pub base_label: String,
    pub new_labels: Vec<String>,
    pub rows: Vec<ChangeRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChangeRow {
    pub metric: String,
    pub unit: &'static str,
    pub base: Option<f64>,
    /// `base` formatted for display.
    pub base_text: String,
    /// One per new run.
    pub changes: Vec<Change>,
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
}

impl ChangeTable {
    pub fn new(base: &RunResult, new: &[RunResult]) -> ChangeTable {
        let all: Vec<RunResult> = std::iter::once(base).chain(new).cloned().collect();
        let mut labels = run_labels(&all).into_iter();
        let base_label = labels.next().unwrap_or_default();
        let new_labels: Vec<String> = labels.collect();
        let rows = metrics()
            .into_iter()
            .filter_map(|metric| {
                let base_value = metric.value(base);
                let changes: Vec<Change> = new
                    .iter()
                    .map(|run| {
                        let value = metric.value(run);
                        let percent = percent_change(base_value, value);
                        Change {
                            value,
                            value_text: metric.format(value),
                            percent,
                            percent_text: format_percent(base_value, value, percent),
                        }
                    })
                    .collect();
                if base_value.is_none() && changes.iter().all(|c| c.value.is_none()) {
                    return None;
                }
                Some(ChangeRow {
                    metric: metric.name.clone(),
                    unit: metric.unit,
                    base: base_value,
                    base_text: metric.format(base_value),
                    changes,
                })
            })
            .collect();
        ChangeTable { base_label, new_labels, rows }
    }

    /// The table as aligned plain text, for the terminal. Ends with a newline.
    pub fn to_text(&self) -> String {
        let mut header = vec!["metric".to_string(), "unit".to_string(), format!("base: {}", self.base_label)];
        for label in &self.new_labels {
            header.push(label.clone());
            header.push("change".to_string());
        }
        let mut rows: Vec<Vec<String>> = vec![header];
        for row in &self.rows {
            let mut cells = vec![row.metric.clone(), row.unit.to_string(), row.base_text.clone()];
            for change in &row.changes {
                cells.push(change.value_text.clone());
                cells.push(change.percent_text.clone());
            }
            rows.push(cells);
        }
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
                // Metric and unit read left to right; numbers line up on the right.
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
}
