//! Gate figures from Prometheus instead of Envoy's admin endpoints (`run --prometheus-url`): the
//! same checks, on `increase(…[interval])` of the series Envoy exposes on `/stats/prometheus`
//! (names in docs/metrics.md), summed over every scraped Envoy — for fleets behind a Prometheus.
//!
//! Series used (Envoy's default tag extraction): the filter's `cutover_<S>_<metric>` counters and
//! gauges, `envoy_cluster_upstream_rq_completed` and `envoy_cluster_upstream_rq_xx` (class 5) and
//! the `envoy_cluster_upstream_rq_time_bucket` histogram, by `envoy_cluster_name`.

use std::collections::HashMap;
use std::time::Duration;

use cutover_filter::metrics::{metric_name, Counter, Gauge};
use serde::Deserialize;

use super::{Result, RolloutError};
use crate::cutover_verify::http;
use crate::cutover_verify::stats::{Observed, Snapshot};

#[derive(Deserialize)]
struct QueryAnswer {
    status: String,
    data: Option<QueryData>,
    error: Option<String>,
}

#[derive(Deserialize)]
struct QueryData {
    result: Vec<Sample>,
}

#[derive(Deserialize)]
struct Sample {
    metric: HashMap<String, String>,
    value: (f64, String),
}

/// Prometheus' name of a filter metric (`cutover.chat.routed_new` → `cutover_chat_routed_new`).
fn filter_series(service: &str, suffix: &str) -> String {
    metric_name(service, suffix).replace(['.', '-'], "_")
}

/// PromQL string literal.
fn quoted(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

pub struct Prometheus {
    pub client: http::Client,
    pub url: String,
}

/// Seconds since the Unix epoch, as Prometheus' query API takes them.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Prometheus {
    /// One instant query evaluated `at` (Unix seconds): every query of one window is evaluated
    /// at the same instant, so a numerator and its denominator cover the same scrapes.
    async fn query(&self, promql: &str, at: f64) -> Result<Vec<Sample>> {
        let mut url = http::parse_url(&http::join(&self.url, "/api/v1/query"))
            .map_err(|e| RolloutError::usage(format!("--prometheus-url: {e}")))?;
        url.query_pairs_mut()
            .append_pair("query", promql)
            .append_pair("time", &format!("{at:.3}"));
        let shown = crate::redact::url(&self.url);
        let response = self
            .client
            .get(url.as_str())
            .await
            .map_err(|e| RolloutError::target(format!("Prometheus {shown}: {e}")))?;
        let answer: QueryAnswer = serde_json::from_slice(&response.body).map_err(|_| {
            RolloutError::target(format!(
                "{shown} is not a Prometheus query API (HTTP {} on /api/v1/query)",
                response.status
            ))
        })?;
        if answer.status != "success" {
            return Err(RolloutError::target(format!(
                "Prometheus {shown}: query {promql:?} failed: {}",
                answer.error.unwrap_or_default()
            )));
        }
        Ok(answer.data.map(|d| d.result).unwrap_or_default())
    }

    /// One number (the first sample), `None` for an empty answer.
    async fn scalar(&self, promql: &str, at: f64) -> Result<Option<f64>> {
        Ok(self
            .query(promql, at)
            .await?
            .first()
            .and_then(|s| s.value.1.parse().ok()))
    }

    /// The gate's view of the last `window`: increases of the counters and histogram buckets,
    /// current gauges. Shaped as an [`Observed`] with an empty baseline, so the checks read the
    /// increases as window differences.
    pub async fn window(
        &self,
        service: &str,
        new_cluster: &str,
        window: Duration,
    ) -> Result<Observed> {
        let range = format!("{}s", window.as_secs().max(1));
        let at = unix_now();
        let mut values = HashMap::new();
        for counter in Counter::ALL {
            let series = filter_series(service, counter.suffix());
            if let Some(v) = self
                .scalar(&format!("sum(increase({series}[{range}]))"), at)
                .await?
            {
                values.insert(
                    format!("wasmcustom.{}", metric_name(service, counter.suffix())),
                    v,
                );
            }
        }
        for gauge in Gauge::ALL {
            let series = filter_series(service, gauge.suffix());
            if let Some(v) = self.scalar(&format!("max({series})"), at).await? {
                values.insert(
                    format!("wasmcustom.{}", metric_name(service, gauge.suffix())),
                    v,
                );
            }
        }
        let cluster = format!("envoy_cluster_name={}", quoted(new_cluster));
        if let Some(v) = self
            .scalar(
                &format!(
                    "sum(increase(envoy_cluster_upstream_rq_completed{{{cluster}}}[{range}]))"
                ),
                at,
            )
            .await?
        {
            values.insert(format!("cluster.{new_cluster}.upstream_rq_completed"), v);
        }
        if let Some(v) = self
            .scalar(
                &format!(
                    "sum(increase(envoy_cluster_upstream_rq_xx{{{cluster},envoy_response_code_class=\"5\"}}[{range}]))"
                ),
                at,
            )
            .await?
        {
            values.insert(format!("cluster.{new_cluster}.upstream_rq_5xx"), v);
        }
        let mut buckets = Vec::new();
        for sample in self
            .query(
                &format!("sum by (le) (increase(envoy_cluster_upstream_rq_time_bucket{{{cluster}}}[{range}]))"),
                at,
            )
            .await?
        {
            let bound = sample.metric.get("le").and_then(|le| le.parse::<f64>().ok());
            let count = sample.value.1.parse::<f64>().ok();
            // `+Inf` holds every sample; Envoy's JSON buckets end at the last finite bound.
            if let (Some(bound), Some(count)) = (bound, count) {
                if bound.is_finite() {
                    buckets.push((bound, count));
                }
            }
        }
        let mut histograms = HashMap::new();
        if !buckets.is_empty() {
            histograms.insert(format!("cluster.{new_cluster}.upstream_rq_time"), buckets);
        }
        Ok(Observed {
            latest: Snapshot::from_parts(values, histograms),
            baseline: Some(Snapshot::default()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_names_follow_envoys_prometheus_naming() {
        assert_eq!(
            filter_series("chat", "routed_new"),
            "cutover_chat_routed_new"
        );
        assert_eq!(
            filter_series("web-app", "use_legacy"),
            "cutover_web_app_use_legacy"
        );
        assert_eq!(quoted(r#"a"b"#), r#""a\"b""#);
    }
}
