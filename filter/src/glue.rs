//! The proxy-wasm adapter: reads what Envoy hands over, calls the core ([`crate::stream`] per
//! HTTP stream, [`crate::root`] for the VM's shadows) and applies the effects it answers with.

use crate::compare::pending::Half;
use crate::config::CompareConfig;
use crate::metrics::{Counter, MetricIds, MetricsHost};
use crate::root::{on_call_response, on_tick, Plugin, RootEffects, RootHost, Shadows, TickStep};
use crate::root::{MAX_SHADOWS_IN_FLIGHT, SETTLE_GRACE_MS};
use crate::shadow::{ShadowInfo, ShadowRequest};
use crate::stream::{describe, HeaderMap, Stream, StreamEffects};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    // Envoy filters by its own log level; let everything through to it.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(CutoverRoot { id, plugin: None })
    });
}}

/// A service's metric ids, as the root core knows it.
type Service = Rc<crate::metrics::ServiceMetrics>;

thread_local! {
    /// Metric ids by name: the VM outlives plugin configurations (see `metrics.rs`).
    static METRIC_IDS: RefCell<MetricIds> = RefCell::new(MetricIds::default());
    /// Every shadow of this VM, across its root contexts (see `root.rs`).
    static SHADOWS: RefCell<Shadows<Service>> =
        RefCell::new(Shadows::new(MAX_SHADOWS_IN_FLIGHT, SETTLE_GRACE_MS));
}

fn shadows<R>(f: impl FnOnce(&mut Shadows<Service>) -> R) -> R {
    SHADOWS.with(|s| f(&mut s.borrow_mut()))
}

