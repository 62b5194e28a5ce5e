//! `make bench-dual-write`: client latency of writes with dual-write off, on with an instant
//! shadow, and on with a shadow answering after 500 ms — in one run, interleaved rounds, the same
//! paced load (not saturating: it measures what a client waits, not throughput).
//! Target: p99 with dual-write on ≤ 1.10× p99 with it off.
//!
//! Env: BENCH_REQUESTS (per round and side, default 1500), BENCH_ROUNDS (default 3),
//! BENCH_RATE (requests/s, default 300), ENVOY_BIN, CUTOVER_WASM.

use std::time::{Duration, Instant};

use cutover_e2e::load::{paced, percentile, PacedRequest};
use cutover_e2e::{config, Envoy, Upstream};

const CLIENTS: u64 = 4;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `requests` 1 KiB POSTs at `rate` per second from CLIENTS connections; their latencies.
fn paced_writes(url: &str, requests: u64, rate: u64) -> Vec<Duration> {
    let write = PacedRequest {
        method: "POST",
        target: "/api/chat/rooms/1/messages".into(),
        body: vec![b'w'; 1024],
    };
    paced(url, &write, requests, rate, CLIENTS)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

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
    for (_, envoy) in &sides {
        paced_writes(&envoy.listener_url(), 200, rate);
    }
    let mut all: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    for round in 1..=rounds {
        let mut line = format!("round {round}:");
        for (i, (label, envoy)) in sides.iter().enumerate() {
            let mut latencies = paced_writes(&envoy.listener_url(), requests, rate);
            latencies.sort();
            line += &format!(
                " | {label} p50 {:.2} ms p99 {:.2} ms",
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.99))
            );
            all[i].extend(latencies);
        }
        println!("{line}");
    }
    let mut summary = Vec::new();
    for (i, (label, _)) in sides.iter().enumerate() {
        all[i].sort();
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
