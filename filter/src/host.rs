//! Envoy as the core sees it: [`Envoy`], the host calls the filter makes, is the one trait the
//! glue implements (with proxy-wasm's hostcalls). The core's effect traits are built on it here
//! ([`MetricsHost`], [`RootEffects`], [`RootHost`] for every `Envoy`; [`StreamEnvoy`] for a stream's
//! [`StreamEffects`]), so each step from a callback to its host calls is native, tested code.

use crate::compare::pending::Half;
use crate::config::CompareConfig;
use crate::metrics::{Counter, MetricIds, MetricsHost, ServiceMetrics};
use crate::root::{apply_ticks, on_call_response, on_done, on_tick, Plugin, RootEffects};
use crate::root::{RootHost, Shadows, TickStep, MAX_SHADOWS_IN_FLIGHT, SETTLE_GRACE_MS};
use crate::shadow::{ShadowInfo, ShadowRequest};
use crate::stream::{describe, StreamEffects};
use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

/// A service's metric ids, as the root core knows it.
pub type Service = Rc<ServiceMetrics>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// The host calls, one method each. A failing stats or header call must not fail anything: the
/// glue ignores their failures.
pub trait Envoy {
    fn log(&mut self, level: Level, line: fmt::Arguments<'_>);
    /// Milliseconds since the epoch.
    fn current_time_ms(&mut self) -> u64;
    fn define_metric(&mut self, name: &str, gauge: bool) -> Result<u32, String>;
    fn record_metric(&mut self, id: u32, value: u64);
    fn increment_metric(&mut self, id: u32);
    /// Replaces (`Some`) or removes (`None`) every value of a request header.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    fn add_response_header(&mut self, name: &str, value: &str);
    /// `dispatch_http_call`: Envoy's token, or its refusal, described.
    fn dispatch_http_call(&mut self, request: &ShadowRequest) -> Result<u32, String>;
    /// The first `size` bytes of the answered call's body.
    fn call_body(size: usize) -> Vec<u8>;
    /// The answered call's response header map, serialised ([`crate::header_map`]).
    fn call_headers() -> Vec<u8>;
    /// 0: off.
    fn set_tick_period_ms(&mut self, ms: u64);
    fn set_effective_context(&mut self, context: u32);
    /// `proxy_done`: the calling root context may be deleted.
    fn root_done(&mut self);
}

impl<E: Envoy> MetricsHost for E {
    fn define(&mut self, name: &str, gauge: bool) -> Option<u32> {
        self.define_metric(name, gauge)
            .map_err(|why| {
                self.log(
                    Level::Warn,
                    format_args!("cutover: cannot define metric {name}: {why}"),
                )
            })
            .ok()
    }
    fn record(&mut self, id: u32, value: u64) {
        self.record_metric(id, value);
    }
}

impl<E: Envoy> RootEffects<Service> for E {
    fn count(&mut self, service: &Service, counter: Counter) {
        if let Some(id) = service.id(counter) {
            self.increment_metric(id);
        }
    }
    fn warn(&mut self, line: fmt::Arguments<'_>) {
        self.log(Level::Warn, line);
    }
}

impl<E: Envoy> RootHost<Service> for E {
    fn now_ms(&mut self) -> u64 {
        self.current_time_ms()
    }
    fn dispatch(&mut self, request: &ShadowRequest) -> Result<u32, String> {
        self.dispatch_http_call(request)
    }
    fn call_body(size: usize) -> Vec<u8> {
        <E as Envoy>::call_body(size)
    }
    fn call_headers() -> Vec<u8> {
        <E as Envoy>::call_headers()
    }
    fn done(&mut self) {
        self.set_tick_period_ms(0);
        self.root_done();
    }
    fn debug(&mut self, line: fmt::Arguments<'_>) {
        self.log(Level::Debug, line);
    }
    fn apply_tick(&mut self, step: TickStep) {
        match step {
            TickStep::SwitchTo(context) => self.set_effective_context(context),
            TickStep::Period(ms) => self.set_tick_period_ms(ms),
        }
    }
}

/// The VM's state across its root contexts: every shadow (see `root.rs`) and the metric ids by
/// name (the VM outlives plugin configurations, see `metrics.rs`). Each method is one callback.
pub struct Vm {
    shadows: RefCell<Shadows<Service>>,
    ids: RefCell<MetricIds>,
}

impl Default for Vm {
    fn default() -> Self {
        Self::new(MAX_SHADOWS_IN_FLIGHT, SETTLE_GRACE_MS)
    }
}

impl Vm {
    pub fn new(max_in_flight: usize, grace_ms: u64) -> Self {
        Self {
            shadows: RefCell::new(Shadows::new(max_in_flight, grace_ms)),
            ids: RefCell::new(MetricIds::default()),
        }
    }

