//! Metric names. Every name is `cutover.<service>.<suffix>`; Envoy shows them on `/stats` as
//! `wasmcustom.cutover.<service>.<suffix>`.

use crate::config::ServiceConfig;
use std::collections::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    RoutedLegacy,
    RoutedNew,
    RoutedOverrideLegacy,
    RoutedOverrideNew,
    NoKey,
    ShadowSent,
    ShadowSucceeded,
    ShadowFailed3xx,
    ShadowFailed4xx,
    ShadowFailed5xx,
    ShadowFailedReset,
    ShadowTimedOut,
    ShadowSkippedBodyTooLarge,
    ShadowMismatch,
    ShadowReadsSent,
    CompareTotal,
    CompareEqual,
    CompareStatusMismatch,
    CompareBodyMismatch,
    CompareHeaderMismatch,
    CompareSkippedBodyTooLarge,
    CompareSkippedShadowFailed,
    CompareSkippedNoPrimaryResponse,
    CompareSkippedInFlightLimit,
}

impl Counter {
    pub const ALL: [Counter; 24] = [
        Counter::RoutedLegacy,
        Counter::RoutedNew,
        Counter::RoutedOverrideLegacy,
        Counter::RoutedOverrideNew,
        Counter::NoKey,
        Counter::ShadowSent,
        Counter::ShadowSucceeded,
        Counter::ShadowFailed3xx,
        Counter::ShadowFailed4xx,
        Counter::ShadowFailed5xx,
        Counter::ShadowFailedReset,
        Counter::ShadowTimedOut,
        Counter::ShadowSkippedBodyTooLarge,
        Counter::ShadowMismatch,
        Counter::ShadowReadsSent,
        Counter::CompareTotal,
        Counter::CompareEqual,
        Counter::CompareStatusMismatch,
        Counter::CompareBodyMismatch,
        Counter::CompareHeaderMismatch,
        Counter::CompareSkippedBodyTooLarge,
        Counter::CompareSkippedShadowFailed,
        Counter::CompareSkippedNoPrimaryResponse,
        Counter::CompareSkippedInFlightLimit,
    ];

    /// Every comparison counted in `compare_total` ends in exactly one of these.
    pub const COMPARE_OUTCOMES: [Counter; 8] = [
        Counter::CompareEqual,
        Counter::CompareStatusMismatch,
        Counter::CompareBodyMismatch,
        Counter::CompareHeaderMismatch,
        Counter::CompareSkippedBodyTooLarge,
        Counter::CompareSkippedShadowFailed,
        Counter::CompareSkippedNoPrimaryResponse,
        Counter::CompareSkippedInFlightLimit,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            Counter::RoutedLegacy => "routed_legacy",
            Counter::RoutedNew => "routed_new",
            Counter::RoutedOverrideLegacy => "routed_override_legacy",
            Counter::RoutedOverrideNew => "routed_override_new",
            Counter::NoKey => "no_key",
            Counter::ShadowSent => "shadow_sent",
            Counter::ShadowSucceeded => "shadow_succeeded",
            Counter::ShadowFailed3xx => "shadow_failed_3xx",
            Counter::ShadowFailed4xx => "shadow_failed_4xx",
            Counter::ShadowFailed5xx => "shadow_failed_5xx",
            Counter::ShadowFailedReset => "shadow_failed_reset",
            Counter::ShadowTimedOut => "shadow_timed_out",
            Counter::ShadowSkippedBodyTooLarge => "shadow_skipped_body_too_large",
            Counter::ShadowMismatch => "shadow_mismatch",
            Counter::ShadowReadsSent => "shadow_reads_sent",
            Counter::CompareTotal => "compare_total",
            Counter::CompareEqual => "compare_equal",
            Counter::CompareStatusMismatch => "compare_status_mismatch",
            Counter::CompareBodyMismatch => "compare_body_mismatch",
            Counter::CompareHeaderMismatch => "compare_header_mismatch",
            Counter::CompareSkippedBodyTooLarge => "compare_skipped_body_too_large",
            Counter::CompareSkippedShadowFailed => "compare_skipped_shadow_failed",
            Counter::CompareSkippedNoPrimaryResponse => "compare_skipped_no_primary_response",
            Counter::CompareSkippedInFlightLimit => "compare_skipped_in_flight_limit",
        }
    }

    /// Position in [`Counter::ALL`], for per-service id tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gauge {
    NewPercentage,
    UseLegacy,
    DualWriteEnabled,
}

impl Gauge {
    pub const ALL: [Gauge; 3] = [
        Gauge::NewPercentage,
        Gauge::UseLegacy,
        Gauge::DualWriteEnabled,
    ];

