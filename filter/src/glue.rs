//! The proxy-wasm adapter: reads what Envoy hands over, calls the core ([`crate::stream`] per
//! HTTP stream, [`crate::root`] for the VM's shadows) and applies the effects it answers with.

use crate::compare::pending::Half;
use crate::config::{CompareConfig, FilterConfig};
use crate::metrics::{metric_name, Counter, Gauge};
use crate::root::{RootEffects, Shadows, MAX_SHADOWS_IN_FLIGHT, SETTLE_GRACE_MS};
use crate::shadow::{ShadowInfo, ShadowRequest};
use crate::stream::describe;
use crate::stream::{RequestHeaders, Settings, Stream, StreamEffects};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    // Envoy filters by its own log level; let everything through to it.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(CutoverRoot { id, runtime: None })
    });
}}

thread_local! {
    /// Metric ids by name. The VM (and this map) outlives plugin configurations: ECDS updates
    /// reuse it, and each name must be defined with Envoy only once.
    static METRIC_IDS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
    /// Every shadow of this VM, across its root contexts (see `root.rs`).
    static SHADOWS: RefCell<Shadows<Rc<ServiceMetrics>>> =
        RefCell::new(Shadows::new(MAX_SHADOWS_IN_FLIGHT, SETTLE_GRACE_MS));
}

fn shadows<R>(f: impl FnOnce(&mut Shadows<Rc<ServiceMetrics>>) -> R) -> R {
    SHADOWS.with(|s| f(&mut s.borrow_mut()))
}

fn define_metric(kind: MetricType, name: String) -> Option<u32> {
    METRIC_IDS.with(|ids| {
        if let Some(id) = ids.borrow().get(&name) {
            return Some(*id);
        }
        match hostcalls::define_metric(kind, &name) {
            Ok(id) => {
                ids.borrow_mut().insert(name, id);
                Some(id)
            }
            Err(status) => {
                log::warn!("cutover: cannot define metric {name}: {status:?}");
                None
            }
        }
    })
}

fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A header value as the `&str` the SDK's `dispatch_http_call` wants, with its bytes unchanged.
///
/// Envoy forwards obs-text (0x80–0xFF) in header values and the shadow must carry them as they
/// are, but proxy-wasm 0.2.5 has no bytes variant of `dispatch_http_call`, and a registered
/// callout (needed for `on_http_call_response`) can only come from it. Valid UTF-8 is converted
/// safely; anything else is passed through unchecked.
fn header_value_for_sdk(value: &[u8]) -> &str {
    match std::str::from_utf8(value) {
        Ok(text) => text,
        // SAFETY: a `str` that is not UTF-8 is only a problem for code that relies on the
        // encoding. The value goes straight into `hostcalls::dispatch_http_call`, whose
        // serialisation in proxy-wasm 0.2.5 (pinned with `=` in Cargo.toml) only calls `len()`
        // and `as_bytes()` on it — byte-level operations that assume nothing about UTF-8 — and
        // the `&str` does not outlive that call.
        Err(_) => unsafe { std::str::from_utf8_unchecked(value) },
    }
}

/// Metric ids of one service, indexed by `Counter::index`.
#[derive(Debug)]
struct ServiceMetrics {
    counters: Vec<Option<u32>>,
}

impl ServiceMetrics {
    fn define(service: &crate::config::ServiceConfig) -> Self {
        let gauges = [
            (Gauge::NewPercentage, u64::from(service.new_percentage)),
            (Gauge::UseLegacy, u64::from(service.use_legacy)),
            (
                Gauge::DualWriteEnabled,
                u64::from(service.dual_write.enabled),
            ),
        ];
        for (gauge, value) in gauges {
            if let Some(id) = define_metric(
                MetricType::Gauge,
                metric_name(&service.name, gauge.suffix()),
            ) {
                let _ = hostcalls::record_metric(id, value);
            }
        }
        let counters = Counter::ALL
            .iter()
            .map(|c| define_metric(MetricType::Counter, metric_name(&service.name, c.suffix())))
            .collect();
        Self { counters }
    }

