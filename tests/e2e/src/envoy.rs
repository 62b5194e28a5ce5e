//! A real Envoy 1.40 child process loading the cutover filter, on free loopback ports.

use std::fs;
use std::io::{self, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::client::{HttpClient, Response};
use crate::paths::{envoy_bin, filter_wasm};
use crate::upstream::Upstream;

/// Name of the filter in the HTTP filter chain and of its ECDS resource, and the type URL of
/// Envoy's Wasm HTTP filter config: the filter crate's `ecds` module is their one home.
pub use cutover_filter::ecds::{FILTER_NAME, WASM_TYPE_URL};
/// Cluster header used when the filter config does not name one (the filter's default).
pub const DEFAULT_CLUSTER_HEADER: &str = "x-cutover-cluster";
/// How long `boot` waits for `/ready` = LIVE (a loaded 2-core CI box can take seconds).
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long ECDS updates and stat polls wait by default.
pub const STATS_TIMEOUT: Duration = Duration::from_secs(20);
/// Stat prefix of the filter's ECDS subscription (the filter crate's, without its final dot).
pub const ECDS_STATS_PREFIX: &str = {
    let prefix = cutover_filter::ecds::DISCOVERY_STATS_PREFIX;
    prefix.split_at(prefix.len() - 1).0
};

/// Envoy's `failure_policy` for the Wasm plugin (what happens after the VM fails, e.g. a panic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailurePolicy {
    /// Envoy's default: every later request gets 503 until restart.
    FailClosed,
    /// The filter is bypassed; requests go on without it.
    FailOpen,
    /// 503 while the VM reloads (about a second), then a fresh VM.
    FailReload,
}

impl FailurePolicy {
    fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailClosed => "FAIL_CLOSED",
            FailurePolicy::FailOpen => "FAIL_OPEN",
            FailurePolicy::FailReload => "FAIL_RELOAD",
        }
    }
}

/// Everything needed to start an Envoy; see [`Envoy::builder`].
#[derive(Clone, Debug)]
pub struct EnvoyBuilder {
    filter_config: Value,
    clusters: Vec<(String, u16)>,
    fallback_cluster: Option<String>,
    concurrency: u32,
    ecds: bool,
    failure_policy: Option<FailurePolicy>,
    filter_enabled: bool,
    log_level: String,
    wasm: Option<PathBuf>,
    request_time_header: Option<String>,
}

/// Envoy's substitution format for the request-time header: the downstream request's start,
/// RFC 3339 UTC with microseconds (PostgreSQL's precision).
pub const REQUEST_TIME_FORMAT: &str = "%START_TIME(%Y-%m-%dT%H:%M:%E6SZ)%";

/// Why [`EnvoyBuilder::try_boot`] failed.
#[derive(Debug)]
pub struct BootError {
    /// Envoy's exit status, if it exited.
    pub exit_status: Option<std::process::ExitStatus>,
    /// Envoy's combined stdout/stderr.
    pub log: String,
    /// What went wrong from the fixture's view.
    pub reason: String,
}

impl std::fmt::Display for BootError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (exit status {:?})\n--- envoy log (last 60 lines) ---\n{}",
            self.reason,
            self.exit_status,
            tail(&self.log, 60)
        )
    }
}

impl EnvoyBuilder {
    /// Adds a STATIC cluster named after the upstream, pointing at its port. A stopped
    /// ("down") upstream still gets its cluster: connections to it are refused.
    pub fn upstream(mut self, upstream: &Upstream) -> Self {
        self.clusters
            .push((upstream.name().to_string(), upstream.port()));
        self
    }

    /// Adds a cluster by name and loopback port.
    pub fn cluster(mut self, name: &str, port: u16) -> Self {
        self.clusters.push((name.to_string(), port));
        self
    }

    /// Cluster of the fallback route (requests without the cluster header). Default: the first
    /// cluster whose name ends in `_legacy`, else the first cluster.
    pub fn fallback_cluster(mut self, name: &str) -> Self {
        self.fallback_cluster = Some(name.to_string());
        self
    }

    /// Worker threads (`--concurrency`), default 1.
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// Load the filter through extension config discovery from a watched file instead of a static
    /// filter config; change it with [`Envoy::update_filter_config`].
    pub fn ecds(mut self) -> Self {
        self.ecds = true;
        self
    }

