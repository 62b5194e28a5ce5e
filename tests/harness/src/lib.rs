//! A proxy-wasm ABI 0.2.1 host in wasmtime that drives the built cutover filter `.wasm` the way
//! Envoy does, so tests read as a sequence of HTTP events:
//!
//! ```no_run
//! # fn main() -> Result<(), cutover_harness::Error> {
//! use cutover_harness::Filter;
//! let mut f = Filter::boot(r#"{"services": []}"#)?;
//! let mut stream = f.request(&[(":method", "GET"), (":path", "/api/chat/1")], None)?;
//! let cluster = stream.upstream_headers().get_str("x-cutover-cluster").map(str::to_owned);
//! let response = stream.respond(200, &[("content-type", "text/plain")])?;
//! stream.finish()?;
//! # let _ = (cluster, response);
//! # Ok(()) }
//! ```
//!
//! What the host models, because the filter's correctness depends on it (from Envoy's wasm
//! `Context`): header maps exist only during the callbacks where Envoy exposes them (request
//! headers during `on_request_headers`, or longer while the filter pauses them); reading a map
//! that is not available answers `BadArgument`, on which the Rust SDK panics; an HTTP call needs
//! `:method`, `:path` and `:authority`; a reset HTTP call is reported with no headers and no body;
//! header values are bytes.

mod headers;
mod host;
mod wasm_file;

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::{Engine, InstancePre, Linker, Module, Store, TypedFunc};

pub use headers::Headers;
pub use host::{HttpCall, LocalResponse, LogLevel, LogLine, MetricKind};
pub use wasm_file::{filter_wasm, locate_wasm, workspace_root, DEFAULT_WASM, FIXTURE_TARGET_DIR};

use host::{
    HostState, BUFFER_HTTP_CALL_RESPONSE_BODY, BUFFER_PLUGIN_CONFIGURATION, BUFFER_REQUEST_BODY,
    BUFFER_RESPONSE_BODY, BUFFER_VM_CONFIGURATION, MAP_HTTP_CALL_RESPONSE_HEADERS,
    MAP_HTTP_CALL_RESPONSE_TRAILERS, MAP_REQUEST_HEADERS, MAP_RESPONSE_HEADERS,
};

/// Context id of the plugin's root context (Envoy creates it first).
pub const ROOT_CONTEXT_ID: u32 = 1;

/// proxy-wasm stream types, as passed to `proxy_continue_stream`.
const STREAM_REQUEST: i32 = 0;
/// proxy-wasm `WasmResult::BrokenConnection`.
const STATUS_BROKEN_CONNECTION: u32 = 11;

/// Everything that can go wrong while driving the filter. `Debug` prints the same text as
/// `Display`, so a test returning `Err` shows a readable message.
pub enum Error {
    /// The `.wasm` could not be found, built, compiled or instantiated.
    Wasm(String),
    /// `proxy_on_configure` returned false; `logs` are what the filter logged while deciding.
    Rejected { logs: Vec<LogLine> },
    /// The VM trapped (a panic in the filter is an `unreachable` with `panic = "abort"`); Envoy
    /// would fail the VM, so every later call on this `Filter` fails too.
    Trap {
        during: String,
        message: String,
        stderr: String,
    },
    /// The test asked for something the host cannot do (an unknown call token, …).
    Usage(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Wasm(message) => write!(f, "filter .wasm unavailable: {message}"),
            Error::Rejected { logs } => {
                write!(f, "the filter rejected its configuration; it logged:")?;
                for line in logs {
                    write!(f, "\n  [{:?}] {}", line.level, line.message)?;
                }
                Ok(())
            }
            Error::Trap {
                during,
                message,
                stderr,
            } => {
                write!(f, "the VM trapped during {during}: {message}")?;
                if !stderr.is_empty() {
                    write!(f, "\nfilter stderr:\n{stderr}")?;
                }
                Ok(())
            }
            Error::Usage(message) => write!(f, "harness misuse: {message}"),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

/// What a filter callback answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    /// StopIteration for headers, StopIterationAndBuffer for bodies.
    Pause,
    Other(i32),
}

impl Action {
    fn from_abi(value: i32) -> Self {
        match value {
            0 => Action::Continue,
            1 => Action::Pause,
            other => Action::Other(other),
        }
    }
}

/// The guest's exported entry points, resolved once per instance.
struct Exports {
    on_context_create: TypedFunc<(i32, i32), ()>,
    on_vm_start: TypedFunc<(i32, i32), i32>,
    on_configure: TypedFunc<(i32, i32), i32>,
    on_request_headers: TypedFunc<(i32, i32, i32), i32>,
    on_request_body: TypedFunc<(i32, i32, i32), i32>,
    on_response_headers: TypedFunc<(i32, i32, i32), i32>,
    on_response_body: TypedFunc<(i32, i32, i32), i32>,
    on_done: TypedFunc<i32, i32>,
    on_log: TypedFunc<i32, ()>,
    on_delete: TypedFunc<i32, ()>,
    on_tick: TypedFunc<i32, ()>,
    on_http_call_response: TypedFunc<(i32, i32, i32, i32, i32), ()>,
}

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(Engine::default)
}

