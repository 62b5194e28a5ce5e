//! The checklist: each check turns observed figures into pass / fail / no data.

use cutover_filter::metrics::{metric_name, Counter, Gauge};
use serde::Serialize;

use super::services::ServiceSpec;
use super::stats::Observed;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Not enough data to judge; never counts as passing.
    NoData,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable identifier, e.g. `chat.new_5xx_rate`.
    pub id: String,
    /// `null` for checks that are not about one service (data).
    pub service: Option<String>,
    pub kind: CheckKind,
    pub status: Status,
    /// The figure compared with the threshold (unit in `unit`); `null` without data.
    pub value: Option<f64>,
    /// How many requests (or samples, or compared responses) the figure is computed from;
    /// `null` for checks that are not a share or a quantile.
    pub samples: Option<f64>,
    pub unit: &'static str,
    /// Human-readable threshold, e.g. `< 1%`.
    pub threshold: String,
    /// The figures behind the value, or why there is no data.
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    Split,
    #[serde(rename = "new_5xx_rate")]
    New5xxRate,
    NewLatencyP95,
    NewLatencyP99,
    DualWriteFailureRate,
    DualWriteMismatchRate,
    CompareEqualRate,
    Health,
    Data,
}

impl CheckKind {
    pub fn label(self) -> &'static str {
        match self {
            CheckKind::Split => "share routed to new",
            CheckKind::New5xxRate => "new cluster 5xx rate",
            CheckKind::NewLatencyP95 => "new cluster p95 latency",
            CheckKind::NewLatencyP99 => "new cluster p99 latency",
            CheckKind::DualWriteFailureRate => "dual-write failure rate",
            CheckKind::DualWriteMismatchRate => "dual-write mismatch rate",
            CheckKind::CompareEqualRate => "read comparison equal rate",
            CheckKind::Health => "health",
            CheckKind::Data => "data verify",
        }
    }

    pub fn id_suffix(self) -> &'static str {
        match self {
            CheckKind::Split => "split",
            CheckKind::New5xxRate => "new_5xx_rate",
            CheckKind::NewLatencyP95 => "new_p95_ms",
            CheckKind::NewLatencyP99 => "new_p99_ms",
            CheckKind::DualWriteFailureRate => "dual_write_failure_rate",
            CheckKind::DualWriteMismatchRate => "dual_write_mismatch_rate",
            CheckKind::CompareEqualRate => "compare_equal_rate",
            CheckKind::Health => "health",
            CheckKind::Data => "data",
        }
    }
}

/// Limits; rates and the split tolerance in percent (points).
#[derive(Debug, Clone, Serialize)]
pub struct Thresholds {
    pub max_error_rate_pct: f64,
    pub max_p95_ms: f64,
    pub max_p99_ms: f64,
    pub split_tolerance_pct: f64,
    pub min_requests: u64,
    pub max_dual_write_failure_pct: f64,
    pub max_mismatch_pct: f64,
    pub min_compare_equal_pct: f64,
}

/// The defaults of the gate thresholds, shared by `cutover-verify` and `rollout run`.
pub mod defaults {
    pub const MAX_ERROR_RATE_PCT: f64 = 1.0;
    pub const MAX_P95_MS: f64 = 500.0;
    pub const MAX_P99_MS: f64 = 1000.0;
    pub const SPLIT_TOLERANCE_PCT: f64 = 5.0;
    pub const MIN_REQUESTS: u64 = 50;
    pub const MAX_DUAL_WRITE_FAILURE_PCT: f64 = 1.0;
    pub const MAX_MISMATCH_PCT: f64 = 1.0;
    pub const MIN_COMPARE_EQUAL_PCT: f64 = 99.0;
}