    pub fn suffix(self) -> &'static str {
        match self {
            Gauge::NewPercentage => "new_percentage",
            Gauge::UseLegacy => "use_legacy",
            Gauge::DualWriteEnabled => "dual_write_enabled",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

pub fn metric_name(service: &str, suffix: &str) -> String {
    format!("cutover.{service}.{suffix}")
}

/// What Envoy must do for the metrics of a configuration (the glue's hostcalls).
pub trait MetricsHost {
    /// Defines counter (`gauge: false`) or gauge `name`; its id, `None` if Envoy refused.
    fn define(&mut self, name: &str, gauge: bool) -> Option<u32>;
    fn record(&mut self, id: u32, value: u64);
}

/// The ids Envoy gave this VM's metrics, by name. The VM outlives plugin configurations (ECDS
/// updates reuse it) and each name may be defined with Envoy only once.
#[derive(Debug, Default)]
pub struct MetricIds(HashMap<String, u32>);

impl MetricIds {
    fn id(&mut self, name: String, gauge: bool, host: &mut impl MetricsHost) -> Option<u32> {
        if let Some(id) = self.0.get(&name) {
            return Some(*id);
        }
        let id = host.define(&name, gauge)?;
        self.0.insert(name, id);
        Some(id)
    }
}

/// The counter ids of one service, indexed by [`Counter::index`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceMetrics {
    counters: Vec<Option<u32>>,
}

impl ServiceMetrics {
    /// Defines (or finds) every metric of `service` and records its gauges.
    pub fn define(
        service: &ServiceConfig,
        ids: &mut MetricIds,
        host: &mut impl MetricsHost,
    ) -> Self {
        let gauges = [
            (Gauge::NewPercentage, u64::from(service.new_percentage)),
            (Gauge::UseLegacy, u64::from(service.use_legacy)),
            (
                Gauge::DualWriteEnabled,
                u64::from(service.dual_write.enabled),
            ),
        ];
        for (gauge, value) in gauges {
            if let Some(id) = ids.id(metric_name(&service.name, gauge.suffix()), true, host) {
                host.record(id, value);
            }
        }
        let counters = Counter::ALL
            .iter()
            .map(|c| ids.id(metric_name(&service.name, c.suffix()), false, host))
            .collect();
        Self { counters }
    }

    /// The id of `counter`, `None` if Envoy refused to define it.
    pub fn id(&self, counter: Counter) -> Option<u32> {
        self.counters.get(counter.index()).copied().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        let names: Vec<String> = Counter::ALL
            .iter()
            .map(|c| metric_name("chat", c.suffix()))
            .collect();
        assert_eq!(
            names,
            [
                "cutover.chat.routed_legacy",
                "cutover.chat.routed_new",
                "cutover.chat.routed_override_legacy",
                "cutover.chat.routed_override_new",
                "cutover.chat.no_key",
                "cutover.chat.shadow_sent",
                "cutover.chat.shadow_succeeded",
                "cutover.chat.shadow_failed_3xx",
                "cutover.chat.shadow_failed_4xx",
                "cutover.chat.shadow_failed_5xx",
                "cutover.chat.shadow_failed_reset",
                "cutover.chat.shadow_timed_out",
                "cutover.chat.shadow_skipped_body_too_large",
                "cutover.chat.shadow_mismatch",
                "cutover.chat.shadow_reads_sent",
                "cutover.chat.compare_total",
                "cutover.chat.compare_equal",
                "cutover.chat.compare_status_mismatch",
                "cutover.chat.compare_body_mismatch",
                "cutover.chat.compare_header_mismatch",
                "cutover.chat.compare_skipped_body_too_large",
                "cutover.chat.compare_skipped_shadow_failed",
                "cutover.chat.compare_skipped_no_primary_response",
                "cutover.chat.compare_skipped_in_flight_limit",
            ]
        );
        let gauges: Vec<String> = Gauge::ALL
            .iter()
            .map(|g| metric_name("chat", g.suffix()))
            .collect();
        assert_eq!(
            gauges,
            [
                "cutover.chat.new_percentage",
                "cutover.chat.use_legacy",
                "cutover.chat.dual_write_enabled"
            ]
        );
    }

    #[test]
    fn compare_outcomes_are_the_compare_counters_but_the_total() {
        let compare: Vec<Counter> = Counter::ALL
            .iter()
            .copied()
            .filter(|c| c.suffix().starts_with("compare_") && *c != Counter::CompareTotal)
            .collect();
        assert_eq!(compare, Counter::COMPARE_OUTCOMES);
    }

    #[derive(Default)]
    struct Host {
        defined: Vec<(String, bool)>,
        recorded: Vec<(u32, u64)>,
    }

    impl MetricsHost for Host {
        fn define(&mut self, name: &str, gauge: bool) -> Option<u32> {
            // Envoy refuses one name here, to show a refusal costs only that metric.
            if name.ends_with("no_key") {
                return None;
            }
            self.defined.push((name.to_string(), gauge));
            u32::try_from(self.defined.len()).ok()
        }
        fn record(&mut self, id: u32, value: u64) {
            self.recorded.push((id, value));
        }
    }

    #[test]
    fn each_metric_is_defined_once_per_vm_and_gauges_recorded_per_configuration() {
        let config = crate::config::FilterConfig::from_json(
            br#"{"services":[{"name":"chat","path_prefixes":["/c"],"legacy_cluster":"l",
                "new_cluster":"n","new_percentage":30,"use_legacy":true}]}"#,
        )
        .unwrap();
        let service = &config.services[0];
        let (mut ids, mut host) = (MetricIds::default(), Host::default());
        let first = ServiceMetrics::define(service, &mut ids, &mut host);
        assert_eq!(
            host.defined.len(),
            Gauge::ALL.len() + Counter::ALL.len() - 1
        );
        assert_eq!(
            host.defined[0],
            ("cutover.chat.new_percentage".into(), true)
        );
        assert_eq!(host.recorded, [(1, 30), (2, 1), (3, 0)]);
        assert_eq!(first.id(Counter::RoutedLegacy), Some(4));
        assert_eq!(first.id(Counter::NoKey), None);
        // A new configuration of the same VM: the same ids, no new definitions, fresh gauges.
        let again = ServiceMetrics::define(service, &mut ids, &mut host);
        assert_eq!(again, first);
        assert_eq!(
            host.defined.len(),
            Gauge::ALL.len() + Counter::ALL.len() - 1
        );
        assert_eq!(host.recorded.len(), 6);
    }

    #[test]
    fn index_is_the_position_in_all() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        for (i, g) in Gauge::ALL.iter().enumerate() {
            assert_eq!(g.index(), i);
        }
    }
}