/// Compiling the module dominates start-up; each test process does it once per file.
fn instance_pre(path: &Path) -> Result<InstancePre<HostState>, Error> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, InstancePre<HostState>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(pre) = cache.get(path) {
        return Ok(pre.clone());
    }
    let wasm_error =
        |what: &str, e: wasmtime::Error| Error::Wasm(format!("{what} {}: {e:#}", path.display()));
    let module = compile_cached(path).map_err(|e| wasm_error("cannot compile", e))?;
    let mut linker = Linker::new(engine());
    host::define(&mut linker).map_err(|e| wasm_error("cannot define host functions for", e))?;
    // An import the host does not implement traps when called instead of failing the load.
    linker
        .define_unknown_imports_as_traps(&module)
        .map_err(|e| wasm_error("cannot stub the imports of", e))?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| wasm_error("cannot link", e))?;
    cache.insert(path.to_path_buf(), pre.clone());
    Ok(pre)
}

/// Compiles `path`, reusing machine code an earlier test process cached under
/// `target/harness-module-cache` (compiling with an unoptimised wasmtime takes seconds per process).
fn compile_cached(path: &Path) -> wasmtime::Result<Module> {
    let bytes = std::fs::read(path)?;
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    engine().precompile_compatibility_hash().hash(&mut hasher);
    let cache_dir = workspace_root().join("target/harness-module-cache");
    let key = hasher.finish();
    let cached = cache_dir.join(format!("{key:016x}.cwasm"));
    if cached.is_file() {
        // SAFETY: the file was produced by `Module::serialize` below for the same wasm bytes and a
        // compatible engine (both are in the name); a corrupt file fails deserialization checks.
        if let Ok(module) = unsafe { Module::deserialize_file(engine(), &cached) } {
            return Ok(module);
        }
    }
    let module = Module::new(engine(), &bytes)?;
    // The cache is an optimisation only: a failed write is ignored. Write-then-rename so a
    // concurrent test process never reads half a file.
    if let Ok(serialized) = module.serialize() {
        let partial = cache_dir.join(format!("{key:016x}.{}.partial", std::process::id()));
        if std::fs::create_dir_all(&cache_dir).is_ok()
            && std::fs::write(&partial, serialized).is_ok()
        {
            let _ = std::fs::rename(&partial, &cached);
        }
    }
    Ok(module)
}

/// One filter VM with its root context, like one Envoy worker's copy of the plugin.
pub struct Filter {
    store: Store<HostState>,
    exports: Exports,
    next_context_id: u32,
    trapped: Option<String>,
    wasm_path: PathBuf,
}

impl Filter {
    /// Starts a VM on the filter `.wasm` and configures it with `config` (the plugin
    /// configuration JSON). A rejected configuration is `Err(Error::Rejected)`.
    pub fn boot(config: &str) -> Result<Filter, Error> {
        let mut filter = Filter::start()?;
        if filter.configure(config)? {
            Ok(filter)
        } else {
            Err(Error::Rejected {
                logs: filter.logs().to_vec(),
            })
        }
    }

    /// Starts a VM and its root context (`_initialize`, `proxy_on_context_create`,
    /// `proxy_on_vm_start`) without configuring it.
    pub fn start() -> Result<Filter, Error> {
        let path = filter_wasm().map_err(Error::Wasm)?;
        Filter::start_from(&path)
    }