/// The threshold options of `cutover-verify` and `rollout run`.
#[derive(Debug, Clone, clap::Args)]
pub struct ThresholdArgs {
    /// Maximum 5xx rate of the new cluster, in percent.
    #[arg(long, default_value_t = defaults::MAX_ERROR_RATE_PCT, value_name = "PERCENT")]
    pub max_error_rate: f64,
    /// Maximum p95 upstream latency of the new cluster, in milliseconds.
    #[arg(long, default_value_t = defaults::MAX_P95_MS, value_name = "MS")]
    pub max_p95_ms: f64,
    /// Maximum p99 upstream latency of the new cluster, in milliseconds.
    #[arg(long, default_value_t = defaults::MAX_P99_MS, value_name = "MS")]
    pub max_p99_ms: f64,
    /// Allowed distance between the observed share routed to new and the configured percentage,
    /// in percentage points (none at 0 % and 100 %).
    #[arg(long, default_value_t = defaults::SPLIT_TOLERANCE_PCT, value_name = "POINTS")]
    pub split_tolerance: f64,
    /// Requests a rate or latency check needs before it is judged; with fewer it reports "no data".
    #[arg(long, default_value_t = defaults::MIN_REQUESTS, value_name = "N")]
    pub min_requests: u64,
    /// Maximum dual-write (shadow request) failure rate, in percent.
    #[arg(long, default_value_t = defaults::MAX_DUAL_WRITE_FAILURE_PCT, value_name = "PERCENT")]
    pub max_dual_write_failure_rate: f64,
    /// Maximum dual-write mismatch rate, in percent of finished shadow requests.
    #[arg(long, default_value_t = defaults::MAX_MISMATCH_PCT, value_name = "PERCENT")]
    pub max_mismatch_rate: f64,
    /// Minimum share of compared responses (mirrored reads, and writes with `compare.writes`)
    /// that new and legacy answered alike (the filter's compare_equal of compared), in percent.
    #[arg(long, default_value_t = defaults::MIN_COMPARE_EQUAL_PCT, value_name = "PERCENT")]
    pub min_compare_equal_rate: f64,
}

impl ThresholdArgs {
    /// The validated thresholds; the message names the option.
    pub fn thresholds(&self) -> Result<Thresholds, String> {
        Thresholds {
            max_error_rate_pct: self.max_error_rate,
            max_p95_ms: self.max_p95_ms,
            max_p99_ms: self.max_p99_ms,
            split_tolerance_pct: self.split_tolerance,
            min_requests: self.min_requests,
            max_dual_write_failure_pct: self.max_dual_write_failure_rate,
            max_mismatch_pct: self.max_mismatch_rate,
            min_compare_equal_pct: self.min_compare_equal_rate,
        }
        .validated()
    }
}

impl Thresholds {
    /// Checks the ranges; the message names the option.
    pub fn validated(self) -> Result<Thresholds, String> {
        for (name, v) in [
            ("max-error-rate", self.max_error_rate_pct),
            ("split-tolerance", self.split_tolerance_pct),
            (
                "max-dual-write-failure-rate",
                self.max_dual_write_failure_pct,
            ),
            ("max-mismatch-rate", self.max_mismatch_pct),
            ("min-compare-equal-rate", self.min_compare_equal_pct),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return Err(format!("--{name} must be between 0 and 100, got {v}"));
            }
        }
        for (name, v) in [
            ("max-p95-ms", self.max_p95_ms),
            ("max-p99-ms", self.max_p99_ms),
        ] {
            if v.is_nan() || v <= 0.0 {
                return Err(format!("--{name} must be positive, got {v}"));
            }
        }
        Ok(self)
    }
}

/// `expected`: a percentage given on the command line for this service, which wins over the gauge.
pub fn service_checks(
    spec: &ServiceSpec,
    observed: &Observed,
    limits: &Thresholds,
    expected: Option<f64>,
) -> Vec<Check> {
    let mut checks = vec![
        split_check(spec, observed, limits, expected),
        error_rate_check(spec, observed, limits),
        latency_check(spec, observed, limits, CheckKind::NewLatencyP95),
        latency_check(spec, observed, limits, CheckKind::NewLatencyP99),
    ];
    if dual_write_active(spec, observed) {
        let shadows = ShadowOutcomes::read(spec, observed);
        checks.push(dual_write_failure_check(spec, observed, limits, shadows));
        checks.push(mismatch_check(spec, observed, limits, shadows));
    }
    if compare_active(spec, observed) {
        checks.push(compare_check(spec, observed, limits));
    }
    checks
}

