//! Envoy admin `/stats?format=json`, parsed into counters/gauges and histogram quantiles.
//!
//! Shape (Envoy 1.40): `{"stats": [{"name": N, "value": V}, …, {"histograms": {"supported_quantiles":
//! [0, 25, …, 100], "computed_quantiles": [{"name": N, "values": [{"cumulative": X|null, "interval":
//! X|null}, …]}]}}]}`. Counters and gauges look alike; callers know which name is which. Histogram
//! quantiles are computed by Envoy at each stats flush (every 5 s by default), so a histogram with
//! fresh samples may still read `null`.

use std::collections::HashMap;

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
#[error("Envoy admin stats are not the expected JSON: {0}")]
pub struct StatsParseError(String);

/// One reading of Envoy's stats.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    values: HashMap<String, f64>,
    /// histogram name → (quantile in percent, cumulative value)
    quantiles: HashMap<String, Vec<(f64, Option<f64>)>>,
}

#[derive(Deserialize)]
struct StatsDoc {
    stats: Vec<StatEntry>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum StatEntry {
    Histograms {
        histograms: HistogramsDoc,
    },
    Value {
        name: String,
        value: serde_json::Value,
    },
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
                StatEntry::Histograms { histograms } => {
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

    /// Names of all numeric stats (for discovering services from the filter's gauges).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
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
