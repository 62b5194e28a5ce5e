//! Envoy admin `/stats?format=json`, parsed into counters/gauges and histogram quantiles.
//!
//! Shape (Envoy 1.40): `{"stats": [{"name": N, "value": V}, …, {"histograms": {"supported_quantiles":
//! [0, 25, …, 100], "computed_quantiles": [{"name": N, "values": [{"cumulative": X|null, "interval":
//! X|null}, …]}]}}]}`. Counters and gauges look alike; callers know which name is which. Histogram
//! quantiles are computed by Envoy at each stats flush (every 5 s by default), so a histogram with
//! fresh samples may still read `null`.

use std::collections::HashMap;

use anyhow::{bail, Context};
use serde::Deserialize;

use super::http;

/// The stats query: every numeric stat, and histograms as cumulative bucket counts (so latency
/// over a window can be computed from two readings).
const STATS_QUERY: &str = "/stats?format=json&histogram_buckets=cumulative";

#[derive(Debug, thiserror::Error)]
#[error("Envoy admin stats are not the expected JSON: {0}")]
pub struct StatsParseError(String);

/// One reading of Envoy's stats.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    values: HashMap<String, f64>,
    /// histogram name → (quantile in percent, cumulative value)
    quantiles: HashMap<String, Vec<(f64, Option<f64>)>>,
    /// histogram name → (upper bound, samples ≤ bound since Envoy started), bounds ascending.
    buckets: HashMap<String, Vec<(f64, f64)>>,
}

#[derive(Deserialize)]
struct StatsDoc {
    stats: Vec<StatEntry>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StatEntry {
    Histograms {
        histograms: HistogramsField,
    },
    Value {
        name: String,
        value: serde_json::Value,
    },
}

/// Envoy renders histograms as an object of computed quantiles by default, and as an array of
/// bucket lists with `histogram_buckets=cumulative`.
#[derive(Deserialize)]
#[serde(untagged)]
enum HistogramsField {
    Quantiles(HistogramsDoc),
    Buckets(Vec<BucketHistogram>),
}

#[derive(Deserialize)]
struct BucketHistogram {
    name: String,
    buckets: Vec<Bucket>,
}

#[derive(Deserialize)]
struct Bucket {
    upper_bound: f64,
    cumulative: f64,
}

#[derive(Deserialize)]
struct HistogramsDoc {
    #[serde(default)]
    supported_quantiles: Vec<f64>,
    #[serde(default)]
    computed_quantiles: Vec<ComputedQuantiles>,
}

#[derive(Deserialize)]
struct ComputedQuantiles {
    name: String,
    values: Vec<QuantileValue>,
}

#[derive(Deserialize)]
struct QuantileValue {
    cumulative: Option<f64>,
}

impl Snapshot {
    pub fn parse(json: &str) -> Result<Snapshot, StatsParseError> {
        let doc: StatsDoc =
            serde_json::from_str(json).map_err(|e| StatsParseError(e.to_string()))?;
        let mut snapshot = Snapshot::default();
        for entry in doc.stats {
            match entry {
                // Text readouts carry strings; only numbers are stats we can use.
                StatEntry::Value { name, value } => {
                    if let Some(number) = value.as_f64() {
                        snapshot.values.insert(name, number);
                    }
                }
                StatEntry::Histograms {
                    histograms: HistogramsField::Buckets(list),
                } => {
                    for histogram in list {
                        let mut buckets: Vec<(f64, f64)> = histogram
                            .buckets
                            .iter()
                            .map(|b| (b.upper_bound, b.cumulative))
                            .collect();
                        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                        snapshot.buckets.insert(histogram.name, buckets);
                    }
                }
                StatEntry::Histograms {
                    histograms: HistogramsField::Quantiles(histograms),
                } => {
                    for computed in histograms.computed_quantiles {
                        if computed.values.len() != histograms.supported_quantiles.len() {
                            return Err(StatsParseError(format!(
                                "histogram {} has {} quantile values for {} supported quantiles",
                                computed.name,
                                computed.values.len(),
                                histograms.supported_quantiles.len()
                            )));
                        }
                        let pairs = histograms
                            .supported_quantiles
                            .iter()
                            .zip(computed.values.iter())
                            .map(|(q, v)| (*q, v.cumulative))
                            .collect();
                        snapshot.quantiles.insert(computed.name, pairs);
                    }
                }
            }
        }
        Ok(snapshot)
    }