    /// Set the plugin's `failure_policy` (default: not set, i.e. Envoy's FAIL_CLOSED).
    pub fn failure_policy(mut self, policy: FailurePolicy) -> Self {
        self.failure_policy = Some(policy);
        self
    }

    /// Leave the filter out of the chain: same listener, routes and clusters (for baselines).
    pub fn without_filter(mut self) -> Self {
        self.filter_enabled = false;
        self
    }

    /// Load this `.wasm` instead of [`filter_wasm`] (benchmark baselines).
    pub fn wasm(mut self, path: &Path) -> Self {
        self.wasm = Some(path.to_path_buf());
        self
    }

    /// Stamp every request with `header: <request start time>` ([`REQUEST_TIME_FORMAT`]) by an
    /// `envoy.filters.http.header_mutation` filter placed before the cutover filter, so the value
    /// (also one a client sent, which it overwrites) is among the headers the shadow copies.
    pub fn request_time_header(mut self, header: &str) -> Self {
        self.request_time_header = Some(header.to_string());
        self
    }

    /// Envoy's `--log-level` (default `info`, so the filter's warn/info lines are in the log).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = level.to_string();
        self
    }

    /// Starts Envoy and waits until `/ready` says LIVE and the listener accepts connections.
    /// Panics with Envoy's log when it does not come up.
    pub fn boot(self) -> Envoy {
        self.try_boot()
            .unwrap_or_else(|error| panic!("Envoy did not start: {error}"))
    }

    /// Like [`EnvoyBuilder::boot`], but returns Envoy's exit status and log when it refuses
    /// to start (e.g. the filter rejected its configuration).
    pub fn try_boot(self) -> Result<Envoy, BootError> {
        let bin = envoy_bin();
        let wasm = self.wasm.clone().unwrap_or_else(filter_wasm);
        let workdir = new_workdir();
        const ATTEMPTS: usize = 5;
        let mut last_error = None;
        for attempt in 1..=ATTEMPTS {
            let listener_port = free_port();
            let admin_port = std::iter::repeat_with(free_port)
                .find(|&p| p != listener_port)
                .expect("a second free port");
            match self.start_once(&bin, &wasm, &workdir, listener_port, admin_port) {
                Ok(envoy) => return Ok(envoy),
                Err(error) if attempt < ATTEMPTS && error.log.contains("ddress already in use") => {
                    // Another process took a port between our probe and Envoy's bind: new ports.
                    last_error = Some(error);
                }
                Err(error) => {
                    eprintln!(
                        "cutover-e2e: Envoy did not start; its files are kept in {}",
                        workdir.display()
                    );
                    return Err(error);
                }
            }
        }
        Err(last_error.expect("at least one attempt"))
    }

    fn start_once(
        &self,
        bin: &Path,
        wasm: &Path,
        workdir: &Path,
        listener_port: u16,
        admin_port: u16,
    ) -> Result<Envoy, BootError> {
        let ecds_dir = workdir.join("ecds");
        let ecds_file = ecds_dir.join("cutover.json");
        let bootstrap = self.bootstrap(wasm, listener_port, admin_port, &ecds_dir, &ecds_file);
        let bootstrap_path = workdir.join("bootstrap.json");
        write_file(
            &bootstrap_path,
            serde_json::to_string_pretty(&bootstrap)
                .expect("serialize bootstrap")
                .as_bytes(),
        );
        if self.ecds {
            fs::create_dir_all(&ecds_dir).expect("create the ECDS directory");
            let resource = ecds_resource(&wasm_typed_config(
                wasm,
                &self.filter_config,
                self.failure_policy,
            ));
            write_atomically(
                &ecds_file,
                serde_json::to_string_pretty(&resource)
                    .expect("serialize ECDS file")
                    .as_bytes(),
            )
            .expect("write the initial ECDS file");
        }
        let envoy = Envoy {
            child: None,
            workdir: workdir.to_path_buf(),
            log_path: workdir.join("envoy.log"),
            listener_port,
            admin_port,
            ecds_file: self.ecds.then_some(ecds_file),
            wasm: wasm.to_path_buf(),
            failure_policy: self.failure_policy,
            keep_files: false,
        };
        envoy.spawn(bin, &bootstrap_path, self.concurrency, &self.log_level)
    }

    fn cluster_header(&self) -> String {
        self.filter_config
            .get("cluster_header")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_CLUSTER_HEADER)
            .to_string()
    }

    fn bootstrap(
        &self,
        wasm: &Path,
        listener_port: u16,
        admin_port: u16,
        ecds_dir: &Path,
        ecds_file: &Path,
    ) -> Value {
        let fallback = self
            .fallback_cluster
            .clone()
            .or_else(|| {
                self.clusters
                    .iter()
                    .find(|(n, _)| n.ends_with("_legacy"))
                    .map(|(n, _)| n.clone())
            })
            .or_else(|| self.clusters.first().map(|(n, _)| n.clone()));
        let mut routes = vec![json!({
            "name": "by_cluster_header",
            "match": {"prefix": "/", "headers": [{"name": self.cluster_header(), "present_match": true}]},
            "route": {"cluster_header": self.cluster_header()}
        })];
        match fallback {
            Some(cluster) => routes.push(json!({"name": "fallback", "match": {"prefix": "/"}, "route": {"cluster": cluster}})),
            None => routes.push(json!({
                "name": "fallback", "match": {"prefix": "/"},
                "direct_response": {"status": 404, "body": {"inline_string": "no cluster"}}
            })),
        }
        let mut http_filters = Vec::new();
        if let Some(header) = &self.request_time_header {
            http_filters.push(request_time_filter(header));
        }
        if self.filter_enabled {
            if self.ecds {
                http_filters.push(json!({
                    "name": FILTER_NAME,
                    "config_discovery": {
                        "config_source": {"path_config_source": {
                            "path": ecds_file,
                            "watched_directory": {"path": ecds_dir}
                        }},
                        "type_urls": [WASM_TYPE_URL]
                    }
                }));
            } else {
                http_filters.push(json!({
                    "name": FILTER_NAME,
                    "typed_config": wasm_typed_config(wasm, &self.filter_config, self.failure_policy)
                }));
            }
        }
        http_filters.push(json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        let clusters: Vec<Value> = self
            .clusters
            .iter()
            .map(|(name, port)| {
                json!({
                    "name": name,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                        "socket_address": {"address": "127.0.0.1", "port_value": port}
                    }}}]}]}
                })
            })
            .collect();
        json!({
            "node": {"id": "cutover-e2e", "cluster": "cutover-e2e"},
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
            "static_resources": {
                "listeners": [{
                    "name": "main",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "ingress",
                            "route_config": {"name": "main", "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                            "http_filters": http_filters
                        }
                    }]}]
                }],
                "clusters": clusters
            }
        })
    }
}