    /// Like [`Filter::start`] with an explicit `.wasm`.
    pub fn start_from(path: &Path) -> Result<Filter, Error> {
        let pre = instance_pre(path)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut store = Store::new(engine(), HostState::new(now.as_nanos() as u64));
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| Error::Wasm(format!("cannot instantiate {}: {e:#}", path.display())))?;
        let missing = |name: &str, e: wasmtime::Error| {
            Error::Wasm(format!(
                "{} does not export {name} as proxy-wasm 0.2.1 expects: {e:#}",
                path.display()
            ))
        };
        macro_rules! export {
            ($name:literal) => {
                instance
                    .get_typed_func(&mut store, $name)
                    .map_err(|e| missing($name, e))?
            };
        }
        let exports = Exports {
            on_context_create: export!("proxy_on_context_create"),
            on_vm_start: export!("proxy_on_vm_start"),
            on_configure: export!("proxy_on_configure"),
            on_request_headers: export!("proxy_on_request_headers"),
            on_request_body: export!("proxy_on_request_body"),
            on_response_headers: export!("proxy_on_response_headers"),
            on_response_body: export!("proxy_on_response_body"),
            on_done: export!("proxy_on_done"),
            on_log: export!("proxy_on_log"),
            on_delete: export!("proxy_on_delete"),
            on_tick: export!("proxy_on_tick"),
            on_http_call_response: export!("proxy_on_http_call_response"),
        };
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| Error::Wasm(format!("{} exports no memory", path.display())))?;
        let allocate = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&mut store, "malloc"))
            .map_err(|e| missing("proxy_on_memory_allocate", e))?;
        store.data_mut().memory = Some(memory);
        store.data_mut().allocate = Some(allocate);

        let mut filter = Filter {
            store,
            exports,
            next_context_id: ROOT_CONTEXT_ID + 1,
            trapped: None,
            wasm_path: path.to_path_buf(),
        };
        // A reactor module initialises its runtime in _initialize; a command module in _start.
        for entry in ["_initialize", "_start"] {
            if let Ok(init) = instance.get_typed_func::<(), ()>(&mut filter.store, entry) {
                filter.call(0, entry, |store| init.call(store, ()))?;
                break;
            }
        }
        filter
            .store
            .data_mut()
            .live_contexts
            .insert(ROOT_CONTEXT_ID);
        let create = filter.exports.on_context_create.clone();
        filter.call(ROOT_CONTEXT_ID, "proxy_on_context_create(root)", |store| {
            create.call(store, (ROOT_CONTEXT_ID as i32, 0))
        })?;
        filter.store.data_mut().buffers[BUFFER_VM_CONFIGURATION] = Some(Vec::new());
        let vm_start = filter.exports.on_vm_start.clone();
        let started = filter.call(ROOT_CONTEXT_ID, "proxy_on_vm_start", |store| {
            vm_start.call(store, (ROOT_CONTEXT_ID as i32, 0))
        });
        filter.store.data_mut().buffers[BUFFER_VM_CONFIGURATION] = None;
        if started? == 0 {
            return Err(Error::Wasm(format!(
                "proxy_on_vm_start returned false; the filter logged: {:?}",
                filter.logs()
            )));
        }
        Ok(filter)
    }

    /// Calls `proxy_on_configure` with `config` as the plugin configuration; returns its verdict.
    pub fn configure(&mut self, config: &str) -> Result<bool, Error> {
        self.store.data_mut().buffers[BUFFER_PLUGIN_CONFIGURATION] =
            Some(config.as_bytes().to_vec());
        let configure = self.exports.on_configure.clone();
        let result = self.call(ROOT_CONTEXT_ID, "proxy_on_configure", |store| {
            configure.call(store, (ROOT_CONTEXT_ID as i32, config.len() as i32))
        });
        self.store.data_mut().buffers[BUFFER_PLUGIN_CONFIGURATION] = None;
        Ok(result? != 0)
    }

    /// Sends request headers (`end_of_stream` when `body` is `None`) and then, if given, the whole
    /// body as one final chunk.
    pub fn request<V: AsRef<[u8]>>(
        &mut self,
        headers: &[(&str, V)],
        body: Option<&[u8]>,
    ) -> Result<Stream<'_>, Error> {
        let mut stream = self.start_request(headers, body.is_none())?;
        if let Some(body) = body {
            stream.send_body(body, true)?;
        }
        Ok(stream)
    }

    /// Creates an HTTP context and delivers request headers; send the body with
    /// [`Stream::send_body`].
    pub fn start_request<V: AsRef<[u8]>>(
        &mut self,
        headers: &[(&str, V)],
        end_of_stream: bool,
    ) -> Result<Stream<'_>, Error> {
        let id = self.next_context_id;
        self.next_context_id += 1;
        self.store.data_mut().live_contexts.insert(id);
        let create = self.exports.on_context_create.clone();
        self.call(id, "proxy_on_context_create", |store| {
            create.call(store, (id as i32, ROOT_CONTEXT_ID as i32))
        })?;
        let mut stream = Stream {
            filter: self,
            id,
            request: Headers::from_pairs(headers),
            request_headers_held: false,
            request_action: Action::Continue,
            buffered_body: Vec::new(),
            upstream_body: Vec::new(),
            body_actions: Vec::new(),
            downstream_body: Vec::new(),
            response: None,
            local_response: None,
            finished: false,
        };
        stream.deliver_request_headers(end_of_stream)?;
        Ok(stream)
    }

    /// Calls `proxy_on_tick` on the root context — only if the filter asked for a tick period,
    /// because Envoy never ticks a root context that did not.
    pub fn tick(&mut self) -> Result<(), Error> {
        if self.tick_period().is_none() {
            return Ok(());
        }
        let tick = self.exports.on_tick.clone();
        self.call(ROOT_CONTEXT_ID, "proxy_on_tick", |store| {
            tick.call(store, ROOT_CONTEXT_ID as i32)
        })
    }

    /// The tick period the filter asked for, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        self.store.data().tick_period
    }

    /// HTTP calls dispatched and not yet answered, oldest first.
    pub fn pending_http_calls(&self) -> &[HttpCall] {
        &self.store.data().http_calls
    }

    /// Makes `proxy_http_call` to `cluster` fail with `BadArgument`, as Envoy does for a cluster
    /// it does not know.
    pub fn make_cluster_unknown(&mut self, cluster: &str) {
        self.store
            .data_mut()
            .unreachable_clusters
            .insert(cluster.to_string());
    }

    /// Answers the pending call `token`: `Some(status)` with headers and body, or `None` for a
    /// reset (no headers, no body — what Envoy reports for a failure). Envoy calls
    /// `proxy_on_http_call_response` on the context that dispatched the call, also when that
    /// HTTP context is already gone.
    pub fn deliver_http_call_response<V: AsRef<[u8]>>(
        &mut self,
        token: u32,
        status: Option<u16>,
        headers: &[(&str, V)],
        body: &[u8],
    ) -> Result<(), Error> {
        let calls = &mut self.store.data_mut().http_calls;
        let Some(index) = calls.iter().position(|c| c.token == token) else {
            return Err(Error::Usage(format!(
                "no pending HTTP call with token {token}"
            )));
        };
        let call = calls.remove(index);
        let (num_headers, body_size) = match status {
            Some(status) => {
                let mut response = Headers::new();
                response.add(b":status", status.to_string().as_bytes());
                for (name, value) in headers {
                    response.add(name.as_bytes(), value.as_ref());
                }
                let count = response.len();
                let state = self.store.data_mut();
                state.maps[MAP_HTTP_CALL_RESPONSE_HEADERS] = Some(response);
                state.maps[MAP_HTTP_CALL_RESPONSE_TRAILERS] = Some(Headers::new());
                state.buffers[BUFFER_HTTP_CALL_RESPONSE_BODY] = Some(body.to_vec());
                (count, body.len())
            }
            None => {
                // Envoy's failure report: status BrokenConnection, message "reset".
                self.store.data_mut().call_status = (STATUS_BROKEN_CONNECTION, b"reset".to_vec());
                (0, 0)
            }
        };
        let callback = self.exports.on_http_call_response.clone();
        let context = call.context_id;
        let result = self.call(context, "proxy_on_http_call_response", |store| {
            callback.call(
                store,
                (
                    context as i32,
                    token as i32,
                    num_headers as i32,
                    body_size as i32,
                    0,
                ),
            )
        });
        let state = self.store.data_mut();
        state.maps[MAP_HTTP_CALL_RESPONSE_HEADERS] = None;
        state.maps[MAP_HTTP_CALL_RESPONSE_TRAILERS] = None;
        state.buffers[BUFFER_HTTP_CALL_RESPONSE_BODY] = None;
        state.call_status.1.clear();
        result
    }

    /// A counter's value; panics (failing the test) when no counter of that name was defined.
    pub fn counter(&self, name: &str) -> u64 {
        self.expect_metric(name, MetricKind::Counter)
    }

    /// A gauge's value; panics (failing the test) when no gauge of that name was defined.
    pub fn gauge(&self, name: &str) -> u64 {
        self.expect_metric(name, MetricKind::Gauge)
    }

    /// A metric's kind and value, if the filter defined it.
    pub fn metric(&self, name: &str) -> Option<(MetricKind, u64)> {
        self.store.data().metric(name).map(|m| (m.kind, m.value))
    }

    /// Every metric the filter defined, in definition order.
    pub fn metric_names(&self) -> Vec<String> {
        self.store
            .data()
            .metrics
            .iter()
            .map(|m| m.name.clone())
            .collect()
    }

    fn expect_metric(&self, name: &str, kind: MetricKind) -> u64 {
        match self.metric(name) {
            Some((found, value)) if found == kind => value,
            Some((found, _)) => panic!("metric {name} is a {found:?}, not a {kind:?}"),
            None => panic!(
                "the filter defined no metric {name}; it defined {:?}",
                self.metric_names()
            ),
        }
    }

    /// What the filter logged through `proxy_log`, oldest first.
    pub fn logs(&self) -> &[LogLine] {
        &self.store.data().logs
    }

    /// Log lines at `level` or more severe.
    pub fn logs_at_least(&self, level: LogLevel) -> Vec<&LogLine> {
        self.logs().iter().filter(|l| l.level >= level).collect()
    }

    pub fn clear_logs(&mut self) {
        self.store.data_mut().logs.clear();
    }

    /// What the module wrote to stdout and stderr through WASI.
    pub fn stdio(&self) -> (String, String) {
        let state = self.store.data();
        (
            String::from_utf8_lossy(&state.stdout).into_owned(),
            String::from_utf8_lossy(&state.stderr).into_owned(),
        )
    }

    /// The log level `proxy_get_log_level` reports (Envoy's default: info).
    pub fn set_log_level(&mut self, level: LogLevel) {
        self.store.data_mut().log_level = level;
    }

    /// Sets a property `proxy_get_property` answers; `path` segments as in the SDK.
    pub fn set_property(&mut self, path: &[&str], value: &[u8]) {
        self.store
            .data_mut()
            .properties
            .insert(path.join("\0").into_bytes(), value.to_vec());
    }

    /// Moves the clock the filter reads forward.
    pub fn advance_clock(&mut self, by: Duration) {
        self.store.data_mut().clock_ns += by.as_nanos() as u64;
    }

    /// The `.wasm` this VM runs.
    pub fn wasm_path(&self) -> &Path {
        &self.wasm_path
    }

    /// Runs one guest call as Envoy would: on behalf of `context`, failing the VM for good on a trap.
    fn call<R>(
        &mut self,
        context: u32,
        during: &str,
        f: impl FnOnce(&mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Error> {
        if let Some(earlier) = &self.trapped {
            return Err(Error::Trap {
                during: during.to_string(),
                message: format!("the VM failed earlier ({earlier}) and accepts no calls"),
                stderr: String::new(),
            });
        }
        self.store.data_mut().active_context = context;
        match f(&mut self.store) {
            Ok(value) => Ok(value),
            Err(e) => {
                let message = format!("{e:#}");
                self.trapped = Some(format!("{during}: {message}"));
                Err(Error::Trap {
                    during: during.to_string(),
                    message,
                    stderr: self.stdio().1,
                })
            }
        }
    }
}

/// One HTTP request through the filter. Finishing it (explicitly or on drop) runs
/// `proxy_on_log`, `proxy_on_done` and `proxy_on_delete` in Envoy's order.
pub struct Stream<'f> {
    filter: &'f mut Filter,
    id: u32,
    request: Headers,
    request_headers_held: bool,
    request_action: Action,
    buffered_body: Vec<u8>,
    upstream_body: Vec<u8>,
    body_actions: Vec<Action>,
    response: Option<Headers>,
    downstream_body: Vec<u8>,
    local_response: Option<LocalResponse>,
    finished: bool,
}