    fn increment(&self, counter: Counter) {
        if let Some(Some(id)) = self.counters.get(counter.index()) {
            // A failing stats call must not fail the request.
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }
}

/// Everything a request needs, built once per configuration.
struct Runtime {
    settings: Settings,
    metrics: Vec<Rc<ServiceMetrics>>,
}

/// Counts and logs for the root core.
struct RootFx;

impl RootEffects<Rc<ServiceMetrics>> for RootFx {
    fn count(&mut self, service: &Rc<ServiceMetrics>, counter: Counter) {
        service.increment(counter);
    }
    fn warn(&mut self, line: std::fmt::Arguments<'_>) {
        log::warn!("{line}");
    }
}

/// Applies the tick periods the root core asks for. The tick of another root context than the
/// caller's own is set through `proxy_set_effective_context`, then the caller's is restored.
fn apply_ticks(current: u32, own_root: u32) {
    // Whose tick `set_tick_period` sets right now: from an HTTP context, its root context's.
    let (mut effective, mut switched) = (own_root, false);
    for (root, period_ms) in shadows(|s| s.tick_changes()) {
        if root != effective {
            let _ = hostcalls::set_effective_context(root);
            (effective, switched) = (root, true);
        }
        let _ = hostcalls::set_tick_period(Duration::from_millis(period_ms));
    }
    if switched {
        let _ = hostcalls::set_effective_context(current);
    }
}

struct CutoverRoot {
    id: u32,
    runtime: Option<Rc<Runtime>>,
}

impl CutoverRoot {
    fn dispatch(&self, request: &ShadowRequest) {
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), header_value_for_sdk(value)))
            .collect();
        let body = (!request.body.is_empty()).then_some(request.body.as_slice());
        let timeout = Duration::from_millis(request.timeout_ms);
        match hostcalls::dispatch_http_call(&request.cluster, headers, body, Vec::new(), timeout) {
            Ok(token) => shadows(|s| {
                s.dispatched(request.id, token, request.timeout_ms, now_ms(), &mut RootFx)
            }),
            Err(status) => {
                log::warn!(
                    "cutover: cannot dispatch shadow to cluster {}: {status:?}",
                    request.cluster
                );
                shadows(|s| s.dispatch_failed(request.id, &mut RootFx));
            }
        }
    }

    /// Ticks, and `done()` once a replaced root context holds no call any more.
    fn settle(&mut self) {
        if shadows(|s| s.finished(self.id)) {
            let _ = hostcalls::set_tick_period(Duration::ZERO);
            self.done();
        }
        apply_ticks(self.id, self.id);
    }
}

impl Context for CutoverRoot {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body_size: usize, _: usize) {
        // Without headers Envoy has no response map to read: asking would fail the hostcall.
        let status = (headers > 0)
            .then(|| self.get_http_call_response_header_bytes(":status"))
            .flatten();
        let read_body = |n| self.get_http_call_response_body(0, n).unwrap_or_default();
        let read_headers = || self.get_http_call_response_headers_bytes();
        let outcome = shadows(|s| {
            s.call_response(
                token,
                status.as_deref(),
                body_size,
                read_body,
                read_headers,
                now_ms(),
                &mut RootFx,
            )
        });
        log::debug!(
            "cutover: shadow response token={token} root={} outcome={outcome:?}",
            self.id
        );
        self.settle();
    }

    fn on_done(&mut self) -> bool {
        // Keep the root context (and the calls it dispatched) alive until each answered.
        let now = shadows(|s| s.shutdown(self.id));
        apply_ticks(self.id, self.id);
        now
    }
}

impl RootContext for CutoverRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match FilterConfig::from_json(&bytes) {
            Ok(config) => {
                log::info!("cutover: {}", describe(&config));
                let metrics = config
                    .services
                    .iter()
                    .map(|s| Rc::new(ServiceMetrics::define(s)))
                    .collect();
                let mut hasher = DefaultHasher::new();
                bytes.hash(&mut hasher);
                shadows(|s| s.configure(self.id, hasher.finish()));
                self.runtime = Some(Rc::new(Runtime {
                    settings: Settings::new(config),
                    metrics,
                }));
                true
            }
            Err(err) => {
                log::error!("cutover: rejected configuration: {err}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        for request in shadows(|s| s.tick(self.id, now_ms(), &mut RootFx)) {
            self.dispatch(&request);
        }
        self.settle();
    }

