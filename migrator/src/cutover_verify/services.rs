//! Which services to check and which cluster is each one's "new" side.
//!
//! Sources, later ones overriding earlier ones: the filter's gauges on Envoy's admin endpoint
//! (`wasmcustom.cutover.<S>.new_percentage`), with the configuration Envoy serves (its config
//! dump: clusters, overrides, comparison) or, without one, the new cluster assumed `<S>_new`;
//! the filter configuration file (`--filter-config`); and `--service S=CLUSTER`.

use std::collections::BTreeMap;
use std::path::Path;

use cutover_filter::config::{FilterConfig, ServiceConfig};
use cutover_filter::ecds::EcdsDocument;
use cutover_filter::metrics::{metric_name, Gauge};

use super::stats::Snapshot;

/// What the filter configuration says about one service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub new_cluster: String,
    /// From the configuration file, used only when Envoy has no gauge for the service.
    pub file_percentage: Option<f64>,
    pub file_dual_write: Option<bool>,
    /// The service's whole configuration, when known (file or Envoy's config dump): the legacy
    /// cluster and override rules for the per-side health checks, the comparison settings.
    pub config: Option<ServiceConfig>,
}

impl ServiceSpec {
    /// A service known only by name and new cluster (from a gauge or `--service`).
    fn named(name: String, new_cluster: String) -> ServiceSpec {
        ServiceSpec {
            name,
            new_cluster,
            file_percentage: None,
            file_dual_write: None,
            config: None,
        }
    }

    /// A service of a validated filter configuration.
    pub fn from_config(service: &ServiceConfig) -> ServiceSpec {
        ServiceSpec {
            name: service.name.clone(),
            new_cluster: service.new_cluster.clone(),
            file_percentage: Some(if service.use_legacy {
                0.0
            } else {
                f64::from(service.new_percentage)
            }),
            file_dual_write: Some(service.dual_write.enabled),
            config: Some(service.clone()),
        }
    }