    /// Root context `root`'s configuration text: the plugin, logged, with its shadows' root
    /// context configured; or the error, logged with its field (Envoy then rejects the text).
    pub fn configure(&self, root: u32, bytes: &[u8], envoy: &mut impl Envoy) -> Option<Plugin> {
        let configured = Plugin::configure(bytes, &mut self.ids.borrow_mut(), envoy);
        match configured {
            Ok(plugin) => {
                let line = describe(&plugin.settings.config);
                envoy.log(Level::Info, format_args!("cutover: {line}"));
                self.shadows.borrow_mut().configure(root, plugin.config_key);
                Some(plugin)
            }
            Err(err) => {
                envoy.log(
                    Level::Error,
                    format_args!("cutover: rejected configuration: {err}"),
                );
                None
            }
        }
    }

    pub fn tick(&self, root: u32, envoy: &mut impl Envoy) {
        on_tick(&self.shadows, root, envoy);
    }

    /// `(headers, body_size)`: the answered call's sizes as Envoy reports them.
    pub fn call_response(
        &self,
        root: u32,
        token: u32,
        sizes: (usize, usize),
        envoy: &mut impl Envoy,
    ) {
        on_call_response(&self.shadows, root, token, sizes, envoy);
    }

    /// Envoy asks root context `root` to finish: whether it may now (else it drains first).
    pub fn done(&self, root: u32, envoy: &mut impl Envoy) -> bool {
        on_done(&self.shadows, root, envoy)
    }

    /// Envoy for a stream of HTTP context `context` of root context `root`.
    pub fn stream<'a, E>(
        &'a self,
        plugin: &'a Plugin,
        ids: (u32, u32),
        envoy: &'a mut E,
    ) -> StreamEnvoy<'a, E> {
        let (context, root) = ids;
        StreamEnvoy {
            plugin,
            shadows: &self.shadows,
            context,
            root,
            envoy,
        }
    }
}

/// Envoy for the stream core of HTTP context `context` of root context `root`: its shadows go
/// to the VM's [`Shadows`].
pub struct StreamEnvoy<'a, E> {
    plugin: &'a Plugin,
    shadows: &'a RefCell<Shadows<Service>>,
    context: u32,
    root: u32,
    envoy: &'a mut E,
}