/// The header_mutation filter that sets `header` to the request's start time, replacing any value.
pub fn request_time_filter(header: &str) -> Value {
    json!({
        "name": "request_time",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            "mutations": {"request_mutations": [{"append": {
                "header": {"key": header, "value": REQUEST_TIME_FORMAT},
                "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"
            }}]}
        }
    })
}

/// The `envoy.extensions.filters.http.wasm.v3.Wasm` typed config for the filter with this
/// configuration (serialized to the JSON string the plugin reads), built by the filter crate's
/// `ecds` module.
pub fn wasm_typed_config(
    wasm: &Path,
    filter_config: &Value,
    failure_policy: Option<FailurePolicy>,
) -> Value {
    cutover_filter::ecds::wasm_typed_config(
        &wasm.to_string_lossy(),
        &filter_config.to_string(),
        failure_policy.map(FailurePolicy::as_str),
    )
}

/// An ECDS file body carrying one `TypedExtensionConfig` named [`FILTER_NAME`] (the filter
/// crate's `ecds` module builds it).
pub fn ecds_resource(typed_config: &Value) -> Value {
    cutover_filter::ecds::ecds_document(typed_config.clone())
}

/// A running Envoy. Dropping it kills and reaps the process and removes its files, except when
/// the thread is panicking (a failing test): then the files are kept and their path printed.
///
/// Envoy is started with a parent-death signal (SIGKILL) so that a killed test run leaves no
/// Envoy behind. The kernel sends it when the *thread* that started Envoy exits: keep the `Envoy`
/// on the thread that booted it (do not boot inside a short-lived thread).
pub struct Envoy {
    child: Option<Child>,
    workdir: PathBuf,
    log_path: PathBuf,
    listener_port: u16,
    admin_port: u16,
    ecds_file: Option<PathBuf>,
    wasm: PathBuf,
    failure_policy: Option<FailurePolicy>,
    keep_files: bool,
}

