//! Metric names. Every name is `cutover.<service>.<suffix>`; Envoy shows them on `/stats` as
//! `wasmcustom.cutover.<service>.<suffix>`.

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
}

impl Counter {
    pub const ALL: [Counter; 14] = [
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
    fn index_is_the_position_in_all() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        for (i, g) in Gauge::ALL.iter().enumerate() {
            assert_eq!(g.index(), i);
        }
    }
}
