//! Rapid ECDS updates that alternate between two configuration texts while slow shadows are in
//! flight lose no outcome: every shadow counted in `shadow_sent` ends in exactly one outcome
//! counter, on two workers.
//!
//! Envoy keeps a root context that is still draining (its `on_done` said "not yet") under the
//! configuration's plugin key; a second draining root context for the same text replaces the first
//! one and takes its in-flight calls with it. The filter must never let two root contexts of one
//! configuration text hold calls at the same time.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cutover_e2e::{config, Envoy, Upstream};
use cutover_filter::outcome::Outcome;

/// Bounds of the load: per connection, and for the whole run.
const MAX_WRITES_PER_CONNECTION: u64 = 400;
const MAX_LOAD_TIME: Duration = Duration::from_secs(20);
const UPDATES: usize = 12;
const UPDATE_INTERVAL: Duration = Duration::from_millis(100);
const SHADOW_DELAY: Duration = Duration::from_millis(800);

/// Two configuration texts that differ only in the shadow timeout; both route everything to new,
/// so every shadow goes to the slow legacy upstream.
fn text(variant: usize) -> serde_json::Value {
    config::chat_dual_write_config(100, 5000 - variant as u64, 1024 * 1024)
}

/// Every outcome counter of `chat` with its value.
fn outcomes(envoy: &Envoy) -> Vec<(&'static str, u64)> {
    Outcome::COUNTERS
        .map(|c| (c.suffix(), envoy.cutover_counter("chat", c.suffix())))
        .to_vec()
}

fn outcome_total(envoy: &Envoy) -> u64 {
    outcomes(envoy).iter().map(|(_, v)| v).sum()
}

#[test]
fn alternating_updates_lose_no_outcome() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    legacy.set_delay(SHADOW_DELAY);
    let envoy = Envoy::builder(&text(0))
        .upstream(&legacy)
        .upstream(&new)
        .concurrency(2)
        .ecds()
        .boot();

    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = envoy
        .clients_on_all_workers(2)
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let start = Instant::now();
                let mut writes = 0u64;
                while !stop.load(Ordering::Relaxed)
                    && writes < MAX_WRITES_PER_CONNECTION
                    && start.elapsed() < MAX_LOAD_TIME
                {
                    let key = format!("alt-{c}-{writes}");
                    let response = client.send(
                        "POST",
                        "/api/chat/m",
                        &[("x-correlation-id", key.as_bytes())],
                        b"{}",
                    );
                    assert_eq!(response.status, 200);
                    writes += 1;
                    thread::sleep(Duration::from_millis(5));
                }
                writes
            })
        })
        .collect();

    // Let shadows pile up, then alternate A, B, A, B, … faster than a shadow answers.
    thread::sleep(SHADOW_DELAY);
    for update in 1..=UPDATES {
        envoy.update_filter_config(&text(update % 2));
        thread::sleep(UPDATE_INTERVAL);
    }
    stop.store(true, Ordering::Relaxed);
    let writes: u64 = load
        .into_iter()
        .map(|h| h.join().expect("load thread"))
        .sum();

    let sent = envoy.wait_for_stat(
        "wasmcustom.cutover.chat.shadow_sent",
        writes,
        Duration::from_secs(5),
    );
    assert_eq!(sent, writes, "every write was mirrored");
    // Shadows answer after SHADOW_DELAY; allow for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(15);
    while outcome_total(&envoy) < sent && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    let per_outcome = outcomes(&envoy);
    assert_eq!(
        outcome_total(&envoy),
        sent,
        "shadow_sent {sent} but outcomes {per_outcome:?}"
    );
    assert_eq!(
        envoy.cutover_counter("chat", "shadow_succeeded"),
        sent,
        "every shadow answered 200 in time: {per_outcome:?}"
    );
    assert_eq!(legacy.request_count() as u64, sent);
}
