//! What an Envoy admin endpoint says it serves: the cutover filter's configuration from
//! `/config_dump` (when Envoy's stats confirm it is the one it accepted, whatever the ECDS file
//! holds now) and the addresses of a cluster's hosts from `/clusters?format=json`.

use cutover_filter::config::FilterConfig;
use cutover_filter::ecds::{self, EcdsDocument};
use serde::Deserialize;
use serde_json::Value;

use super::http::{self, Client, HttpError};
use super::stats::Snapshot;

/// Milliseconds since the Unix epoch of Envoy's last accepted ECDS update of the filter
/// (`…http_filter.cutover.update_time`).
pub fn update_time(stats: &Snapshot) -> Option<f64> {
    stats.value(&format!("{}update_time", ecds::DISCOVERY_STATS_PREFIX))
}

/// The filter configuration Envoy serves.
#[derive(Debug, Clone)]
pub struct ServedFilter {
    /// The ECDS document built from the served Wasm filter config (plugin settings included).
    pub document: EcdsDocument,
    /// The filter's own validation of it (Envoy accepted it, so this only fails when the
    /// migrator's filter crate is older or newer than the `.wasm` Envoy runs).
    pub config: Result<FilterConfig, cutover_filter::config::ConfigError>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServedError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("GET {url}: HTTP {status}, not Envoy's admin {what}")]
    Status {
        url: String,
        status: u16,
        what: &'static str,
    },
    #[error("GET {url}: not Envoy's admin {what} ({reason})")]
    Shape {
        url: String,
        what: &'static str,
        reason: String,
    },
}

async fn get_json(
    client: &Client,
    admin_url: &str,
    path: &str,
    what: &'static str,
) -> Result<Value, ServedError> {
    let url = http::join(admin_url, path);
    let response = client.get(&url).await?;
    let shown = crate::redact::url(&url);
    if response.status != 200 {
        return Err(ServedError::Status {
            url: shown,
            status: response.status,
            what,
        });
    }
    serde_json::from_slice(&response.body).map_err(|e| ServedError::Shape {
        url: shown,
        what,
        reason: e.to_string(),
    })
}

/// Envoy's `/config_dump` (JSON).
pub async fn config_dump(client: &Client, admin_url: &str) -> Result<Value, ServedError> {
    get_json(client, admin_url, "/config_dump", "config dump").await
}

/// The ECDS entry of the filter in a config dump (`ecds_filters[]`, or the entry itself with
/// `?resource=ecds_filters`): its Wasm filter config and when Envoy received it.
fn ecds_entry(dump: &Value) -> Option<(&Value, Option<&str>)> {
    match dump {
        Value::Object(map) => {
            if let Some(filter) = map.get("ecds_filter") {
                if filter.get("name").and_then(Value::as_str) == Some(ecds::FILTER_NAME) {
                    let typed = filter.get("typed_config")?;
                    return Some((typed, map.get("last_updated").and_then(Value::as_str)));
                }
            }
            map.values().find_map(ecds_entry)
        }
        Value::Array(items) => items.iter().find_map(ecds_entry),
        _ => None,
    }
}

/// The cutover filter configuration Envoy serves, from its config dump and stats; `None` when
/// the dump has none (no filter loaded) or cannot say: Envoy 1.40's dump shows the last ECDS
/// configuration it *received*, also one it refused, so an ECDS entry counts only when it was
/// received no later than the last accepted update (`update_time`).
pub fn served_filter(dump: &Value, stats: &Snapshot) -> Option<ServedFilter> {
    let typed = match ecds_entry(dump) {
        Some((typed, received)) => {
            let received = chrono::DateTime::parse_from_rfc3339(received?)
                .ok()?
                .timestamp_millis() as f64;
            if update_time(stats)? < received {
                return None;
            }
            typed
        }
        // A filter configured in the listener itself: what the dump shows is what runs.
        None => ecds::served_typed_config(dump)?,
    };
    let document = EcdsDocument::from_typed_config(typed.clone()).ok()?;
    let config = FilterConfig::from_json(document.filter_config_json().as_bytes());
    Some(ServedFilter { document, config })
}