impl Envoy {
    /// A builder with this filter configuration (the JSON object the plugin reads), no clusters
    /// yet, `--concurrency 1`, static filter config.
    pub fn builder(filter_config: &Value) -> EnvoyBuilder {
        EnvoyBuilder {
            filter_config: filter_config.clone(),
            clusters: Vec::new(),
            fallback_cluster: None,
            concurrency: 1,
            ecds: false,
            failure_policy: None,
            filter_enabled: true,
            log_level: "info".to_string(),
            wasm: None,
            request_time_header: None,
        }
    }

    /// Boots Envoy with this filter configuration and one cluster per upstream (named after it);
    /// routes by the cluster header, fallback to the first `*_legacy` upstream. Panics with the
    /// Envoy log if it does not become ready.
    pub fn boot(filter_config: &Value, upstreams: &[&Upstream]) -> Envoy {
        upstreams
            .iter()
            .fold(Envoy::builder(filter_config), |builder, upstream| {
                builder.upstream(upstream)
            })
            .boot()
    }

    /// Boots Envoy on a bootstrap the caller wrote (e.g. a shipped config rewritten for loopback),
    /// run from `workdir` so that its relative paths resolve there. `bootstrap` receives the
    /// listener and admin ports to use. `--concurrency 1`; no ECDS helpers. Panics with the Envoy
    /// log if it does not become ready.
    pub fn boot_bootstrap(workdir: &Path, bootstrap: impl Fn(u16, u16) -> Value) -> Envoy {
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let listener_port = free_port();
            let admin_port = std::iter::repeat_with(free_port)
                .find(|&p| p != listener_port)
                .expect("a second free port");
            let bootstrap_path = workdir.join("bootstrap.json");
            write_file(
                &bootstrap_path,
                serde_json::to_string_pretty(&bootstrap(listener_port, admin_port))
                    .expect("serialize bootstrap")
                    .as_bytes(),
            );
            let envoy = Envoy {
                child: None,
                workdir: workdir.to_path_buf(),
                log_path: workdir.join("envoy.log"),
                listener_port,
                admin_port,
                ecds_file: None,
                wasm: filter_wasm(),
                failure_policy: None,
                keep_files: false,
            };
            match envoy.spawn(&envoy_bin(), &bootstrap_path, 1, "info") {
                Ok(envoy) => return envoy,
                Err(error) if attempt < ATTEMPTS && error.log.contains("ddress already in use") => {
                }
                Err(error) => panic!("Envoy did not start: {error}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Starts the Envoy process on `bootstrap_path` and waits until it is ready.
    fn spawn(
        mut self,
        bin: &Path,
        bootstrap_path: &Path,
        concurrency: u32,
        log_level: &str,
    ) -> Result<Envoy, BootError> {
        let log = fs::File::create(&self.log_path).expect("create the Envoy log file");
        let mut command = Command::new(bin);
        command
            .current_dir(&self.workdir)
            .arg("-c")
            .arg(bootstrap_path)
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--log-level", log_level])
            .arg("--disable-hot-restart")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log);
        kill_with_parent(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", bin.display()));
        self.child = Some(child);
        match self.wait_ready(READY_TIMEOUT) {
            Ok(()) => Ok(self),
            Err(reason) => {
                let exit_status = self.stop_child();
                self.keep_files = true;
                Err(BootError {
                    exit_status,
                    log: self.log(),
                    reason,
                })
            }
        }
    }

    /// `http://127.0.0.1:PORT` of the HTTP listener.
    pub fn listener_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.listener_port)
    }

    /// `http://127.0.0.1:PORT` of the admin endpoint.
    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn listener_port(&self) -> u16 {
        self.listener_port
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// A new keep-alive client for the listener.
    pub fn client(&self) -> HttpClient {
        HttpClient::new(&self.listener_url())
    }

    /// Opens keep-alive clients until every worker thread accepted at least one connection
    /// (per-worker `downstream_cx_total` on `/stats`), with at least `min` clients; panics
    /// after 256 connections. Use with `.concurrency(n)` to make sure all workers see traffic.
    pub fn clients_on_all_workers(&self, min: usize) -> Vec<HttpClient> {
        let prefix = format!("listener.127.0.0.1_{}.worker_", self.listener_port);
        let mut clients = Vec::new();
        loop {
            let mut client = self.client();
            client.connect().expect("connect to the listener");
            clients.push(client);
            if clients.len() < min {
                continue;
            }
            let per_worker: Vec<u64> = self
                .stats()
                .into_iter()
                .filter(|(name, _)| {
                    name.starts_with(&prefix) && name.ends_with(".downstream_cx_total")
                })
                .map(|(_, value)| value)
                .collect();
            if !per_worker.is_empty() && per_worker.iter().all(|&accepted| accepted > 0) {
                return clients;
            }
            assert!(
                clients.len() < 256,
                "256 connections did not reach every worker: {per_worker:?}"
            );
        }
    }

    /// The directory with the bootstrap, the log and (ECDS mode) the watched directory.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Envoy's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default()
    }

    /// Operating-system process id of Envoy.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// GET on the admin endpoint; panics on a transport error.
    pub fn admin_get(&self, target: &str) -> Response {
        HttpClient::new(&self.admin_url())
            .with_timeout(Duration::from_secs(10))
            .get(target)
    }

    /// Every counter and gauge from `/stats?format=json` as (name, value); histograms left out.
    pub fn stats(&self) -> Vec<(String, u64)> {
        let json = self.stats_json();
        json.get("stats")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|stat| {
                Some((
                    stat.get("name")?.as_str()?.to_string(),
                    stat.get("value")?.as_u64()?,
                ))
            })
            .collect()
    }

