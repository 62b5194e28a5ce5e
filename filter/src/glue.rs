//! The proxy-wasm adapter: [`Glue`] is Envoy for the core (the host calls of [`host::Envoy`]);
//! each callback reads what Envoy hands over and calls the core ([`crate::stream`] per HTTP
//! stream, [`host::Vm`] for the VM's root contexts and shadows), which makes the host calls.

use crate::header_map::HeaderPairs;
use crate::host::{self, Level, StreamEnvoy, Vm};
use crate::root::Plugin;
use crate::shadow::ShadowRequest;
use crate::stream::Stream;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType, Status};
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

proxy_wasm::main! {{
    // Envoy filters by its own log level; let everything through to it.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> {
        Box::new(CutoverRoot { id, plugin: None })
    });
}}

thread_local! {
    /// Every shadow and metric id of this VM, across its root contexts.
    static VM: Vm = Vm::default();
}

fn read(buffer: BufferType, size: usize) -> Vec<u8> {
    hostcalls::get_buffer(buffer, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map: MapType, data: *mut *mut u8, size: *mut usize) -> Status;
}

/// A whole header map in one host call, serialised ([`crate::header_map`]); the SDK's
/// `get_map_bytes` would copy it into a `String` and a `Vec` per header.
fn header_map(map: MapType) -> Vec<u8> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0usize);
    // SAFETY: on success the host hands over a buffer of `size` bytes it allocated through the
    // SDK's `proxy_on_memory_allocate` (a `Vec<u8>` of that capacity), which is how the SDK's
    // own `get_map_bytes` takes it back.
    unsafe {
        match proxy_get_header_map_pairs(map, &mut data, &mut size) {
            Status::Ok if !data.is_null() => Vec::from_raw_parts(data, size, size),
            _ => Vec::new(),
        }
    }
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

/// Envoy, for the core. The hostcalls are global; a failing stats or header call must not fail
/// anything, so their failures are ignored.
struct Glue;

impl host::Envoy for Glue {
    fn log(&mut self, level: Level, line: std::fmt::Arguments<'_>) {
        match level {
            Level::Debug => log::debug!("{line}"),
            Level::Info => log::info!("{line}"),
            Level::Warn => log::warn!("{line}"),
            Level::Error => log::error!("{line}"),
        }
    }
    fn current_time_ms(&mut self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
    fn define_metric(&mut self, name: &str, gauge: bool) -> Result<u32, String> {
        let kind = if gauge {
            MetricType::Gauge
        } else {
            MetricType::Counter
        };
        hostcalls::define_metric(kind, name).map_err(|status| format!("{status:?}"))
    }
    fn record_metric(&mut self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }
    fn increment_metric(&mut self, id: u32) {
        let _ = hostcalls::increment_metric(id, 1);
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
    }
    fn dispatch_http_call(&mut self, request: &ShadowRequest) -> Result<u32, String> {
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
    fn call_body(size: usize) -> Vec<u8> {
        read(BufferType::HttpCallResponseBody, size)
    }
    fn call_headers() -> Vec<u8> {
        header_map(MapType::HttpCallResponseHeaders)
    }
    fn set_tick_period_ms(&mut self, ms: u64) {
        let _ = hostcalls::set_tick_period(Duration::from_millis(ms));
    }
    fn set_effective_context(&mut self, context: u32) {
        let _ = hostcalls::set_effective_context(context);
    }
    fn root_done(&mut self) {
        let _ = hostcalls::done();
    }
}

struct CutoverRoot {
    id: u32,
    plugin: Option<Rc<Plugin>>,
}

impl Context for CutoverRoot {
    fn on_http_call_response(&mut self, token: u32, headers: usize, body_size: usize, _: usize) {
        let sizes = (headers, body_size);
        VM.with(|vm| vm.call_response(self.id, token, sizes, &mut Glue));
    }

    fn on_done(&mut self) -> bool {
        // Keep the root context (and the calls it dispatched) alive until each answered.
        VM.with(|vm| vm.done(self.id, &mut Glue))
    }
}

impl RootContext for CutoverRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let configured = VM.with(|vm| vm.configure(self.id, &bytes, &mut Glue));
        let Some(plugin) = configured else {
            return false;
        };
        self.plugin = Some(Rc::new(plugin));
        true
    }

    fn on_tick(&mut self) {
        VM.with(|vm| vm.tick(self.id, &mut Glue));
    }

    fn create_http_context(&self, context: u32) -> Option<Box<dyn HttpContext>> {
        let (plugin, ids) = (self.plugin.clone(), (context, self.id));
        Some(Box::new(CutoverHttp(Stream::new(), plugin, ids)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// A stream, its configuration (none only if Envoy created a stream before a configuration was
/// accepted), and the ids of its HTTP context and root context.
struct CutoverHttp(Stream, Option<Rc<Plugin>>, (u32, u32));

impl CutoverHttp {
    /// Runs one step of the stream core with Envoy as its effects.
    fn step(&mut self, f: impl FnOnce(&mut Stream, &Plugin, &mut StreamEnvoy<'_, Glue>)) -> Action {
        if let Some(plugin) = &self.1 {
            VM.with(|vm| {
                f(
                    &mut self.0,
                    plugin,
                    &mut vm.stream(plugin, self.2, &mut Glue),
                )
            });
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
            let buffer = header_map(MapType::HttpRequestHeaders);
            stream.request_headers(&p.settings, &HeaderPairs::parse(&buffer), eos, fx)
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
        let read = || header_map(MapType::HttpResponseHeaders);
        self.step(|stream, p, fx| stream.response_headers(&p.settings, read, eos, fx))
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
