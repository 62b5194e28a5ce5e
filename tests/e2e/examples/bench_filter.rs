//! `make bench-filter`: Envoy with the cutover filter vs the same Envoy (same listener, routes and
//! clusters) without it, under wrk on loopback, interleaved in one run. Prints requests/s and p99
//! per round, the medians and their ratios (targets: ≥ 0.90× requests/s, ≤ 1.15× p99).
//!
//! Env: BENCH_SECONDS (per round and side, default 10), BENCH_ROUNDS (default 3),
//! BENCH_CONNECTIONS (default 32), ENVOY_BIN, CUTOVER_WASM, WRK (default `wrk`).

use std::process::Command;
use std::time::Duration;

use cutover_e2e::{config, Envoy, Upstream};

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Latency in wrk's notation (`812.00us`, `1.23ms`, `1.01s`) as a Duration.
fn parse_latency(text: &str) -> Option<Duration> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))?;
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

struct Run {
    requests_per_second: f64,
    p99: Duration,
}

fn wrk(url: &str, script: &std::path::Path, seconds: u64, connections: u64) -> Run {
    let wrk = std::env::var("WRK").unwrap_or_else(|_| "wrk".into());
    let output = Command::new(&wrk)
        .args([
            "-t",
            "1",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("run {wrk}: {e} (apt-get install -y wrk)"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!text.contains("Non-2xx"), "errors under load:\n{text}");
    assert!(
        !text.contains("Socket errors"),
        "socket errors under load:\n{text}"
    );
    let requests_per_second = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let p99 = text
        .lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("99%")
                .and_then(|v| parse_latency(v.trim()))
        })
        .unwrap_or_else(|| panic!("no 99% latency in wrk output:\n{text}"));
    Run {
        requests_per_second,
        p99,
    }
}

fn median_f64(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

fn main() {
    let seconds = env_or("BENCH_SECONDS", 10);
    let rounds = env_or("BENCH_ROUNDS", 3);
    let connections = env_or("BENCH_CONNECTIONS", 32);

    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    legacy.set_recording(false);
    new.set_recording(false);
    let filter_config = config::chat_config(50);
    let with_filter = Envoy::builder(&filter_config)
        .upstream(&legacy)
        .upstream(&new)
        .log_level("warning")
        .boot();
    let without_filter = Envoy::builder(&filter_config)
        .upstream(&legacy)
        .upstream(&new)
        .without_filter()
        .log_level("warning")
        .boot();

    // Every request carries a different correlation id, so the filter hashes a fresh key each time.
    let script = with_filter.workdir().join("keys.lua");
    std::fs::write(
        &script,
        "counter = 0\nrequest = function()\n  counter = counter + 1\n  return wrk.format(\"GET\", \"/api/chat/rooms/1/messages\", \
         {[\"x-correlation-id\"] = \"user-\" .. counter})\nend\n",
    )
    .expect("write the wrk script");

    println!("bench-filter: {rounds} rounds × {seconds}s per side, wrk -t1 -c{connections}, Envoy --concurrency 1, loopback");
    // Warm both up (VM, connection pools) before measuring.
    wrk(
        &format!("{}/", with_filter.listener_url()),
        &script,
        2,
        connections,
    );
    wrk(
        &format!("{}/", without_filter.listener_url()),
        &script,
        2,
        connections,
    );

    let (mut with_rps, mut with_p99, mut without_rps, mut without_p99) =
        (vec![], vec![], vec![], vec![]);
    for round in 1..=rounds {
        let a = wrk(
            &format!("{}/", with_filter.listener_url()),
            &script,
            seconds,
            connections,
        );
        let b = wrk(
            &format!("{}/", without_filter.listener_url()),
            &script,
            seconds,
            connections,
        );
        println!(
            "round {round}: with filter {:>9.0} req/s p99 {:>8.2} ms | without {:>9.0} req/s p99 {:>8.2} ms",
            a.requests_per_second,
            a.p99.as_secs_f64() * 1e3,
            b.requests_per_second,
            b.p99.as_secs_f64() * 1e3
        );
        with_rps.push(a.requests_per_second);
        with_p99.push(a.p99.as_secs_f64() * 1e3);
        without_rps.push(b.requests_per_second);
        without_p99.push(b.p99.as_secs_f64() * 1e3);
    }
    let routed = with_filter.cutover_counter("chat", "routed_new")
        + with_filter.cutover_counter("chat", "routed_legacy");
    assert!(routed > 0, "the filter routed the load");
    let (rps_a, rps_b) = (median_f64(with_rps), median_f64(without_rps));
    let (p99_a, p99_b) = (median_f64(with_p99), median_f64(without_p99));
    let rps_ratio = rps_a / rps_b;
    let p99_ratio = p99_a / p99_b;
    println!("median: with filter {rps_a:.0} req/s p99 {p99_a:.2} ms | without {rps_b:.0} req/s p99 {p99_b:.2} ms");
    println!(
        "ratio requests/s {rps_ratio:.3} (target >= 0.90: {}), ratio p99 {p99_ratio:.3} (target <= 1.15: {})",
        if rps_ratio >= 0.90 { "met" } else { "MISSED" },
        if p99_ratio <= 1.15 { "met" } else { "MISSED" }
    );
    println!("filter routed {routed} requests");
}
