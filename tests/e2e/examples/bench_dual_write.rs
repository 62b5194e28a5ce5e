//! `make bench-dual-write`: client latency of writes with dual-write off, on with an instant
//! shadow, and on with a shadow answering after 500 ms — in one run, interleaved rounds, the same
//! paced load (not saturating: it measures what a client waits, not throughput).
//! Target: p99 with dual-write on ≤ 1.10× p99 with it off.
//!
//! Env: BENCH_REQUESTS (per round and side, default 1500), BENCH_ROUNDS (default 3),
//! BENCH_RATE (requests/s, default 300), ENVOY_BIN, CUTOVER_WASM.

use std::time::{Duration, Instant};

use cutover_e2e::load::{env_or, millis as ms, paced, paced_rounds, percentile, PacedRequest};
use cutover_e2e::{config, Envoy, Upstream};

const CLIENTS: u64 = 4;

fn main() {
    let requests = env_or("BENCH_REQUESTS", 1500);
    let rounds = env_or("BENCH_ROUNDS", 3);
    let rate = env_or("BENCH_RATE", 300);

    // Primary: new (100 %); shadow: legacy. Two shadow upstreams: instant and slow.
    let primary = Upstream::start("chat_new");
    let instant_shadow = Upstream::start("chat_legacy");
    let slow_shadow = Upstream::start("chat_legacy");
    for upstream in [&primary, &instant_shadow, &slow_shadow] {
        upstream.set_recording(false);
    }
    slow_shadow.set_delay(Duration::from_millis(500));

    let dual_write = config::chat_dual_write_config(100, 5000, 1024 * 1024);
    let boot = |filter_config: &serde_json::Value, shadow: &Upstream| {
        Envoy::builder(filter_config)
            .upstream(&primary)
            .upstream(shadow)
            .log_level("warning")
            .boot()
    };
    let sides = [
        (
            "dual-write off",
            boot(&config::chat_config(100), &instant_shadow),
        ),
        ("on, shadow instant", boot(&dual_write, &instant_shadow)),
        ("on, shadow 500 ms", boot(&dual_write, &slow_shadow)),
    ];
    println!("bench-dual-write: {rounds} rounds × {requests} POSTs (1 KiB) per side at {rate}/s from {CLIENTS} connections, Envoy --concurrency 1");
    let write = PacedRequest {
        method: "POST",
        target: "/api/chat/rooms/1/messages".into(),
        body: vec![b'w'; 1024],
    };
    for (_, envoy) in &sides {
        paced(&envoy.listener_url(), &write, 200, rate, CLIENTS);
    }
    let all = paced_rounds("round", &sides, &write, rounds, requests, rate, CLIENTS);
    let mut summary = Vec::new();
    for (i, (label, _)) in sides.iter().enumerate() {
        let (p50, p99) = (percentile(&all[i], 0.5), percentile(&all[i], 0.99));
        println!(
            "all rounds: {label:<20} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} requests)",
            ms(p50),
            ms(p99),
            ms(*all[i].last().expect("latencies")),
            all[i].len()
        );
        summary.push(p99);
    }
    for (i, (label, _)) in sides.iter().enumerate().skip(1) {
        let ratio = ms(summary[i]) / ms(summary[0]);
        println!(
            "p99 ratio {label} / off: {ratio:.3} (target <= 1.10: {})",
            if ratio <= 1.10 { "met" } else { "MISSED" }
        );
    }
    // The shadows' outcomes, so the figures are not from a filter that mirrored nothing.
    let deadline = Instant::now() + Duration::from_secs(15);
    for (label, envoy) in sides.iter().skip(1) {
        let sent = envoy.cutover_counter("chat", "shadow_sent");
        let succeeded = envoy.wait_for_stat_where(
            "wasmcustom.cutover.chat.shadow_succeeded",
            deadline.saturating_duration_since(Instant::now()),
            |v| v >= sent,
        );
        println!(
            "{label}: shadow_sent {sent}, shadow_succeeded {succeeded}, shadow_timed_out {}",
            envoy.cutover_counter("chat", "shadow_timed_out")
        );
    }
}