/// The filter compares this service's responses: so its configuration says, or (configuration
/// unknown) it has compared some since Envoy started.
fn compare_active(spec: &ServiceSpec, observed: &Observed) -> bool {
    spec.compares().unwrap_or_else(|| {
        observed
            .gauge(&filter_stat(&spec.name, Counter::CompareTotal.suffix()))
            .unwrap_or(0.0)
            > 0.0
    })
}

/// The comparisons that reached a verdict (equal, or a status, body or header mismatch); the
/// skipped ones (body too large, shadow failed, …) compared nothing.
const COMPARED: [Counter; 4] = [
    Counter::CompareEqual,
    Counter::CompareStatusMismatch,
    Counter::CompareBodyMismatch,
    Counter::CompareHeaderMismatch,
];

/// "Read comparison equal rate ≥ threshold": `compare_equal` of the compared responses in the
/// window; fewer than `--min-requests` compared (none included) is no data.
fn compare_check(spec: &ServiceSpec, observed: &Observed, limits: &Thresholds) -> Check {
    let mut c = check(
        spec,
        CheckKind::CompareEqualRate,
        "%",
        format!(">= {}", fmt_pct(limits.min_compare_equal_pct)),
    );
    let count = |counter: Counter| {
        observed
            .counter(&filter_stat(&spec.name, counter.suffix()))
            .unwrap_or(0.0)
    };
    let [equal, status, body, headers] = COMPARED.map(count);
    let compared = equal + status + body + headers;
    let skipped = count(Counter::CompareTotal) - compared;
    if compared < limits.min_requests as f64 || compared == 0.0 {
        c.detail = format!(
            "{compared} compared responses, need at least {} ({} skipped)",
            limits.min_requests,
            skipped.max(0.0)
        );
        return c;
    }
    let rate = pct(equal, compared);
    c.value = Some(rate);
    c.samples = Some(compared);
    c.status = if rate >= limits.min_compare_equal_pct {
        Status::Pass
    } else {
        Status::Fail
    };
    c.detail = format!(
        "{equal} equal of {compared} compared ({status} status, {body} body, {headers} header mismatches; {} skipped)",
        skipped.max(0.0)
    );
    c
}

fn check(spec: &ServiceSpec, kind: CheckKind, unit: &'static str, threshold: String) -> Check {
    Check {
        id: format!("{}.{}", spec.name, kind.id_suffix()),
        service: Some(spec.name.clone()),
        kind,
        status: Status::NoData,
        value: None,
        samples: None,
        unit,
        threshold,
        detail: String::new(),
    }
}

/// `/stats` name of the filter metric `name` (a suffix of the filter's `metrics` module).
fn filter_stat(service: &str, name: &str) -> String {
    format!("wasmcustom.{}", metric_name(service, name))
}

fn cluster_stat(cluster: &str, name: &str) -> String {
    format!("cluster.{cluster}.{name}")
}

fn pct(part: f64, whole: f64) -> f64 {
    part / whole * 100.0
}

/// A health check from one GET: HTTP 200 passes; `detail` is what was asked and answered (or
/// why there was no answer — a service that does not answer is a failed check, not a tool error).
pub fn health_check(
    id: String,
    service: &str,
    answer: Result<&super::http::Response, &str>,
    describe: impl FnOnce(&super::http::Response) -> String,
) -> Check {
    let mut check = Check {
        id,
        service: Some(service.to_string()),
        kind: CheckKind::Health,
        status: Status::Fail,
        value: None,
        samples: None,
        unit: "",
        threshold: "HTTP 200".to_string(),
        detail: String::new(),
    };
    match answer {
        Ok(response) => {
            check.value = Some(f64::from(response.status));
            if response.status == 200 {
                check.status = Status::Pass;
            }
            check.detail = describe(response);
        }
        // A service that does not answer is a failed check, not a tool error.
        Err(e) => check.detail = crate::redact::scrub(e),
    }
    check
}