/// The response headers after the filter, and what it answered.
#[derive(Clone, Debug)]
pub struct Response {
    pub headers: Headers,
    pub action: Action,
}

impl Stream<'_> {
    pub fn context_id(&self) -> u32 {
        self.id
    }

    /// The request headers as the filter left them: what goes upstream.
    pub fn upstream_headers(&self) -> &Headers {
        &self.request
    }

    /// What `proxy_on_request_headers` answered.
    pub fn request_headers_action(&self) -> Action {
        self.request_action
    }

    /// What each `proxy_on_request_body` call answered.
    pub fn body_actions(&self) -> &[Action] {
        &self.body_actions
    }

    /// The body bytes released upstream so far (a paused chunk stays buffered, as in Envoy).
    pub fn upstream_body(&self) -> &[u8] {
        &self.upstream_body
    }

    /// A local response the filter sent instead of forwarding the request.
    pub fn local_response(&self) -> Option<&LocalResponse> {
        self.local_response.as_ref()
    }

    /// The filter this stream runs in (to tick it or answer calls mid-request).
    pub fn filter(&mut self) -> &mut Filter {
        self.filter
    }

    fn deliver_request_headers(&mut self, end_of_stream: bool) -> Result<(), Error> {
        let count = self.request.len();
        self.before_request_callback();
        self.filter.store.data_mut().maps[MAP_REQUEST_HEADERS] =
            Some(std::mem::take(&mut self.request));
        let callback = self.filter.exports.on_request_headers.clone();
        let id = self.id;
        let result = self.filter.call(id, "proxy_on_request_headers", |store| {
            callback.call(store, (id as i32, count as i32, end_of_stream as i32))
        });
        self.after_request_callback();
        let action = Action::from_abi(result?);
        self.request_action = action;
        // Envoy keeps the map reachable only while the filter holds the headers back.
        let continued = self.continued_request();
        self.request_headers_held = action != Action::Continue && !continued;
        Ok(())
    }

    /// Sends one request body chunk. Envoy passes the size of everything buffered so far; a
    /// `Continue` releases the buffer upstream, a `Pause` keeps buffering.
    pub fn send_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<Action, Error> {
        self.buffered_body.extend_from_slice(chunk);
        let size = self.buffered_body.len();
        self.before_request_callback();
        let state = self.filter.store.data_mut();
        state.buffers[BUFFER_REQUEST_BODY] = Some(std::mem::take(&mut self.buffered_body));
        if self.request_headers_held {
            state.maps[MAP_REQUEST_HEADERS] = Some(std::mem::take(&mut self.request));
        }
        let callback = self.filter.exports.on_request_body.clone();
        let id = self.id;
        let result = self.filter.call(id, "proxy_on_request_body", |store| {
            callback.call(store, (id as i32, size as i32, end_of_stream as i32))
        });
        self.after_request_callback();
        self.buffered_body = self.filter.store.data_mut().buffers[BUFFER_REQUEST_BODY]
            .take()
            .unwrap_or_default();
        let action = Action::from_abi(result?);
        self.body_actions.push(action);
        let continued = self.continued_request();
        if action == Action::Continue || continued {
            self.upstream_body.append(&mut self.buffered_body);
            self.request_headers_held = false;
        }
        Ok(action)
    }

    fn before_request_callback(&mut self) {
        let state = self.filter.store.data_mut();
        state.continued_streams.clear();
        state.local_response = None;
    }

    fn after_request_callback(&mut self) {
        let state = self.filter.store.data_mut();
        if let Some(map) = state.maps[MAP_REQUEST_HEADERS].take() {
            self.request = map;
        }
        if let Some(local) = state.local_response.take() {
            self.local_response = Some(local);
        }
    }

    fn continued_request(&mut self) -> bool {
        let continued = &mut self.filter.store.data_mut().continued_streams;
        let found = continued.contains(&STREAM_REQUEST);
        continued.clear();
        found
    }

    /// Delivers the upstream's response headers (with `:status`, end of stream) and returns them
    /// as the filter left them.
    pub fn respond<V: AsRef<[u8]>>(
        &mut self,
        status: u16,
        headers: &[(&str, V)],
    ) -> Result<Response, Error> {
        self.deliver_response_headers(status, headers, true)
    }

    /// Delivers the upstream's response headers with a body to follow
    /// ([`Stream::send_response_body`]).
    pub fn respond_headers<V: AsRef<[u8]>>(
        &mut self,
        status: u16,
        headers: &[(&str, V)],
    ) -> Result<Response, Error> {
        self.deliver_response_headers(status, headers, false)
    }

    /// Sends one response body chunk (`proxy_on_response_body` with its size; the response
    /// headers stay readable) and returns what the filter answered. The chunk goes on to the
    /// client unless the filter paused it; [`Stream::downstream_body`] has what went.
    pub fn send_response_body(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
    ) -> Result<Action, Error> {
        let state = self.filter.store.data_mut();
        state.buffers[BUFFER_RESPONSE_BODY] = Some(chunk.to_vec());
        state.maps[MAP_RESPONSE_HEADERS] = self.response.take();
        let callback = self.filter.exports.on_response_body.clone();
        let id = self.id;
        let result = self.filter.call(id, "proxy_on_response_body", |store| {
            callback.call(store, (id as i32, chunk.len() as i32, end_of_stream as i32))
        });
        let state = self.filter.store.data_mut();
        self.response = state.maps[MAP_RESPONSE_HEADERS].take();
        let released = state.buffers[BUFFER_RESPONSE_BODY]
            .take()
            .unwrap_or_default();
        let action = Action::from_abi(result?);
        if action == Action::Continue {
            self.downstream_body.extend_from_slice(&released);
        }
        Ok(action)
    }

    /// The response body bytes released to the client so far.
    pub fn downstream_body(&self) -> &[u8] {
        &self.downstream_body
    }

    fn deliver_response_headers<V: AsRef<[u8]>>(
        &mut self,
        status: u16,
        headers: &[(&str, V)],
        end_of_stream: bool,
    ) -> Result<Response, Error> {
        let status = status.to_string();
        let mut pairs: Vec<(&[u8], &[u8])> = Vec::with_capacity(headers.len() + 1);
        pairs.push((b":status", status.as_bytes()));
        pairs.extend(
            headers
                .iter()
                .map(|(name, value)| (name.as_bytes(), value.as_ref())),
        );
        let response = Headers::from_pairs(&pairs);
        let count = response.len();
        self.filter.store.data_mut().maps[MAP_RESPONSE_HEADERS] = Some(response);
        let callback = self.filter.exports.on_response_headers.clone();
        let id = self.id;
        let result = self.filter.call(id, "proxy_on_response_headers", |store| {
            callback.call(store, (id as i32, count as i32, end_of_stream as i32))
        });
        let headers = self.filter.store.data_mut().maps[MAP_RESPONSE_HEADERS]
            .take()
            .unwrap_or_default();
        let action = Action::from_abi(result?);
        self.response = Some(headers.clone());
        Ok(Response { headers, action })
    }

    /// Ends the stream: `proxy_on_log` (request and response headers readable), then
    /// `proxy_on_done` and `proxy_on_delete`, after which the context id is dead.
    pub fn finish(mut self) -> Result<(), Error> {
        self.finish_inner()
    }

    fn finish_inner(&mut self) -> Result<(), Error> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        let id = self.id;
        let exports = (
            self.filter.exports.on_log.clone(),
            self.filter.exports.on_done.clone(),
            self.filter.exports.on_delete.clone(),
        );
        let state = self.filter.store.data_mut();
        state.maps[MAP_REQUEST_HEADERS] = Some(std::mem::take(&mut self.request));
        state.maps[MAP_RESPONSE_HEADERS] = self.response.take();
        let logged = self
            .filter
            .call(id, "proxy_on_log", |store| exports.0.call(store, id as i32));
        let state = self.filter.store.data_mut();
        self.request = state.maps[MAP_REQUEST_HEADERS].take().unwrap_or_default();
        self.response = state.maps[MAP_RESPONSE_HEADERS].take();
        logged?;
        self.filter.call(id, "proxy_on_done", |store| {
            exports.1.call(store, id as i32)
        })?;
        let deleted = self.filter.call(id, "proxy_on_delete", |store| {
            exports.2.call(store, id as i32)
        });
        self.filter.store.data_mut().live_contexts.remove(&id);
        deleted
    }
}

impl Drop for Stream<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.finish_inner() {
            if !std::thread::panicking() {
                panic!("finishing HTTP context {} failed: {e}", self.id);
            }
        }
    }
}
