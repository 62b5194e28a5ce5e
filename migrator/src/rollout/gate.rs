//! The gate of one `rollout run` interval: cutover-verify's checks for the service being rolled
//! out, on the difference of two stats readings (counters and latency histogram buckets), plus
//! health requests to each side, and the verdict.

use serde::Serialize;

use crate::cutover_verify::checks::{self, Check, CheckKind, Status, ThresholdArgs, Thresholds};
use crate::cutover_verify::health::{self, SideRequest};
use crate::cutover_verify::http;
use crate::cutover_verify::services::ServiceSpec;
use crate::cutover_verify::stats::Observed;

/// Gate options of `rollout run`: cutover-verify's thresholds (same defaults) and per-side health.
#[derive(Debug, Clone, clap::Args)]
pub struct GateArgs {
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
    /// A health URL of one side, SIDE=URL with SIDE legacy or new (repeatable), requested
    /// directly (not through the split) every interval; expects HTTP 200.
    #[arg(long = "health", value_name = "SIDE=URL")]
    pub health: Vec<String>,
}

impl GateArgs {
    /// One health request per `--health`; the message names the bad argument.
    pub fn health_urls(&self) -> Result<Vec<SideRequest>, String> {
        self.health
            .iter()
            .map(|arg| {
                let (side, url) = crate::cutover_verify::services::split_pair(arg)
                    .and_then(|(side, url)| Some((health::parse_side(&side)?, url)))
                    .ok_or_else(|| {
                        format!(
                            "--health {}: expected legacy=URL or new=URL",
                            crate::redact::url(arg)
                        )
                    })?;
                http::parse_url(&url)
                    .map_err(|e| format!("--health {}: {e}", crate::redact::url(arg)))?;
                Ok(SideRequest::direct(side, url))
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not enough traffic in the interval to judge; neither passes nor fails.
    Inconclusive,
}

/// Which checks decide: a failing check fails the interval; the split, the 5xx rate and the
/// read comparison without data make it inconclusive. Latency and dual-write checks without data
/// (histograms lag by up to one stats flush; writes may be rare) do not block, nor does the 5xx
/// rate at 0 % (new gets no traffic).
pub fn verdict(checks: &[Check], percentage: u8) -> Verdict {
    if checks.iter().any(|c| c.status == Status::Fail) {
        return Verdict::Fail;
    }
    let needs_data = |k: CheckKind| {
        k == CheckKind::Split
            || k == CheckKind::CompareEqualRate
            || (k == CheckKind::New5xxRate && percentage > 0)
    };
    if checks
        .iter()
        .any(|c| c.status == Status::NoData && needs_data(c.kind))
    {
        return Verdict::Inconclusive;
    }
    Verdict::Pass
}

/// The checks of one interval for the service at `percentage`.
pub async fn interval_checks(
    spec: &ServiceSpec,
    observed: &Observed,
    thresholds: &Thresholds,
    percentage: u8,
    client: &http::Client,
    health: &[SideRequest],
) -> Vec<Check> {
    let mut all = checks::service_checks(spec, observed, thresholds, Some(f64::from(percentage)));
    for request in health {
        all.push(health::side_check(client, &spec.name, request).await);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(kind: CheckKind, status: Status) -> Check {
        Check {
            id: String::new(),
            service: None,
            kind,
            status,
            value: None,
            samples: None,
            unit: "",
            threshold: String::new(),
            detail: String::new(),
        }
    }

    #[test]
    fn verdicts() {
        use CheckKind::*;
        use Status::*;
        assert_eq!(
            verdict(&[check(Split, Pass), check(New5xxRate, Pass)], 10),
            Verdict::Pass
        );
        assert_eq!(
            verdict(
                &[
                    check(Split, Pass),
                    check(New5xxRate, Pass),
                    check(NewLatencyP95, NoData)
                ],
                10
            ),
            Verdict::Pass
        );
        assert_eq!(
            verdict(&[check(Split, NoData), check(New5xxRate, NoData)], 10),
            Verdict::Inconclusive
        );
        assert_eq!(
            verdict(&[check(Split, Pass), check(New5xxRate, NoData)], 0),
            Verdict::Pass
        );
        assert_eq!(
            verdict(&[check(Split, NoData), check(New5xxRate, Fail)], 10),
            Verdict::Fail
        );
        assert_eq!(
            verdict(
                &[
                    check(Split, Pass),
                    check(New5xxRate, Pass),
                    check(CompareEqualRate, NoData)
                ],
                10
            ),
            Verdict::Inconclusive,
            "no compared responses: neither pass nor fail"
        );
        assert_eq!(
            verdict(&[check(Split, Pass), check(CompareEqualRate, Fail)], 0),
            Verdict::Fail
        );
    }
}