impl<E: Envoy> StreamEffects for StreamEnvoy<'_, E> {
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.envoy.set_request_header(name, value);
    }
    fn add_response_header(&mut self, name: &str, value: &str) {
        self.envoy.add_response_header(name, value);
    }
    fn count(&mut self, service: usize, counter: Counter) {
        if let Some(id) = self.plugin.counter_id(service, counter) {
            self.envoy.increment_metric(id);
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
        let now = self.envoy.current_time_ms();
        let (root, fx) = (self.root, &mut *self.envoy);
        let id = (self.shadows.borrow_mut()).submit(root, request, info, metrics, compare, now, fx);
        apply_ticks(self.shadows, self.context, self.root, &mut *self.envoy);
        id
    }
    fn primary_response(&mut self, id: u64, half: Half) {
        (self.shadows.borrow_mut()).primary_response(id, half, &mut *self.envoy);
    }
    fn primary_status(&mut self, id: u64, status: Option<u16>) {
        (self.shadows.borrow_mut()).primary_status(id, status, &mut *self.envoy);
    }
    fn debug(&mut self, line: &str) {
        self.envoy.log(Level::Debug, format_args!("{line}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header_map::{serialize, HeaderPairs};
    use crate::root::{FAST_TICK_MS, SLOW_TICK_MS};
    use crate::stream::Stream;

    /// Every host call, in order.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Log(Level, String),
        Define(String),
        Record(u32, u64),
        Increment(u32),
        Request(String, Option<String>),
        Response(String, String),
        Dispatch(String),
        Tick(u64),
        Switch(u32),
        Done,
    }

    /// Envoy, recording: metric ids count from 1; metrics named `*refused*` are refused.
    #[derive(Default)]
    struct Fake {
        calls: Vec<Call>,
        metrics: u32,
    }

    impl Envoy for Fake {
        fn log(&mut self, level: Level, line: fmt::Arguments<'_>) {
            self.calls.push(Call::Log(level, line.to_string()));
        }
        fn current_time_ms(&mut self) -> u64 {
            10
        }
        fn define_metric(&mut self, name: &str, _: bool) -> Result<u32, String> {
            if name.contains("refused") {
                return Err("BadArgument".into());
            }
            self.calls.push(Call::Define(name.into()));
            self.metrics += 1;
            Ok(self.metrics)
        }
        fn record_metric(&mut self, id: u32, value: u64) {
            self.calls.push(Call::Record(id, value));
        }
        fn increment_metric(&mut self, id: u32) {
            self.calls.push(Call::Increment(id));
        }
        fn set_request_header(&mut self, name: &str, value: Option<&str>) {
            self.calls
                .push(Call::Request(name.into(), value.map(String::from)));
        }
        fn add_response_header(&mut self, name: &str, value: &str) {
            self.calls.push(Call::Response(name.into(), value.into()));
        }
        fn dispatch_http_call(&mut self, request: &ShadowRequest) -> Result<u32, String> {
            self.calls.push(Call::Dispatch(request.cluster.clone()));
            Ok(7)
        }
        fn call_body(_: usize) -> Vec<u8> {
            Vec::new()
        }
        fn call_headers() -> Vec<u8> {
            serialize([(&b":status"[..], &b"201"[..])])
        }
        fn set_tick_period_ms(&mut self, ms: u64) {
            self.calls.push(Call::Tick(ms));
        }
        fn set_effective_context(&mut self, context: u32) {
            self.calls.push(Call::Switch(context));
        }
        fn root_done(&mut self) {
            self.calls.push(Call::Done);
        }
    }

    const CONFIG: &str = r#"{"stickiness_headers":["x-correlation-id"],"services":[{"name":"chat",
        "path_prefixes":["/api/chat"],"legacy_cluster":"chat_legacy","new_cluster":"chat_new",
        "new_percentage":100,"dual_write":{}}]}"#;

    fn id_of(fake: &Fake, name: &str) -> u32 {
        let defined = fake.calls.iter().filter_map(|c| match c {
            Call::Define(n) => Some(n.as_str()),
            _ => None,
        });
        let at = defined.clone().position(|n| n == name);
        u32::try_from(at.expect(name)).unwrap() + 1
    }

    #[test]
    fn a_configuration_is_logged_and_its_metrics_defined_or_rejected_with_its_field() {
        let (vm, mut fake) = (Vm::new(10, 100), Fake::default());
        let plugin = vm.configure(1, CONFIG.as_bytes(), &mut fake);
        assert!(plugin.is_some());
        assert!(vm.shadows.borrow().is_live(1));
        assert!(fake
            .calls
            .contains(&Call::Define("cutover.chat.routed_new".into())));
        let info = fake.calls.iter().any(
            |c| matches!(c, Call::Log(Level::Info, l) if l.starts_with("cutover: configured 1 service(s): chat new=100%")),
        );
        assert!(info, "{:?}", fake.calls);

        let mut fake = Fake::default();
        let bad = br#"{"services":[{"name":"chat"}]}"#;
        assert!(vm.configure(2, bad, &mut fake).is_none());
        assert!(
            matches!(&fake.calls[..], [Call::Log(Level::Error, l)] if l.contains("rejected configuration: services[0]"))
        );
        assert!(!vm.shadows.borrow().is_live(2));
    }

    #[test]
    fn a_refused_metric_is_logged_and_not_counted() {
        let mut fake = Fake::default();
        assert_eq!(
            MetricsHost::define(&mut fake, "cutover.refused", false),
            None
        );
        assert!(
            matches!(&fake.calls[..], [Call::Log(Level::Warn, l)] if l.contains("cutover.refused: BadArgument"))
        );
    }

    /// A bodiless write through the stream core to Envoy and back: the host calls in order.
    #[test]
    fn a_stream_write_becomes_host_calls_and_its_shadow_a_call_from_the_root() {
        let (vm, mut fake) = (Vm::new(10, 100), Fake::default());
        let plugin = vm.configure(1, CONFIG.as_bytes(), &mut fake).unwrap();
        let routed_new = id_of(&fake, "cutover.chat.routed_new");
        let sent = id_of(&fake, "cutover.chat.shadow_sent");
        let succeeded = id_of(&fake, "cutover.chat.shadow_succeeded");
        fake.calls.clear();

        let mut stream = Stream::new();
        let request = serialize([
            (&b":method"[..], &b"POST"[..]),
            (b":path", b"/api/chat/m"),
            (b"x-correlation-id", b"u1"),
        ]);
        let mut fx = vm.stream(&plugin, (5, 1), &mut fake);
        stream.request_headers(
            &plugin.settings,
            &HeaderPairs::parse(&request),
            true,
            &mut fx,
        );
        let status = || serialize([(&b":status"[..], &b"201"[..])]);
        stream.response_headers(&plugin.settings, status, true, &mut fx);
        stream.end(&mut fx);
        assert_eq!(
            fake.calls,
            [
                Call::Increment(routed_new),
                Call::Request("x-cutover-cluster".into(), Some("chat_new".into())),
                // Queued: the root context ticks fast to dispatch it.
                Call::Tick(FAST_TICK_MS),
                Call::Response("x-routed-to".into(), "new".into()),
                Call::Response("x-traffic-percentage".into(), "100".into()),
            ]
        );
        fake.calls.clear();
        vm.tick(1, &mut fake);
        assert_eq!(
            fake.calls,
            [
                Call::Dispatch("chat_legacy".into()),
                Call::Increment(sent),
                Call::Tick(SLOW_TICK_MS)
            ]
        );
        fake.calls.clear();
        // Replaced while its call is in flight, the root drains; the answer finishes it.
        assert!(!vm.done(1, &mut fake));
        vm.call_response(1, 7, (1, 0), &mut fake);
        let done = [Call::Tick(0), Call::Done];
        assert!(
            fake.calls.contains(&Call::Increment(succeeded)),
            "{:?}",
            fake.calls
        );
        assert!(fake.calls.ends_with(&done), "{:?}", fake.calls);
    }

    #[test]
    fn a_shadow_of_an_unknown_service_is_not_submitted() {
        let (vm, mut fake) = (Vm::new(10, 100), Fake::default());
        let plugin = vm.configure(3, CONFIG.as_bytes(), &mut fake).unwrap();
        fake.calls.clear();
        let mut fx = vm.stream(&plugin, (9, 3), &mut fake);
        let request = ShadowRequest {
            id: 0,
            cluster: "chat_legacy".into(),
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: 100,
        };
        let info = ShadowInfo {
            service: "chat".into(),
            method: "POST".into(),
            path: "/".into(),
            correlation_id: String::new(),
        };
        assert_eq!(fx.submit(1, request, info, None), None, "no service 1");
        assert_eq!(fake.calls, []);
        assert_eq!(vm.shadows.borrow().in_flight(), 0);
    }
}