fn read(buffer: BufferType, size: usize) -> Vec<u8> {
    hostcalls::get_buffer(buffer, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

/// A header value as the `&str` the SDK's `dispatch_http_call` wants, its bytes unchanged: a
/// shadow carries obs-text (0x80–0xFF) as Envoy forwarded it, but proxy-wasm 0.2.5 has no bytes
/// variant, and only that call registers the callout `on_http_call_response` needs.
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

/// Applies the tick changes the root core asks for, from context `context` of root context `root`.
fn apply_ticks(context: u32, root: u32) {
    for step in shadows(|s| s.tick_steps(context, root)) {
        let _ = match step {
            TickStep::SwitchTo(id) => hostcalls::set_effective_context(id),
            TickStep::Period(ms) => hostcalls::set_tick_period(Duration::from_millis(ms)),
        };
    }
}

/// Envoy for the root core and the metrics (the hostcalls are global). A failing stats call must
/// not fail anything: failures are ignored.
struct RootEnvoy;

impl MetricsHost for RootEnvoy {
    fn define(&mut self, name: &str, gauge: bool) -> Option<u32> {
        let kind = match gauge {
            true => MetricType::Gauge,
            false => MetricType::Counter,
        };
        hostcalls::define_metric(kind, name)
            .map_err(|status| log::warn!("cutover: cannot define metric {name}: {status:?}"))
            .ok()
    }
    fn record(&mut self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }
}

impl RootEffects<Service> for RootEnvoy {
    fn count(&mut self, service: &Service, counter: Counter) {
        if let Some(id) = service.id(counter) {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
    fn warn(&mut self, line: std::fmt::Arguments<'_>) {
        log::warn!("{line}");
    }
}

impl RootHost<Service> for RootEnvoy {
    fn now_ms(&mut self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    fn dispatch(&mut self, request: &ShadowRequest) -> Result<u32, String> {
        let headers: Vec<(&str, &str)> = request
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), header_value_for_sdk(value)))
            .collect();
        let body = (!request.body.is_empty()).then_some(request.body.as_slice());
        let timeout = Duration::from_millis(request.timeout_ms);
        hostcalls::dispatch_http_call(&request.cluster, headers, body, Vec::new(), timeout)
            .map_err(|status| format!("{status:?}"))
    }
    fn call_status() -> Option<Vec<u8>> {
        Map(MapType::HttpCallResponseHeaders).get(":status")
    }
    fn call_body(size: usize) -> Vec<u8> {
        read(BufferType::HttpCallResponseBody, size)
    }
    fn call_headers() -> Vec<(String, Vec<u8>)> {
        Map(MapType::HttpCallResponseHeaders).all()
    }
    fn done(&mut self) {
        let _ = hostcalls::set_tick_period(Duration::ZERO);
        let _ = hostcalls::done();
    }
    fn debug(&mut self, line: std::fmt::Arguments<'_>) {
        log::debug!("{line}");
    }
}

/// A header map of the current HTTP stream or call.
struct Map(MapType);

impl HeaderMap for Map {
    fn get(&mut self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(self.0, name).ok().flatten()
    }
    fn all(&mut self) -> Vec<(String, Vec<u8>)> {
        hostcalls::get_map_bytes(self.0).unwrap_or_default()
    }
}

/// Envoy for the stream core of HTTP context `context` (of root context `root`).
struct HttpEnvoy {
    plugin: Rc<Plugin>,
    context: u32,
    root: u32,
}

impl StreamEffects for HttpEnvoy {
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
    }
    fn count(&mut self, service: usize, counter: Counter) {
        if let Some(id) = self.plugin.counter_id(service, counter) {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }
    fn submit(
        &mut self,
        service: usize,
        request: ShadowRequest,
        info: ShadowInfo,
        compare: Option<Arc<CompareConfig>>,
    ) -> Option<u64> {
        let metrics = Rc::clone(self.plugin.metrics.get(service)?);
        let (root, now, fx) = (self.root, RootEnvoy.now_ms(), &mut RootEnvoy);
        let id = shadows(|s| s.submit(root, request, info, metrics, compare, now, fx));
        apply_ticks(self.context, self.root);
        id
    }
    fn primary_response(&mut self, id: u64, half: Half) {
        shadows(|s| s.primary_response(id, half, &mut RootEnvoy));
    }
    fn primary_status(&mut self, id: u64, status: Option<u16>) {
        shadows(|s| s.primary_status(id, status, &mut RootEnvoy));
    }
    fn debug(&mut self, line: &str) {
        log::debug!("{line}");
    }
}

struct CutoverRoot {
    id: u32,
    plugin: Option<Rc<Plugin>>,
}

impl Context for CutoverRoot {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body_size: usize, _: usize) {
        let sizes = (headers, body_size);
        SHADOWS.with(|s| on_call_response(s, self.id, token, sizes, &mut RootEnvoy));
        apply_ticks(self.id, self.id);
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
        let configured =
            METRIC_IDS.with(|ids| Plugin::configure(&bytes, &mut ids.borrow_mut(), &mut RootEnvoy));
        match configured {
            Ok(plugin) => {
                log::info!("cutover: {}", describe(&plugin.settings.config));
                shadows(|s| s.configure(self.id, plugin.config_key));
                self.plugin = Some(Rc::new(plugin));
                true
            }
            Err(err) => {
                log::error!("cutover: rejected configuration: {err}");
                false
            }
        }
    }

    fn on_tick(&mut self) {
        SHADOWS.with(|s| on_tick(s, self.id, &mut RootEnvoy));
        apply_ticks(self.id, self.id);
    }

    fn create_http_context(&self, context: u32) -> Option<Box<dyn HttpContext>> {
        let root = self.id;
        let envoy = (self.plugin.clone()).map(|plugin| HttpEnvoy {
            plugin,
            context,
            root,
        });
        Some(Box::new(CutoverHttp(Stream::new(), envoy)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A stream and its Envoy; without one only if Envoy created a stream before a configuration
/// was accepted.
struct CutoverHttp(Stream, Option<HttpEnvoy>);

impl CutoverHttp {
    /// Runs one step of the stream core with Envoy as its effects.
    fn step(&mut self, f: impl FnOnce(&mut Stream, &Plugin, &mut HttpEnvoy)) -> Action {
        if let Some(envoy) = &mut self.1 {
            f(&mut self.0, &Rc::clone(&envoy.plugin), envoy);
        }
        Action::Continue
    }
}

impl Context for CutoverHttp {
    fn on_done(&mut self) -> bool {
        self.step(|stream, _, fx| stream.end(fx));
        true
    }
}

impl HttpContext for CutoverHttp {
    fn on_http_request_headers(&mut self, _: usize, eos: bool) -> Action {
        self.step(|stream, p, fx| {
            stream.request_headers(&p.settings, &mut Map(MapType::HttpRequestHeaders), eos, fx)
        })
    }

    fn on_http_request_body(&mut self, size: usize, eos: bool) -> Action {
        let read = |n| read(BufferType::HttpRequestBody, n);
        self.step(|stream, p, fx| stream.request_body(&p.settings, size, eos, read, fx))
    }

    fn on_http_request_trailers(&mut self, _: usize) -> Action {
        self.step(|stream, _, fx| stream.request_trailers(fx))
    }

    fn on_http_response_headers(&mut self, _: usize, eos: bool) -> Action {
        self.step(|stream, p, fx| {
            stream.response_headers(&p.settings, &mut Map(MapType::HttpResponseHeaders), eos, fx)
        })
    }

    fn on_http_response_body(&mut self, size: usize, eos: bool) -> Action {
        // A copy for the comparison; the body goes on to the client at once, unchanged.
        let read = |n| read(BufferType::HttpResponseBody, n);
        self.step(|stream, _, fx| stream.response_body(size, eos, read, fx))
    }

    fn on_http_response_trailers(&mut self, _: usize) -> Action {
        self.step(|stream, _, fx| stream.response_trailers(fx))
    }

    fn on_log(&mut self) {
        self.step(|stream, _, fx| stream.end(fx));
    }
}