    /// Whether the filter compares responses of this service in traffic it can see: a
    /// comparison configured with reads mirrored, or with writes compared and dual-write on.
    /// `None`: the configuration is unknown.
    pub fn compares(&self) -> Option<bool> {
        let config = self.config.as_ref()?;
        let Some(compare) = &config.compare else {
            return Some(false);
        };
        let reads = config
            .shadow_reads
            .as_ref()
            .is_some_and(|r| r.percentage > 0);
        Some(reads || (compare.writes && config.dual_write.enabled))
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
    #[error("--service {arg:?}: Envoy reports no service {name:?} (known: {known})")]
    UnknownService {
        arg: String,
        name: String,
        known: String,
    },
    #[error("--service {arg:?}: Envoy has no cluster {cluster:?}")]
    UnknownCluster { arg: String, cluster: String },
}

/// Reads a filter configuration — the plugin's JSON, or a whole ECDS file carrying it — with the
/// filter's own validation (the rules and field paths of its `on_configure`).
pub fn from_filter_config_json(text: &str, path: &str) -> Result<Vec<ServiceSpec>, ServiceError> {
    let parse = |e: String| ServiceError::Parse {
        path: path.to_string(),
        reason: e,
    };
    let ecds = EcdsDocument::parse(text.as_bytes()).ok();
    let json = ecds.as_ref().map_or(text, |d| d.filter_config_json());
    let config = FilterConfig::from_json(json.as_bytes()).map_err(|e| parse(e.to_string()))?;
    Ok(config
        .services
        .iter()
        .map(ServiceSpec::from_config)
        .collect())
}

/// Completes services known from gauges or `--service` with the configuration Envoy serves
/// (their new cluster, unless given with `--service`, and everything else).
pub fn with_served(
    specs: Vec<ServiceSpec>,
    served: Option<&FilterConfig>,
    explicit: &[String],
) -> Vec<ServiceSpec> {
    let Some(served) = served else {
        return specs;
    };
    specs
        .into_iter()
        .map(|spec| {
            if spec.config.is_some() {
                return spec;
            }
            let Some(service) = served.services.iter().find(|s| s.name == spec.name) else {
                return spec;
            };
            let given = explicit
                .iter()
                .filter_map(|a| split_pair(a))
                .any(|(name, _)| name == spec.name);
            let mut full = ServiceSpec::from_config(service);
            // The served percentage is Envoy's own gauge; keep "unknown" for the file fallback.
            full.file_percentage = spec.file_percentage;
            full.file_dual_write = spec.file_dual_write.or(full.file_dual_write);
            if given {
                full.new_cluster = spec.new_cluster;
            }
            full
        })
        .collect()
}

pub fn from_filter_config_file(path: &Path) -> Result<Vec<ServiceSpec>, ServiceError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ServiceError::Read {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    from_filter_config_json(&text, &shown)
}

/// `/stats` name of the filter's gauge for a service.
fn gauge_stat(service: &str, gauge: Gauge) -> String {
    format!("wasmcustom.{}", metric_name(service, gauge.suffix()))
}

/// Services whose `new_percentage` gauge Envoy reports (every one, rolled out or not).
fn gauge_services(snapshot: &Snapshot) -> Vec<String> {
    let suffix = format!(".{}", Gauge::NewPercentage.suffix());
    let prefix = format!("wasmcustom.{}", metric_name("", ""));
    let prefix = prefix.trim_end_matches('.');
    let mut names: Vec<String> = snapshot
        .names()
        .filter_map(|n| {
            n.strip_prefix(prefix)?
                .strip_prefix('.')?
                .strip_suffix(suffix.as_str())
                .map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// Services being rolled out, from Envoy's gauges: those sending a share to new or mirroring
/// writes to it. A service on legacy with dual-write off has nothing to check.
pub fn from_gauges(snapshot: &Snapshot) -> Vec<ServiceSpec> {
    let mut names = gauge_services(snapshot);
    names.retain(|name| {
        let gauge = |g: Gauge| snapshot.value(&gauge_stat(name, g)).unwrap_or(0.0);
        let routes_to_new = gauge(Gauge::NewPercentage) > 0.0 && gauge(Gauge::UseLegacy) == 0.0;
        routes_to_new || gauge(Gauge::DualWriteEnabled) > 0.0
    });
    names
        .into_iter()
        .map(|name| {
            let new_cluster = format!("{name}_new");
            ServiceSpec::named(name, new_cluster)
        })
        .collect()
}

/// Services being rolled out, as Envoy reports them: those of [`from_gauges`], and those whose
/// responses the filter compares (a dark launch at 0 % is being judged too), with the
/// configuration Envoy serves when known.
pub fn discovered(snapshot: &Snapshot, served: Option<&FilterConfig>) -> Vec<ServiceSpec> {
    let mut specs = from_gauges(snapshot);
    for service in served.map(|c| c.services.as_slice()).unwrap_or_default() {
        let spec = ServiceSpec::from_config(service);
        if spec.compares() == Some(true) && !specs.iter().any(|s| s.name == spec.name) {
            specs.push(ServiceSpec {
                file_percentage: None,
                ..spec
            });
        }
    }
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    specs
}

/// Refuses `--service NAME=CLUSTER` entries Envoy does not know: a service without gauges (and
/// not in the filter configuration file) or a cluster without stats (typos are usage errors,
/// not "no data").
pub fn check_explicit(
    snapshot: &Snapshot,
    file: Option<&[ServiceSpec]>,
    explicit: &[String],
) -> Result<(), ServiceError> {
    let known = gauge_services(snapshot);
    for arg in explicit {
        let Some((name, cluster)) = split_pair(arg) else {
            return Err(ServiceError::BadServiceArg(arg.clone()));
        };
        let in_file = file.is_some_and(|f| f.iter().any(|s| s.name == name));
        if !in_file && !known.contains(&name) {
            return Err(ServiceError::UnknownService {
                arg: arg.clone(),
                name,
                known: if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                },
            });
        }
        let prefix = format!("cluster.{cluster}.");
        if !snapshot.names().any(|n| n.starts_with(&prefix)) {
            return Err(ServiceError::UnknownCluster {
                arg: arg.clone(),
                cluster,
            });
        }
    }
    Ok(())
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
        assert_eq!(
            discovered.len(),
            1,
            "orchestration at 0 % without dual-write is not rolled out"
        );
        let discovered = vec![
            discovered[0].clone(),
            ServiceSpec::named("orchestration".into(), "orchestration_new".into()),
        ];
        assert_eq!(discovered[0].new_cluster, "chat_new");
        let all = resolve(discovered.clone(), None, &[]).unwrap();
        assert_eq!(all.len(), 2);
        let only = resolve(discovered, None, &["chat=chat_v2".to_string()]).unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].new_cluster, "chat_v2");
        assert!(resolve(vec![], None, &["chat".to_string()]).is_err());
    }

    #[test]
    fn unknown_services_and_clusters_are_usage_errors() {
        let snapshot = Snapshot::parse(
            r#"{"stats":[{"name":"wasmcustom.cutover.chat.new_percentage","value":10},
               {"name":"cluster.chat_new.upstream_rq_total","value":3}]}"#,
        )
        .unwrap();
        assert!(check_explicit(&snapshot, None, &["chat=chat_new".into()]).is_ok());
        assert!(matches!(
            check_explicit(&snapshot, None, &["chats=chats_new".into()]),
            Err(ServiceError::UnknownService { .. })
        ));
        assert!(matches!(
            check_explicit(&snapshot, None, &["chat=chat_nwe".into()]),
            Err(ServiceError::UnknownCluster { .. })
        ));
    }
}
