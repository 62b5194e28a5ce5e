//! The story of `make demo` as a test (`cutover_e2e::story`, shorter phases): real services on
//! their own databases, Envoy with the release filter, the migrator binary for every step, live
//! traffic throughout; the new service fails 20 % of its requests mid-rollout. Asserted on the
//! live system and the ledger, not on the narration: the rollback is the kill switch live in
//! Envoy; at the end both services are at 100 % with dual-write off, every acknowledged write is
//! stored on both sides as it was answered, and `migrator verify` exits 0.

use cutover_e2e::story::{self, Hooks, StoryConfig, World, FAULTY_SERVICE, SERVICES};
use cutover_filter::metrics::Gauge;

/// What the hook saw right after the automatic rollback.
#[derive(Default)]
struct RollbackSeen {
    kill_switch: Option<u64>,
    percentage: Option<u64>,
    acknowledged_by_new: usize,
}

impl Hooks for RollbackSeen {
    fn after_rollback(&mut self, world: &World) {
        self.kill_switch = Some(world.gauge(FAULTY_SERVICE, Gauge::UseLegacy));
        self.percentage = Some(world.gauge(FAULTY_SERVICE, Gauge::NewPercentage));
        self.acknowledged_by_new = world.ledger.acks_served_by("new");
    }
}

#[test]
fn the_whole_cutover_loses_no_acknowledged_write_through_a_rollback() {
    let config = StoryConfig::test();
    let mut seen = RollbackSeen::default();
    let (world, summary) = story::run(&config, &mut seen).unwrap_or_else(|e| panic!("{e}"));
    println!("{summary:?}");

    // The gate failed once and rolled back: the kill switch was on in Envoy, at the fault's step.
    assert_eq!(summary.rollbacks, 1);
    assert_eq!(
        seen.kill_switch,
        Some(1),
        "{FAULTY_SERVICE}.use_legacy after the rollback"
    );
    assert_eq!(seen.percentage, Some(u64::from(config.fault_step)));
    assert!(
        seen.acknowledged_by_new > 0,
        "new had served acknowledged writes before the rollback"
    );

    // Final state, live in Envoy: 100 % to new, kill switch off, dual-write off.
    for service in SERVICES {
        assert_eq!(world.gauge(service, Gauge::NewPercentage), 100, "{service}");
        assert_eq!(world.gauge(service, Gauge::UseLegacy), 0, "{service}");
        assert_eq!(
            world.gauge(service, Gauge::DualWriteEnabled),
            0,
            "{service}"
        );
    }

    // The only failed requests are the injected fault's 503s (the fault did hit clients).
    let failures = world.ledger.failures();
    assert!(!failures.is_empty(), "the fault failed requests");
    let other: Vec<_> = failures.iter().filter(|f| f.status != Some(503)).collect();
    assert!(
        other.is_empty(),
        "failures other than the fault's: {:?}",
        &other[..other.len().min(5)]
    );

    // Every acknowledged write on both sides, with the values the client was answered; an
    // entity whose last write failed holds either its acknowledged state or that write's.
    let acks = world.ledger.acks();
    assert_eq!(summary.acknowledged, acks.len());
    assert!(acks.iter().all(|a| (200..300).contains(&a.status)));
    for side in ["legacy", "new"] {
        assert!(
            acks.iter().any(|a| a.routed_to == side),
            "{side} served acknowledged writes"
        );
    }
    let expected = world.ledger.expected();
    let (legacy_rows, new_rows) = world.ledger_rows(&expected);
    for (side, rows) in [("legacy", &legacy_rows), ("new", &new_rows)] {
        expected.assert_stored(side, rows);
    }
    assert_eq!(summary.lost, 0);
    assert!(
        expected.in_doubt.len() * 20 < expected.entities.len(),
        "in doubt {} of {} entities",
        expected.in_doubt.len(),
        expected.entities.len()
    );

    // The databases agree: verify (the shipped plan, legacy → new) finds nothing.
    let verify = world.migrator(&["verify", "--format", "json"]);
    assert_eq!(verify.code, 0, "{}{}", verify.stdout, verify.stderr);
    assert_eq!(summary.persistent_drift, 0);
}
