//! Which services to check and which cluster is each one's "new" side.
//!
//! Sources, later ones overriding earlier ones: the filter's gauges on Envoy's admin endpoint
//! (`wasmcustom.cutover.<S>.new_percentage`; new cluster assumed `<S>_new`), the filter
//! configuration file (`--filter-config`), and `--service S=CLUSTER`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::stats::Snapshot;

/// What the filter configuration says about one service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub new_cluster: String,
    /// From the configuration file, used only when Envoy has no gauge for the service.
    pub file_percentage: Option<f64>,
    pub file_dual_write: Option<bool>,
}

impl ServiceSpec {
    /// A service known only by name and new cluster (from a gauge or `--service`).
    fn named(name: String, new_cluster: String) -> ServiceSpec {
        ServiceSpec {
            name,
            new_cluster,
            file_percentage: None,
            file_dual_write: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot read filter configuration {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("filter configuration {path} is not the cutover filter's JSON: {reason}")]
    Parse { path: String, reason: String },
    #[error("--service {0:?}: expected NAME=NEW_CLUSTER, e.g. chat=chat_new")]
    BadServiceArg(String),
    #[error("--health {0:?}: expected SERVICE=PATH, e.g. chat=/api/chat/health")]
    BadHealthArg(String),
    #[error("--expect-percentage {0:?}: expected SERVICE=PERCENT (0-100), e.g. chat=25")]
    BadPercentageArg(String),
}

// Only the fields this tool needs; the filter itself validates the full configuration.
#[derive(Deserialize)]
struct FilterConfigDoc {
    services: Vec<FilterServiceDoc>,
}

#[derive(Deserialize)]
struct FilterServiceDoc {
    name: String,
    new_cluster: String,
    #[serde(default)]
    use_legacy: bool,
    #[serde(default)]
    new_percentage: f64,
    dual_write: Option<DualWriteDoc>,
}

#[derive(Deserialize)]
struct DualWriteDoc {
    #[serde(default = "yes")]
    enabled: bool,
}

fn yes() -> bool {
    true
}

/// Parses the filter configuration JSON (the plugin `configuration` string).
pub fn from_filter_config_json(text: &str, path: &str) -> Result<Vec<ServiceSpec>, ServiceError> {
    let doc: FilterConfigDoc = serde_json::from_str(text).map_err(|e| ServiceError::Parse {
        path: path.to_string(),
        reason: e.to_string(),
    })?;
    Ok(doc
        .services
        .into_iter()
        .map(|s| ServiceSpec {
            file_percentage: Some(if s.use_legacy { 0.0 } else { s.new_percentage }),
            file_dual_write: Some(s.dual_write.map(|d| d.enabled).unwrap_or(false)),
            name: s.name,
            new_cluster: s.new_cluster,
        })
        .collect())
}

pub fn from_filter_config_file(path: &Path) -> Result<Vec<ServiceSpec>, ServiceError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ServiceError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    from_filter_config_json(&text, &shown)
}

/// Services whose `new_percentage` gauge Envoy reports.
pub fn from_gauges(snapshot: &Snapshot) -> Vec<ServiceSpec> {
    let mut names: Vec<String> = snapshot
        .names()
        .filter_map(|n| {
            n.strip_prefix("wasmcustom.cutover.")?
                .strip_suffix(".new_percentage")
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let new_cluster = format!("{name}_new");
            ServiceSpec::named(name, new_cluster)
        })
        .collect()
}

/// Parses a repeatable `KEY=VALUE` option.
pub fn split_pair(arg: &str) -> Option<(String, String)> {
    let (k, v) = arg.split_once('=')?;
    let (k, v) = (k.trim(), v.trim());
    if k.is_empty() || v.is_empty() {
        return None;
    }
    Some((k.to_string(), v.to_string()))
}

/// Merges the sources: explicit `--service` entries win over the file, the file over the gauges.
/// When a file or `--service` is given, only those services are checked.
pub fn resolve(
    gauges: Vec<ServiceSpec>,
    file: Option<Vec<ServiceSpec>>,
    explicit: &[String],
) -> Result<Vec<ServiceSpec>, ServiceError> {
    let mut explicit_pairs = Vec::new();
    for arg in explicit {
        explicit_pairs
            .push(split_pair(arg).ok_or_else(|| ServiceError::BadServiceArg(arg.clone()))?);
    }
    let mut merged: BTreeMap<String, ServiceSpec> = BTreeMap::new();
    if file.is_none() && explicit_pairs.is_empty() {
        for spec in gauges {
            merged.insert(spec.name.clone(), spec);
        }
    }
    for spec in file.unwrap_or_default() {
        merged.insert(spec.name.clone(), spec);
    }
    for (name, cluster) in explicit_pairs {
        merged
            .entry(name.clone())
            .and_modify(|s| s.new_cluster = cluster.clone())
            .or_insert_with(|| ServiceSpec::named(name, cluster));
    }
    Ok(merged.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_contract_configuration() {
        let json = r#"{"services":[{"name":"chat","path_prefixes":["/api/chat"],"legacy_cluster":"chat_legacy",
            "new_cluster":"chat_new","use_legacy":false,"new_percentage":10,"dual_write":{"timeout_ms":5000}},
            {"name":"orchestration","path_prefixes":["/api/tasks"],"legacy_cluster":"o_l","new_cluster":"o_n",
            "use_legacy":true,"new_percentage":50}]}"#;
        let specs = from_filter_config_json(json, "f.json").unwrap();
        assert_eq!(specs[0].name, "chat");
        assert_eq!(specs[0].new_cluster, "chat_new");
        assert_eq!(specs[0].file_percentage, Some(10.0));
        assert_eq!(specs[0].file_dual_write, Some(true));
        assert_eq!(
            specs[1].file_percentage,
            Some(0.0),
            "use_legacy wins over new_percentage"
        );
        assert_eq!(specs[1].file_dual_write, Some(false));
        assert!(from_filter_config_json("{}", "f.json").is_err());
    }

    #[test]
    fn explicit_services_override_and_restrict() {
        let gauges = Snapshot::parse(
            r#"{"stats":[{"name":"wasmcustom.cutover.chat.new_percentage","value":10},
               {"name":"wasmcustom.cutover.orchestration.new_percentage","value":0}]}"#,
        )
        .unwrap();
        let discovered = from_gauges(&gauges);
        assert_eq!(discovered.len(), 2);
        assert_eq!(discovered[0].new_cluster, "chat_new");
        let all = resolve(discovered.clone(), None, &[]).unwrap();
        assert_eq!(all.len(), 2);
        let only = resolve(discovered, None, &["chat=chat_v2".to_string()]).unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].new_cluster, "chat_v2");
        assert!(resolve(vec![], None, &["chat".to_string()]).is_err());
    }
}