/// Formats a percentage without noise: `10%`, `9.87%`.
pub fn fmt_pct(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

fn fmt_ms(v: f64) -> String {
    let s = format!("{v:.1}");
    format!("{} ms", s.trim_end_matches('0').trim_end_matches('.'))
}

/// The percentage the filter is configured to send to new, and where that figure came from.
pub fn configured_percentage(
    spec: &ServiceSpec,
    observed: &Observed,
    expected: Option<f64>,
) -> Option<(f64, &'static str)> {
    if let Some(p) = expected {
        return Some((p, "--expect-percentage"));
    }
    if let Some(p) = observed.gauge(&filter_stat(&spec.name, Gauge::NewPercentage.suffix())) {
        let use_legacy = observed
            .gauge(&filter_stat(&spec.name, Gauge::UseLegacy.suffix()))
            .unwrap_or(0.0)
            > 0.0;
        return Some((if use_legacy { 0.0 } else { p }, "Envoy gauge"));
    }
    spec.file_percentage
        .map(|p| (p, "filter configuration file"))
}

/// Allowed distance between observed and configured share, in points: the tolerance, widened to
/// three standard deviations of a binomial sample of `total` requests when that is larger, so
/// that a small sample is not failed for noise (a skew beyond the noise still fails).
pub fn split_allowance(configured_pct: f64, total: f64, tolerance_pct: f64) -> f64 {
    let p = (configured_pct / 100.0).clamp(0.0, 1.0);
    let three_sigma = 3.0 * 100.0 * (p * (1.0 - p) / total).sqrt();
    tolerance_pct.max(three_sigma)
}

fn split_check(
    spec: &ServiceSpec,
    observed: &Observed,
    limits: &Thresholds,
    expected: Option<f64>,
) -> Check {
    let configured = configured_percentage(spec, observed, expected);
    let threshold = match configured {
        Some((p, _)) => format!("{} ± {} points", fmt_pct(p), limits.split_tolerance_pct),
        None => format!("configured ± {} points", limits.split_tolerance_pct),
    };
    let mut c = check(spec, CheckKind::Split, "%", threshold);
    let new = observed.counter(&filter_stat(&spec.name, Counter::RoutedNew.suffix()));
    let legacy = observed.counter(&filter_stat(&spec.name, Counter::RoutedLegacy.suffix()));
    let Some((configured, source)) = configured else {
        c.detail = "configured percentage unknown (no Envoy gauge, no --filter-config, no --expect-percentage)".into();
        return c;
    };
    if new.is_none() && legacy.is_none() {
        c.detail = format!(
            "Envoy has no routing counters for service {:?} (filter not loaded or no request yet)",
            spec.name
        );
        return c;
    }
    let (new, legacy) = (new.unwrap_or(0.0), legacy.unwrap_or(0.0));
    let total = new + legacy;
    if total < limits.min_requests as f64 || total == 0.0 {
        c.detail = format!(
            "{total} routed requests, need at least {}",
            limits.min_requests
        );
        return c;
    }
    let share = pct(new, total);
    // At 0 % and 100 % the filter's decision is exact: every request goes to one side.
    let exact = configured <= 0.0 || configured >= 100.0;
    let allowed = if exact {
        0.0
    } else {
        split_allowance(configured, total, limits.split_tolerance_pct)
    };
    if exact {
        c.threshold = format!("exactly {}", fmt_pct(configured));
    } else if allowed > limits.split_tolerance_pct {
        let shown = format!("{allowed:.1}");
        c.threshold = format!(
            "{} ± {} points (3σ of {total} requests)",
            fmt_pct(configured),
            shown
        );
    }
    c.value = Some(share);
    c.samples = Some(total);
    c.status = if (share - configured).abs() <= allowed {
        Status::Pass
    } else {
        Status::Fail
    };
    c.detail = format!(
        "{new} of {total} requests to new; configured {} ({source})",
        fmt_pct(configured)
    );
    c
}

fn error_rate_check(spec: &ServiceSpec, observed: &Observed, limits: &Thresholds) -> Check {
    let mut c = check(
        spec,
        CheckKind::New5xxRate,
        "%",
        format!("< {}", fmt_pct(limits.max_error_rate_pct)),
    );
    let Some(completed) =
        observed.counter(&cluster_stat(&spec.new_cluster, "upstream_rq_completed"))
    else {
        c.detail = format!("Envoy has no cluster {:?}", spec.new_cluster);
        return c;
    };
    // Envoy creates the per-class counters on the first response of that class.
    let errors = observed
        .counter(&cluster_stat(&spec.new_cluster, "upstream_rq_5xx"))
        .unwrap_or(0.0);
    rate_check(
        c,
        (errors, completed),
        limits.max_error_rate_pct,
        limits.min_requests,
        &format!("completed requests on {}", spec.new_cluster),
        format!(
            "{errors} 5xx of {completed} completed on {}",
            spec.new_cluster
        ),
    )
}

fn latency_check(
    spec: &ServiceSpec,
    observed: &Observed,
    limits: &Thresholds,
    kind: CheckKind,
) -> Check {
    let (quantile, max) = match kind {
        CheckKind::NewLatencyP95 => (95.0, limits.max_p95_ms),
        _ => (99.0, limits.max_p99_ms),
    };
    let mut c = check(spec, kind, "ms", format!("< {}", fmt_ms(max)));
    let completed = observed
        .counter(&cluster_stat(&spec.new_cluster, "upstream_rq_completed"))
        .unwrap_or(0.0);
    if completed < limits.min_requests as f64 || completed == 0.0 {
        c.detail = format!(
            "{completed} completed requests on {}, need at least {}",
            spec.new_cluster, limits.min_requests
        );
        return c;
    }
    let histogram = cluster_stat(&spec.new_cluster, "upstream_rq_time");
    let span = if observed.baseline.is_some() {
        "over the window"
    } else {
        "since Envoy started"
    };
    let (value, how) = match observed.latency(&histogram, quantile) {
        Some(figure) if figure.samples >= limits.min_requests as f64 => match figure.value {
            Some(v) => (
                {
                    c.samples = Some(figure.samples);
                    v
                },
                format!(
                    "from upstream_rq_time bucket counts {span}, {} samples",
                    figure.samples
                ),
            ),
            None => (f64::NAN, String::new()),
        },
        Some(figure) => {
            c.detail = format!(
                "{} upstream_rq_time samples on {} {span}, need at least {} (Envoy merges histograms at each stats flush, 5 s by default)",
                figure.samples, spec.new_cluster, limits.min_requests
            );
            return c;
        }
        // An Envoy that reported quantiles instead of buckets: its cumulative quantile.
        None => match observed.quantile(&histogram, quantile) {
            Some(v) => (v, "Envoy's quantile since Envoy started".to_string()),
            None => (f64::NAN, String::new()),
        },
    };
    if value.is_nan() {
        c.detail = format!(
            "Envoy has no upstream_rq_time histogram for {} yet (histograms are merged at each stats flush, 5 s by default)",
            spec.new_cluster
        );
        return c;
    }
    c.value = Some(value);
    c.status = if value < max {
        Status::Pass
    } else {
        Status::Fail
    };
    c.detail = format!(
        "p{quantile} of upstream_rq_time on {} {how}",
        spec.new_cluster
    );
    c
}

const SHADOW_FAILURES: [Counter; 5] = [
    Counter::ShadowFailed3xx,
    Counter::ShadowFailed4xx,
    Counter::ShadowFailed5xx,
    Counter::ShadowFailedReset,
    Counter::ShadowTimedOut,
];

fn dual_write_active(spec: &ServiceSpec, observed: &Observed) -> bool {
    match observed.gauge(&filter_stat(&spec.name, Gauge::DualWriteEnabled.suffix())) {
        Some(g) => g > 0.0,
        None => {
            spec.file_dual_write.unwrap_or(false)
                || observed
                    .counter(&filter_stat(&spec.name, Counter::ShadowSent.suffix()))
                    .unwrap_or(0.0)
                    > 0.0
        }
    }
}

fn dual_write_failure_check(
    spec: &ServiceSpec,
    observed: &Observed,
    limits: &Thresholds,
    ShadowOutcomes { failed, finished }: ShadowOutcomes,
) -> Check {
    let c = check(
        spec,
        CheckKind::DualWriteFailureRate,
        "%",
        format!("< {}", fmt_pct(limits.max_dual_write_failure_pct)),
    );
    let skipped = observed
        .counter(&filter_stat(
            &spec.name,
            Counter::ShadowSkippedBodyTooLarge.suffix(),
        ))
        .unwrap_or(0.0);
    rate_check(
        c,
        (failed, finished),
        limits.max_dual_write_failure_pct,
        limits.min_requests,
        "finished shadow requests",
        format!("{failed} failed of {finished} finished shadow requests ({skipped} skipped: body too large)"),
    )
}

/// The filter counts a mismatch when exactly one of primary and shadow answered 2xx; the rate is
/// over every shadow request that finished (succeeded or failed).
fn mismatch_check(
    spec: &ServiceSpec,
    observed: &Observed,
    limits: &Thresholds,
    ShadowOutcomes { finished, .. }: ShadowOutcomes,
) -> Check {
    let c = check(
        spec,
        CheckKind::DualWriteMismatchRate,
        "%",
        format!("< {}", fmt_pct(limits.max_mismatch_pct)),
    );
    let mismatched = observed
        .counter(&filter_stat(&spec.name, Counter::ShadowMismatch.suffix()))
        .unwrap_or(0.0);
    rate_check(
        c,
        (mismatched, finished),
        limits.max_mismatch_pct,
        limits.min_requests,
        "finished shadow requests",
        format!("{mismatched} primary/shadow status mismatches (one 2xx, the other not) of {finished} finished"),
    )
}

/// Shadow requests that finished (succeeded or failed) and those that failed, read once for both
/// dual-write checks.
#[derive(Debug, Clone, Copy)]
struct ShadowOutcomes {
    failed: f64,
    finished: f64,
}

impl ShadowOutcomes {
    fn read(spec: &ServiceSpec, observed: &Observed) -> ShadowOutcomes {
        let count = |name: &str| {
            observed
                .counter(&filter_stat(&spec.name, name))
                .unwrap_or(0.0)
        };
        let failed: f64 = SHADOW_FAILURES.iter().map(|c| count(c.suffix())).sum();
        ShadowOutcomes {
            failed,
            finished: count(Counter::ShadowSucceeded.suffix()) + failed,
        }
    }
}

/// Finishes a rate check: `part` of `whole` as a percentage, passing below `max_pct`. With fewer
/// than `min_requests` in `whole` it stays NoData and says how many `counted` there were.
fn rate_check(
    mut c: Check,
    (part, whole): (f64, f64),
    max_pct: f64,
    min_requests: u64,
    counted: &str,
    detail: String,
) -> Check {
    if whole < min_requests as f64 || whole == 0.0 {
        c.detail = format!("{whole} {counted}, need at least {min_requests}");
        return c;
    }
    let rate = pct(part, whole);
    c.value = Some(rate);
    c.samples = Some(whole);
    c.status = if rate < max_pct {
        Status::Pass
    } else {
        Status::Fail
    };
    c.detail = detail;
    c
}

#[cfg(test)]
mod tests {
    use super::super::stats::Snapshot;
    use super::*;

    fn limits() -> Thresholds {
        Thresholds {
            max_error_rate_pct: 1.0,
            max_p95_ms: 500.0,
            max_p99_ms: 1000.0,
            split_tolerance_pct: 5.0,
            min_requests: 50,
            max_dual_write_failure_pct: 1.0,
            max_mismatch_pct: 1.0,
            min_compare_equal_pct: 99.0,
        }
    }

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "chat".into(),
            new_cluster: "chat_new".into(),
            file_percentage: None,
            file_dual_write: None,
            config: None,
        }
    }

    fn observed(stats: &[(&str, f64)], p95: Option<f64>) -> Observed {
        let mut entries: Vec<String> = stats
            .iter()
            .map(|(n, v)| format!(r#"{{"name":"{n}","value":{v}}}"#))
            .collect();
        if let Some(p95) = p95 {
            entries.push(format!(
                r#"{{"histograms":{{"supported_quantiles":[95,99],"computed_quantiles":[{{"name":"cluster.chat_new.upstream_rq_time","values":[{{"cumulative":{p95},"interval":null}},{{"cumulative":{},"interval":null}}]}}]}}}}"#,
                p95 * 2.0
            ));
        }
        let json = format!(r#"{{"stats":[{}]}}"#, entries.join(","));
        Observed {
            latest: Snapshot::parse(&json).unwrap(),
            baseline: None,
        }
    }

    fn by_kind(checks: &[Check], kind: CheckKind) -> &Check {
        checks.iter().find(|c| c.kind == kind).unwrap()
    }

    #[test]
    fn healthy_figures_pass() {
        let o = observed(
            &[
                ("wasmcustom.cutover.chat.new_percentage", 10.0),
                ("wasmcustom.cutover.chat.routed_new", 98.0),
                ("wasmcustom.cutover.chat.routed_legacy", 902.0),
                ("cluster.chat_new.upstream_rq_completed", 98.0),
            ],
            Some(12.0),
        );
        let checks = service_checks(&spec(), &o, &limits(), None);
        assert_eq!(checks.len(), 4, "no dual-write checks when it is off");
        for c in &checks {
            assert_eq!(c.status, Status::Pass, "{c:?}");
        }
        assert!((by_kind(&checks, CheckKind::Split).value.unwrap() - 9.8).abs() < 1e-9);
        assert_eq!(by_kind(&checks, CheckKind::NewLatencyP99).value, Some(24.0));
    }

    #[test]
    fn failures_show_their_figures() {
        let o = observed(
            &[
                ("wasmcustom.cutover.chat.new_percentage", 10.0),
                ("wasmcustom.cutover.chat.routed_new", 500.0),
                ("wasmcustom.cutover.chat.routed_legacy", 500.0),
                ("cluster.chat_new.upstream_rq_completed", 200.0),
                ("cluster.chat_new.upstream_rq_5xx", 30.0),
                ("wasmcustom.cutover.chat.dual_write_enabled", 1.0),
                ("wasmcustom.cutover.chat.shadow_succeeded", 90.0),
                ("wasmcustom.cutover.chat.shadow_failed_5xx", 10.0),
                ("wasmcustom.cutover.chat.shadow_mismatch", 9.0),
            ],
            Some(800.0),
        );
        let checks = service_checks(&spec(), &o, &limits(), None);
        assert_eq!(checks.len(), 6);
        for c in &checks {
            assert_eq!(c.status, Status::Fail, "{c:?}");
        }
        assert_eq!(by_kind(&checks, CheckKind::Split).value, Some(50.0));
        assert_eq!(by_kind(&checks, CheckKind::New5xxRate).value, Some(15.0));
        assert_eq!(
            by_kind(&checks, CheckKind::DualWriteFailureRate).value,
            Some(10.0)
        );
        assert_eq!(
            by_kind(&checks, CheckKind::DualWriteMismatchRate).value,
            Some(9.0)
        );
    }

    #[test]
    fn the_compare_equal_rate_counts_compared_responses_only() {
        let stats = |equal: f64, body: f64| {
            observed(
                &[
                    ("wasmcustom.cutover.chat.compare_total", equal + body + 40.0),
                    ("wasmcustom.cutover.chat.compare_equal", equal),
                    ("wasmcustom.cutover.chat.compare_body_mismatch", body),
                    (
                        "wasmcustom.cutover.chat.compare_skipped_shadow_failed",
                        40.0,
                    ),
                ],
                None,
            )
        };
        let c = compare_check(&spec(), &stats(995.0, 5.0), &limits());
        assert_eq!((c.status, c.value), (Status::Pass, Some(99.5)), "{c:?}");
        assert!(c.detail.contains("40 skipped"), "{}", c.detail);
        let c = compare_check(&spec(), &stats(90.0, 10.0), &limits());
        assert_eq!((c.status, c.value), (Status::Fail, Some(90.0)));
        let c = compare_check(&spec(), &stats(0.0, 0.0), &limits());
        assert_eq!(
            (c.status, c.value),
            (Status::NoData, None),
            "only skipped: nothing compared"
        );
        assert!(
            compare_active(&spec(), &stats(1.0, 0.0)),
            "compared since start: active"
        );
        assert!(!compare_active(&spec(), &observed(&[], None)));
    }

    #[test]
    fn too_few_requests_is_no_data() {
        let o = observed(
            &[
                ("wasmcustom.cutover.chat.new_percentage", 10.0),
                ("wasmcustom.cutover.chat.routed_new", 1.0),
                ("wasmcustom.cutover.chat.routed_legacy", 9.0),
                ("cluster.chat_new.upstream_rq_completed", 1.0),
            ],
            None,
        );
        for c in service_checks(&spec(), &o, &limits(), None) {
            assert_eq!(c.status, Status::NoData, "{c:?}");
            assert_eq!(c.value, None);
        }
    }

    #[test]
    fn small_samples_get_a_noise_allowance_large_ones_the_tolerance() {
        assert_eq!(split_allowance(50.0, 10_000.0, 5.0), 5.0);
        let small = split_allowance(50.0, 100.0, 5.0);
        assert!((small - 15.0).abs() < 1e-9, "{small}");
        assert_eq!(split_allowance(0.0, 60.0, 5.0), 5.0, "0 % has no noise");
        assert_eq!(split_allowance(100.0, 60.0, 5.0), 5.0);
        let o = observed(
            &[
                ("wasmcustom.cutover.chat.new_percentage", 50.0),
                ("wasmcustom.cutover.chat.routed_new", 40.0),
                ("wasmcustom.cutover.chat.routed_legacy", 60.0),
            ],
            None,
        );
        assert_eq!(
            split_check(&spec(), &o, &limits(), None).status,
            Status::Pass,
            "10 points off in 100 requests is noise"
        );
        let o = observed(
            &[
                ("wasmcustom.cutover.chat.new_percentage", 50.0),
                ("wasmcustom.cutover.chat.routed_new", 4000.0),
                ("wasmcustom.cutover.chat.routed_legacy", 6000.0),
            ],
            None,
        );
        assert_eq!(
            split_check(&spec(), &o, &limits(), None).status,
            Status::Fail,
            "not in 10,000"
        );
    }

    #[test]
    fn expected_percentage_and_use_legacy() {
        let o = observed(
            &[
                ("wasmcustom.cutover.chat.new_percentage", 50.0),
                ("wasmcustom.cutover.chat.use_legacy", 1.0),
                ("wasmcustom.cutover.chat.routed_legacy", 100.0),
            ],
            None,
        );
        let split = split_check(&spec(), &o, &limits(), None);
        assert_eq!(
            split.status,
            Status::Pass,
            "use_legacy means 0% configured: {split:?}"
        );
        let split = split_check(&spec(), &o, &limits(), Some(25.0));
        assert_eq!(split.status, Status::Fail);
    }

    #[test]
    fn the_ends_are_exact() {
        let at_100 = |new: f64, legacy: f64| {
            let o = observed(
                &[
                    ("wasmcustom.cutover.chat.new_percentage", 100.0),
                    ("wasmcustom.cutover.chat.routed_new", new),
                    ("wasmcustom.cutover.chat.routed_legacy", legacy),
                ],
                None,
            );
            split_check(&spec(), &o, &limits(), None).status
        };
        assert_eq!(at_100(100.0, 0.0), Status::Pass);
        assert_eq!(at_100(95.0, 5.0), Status::Fail, "95 % is not 100 %");
        let o = observed(
            &[
                ("wasmcustom.cutover.chat.new_percentage", 0.0),
                ("wasmcustom.cutover.chat.routed_new", 1.0),
                ("wasmcustom.cutover.chat.routed_legacy", 99.0),
            ],
            None,
        );
        assert_eq!(
            split_check(&spec(), &o, &limits(), None).status,
            Status::Fail
        );
    }
}
