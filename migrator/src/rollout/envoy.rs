//! What `rollout` asks Envoy's admin endpoint: is it one (`/server_info`), does it watch our file
//! (`/config_dump`), what the filter reports live (gauges), and did it take an update
//! (the ECDS subscription counters).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover_filter::metrics::{metric_name, Gauge};
use serde_json::Value;

use super::live_file::ServiceState;
use super::{Result, RolloutError};
use crate::cutover_verify::http::{self, Client};
use crate::cutover_verify::served;
use crate::cutover_verify::stats::Snapshot;

/// An Envoy admin endpoint that answered `/server_info`.
#[derive(Debug, Clone)]
pub struct Admin {
    pub client: Client,
    pub url: String,
    /// For messages: the URL without credentials.
    pub shown: String,
}

fn unreachable(admin: &str, e: &http::HttpError) -> RolloutError {
    if e.is_usage() {
        return RolloutError::usage(format!("--admin: {e}"));
    }
    RolloutError::target(format!(
        "Envoy admin {admin} is not reachable: {e}; nothing was written"
    ))
}

impl Admin {
    /// Connects and checks that `url` is an Envoy admin endpoint.
    pub async fn connect(client: Client, url: &str) -> Result<Admin> {
        http::parse_url(url).map_err(|e| RolloutError::usage(format!("--admin: {e}")))?;
        let admin = Admin {
            client,
            url: url.trim_end_matches('/').to_string(),
            shown: crate::redact::url(url),
        };
        let response = admin
            .client
            .get(&http::join(&admin.url, "/server_info"))
            .await
            .map_err(|e| unreachable(&admin.shown, &e))?;
        let info: Option<Value> = serde_json::from_slice(&response.body).ok();
        let is_admin = response.status == 200
            && info.as_ref().is_some_and(|i| {
                i.get("command_line_options").is_some() && i.get("state").is_some()
            });
        if !is_admin {
            return Err(RolloutError::target(format!(
                "{} is not an Envoy admin endpoint (GET /server_info answered HTTP {}{}, not Envoy's server info; a listener address?); nothing was written",
                admin.shown,
                response.status,
                response
                    .header("server")
                    .map(|s| format!(", server {s:?}"))
                    .unwrap_or_default()
            )));
        }
        Ok(admin)
    }

    async fn config_dump(&self) -> Result<Value> {
        served::config_dump(&self.client, &self.url)
            .await
            .map_err(|e| match e {
                served::ServedError::Http(e) => unreachable(&self.shown, &e),
                other => {
                    RolloutError::target(format!("{}: {other}; nothing was written", self.shown))
                }
            })
    }

    /// The filter configuration Envoy serves, from its config dump — `None` when the dump cannot
    /// say (it shows a configuration Envoy refused).
    pub async fn served(&self) -> Result<Option<served::ServedFilter>> {
        let dump = self.config_dump().await?;
        Ok(served::served_filter(&dump, &self.stats().await?))
    }

    /// The files Envoy reads filter configurations from (`path_config_source.path` anywhere in
    /// its config dump).
    pub async fn watched_files(&self) -> Result<Vec<String>> {
        let dump = self.config_dump().await?;
        let mut paths = Vec::new();
        collect_path_sources(&dump, &mut paths);
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// Refuses (exit 6) when this Envoy does not read its filter configuration from `file`.
    pub async fn check_watches(&self, file: &Path) -> Result<()> {
        let watched = self.watched_files().await?;
        if watched.iter().any(|w| same_file(file, w)) {
            return Ok(());
        }
        Err(RolloutError::target(format!(
            "Envoy at {} does not watch {} (its config dump names {}); nothing was written",
            self.shown,
            file.display(),
            if watched.is_empty() {
                "no watched ECDS file".to_string()
            } else {
                watched.join(", ")
            }
        )))
    }

    pub async fn stats(&self) -> Result<Snapshot> {
        crate::cutover_verify::stats::fetch(&self.client, &self.url)
            .await
            .map_err(|e| RolloutError::target(format!("{e:#}")))
    }
}

fn collect_path_sources(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "path_config_source" {
                    if let Some(path) = inner.get("path").and_then(Value::as_str) {
                        out.push(path.to_string());
                    }
                }
                collect_path_sources(inner, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_path_sources(v, out)),
        _ => {}
    }
}