    /// A counter's or gauge's value; `None` when Envoy does not have the stat (yet).
    pub fn value(&self, name: &str) -> Option<f64> {
        self.values.get(name).copied()
    }

    /// The cumulative value of quantile `percent` (e.g. 95.0) of histogram `name`, when computed.
    pub fn quantile(&self, name: &str, percent: f64) -> Option<f64> {
        self.quantiles
            .get(name)?
            .iter()
            .find(|(q, _)| (*q - percent).abs() < 1e-9)
            .and_then(|(_, v)| *v)
    }

    /// A reading assembled elsewhere (e.g. from Prometheus): numeric stats by `/stats` name and
    /// cumulative bucket counts by histogram name.
    pub fn from_parts(
        values: HashMap<String, f64>,
        mut buckets: HashMap<String, Vec<(f64, f64)>>,
    ) -> Snapshot {
        for list in buckets.values_mut() {
            list.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        Snapshot {
            values,
            quantiles: HashMap::new(),
            buckets,
        }
    }

    /// Several Envoys' readings as one: counters, gauges and bucket counts added (quantiles,
    /// which cannot be added, are left out).
    pub fn sum(snapshots: &[Snapshot]) -> Snapshot {
        let mut total = Snapshot::default();
        for s in snapshots {
            for (name, value) in &s.values {
                *total.values.entry(name.clone()).or_insert(0.0) += value;
            }
            for (name, buckets) in &s.buckets {
                let into = total.buckets.entry(name.clone()).or_default();
                for &(bound, count) in buckets {
                    match into.iter_mut().find(|(b, _)| *b == bound) {
                        Some((_, c)) => *c += count,
                        None => into.push((bound, count)),
                    }
                }
                into.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
        total
    }

    /// Cumulative bucket counts of histogram `name`, when Envoy reported buckets.
    pub fn buckets(&self, name: &str) -> Option<&[(f64, f64)]> {
        self.buckets.get(name).map(Vec::as_slice)
    }

    /// Names of all numeric stats (for discovering services from the filter's gauges).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

/// Reads `/stats?format=json` from Envoy's admin endpoint at `admin_url`. An answer that is not
/// Envoy's stats is named as such (a listener or another server at that address).
pub async fn fetch(client: &http::Client, admin_url: &str) -> anyhow::Result<Snapshot> {
    let url = http::join(admin_url, STATS_QUERY);
    let shown = crate::redact::url(&url);
    let response = client
        .get(&url)
        .await
        .context("reading Envoy's admin stats")?;
    let server = response
        .header("server")
        .map(|s| format!(", server {s:?}"))
        .unwrap_or_default();
    if response.status != 200 {
        bail!(
            "GET {shown}: HTTP {}{server}: not Envoy's admin stats (is this Envoy's admin address?)",
            response.status
        );
    }
    let body = std::str::from_utf8(&response.body).map_err(|_| {
        anyhow::anyhow!("GET {shown}: the answer is not text{server}: not Envoy's admin endpoint")
    })?;
    Snapshot::parse(body).map_err(|e| {
        anyhow::anyhow!("GET {shown}: the answer is not Envoy's admin stats{server} ({e}): is this Envoy's admin address?")
    })
}

/// Stats as seen by the checks: counters as the difference between two snapshots when a window was
/// sampled (so earlier rollout steps do not mix in), gauges and histograms from the latest snapshot.
#[derive(Debug, Clone)]
pub struct Observed {
    pub latest: Snapshot,
    pub baseline: Option<Snapshot>,
}

impl Observed {
    pub fn counter(&self, name: &str) -> Option<f64> {
        let now = self.latest.value(name)?;
        match &self.baseline {
            // A stat created during the window started from 0; a restart makes `now` smaller.
            Some(base) => Some((now - base.value(name).unwrap_or(0.0)).max(0.0)),
            None => Some(now),
        }
    }

    pub fn gauge(&self, name: &str) -> Option<f64> {
        self.latest.value(name)
    }

    pub fn quantile(&self, name: &str, percent: f64) -> Option<f64> {
        self.latest.quantile(name, percent)
    }

    /// Quantile `percent` of histogram `name` over the window (bucket count differences between
    /// the two readings) or, without a window, since Envoy started; with the number of samples it
    /// is computed from. `None` when Envoy reported no buckets for it.
    pub fn latency(&self, name: &str, percent: f64) -> Option<LatencyFigure> {
        let latest = self.latest.buckets(name)?;
        let counts: Vec<(f64, f64)> = match &self.baseline {
            Some(base) => {
                let before = base.buckets(name).unwrap_or_default();
                latest
                    .iter()
                    .map(|(bound, count)| {
                        let earlier = before
                            .iter()
                            .find(|(b, _)| (b - bound).abs() <= f64::EPSILON * bound.abs())
                            .map_or(0.0, |(_, c)| *c);
                        (*bound, (count - earlier).max(0.0))
                    })
                    .collect()
            }
            None => latest.to_vec(),
        };
        let samples = counts.last().map_or(0.0, |(_, c)| *c);
        Some(LatencyFigure {
            value: bucket_quantile(&counts, percent),
            samples,
        })
    }
}

/// A latency quantile from histogram buckets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyFigure {
    /// `None` without samples.
    pub value: Option<f64>,
    pub samples: f64,
}

/// The quantile of cumulative bucket counts, interpolated linearly inside the bucket it falls in
/// (as Prometheus' `histogram_quantile`); the first bucket starts at 0.
pub fn bucket_quantile(cumulative: &[(f64, f64)], percent: f64) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = (percent / 100.0).clamp(0.0, 1.0) * total;
    let mut lower = (0.0, 0.0);
    for &(bound, count) in cumulative {
        if count >= rank && count > lower.1 {
            let share = (rank - lower.1) / (count - lower.1);
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Captured from Envoy 1.40 (`/stats?format=json&filter=...`) after traffic to one cluster.
    const SAMPLE: &str = r#"{"stats":[{"name":"cluster.chat_new.upstream_rq_completed","value":40},
      {"name":"wasmcustom.cutover.chat.new_percentage","value":10},
      {"name":"some.text_readout","value":"v1.40"},
      {"histograms":{"supported_quantiles":[0,25,50,75,90,95,99,99.5,99.9,100],
       "computed_quantiles":[{"name":"cluster.chat_new.upstream_rq_time","values":[
        {"cumulative":0,"interval":0},{"cumulative":0,"interval":0},{"cumulative":1.06,"interval":1.06},
        {"cumulative":3.04,"interval":3.04},{"cumulative":4.05,"interval":4.05},{"cumulative":4.08,"interval":4.08},
        {"cumulative":7.05,"interval":7.05},{"cumulative":7.05,"interval":7.05},{"cumulative":7.05,"interval":7.05},
        {"cumulative":7.05,"interval":7.05}]},
        {"name":"cluster.chat_new.upstream_cx_length_ms","values":[
        {"cumulative":null,"interval":null},{"cumulative":null,"interval":null},{"cumulative":null,"interval":null},
        {"cumulative":null,"interval":null},{"cumulative":null,"interval":null},{"cumulative":null,"interval":null},
        {"cumulative":null,"interval":null},{"cumulative":null,"interval":null},{"cumulative":null,"interval":null},
        {"cumulative":null,"interval":null}]}]}}]}"#;

    #[test]
    fn parses_values_and_quantiles() {
        let s = Snapshot::parse(SAMPLE).unwrap();
        assert_eq!(
            s.value("cluster.chat_new.upstream_rq_completed"),
            Some(40.0)
        );
        assert_eq!(
            s.value("wasmcustom.cutover.chat.new_percentage"),
            Some(10.0)
        );
        assert_eq!(s.value("some.text_readout"), None);
        assert_eq!(
            s.quantile("cluster.chat_new.upstream_rq_time", 95.0),
            Some(4.08)
        );
        assert_eq!(
            s.quantile("cluster.chat_new.upstream_rq_time", 99.0),
            Some(7.05)
        );
        assert_eq!(
            s.quantile("cluster.chat_new.upstream_cx_length_ms", 95.0),
            None
        );
        assert_eq!(s.quantile("cluster.other.upstream_rq_time", 95.0), None);
    }

    // Captured from Envoy 1.40 (`/stats?format=json&histogram_buckets=cumulative`), shortened.
    const BUCKETS: &str = r#"{"stats":[{"name":"c","value":1},{"histograms":[{"name":"cluster.c.upstream_rq_time","buckets":[
      {"upper_bound":0.5,"interval":4,"cumulative":4},{"upper_bound":1,"interval":9,"cumulative":9},
      {"upper_bound":5,"interval":17,"cumulative":17},{"upper_bound":10,"interval":19,"cumulative":19},
      {"upper_bound":25,"interval":20,"cumulative":20},{"upper_bound":3e+05,"interval":20,"cumulative":20}]}]}]}"#;

    #[test]
    fn latency_over_a_window_comes_from_bucket_differences() {
        let now = Snapshot::parse(BUCKETS).unwrap();
        let since_start = Observed {
            latest: now.clone(),
            baseline: None,
        };
        let all = since_start
            .latency("cluster.c.upstream_rq_time", 50.0)
            .unwrap();
        assert_eq!(all.samples, 20.0);
        // rank 10 of 20 falls in (1, 5] holding samples 10..17.
        assert!((all.value.unwrap() - (1.0 + 4.0 * (1.0 / 8.0))).abs() < 1e-9);
        // Earlier, 17 fast samples: the window holds only the 3 slow ones.
        let base = Snapshot::parse(
            &BUCKETS
                .replace("\"cumulative\":19", "\"cumulative\":17")
                .replace("\"cumulative\":20", "\"cumulative\":17"),
        )
        .unwrap();
        let window = Observed {
            latest: now,
            baseline: Some(base),
        };
        let slow = window.latency("cluster.c.upstream_rq_time", 95.0).unwrap();
        assert_eq!(slow.samples, 3.0);
        assert!(slow.value.unwrap() > 10.0, "{slow:?}");
        assert_eq!(bucket_quantile(&[(1.0, 0.0)], 95.0), None);
    }

    #[test]
    fn a_fleet_reading_is_the_sum() {
        let one = Snapshot::parse(BUCKETS).unwrap();
        let sum = Snapshot::sum(&[one.clone(), one]);
        assert_eq!(sum.value("c"), Some(2.0));
        let observed = Observed {
            latest: sum,
            baseline: None,
        };
        assert_eq!(
            observed
                .latency("cluster.c.upstream_rq_time", 50.0)
                .unwrap()
                .samples,
            40.0
        );
    }

    #[test]
    fn rejects_other_documents() {
        assert!(Snapshot::parse("<html>").is_err());
        assert!(Snapshot::parse(r#"{"nope":1}"#).is_err());
    }

    #[test]
    fn window_uses_counter_deltas_and_latest_gauges() {
        let base = Snapshot::parse(r#"{"stats":[{"name":"c","value":10},{"name":"g","value":5}]}"#)
            .unwrap();
        let now =
            Snapshot::parse(r#"{"stats":[{"name":"c","value":25},{"name":"g","value":7},{"name":"new","value":3}]}"#)
                .unwrap();
        let observed = Observed {
            latest: now,
            baseline: Some(base),
        };
        assert_eq!(observed.counter("c"), Some(15.0));
        assert_eq!(observed.counter("new"), Some(3.0));
        assert_eq!(observed.counter("missing"), None);
        assert_eq!(observed.gauge("g"), Some(7.0));
    }
}
