//! Per-table progress on stderr: an indicatif bar (rows/s, ETA) on a terminal, otherwise a plain
//! line every few seconds so logs of non-interactive runs show progress too.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

const PLAIN_INTERVAL: Duration = Duration::from_secs(2);

pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    started_at: u64,
    started: Instant,
    last_line: Instant,
    /// Who does the work, e.g. "3 workers in 2 processes" (copy's aggregated progress).
    note: String,
}

impl Progress {
    /// `total`: estimated rows of the table; `done`: rows already copied (resumed run).
    pub fn new(label: &str, total: u64, done: u64) -> Progress {
        Progress::with_bars(label, total, done, None)
    }

    /// Like [`Progress::new`], one of several bars shown at once (tables copied side by side).
    pub fn in_group(label: &str, total: u64, done: u64, group: &MultiProgress) -> Progress {
        Progress::with_bars(label, total, done, Some(group))
    }

    fn with_bars(label: &str, total: u64, done: u64, group: Option<&MultiProgress>) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total.max(done)), ProgressDrawTarget::stderr());
            let bar = match group {
                Some(group) => group.add(bar),
                None => bar,
            };
            let style = ProgressStyle::with_template(
                "{prefix:>16} [{bar:30}] {human_pos}/{human_len} rows  {per_sec}  ETA {eta}  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(label.to_string());
            bar.set_position(done);
            bar.reset_eta();
            bar
        });
        let now = Instant::now();
        Progress {
            bar,
            label: label.to_string(),
            total,
            done,
            started_at: done,
            started: now,
            last_line: now,
            note: String::new(),
        }
    }

    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        self.show();
    }

    /// Sets the rows done so far and the estimated total (progress added up elsewhere, e.g. over
    /// every process of a copy run), with a note on who does the work.
    pub fn set(&mut self, done: u64, total: u64, note: &str) {
        self.done = done.max(self.started_at);
        self.total = total;
        if note != self.note {
            self.note = note.to_string();
            if let Some(bar) = &self.bar {
                bar.set_message(self.note.clone());
            }
        }
        if let Some(bar) = &self.bar {
            bar.set_length(total.max(self.done));
        }
        self.show();
    }

    fn show(&mut self) {
        if let Some(bar) = &self.bar {
            if self.done > bar.length().unwrap_or(0) {
                bar.set_length(self.done);
            }
            bar.set_position(self.done);
        } else if self.last_line.elapsed() >= PLAIN_INTERVAL {
            self.last_line = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = (self.done - self.started_at) as f64 / secs;
        let remaining = self.total.saturating_sub(self.done) as f64;
        let eta = if rate > 0.0 {
            format!("{:.0}s", remaining / rate)
        } else {
            "?".into()
        };
        let pct = if self.total > 0 {
            100.0 * self.done as f64 / self.total as f64
        } else {
            100.0
        };
        let note = if self.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.note)
        };
        format!(
            "{}: {}/{} rows ({pct:.1}%), {rate:.0} rows/s, ETA {eta}{note}",
            self.label, self.done, self.total
        )
    }

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