/// `watched` as Envoy names it: absolute, or relative to Envoy's working directory (which we
/// do not know, so a relative name matches when our file's absolute path ends with it).
fn same_file(file: &Path, watched: &str) -> bool {
    let ours = absolute(file);
    let theirs = Path::new(watched);
    if theirs.is_absolute() {
        return absolute(theirs) == ours;
    }
    let relative: PathBuf = theirs
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    ours.ends_with(relative)
}

fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// The filter's gauges for one service, `None` when Envoy does not report them.
pub fn live_state(stats: &Snapshot, service: &str) -> Option<ServiceState> {
    let gauge = |g: Gauge| stats.value(&format!("wasmcustom.{}", metric_name(service, g.suffix())));
    Some(ServiceState {
        new_percentage: gauge(Gauge::NewPercentage)? as u8,
        use_legacy: gauge(Gauge::UseLegacy)? > 0.0,
        dual_write: gauge(Gauge::DualWriteEnabled)? > 0.0,
    })
}

/// Counters of the filter's ECDS subscription.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Discovery {
    pub success: f64,
    pub rejected: f64,
    pub failure: f64,
    /// Milliseconds since the epoch of the last accepted update (0: none yet).
    pub update_time: f64,
}

impl Discovery {
    pub fn read(stats: &Snapshot) -> Discovery {
        let prefix = cutover_filter::ecds::discovery_stats_prefix();
        let stat = |n: &str| stats.value(&format!("{prefix}{n}")).unwrap_or(0.0);
        Discovery {
            success: stat("update_success"),
            rejected: stat("update_rejected"),
            failure: stat("update_failure"),
            update_time: served::update_time(stats).unwrap_or(0.0),
        }
    }
}

/// How an update ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirmation {
    Live,
    Rejected(String),
    NotConfirmed(String),
}

/// Polls until Envoy took the update (`update_success` grew, or `accepted_already` when the file
/// did not change) and every service's gauges equal `expected`, or rejected it, or `timeout`.
pub async fn confirm(
    admin: &Admin,
    before: Discovery,
    expected: &[(String, ServiceState)],
    accepted_already: bool,
    timeout: Duration,
) -> Result<Confirmation> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let stats = admin.stats().await?;
        let now = Discovery::read(&stats);
        if now.rejected > before.rejected {
            return Ok(Confirmation::Rejected(
                "update_rejected grew: the filter refused the configuration (see Envoy's log)"
                    .into(),
            ));
        }
        if now.failure > before.failure {
            return Ok(Confirmation::Rejected(
                "update_failure grew: Envoy could not read the file".into(),
            ));
        }
        let accepted = accepted_already || now.success > before.success;
        let mismatched: Vec<String> = expected
            .iter()
            .filter(|(name, want)| live_state(&stats, name) != Some(*want))
            .map(|(name, want)| {
                format!(
                    "{name}: want {}, live {}",
                    want.describe(),
                    live_state(&stats, name).map_or("no gauges".to_string(), |s| s.describe())
                )
            })
            .collect();
        if accepted && mismatched.is_empty() {
            return Ok(Confirmation::Live);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Confirmation::NotConfirmed(format!(
                "accepted={accepted}, gauges match={}{}",
                mismatched.is_empty(),
                if mismatched.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", mismatched.join("; "))
                }
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_watched_paths_in_a_config_dump() {
        let dump = serde_json::json!({"configs": [{"dynamic_listeners": [{"x": {"http_filters": [
            {"config_discovery": {"config_source": {"path_config_source": {"path": ".tmp/ecds/cutover.json",
              "watched_directory": {"path": ".tmp/ecds"}}}}}]}}]}]});
        let mut paths = Vec::new();
        collect_path_sources(&dump, &mut paths);
        assert_eq!(paths, [".tmp/ecds/cutover.json"]);
        assert!(same_file(
            Path::new("/srv/x/.tmp/ecds/cutover.json"),
            "./.tmp/ecds/cutover.json"
        ));
        assert!(!same_file(
            Path::new("/srv/x/other.json"),
            ".tmp/ecds/cutover.json"
        ));
        assert!(same_file(Path::new("/srv/a.json"), "/srv/a.json"));
    }
}
