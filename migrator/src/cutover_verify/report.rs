//! The checklist as text (one line per check) and as JSON.

use serde::Serialize;

use super::checks::{fmt_pct, Check, Status, Thresholds};

/// `migrator cutover-verify --format json`, schema `cutover-verify/v1` (see docs/migrator.md).
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    /// True only when every check passed.
    pub passed: bool,
    pub admin_url: String,
    /// Seconds between the two stats samples whose counter differences were used; `null`: counters
    /// since Envoy started.
    pub window_seconds: Option<f64>,
    pub thresholds: Thresholds,
    pub summary: Summary,
    pub checks: Vec<Check>,
    /// The full `verify` report when `--verify` was given.
    pub verify: Option<crate::verify::VerifyReport>,
}

#[derive(Debug, Serialize, Default)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub no_data: usize,
}

impl Report {
    pub fn new(
        admin_url: String,
        window_seconds: Option<f64>,
        thresholds: Thresholds,
        checks: Vec<Check>,
        verify: Option<crate::verify::VerifyReport>,
    ) -> Report {
        let mut summary = Summary::default();
        for c in &checks {
            match c.status {
                Status::Pass => summary.passed += 1,
                Status::Fail => summary.failed += 1,
                Status::NoData => summary.no_data += 1,
            }
        }
        // An empty checklist proves nothing.
        let passed = !checks.is_empty() && summary.passed == checks.len();
        Report {
            schema: "cutover-verify/v1",
            passed,
            admin_url,
            window_seconds,
            thresholds,
            summary,
            checks,
            verify,
        }
    }

    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let window = match self.window_seconds {
            Some(w) => format!("counters over the last {w} s"),
            None => "counters since Envoy started".to_string(),
        };
        out.push_str(&format!(
            "cutover checklist — Envoy admin {} ({window})\n",
            self.admin_url
        ));
        let label_width = self
            .checks
            .iter()
            .map(|c| label(c).chars().count())
            .max()
            .unwrap_or(0);
        for c in &self.checks {
            let mark = if c.status == Status::Pass {
                "✅"
            } else {
                "❌"
            };
            let figure = match (c.status, c.value) {
                (Status::NoData, _) | (_, None) => "no data".to_string(),
                (_, Some(v)) => fmt_value(v, c.unit),
            };
            let l = label(c);
            let pad = " ".repeat(label_width - l.chars().count());
            out.push_str(&format!(
                "{mark} {l}{pad}  {figure:>10}  (threshold {})  {}\n",
                c.threshold, c.detail
            ));
        }
        if self.checks.is_empty() {
            out.push_str("❌ no checks: no service found (pass --filter-config or --service NAME=NEW_CLUSTER)\n");
        }
        let s = &self.summary;
        out.push_str(&format!(
            "{}: {} passed, {} failed, {} without data\n",
            if self.passed { "PASS" } else { "FAIL" },
            s.passed,
            s.failed,
            s.no_data
        ));
        out
    }
}

fn label(c: &Check) -> String {
    match &c.service {
        Some(s) => format!("{s}: {}", c.kind.label()),
        None => c.kind.label().to_string(),
    }
}

fn fmt_value(v: f64, unit: &str) -> String {
    match unit {
        "%" => fmt_pct(v),
        "ms" => format!("{v:.1} ms"),
        "" => format!("{v}"),
        other => format!("{v} {other}"),
    }
}