    /// The raw `/stats?format=json` document.
    pub fn stats_json(&self) -> Value {
        let response = self.admin_get("/stats?format=json");
        assert_eq!(
            response.status,
            200,
            "GET /stats?format=json: {}",
            response.body_text()
        );
        serde_json::from_slice(&response.body).expect("/stats?format=json is JSON")
    }

    /// `/stats/prometheus` text.
    pub fn prometheus(&self) -> String {
        self.admin_get("/stats/prometheus").body_text()
    }

    /// A counter or gauge by its full `/stats` name, `None` when Envoy does not have it.
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats()
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v)
    }

    /// A counter or gauge by its full `/stats` name; 0 when Envoy does not have it (yet).
    pub fn counter(&self, name: &str) -> u64 {
        self.stat(name).unwrap_or(0)
    }

    /// The filter's metric `cutover.<service>.<metric>` (on `/stats`: `wasmcustom.cutover.…`);
    /// 0 when absent.
    pub fn cutover_counter(&self, service: &str, metric: &str) -> u64 {
        self.counter(&cutover_stat(service, metric))
    }

    /// Polls `/stats` until the stat equals `expected`; returns its last value (which differs
    /// from `expected` only after `timeout`, so callers assert on it).
    pub fn wait_for_stat(&self, name: &str, expected: u64, timeout: Duration) -> u64 {
        self.wait_for_stat_where(name, timeout, |value| value == expected)
    }

    /// Polls `/stats` until `done(value)` holds for the stat (absent = 0); returns the last value.
    pub fn wait_for_stat_where(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(u64) -> bool,
    ) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.counter(name);
            if done(value) || Instant::now() >= deadline {
                return value;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes a new filter configuration to the watched ECDS file (temp file + rename, like an
    /// operator would) and waits until Envoy accepted it (`…update_success` grew). Panics when
    /// Envoy rejects it or the wait times out. Only in ECDS mode.
    pub fn update_filter_config(&self, filter_config: &Value) {
        let before = self.ecds_stats();
        self.write_ecds_config(filter_config);
        let success = format!("{ECDS_STATS_PREFIX}.update_success");
        let deadline = Instant::now() + STATS_TIMEOUT;
        loop {
            let now = self.ecds_stats();
            if now.update_success > before.update_success {
                return;
            }
            assert!(
                now.update_rejected == before.update_rejected && now.update_failure == before.update_failure,
                "Envoy did not accept the ECDS update (rejected {} → {}, failure {} → {}); log: {}\n{}",
                before.update_rejected,
                now.update_rejected,
                before.update_failure,
                now.update_failure,
                self.log_path.display(),
                tail(&self.log(), 30)
            );
            assert!(
                Instant::now() < deadline,
                "{success} did not grow within {STATS_TIMEOUT:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Writes a new filter configuration to the watched ECDS file (temp file + rename) without
    /// waiting. Only in ECDS mode.
    pub fn write_ecds_config(&self, filter_config: &Value) {
        let resource = ecds_resource(&wasm_typed_config(
            &self.wasm,
            filter_config,
            self.failure_policy,
        ));
        self.write_ecds_raw(
            serde_json::to_string_pretty(&resource)
                .expect("serialize ECDS file")
                .as_bytes(),
        );
    }

    /// Writes these exact bytes as the watched ECDS file (temp file + rename), without waiting.
    pub fn write_ecds_raw(&self, contents: &[u8]) {
        let path = self
            .ecds_file
            .as_ref()
            .expect("write_ecds_*: Envoy was not booted with .ecds()");
        write_atomically(path, contents).expect("write the ECDS file");
    }

    /// Path of the watched ECDS file (ECDS mode only).
    pub fn ecds_file(&self) -> Option<&Path> {
        self.ecds_file.as_deref()
    }

    /// The filter's ECDS subscription counters.
    pub fn ecds_stats(&self) -> EcdsStats {
        let stats = self.stats();
        let get = |suffix: &str| {
            let name = format!("{ECDS_STATS_PREFIX}.{suffix}");
            stats
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(0, |(_, v)| *v)
        };
        EcdsStats {
            update_success: get("update_success"),
            update_rejected: get("update_rejected"),
            update_failure: get("update_failure"),
            config_reload: get("config_reload"),
        }
    }

    /// True while the Envoy process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let admin = format!("127.0.0.1:{}", self.admin_port);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("Envoy exited during start-up with {status}"));
                }
            }
            let ready = HttpClient::new(&admin)
                .with_timeout(Duration::from_secs(2))
                .try_send("GET", "/ready", &[], b"")
                .map(|r| r.status == 200 && r.body_text().trim() == "LIVE")
                .unwrap_or(false);
            if ready && TcpStream::connect(("127.0.0.1", self.listener_port)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("/ready did not say LIVE within {timeout:?}"));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Kills and reaps the process; returns its exit status.
    fn stop_child(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        self.stop_child();
        if thread::panicking() {
            eprintln!(
                "cutover-e2e: test failed; Envoy log kept at {}",
                self.log_path.display()
            );
        } else if !self.keep_files {
            let _ = fs::remove_dir_all(&self.workdir);
        }
    }
}

/// Asks the kernel to SIGKILL the child (Envoy, Prometheus) when the thread that spawns it exits, so
/// a test process that
/// is killed (or aborts) leaves nothing running on its ports.
#[cfg(target_os = "linux")]
pub fn kill_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid before the fork, prctl and getppid after it are async-signal-safe calls
    // that touch no memory of the parent.
    let parent = unsafe { libc::getpid() };
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent may have exited before prctl took effect.
            if libc::getppid() != parent {
                return Err(io::Error::other(
                    "the test process exited while starting a child process",
                ));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn kill_with_parent(_command: &mut Command) {}

/// Counters of the filter's ECDS subscription.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EcdsStats {
    pub update_success: u64,
    /// Valid file whose config Envoy refused (e.g. the filter's on_configure returned false).
    pub update_rejected: u64,
    /// File Envoy could not read or parse.
    pub update_failure: u64,
    pub config_reload: u64,
}

/// Full `/stats` name of the filter metric `cutover.<service>.<metric>`.
pub fn cutover_stat(service: &str, metric: &str) -> String {
    format!("wasmcustom.cutover.{service}.{metric}")
}

/// Runs `envoy --mode validate -c <config>` (cwd = the config's directory) and returns the output.
pub fn validate_config(config: &Path) -> Output {
    let dir = config.parent().unwrap_or(Path::new("."));
    Command::new(envoy_bin())
        .current_dir(dir)
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "-l",
            "warning",
            "-c",
        ])
        .arg(config)
        .output()
        .expect("run envoy --mode validate")
}

/// Writes `contents` next to `path` under a temporary name and renames it into place, so a
/// watcher never sees a half-written file.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = dir.join(format!(".{file_name}.tmp-{}", std::process::id()));
    {
        let mut file = fs::File::create(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    fs::rename(&temp, path)
}

fn write_file(path: &Path, contents: &[u8]) {
    fs::write(path, contents).unwrap_or_else(|error| panic!("write {}: {error}", path.display()));
}

/// A fresh directory for one Envoy (bootstrap, log, ECDS directory).
pub fn new_workdir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join("cutover-e2e").join(format!(
        "envoy-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|error| panic!("create {}: {error}", dir.display()));
    dir
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("probe a free loopback port")
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
