//! What a run shows while it goes (the live progress line) and keeps for the end
//! (HdrHistogram interval logs).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hdrhistogram::Histogram;

use super::WINDOW;
use crate::run::metrics::Window;

/// HdrHistogram interval logs (one file per latency, HdrHistogram's log format),
/// kept in memory during the run and written at the end.
pub(super) struct HistogramLogs {
    dir: PathBuf,
    windows: Vec<(Duration, [Histogram<u64>; 4])>,
}

impl HistogramLogs {
    const NAMES: [&'static str; 4] =
        ["publish-latency", "publish-corrected-latency", "publish-delay-latency", "end-to-end-latency"];

    pub(super) fn create(dir: &Path) -> anyhow::Result<HistogramLogs> {
        Ok(HistogramLogs { dir: dir.to_path_buf(), windows: Vec::new() })
    }

    pub(super) fn write(&mut self, window: &Window, elapsed: Duration) -> anyhow::Result<()> {
        let histograms = [
            window.publish_service_us.clone(),
            window.publish_corrected_us.clone(),
            window.publish_delay_us.clone(),
            window.end_to_end_us.clone(),
        ];
        self.windows.push((elapsed.saturating_sub(WINDOW), histograms));
        Ok(())
    }

    pub(super) fn finish(&self) -> anyhow::Result<()> {
        use hdrhistogram::serialization::interval_log::{IntervalLogWriterBuilder, Tag};
        use std::io::Write;
        let mut serializer = hdrhistogram::serialization::V2Serializer::new();
        for (index, name) in Self::NAMES.iter().enumerate() {
            let path = self.dir.join(format!("{name}.hlog"));
            let file = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            let mut file = std::io::BufWriter::new(file);
            {
                let mut writer = IntervalLogWriterBuilder::new()
                    .add_comment(&format!("corelog {name}, microseconds"))
                    .begin_log_with(&mut file, &mut serializer)
                    .with_context(|| format!("writing {}", path.display()))?;
                let tag = Tag::new(name);
                for (start, histograms) in &self.windows {
                    writer
                        .write_histogram(&histograms[index], *start, WINDOW, tag)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))?;
                }
            }
            file.flush().with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// The live progress line (stderr; hidden when stderr is not a terminal).
pub(super) struct Progress {
    bar: indicatif::ProgressBar,
}

impl Progress {
    pub(super) fn new(total: Duration) -> Progress {
        let bar =
            indicatif::ProgressBar::with_draw_target(Some(total.as_secs()), indicatif::ProgressDrawTarget::stderr());
        bar.set_style(
            indicatif::ProgressStyle::with_template("  [{elapsed_precise}/{duration_precise}] {bar:30} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        Progress { bar }
    }

    pub(super) fn update(&self, elapsed: Duration, window: &Window, seconds: f64, backlog: i64) {
        self.bar.set_position(elapsed.as_secs());
        self.bar.set_message(format!(
            "publish {:.0}/s, consume {:.0}/s, backlog {backlog}",
            window.counts.acknowledged as f64 / seconds.max(1e-6),
            window.counts.consumed as f64 / seconds.max(1e-6)
        ));
    }

    pub(super) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