#[derive(Deserialize)]
struct ClustersDoc {
    #[serde(default)]
    cluster_statuses: Vec<ClusterStatus>,
}

#[derive(Deserialize)]
struct ClusterStatus {
    name: String,
    #[serde(default)]
    host_statuses: Vec<HostStatus>,
}

#[derive(Deserialize)]
struct HostStatus {
    address: Option<HostAddress>,
}

#[derive(Deserialize)]
struct HostAddress {
    socket_address: Option<SocketAddress>,
}

#[derive(Deserialize)]
struct SocketAddress {
    address: String,
    port_value: u16,
}

/// `host:port` of every host of every cluster, by cluster name, from `/clusters?format=json`.
pub async fn cluster_hosts(
    client: &Client,
    admin_url: &str,
) -> Result<Vec<(String, Vec<String>)>, ServedError> {
    let path = "/clusters?format=json";
    let value = get_json(client, admin_url, path, "clusters").await?;
    let doc: ClustersDoc = serde_json::from_value(value).map_err(|e| ServedError::Shape {
        url: crate::redact::url(&http::join(admin_url, path)),
        what: "clusters",
        reason: e.to_string(),
    })?;
    Ok(doc
        .cluster_statuses
        .into_iter()
        .map(|c| {
            let hosts = c
                .host_statuses
                .into_iter()
                .filter_map(|h| h.address?.socket_address)
                .map(|a| {
                    if a.address.contains(':') {
                        format!("[{}]:{}", a.address, a.port_value)
                    } else {
                        format!("{}:{}", a.address, a.port_value)
                    }
                })
                .collect();
            (c.name, hosts)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ecds_entry_counts_only_when_received_before_the_last_accepted_update() {
        let typed = ecds::wasm_typed_config(
            "/f.wasm",
            r#"{"services":[{"name":"chat","path_prefixes":["/api/chat"],"legacy_cluster":"l","new_cluster":"n"}]}"#,
            None,
        );
        let dump = serde_json::json!({"configs": [{"ecds_filters": [{"ecds_filter":
            ecds::ecds_document(typed)["resources"][0], "last_updated": "2026-12-01T22:01:10.642Z"}]}]});
        let stats = |ms: u64| {
            Snapshot::parse(&format!(
                r#"{{"stats":[{{"name":"extension_config_discovery.http_filter.cutover.update_time","value":{ms}}}]}}"#
            ))
            .unwrap()
        };
        // Accepted 60 ms after it was received (measured on Envoy 1.40).
        let served = served_filter(&dump, &stats(1_796_162_470_702)).unwrap();
        assert_eq!(served.config.unwrap().services[0].name, "chat");
        // The last accepted update is older: this entry was refused.
        assert!(served_filter(&dump, &stats(1_796_162_469_983)).is_none());
        assert!(served_filter(&dump, &Snapshot::default()).is_none());
    }

    #[test]
    fn reads_hosts_of_envoys_clusters_answer() {
        // Shape of Envoy 1.40's `/clusters?format=json`, shortened.
        let doc: ClustersDoc = serde_json::from_str(
            r#"{"cluster_statuses":[{"name":"chat_new","added_via_api":false,"host_statuses":[
              {"address":{"socket_address":{"address":"127.0.0.1","port_value":4321}},"stats":[]}]}]}"#,
        )
        .unwrap();
        assert_eq!(doc.cluster_statuses[0].name, "chat_new");
        let host = doc.cluster_statuses[0].host_statuses[0]
            .address
            .as_ref()
            .unwrap()
            .socket_address
            .as_ref()
            .unwrap();
        assert_eq!(
            (host.address.as_str(), host.port_value),
            ("127.0.0.1", 4321)
        );
    }
}