    fn create_http_context(&self, id: u32) -> Option<Box<dyn HttpContext>> {
        let runtime = self.runtime.clone();
        Some(Box::new(CutoverHttp {
            id,
            root: self.id,
            runtime,
            stream: Stream::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Request headers read from Envoy one at a time.
struct EnvoyRequestHeaders;

impl RequestHeaders for EnvoyRequestHeaders {
    fn get(&mut self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
    }
    fn all(&mut self) -> Vec<(String, Vec<u8>)> {
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default()
    }
}

/// Applies a stream's effects for HTTP context `id` of root context `root`.
struct StreamFx<'a> {
    runtime: &'a Runtime,
    root: u32,
    submitted: bool,
}

impl StreamEffects for StreamFx<'_> {
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }
    fn set_response_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
    }
    fn count(&mut self, service: usize, counter: Counter) {
        if let Some(m) = self.runtime.metrics.get(service) {
            m.increment(counter);
        }
    }
    fn submit(
        &mut self,
        service: usize,
        request: ShadowRequest,
        info: ShadowInfo,
        compare: Option<Arc<CompareConfig>>,
    ) -> Option<u64> {
        let metrics = Rc::clone(self.runtime.metrics.get(service)?);
        self.submitted = true;
        shadows(|s| {
            s.submit(
                self.root,
                request,
                info,
                metrics,
                compare,
                now_ms(),
                &mut RootFx,
            )
        })
    }
    fn primary_response(&mut self, id: u64, half: Half) {
        shadows(|s| s.primary_response(id, half, &mut RootFx));
    }
    fn primary_status(&mut self, id: u64, status: Option<u16>) {
        shadows(|s| s.primary_status(id, status, &mut RootFx));
    }
    fn debug(&mut self, line: &str) {
        log::debug!("{line}");
    }
}

struct CutoverHttp {
    id: u32,
    root: u32,
    /// `None` only if Envoy created a stream before a configuration was accepted.
    runtime: Option<Rc<Runtime>>,
    stream: Stream,
}

impl CutoverHttp {
    /// Runs one step of the stream core with the effects applied.
    fn step(&mut self, f: impl FnOnce(&mut Stream, &Settings, &mut StreamFx<'_>)) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let mut fx = StreamFx {
            runtime: &runtime,
            root: self.root,
            submitted: false,
        };
        f(&mut self.stream, &runtime.settings, &mut fx);
        if fx.submitted {
            apply_ticks(self.id, self.root);
        }
    }
}

impl Context for CutoverHttp {
    fn on_done(&mut self) -> bool {
        self.step(|stream, _, fx| stream.end(fx));
        true
    }
}

impl HttpContext for CutoverHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.step(|stream, settings, fx| {
            stream.request_headers(settings, &mut EnvoyRequestHeaders, end_of_stream, fx);
        });
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.stream.wants_body() {
            let read = |size| {
                hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            };
            self.step(|stream, settings, fx| {
                stream.request_body(settings, body_size, end_of_stream, read, fx)
            });
        }
        Action::Continue
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.step(|stream, _, fx| stream.request_trailers(fx));
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        // The primary's status matters only to a shadow of this request (mismatch counting), its
        // headers only to a comparison.
        let status = self
            .stream
            .wants_primary_status()
            .then(|| self.get_http_response_header_bytes(":status"))
            .flatten();
        let headers = if self.stream.wants_response_headers() {
            self.get_http_response_headers_bytes()
        } else {
            Vec::new()
        };
        self.step(|stream, settings, fx| {
            stream.response_headers(settings, status.as_deref(), &headers, end_of_stream, fx)
        });
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        // A copy for the comparison; the body goes on to the client at once, unchanged.
        if self.stream.wants_response_body() {
            let read = |size| {
                hostcalls::get_buffer(BufferType::HttpResponseBody, 0, size)
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            };
            self.step(|stream, _, fx| stream.response_body(body_size, end_of_stream, read, fx));
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.stream.wants_response_body() {
            self.step(|stream, _, fx| stream.response_trailers(fx));
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        self.step(|stream, _, fx| stream.end(fx));
    }
}
