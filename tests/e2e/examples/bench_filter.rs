//! `make bench-filter`: Envoy with the cutover filter vs the same Envoy (same listener, routes and
//! clusters) without it, under wrk on loopback, interleaved in one run. Prints requests/s and p99
//! per round, the medians and their ratios (targets: ≥ 0.90× requests/s, ≤ 1.15× p99), and beside
//! them Envoy's CPU time per request (user + system, from `/proc/<pid>/stat` before and after each
//! wrk run, divided by the requests wrk completed): requests/s on these shared machines swing
//! between rounds, CPU per request much less.
//!
//! Env: BENCH_SECONDS (per round and side, default 10), BENCH_ROUNDS (default 3),
//! BENCH_CONNECTIONS (default 32), BENCH_PACED_RATE (requests/s of the second, fixed-rate phase,
//! default 2000), BENCH_PACED_REQUESTS (per round and side, default 6000), BENCH_PATH (default `/api/chat/rooms/1/messages`, a routed path),
//! ENVOY_BIN, CUTOVER_WASM, WRK (default `wrk`).

use std::process::Command;
use std::time::Duration;

use cutover_e2e::load::{env_or, millis as ms, paced_rounds, percentile, PacedRequest};
use cutover_e2e::{config, Envoy, Upstream};

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
    /// Requests wrk completed.
    requests: u64,
}

/// User + system CPU seconds process `pid` used so far (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    // The command name (field 2) is in parentheses and may contain spaces: count after it.
    let after_name = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| -> f64 {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no field {} in /proc/{pid}/stat: {stat}", i + 3))
            as f64
    };
    // fields[0] is field 3 (state): utime is field 14, stime field 15.
    (ticks(11) + ticks(12)) / ticks_per_second
}

/// Clock ticks per second of `/proc/<pid>/stat` times (`getconf CLK_TCK`).
fn clock_ticks_per_second() -> f64 {
    let output = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("run getconf CLK_TCK");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .expect("getconf CLK_TCK prints a number")
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
    // "  123456 requests in 10.00s, 12.34MB read"
    let requests = text
        .lines()
        .find_map(|line| line.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request total in wrk output:\n{text}"));
    Run {
        requests_per_second,
        p99,
        requests,
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
    let builder = || {
        Envoy::builder(&filter_config)
            .upstream(&legacy)
            .upstream(&new)
            .log_level("warning")
    };
    let mut sides = vec![
        ("cutover filter", builder().boot()),
        ("no filter", builder().without_filter().boot()),
    ];
    // Optional reference: a proxy-wasm filter that does nothing (tests/e2e/noop-filter), the floor
    // of any Wasm filter's cost.
    if let Some(noop) = std::env::var_os("BENCH_NOOP_WASM").filter(|v| !v.is_empty()) {
        sides.push((
            "no-op wasm filter",
            builder().wasm(std::path::Path::new(&noop)).boot(),
        ));
    }

    // Every request carries a different correlation id, so the filter hashes a fresh key each time.
    let path = std::env::var("BENCH_PATH").unwrap_or_else(|_| "/api/chat/rooms/1/messages".into());
    let script = sides[0].1.workdir().join("keys.lua");
    std::fs::write(
        &script,
        format!(
            "counter = 0\nrequest = function()\n  counter = counter + 1\n  return wrk.format(\"GET\", \"{path}\", \
             {{[\"x-correlation-id\"] = \"user-\" .. counter}})\nend\n"
        ),
    )
    .expect("write the wrk script");

    println!(
        "bench-filter: {rounds} rounds × {seconds}s per side, wrk -t1 -c{connections} GET {path}, \
         Envoy --concurrency 1, loopback"
    );
    // Warm every side up (VM, connection pools) before measuring.
    for (_, envoy) in &sides {
        wrk(
            &format!("{}/", envoy.listener_url()),
            &script,
            2,
            connections,
        );
    }
    let ticks_per_second = clock_ticks_per_second();
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    let mut cpu_us: Vec<Vec<f64>> = vec![Vec::new(); sides.len()];
    for round in 1..=rounds {
        let mut line = format!("round {round}:");
        for (i, (label, envoy)) in sides.iter().enumerate() {
            let pid = envoy.pid().expect("Envoy runs");
            let cpu_before = cpu_seconds(pid, ticks_per_second);
            let run = wrk(
                &format!("{}/", envoy.listener_url()),
                &script,
                seconds,
                connections,
            );
            let cpu = cpu_seconds(pid, ticks_per_second) - cpu_before;
            let run_cpu_us = cpu * 1e6 / run.requests.max(1) as f64;
            let run_p99 = run.p99.as_secs_f64() * 1e3;
            line += &format!(
                " | {label} {:.0} req/s p99 {run_p99:.2} ms CPU {run_cpu_us:.1} µs/req",
                run.requests_per_second
            );
            rps[i].push(run.requests_per_second);
            p99[i].push(run_p99);
            cpu_us[i].push(run_cpu_us);
        }
        println!("{line}");
    }
    let routed = sides[0].1.cutover_counter("chat", "routed_new")
        + sides[0].1.cutover_counter("chat", "routed_legacy");
    // A routed path must have gone through the filter's routing, or the figures mean nothing.
    assert!(
        routed > 0 || !path.starts_with("/api/chat"),
        "the filter routed none of the load"
    );
    let medians: Vec<(f64, f64, f64)> = (0..sides.len())
        .map(|i| {
            (
                median_f64(rps[i].clone()),
                median_f64(p99[i].clone()),
                median_f64(cpu_us[i].clone()),
            )
        })
        .collect();
    for (i, (label, _)) in sides.iter().enumerate() {
        println!(
            "median {label:<18} {:>9.0} req/s  p99 {:>7.2} ms  Envoy CPU {:>6.1} µs/request",
            medians[i].0, medians[i].1, medians[i].2
        );
    }
    println!(
        "Envoy CPU per request cutover/none: {:.3}{}",
        medians[0].2 / medians[1].2,
        if sides.len() > 2 {
            format!(", no-op wasm/none: {:.3}", medians[2].2 / medians[1].2)
        } else {
            String::new()
        }
    );
    let rps_ratio = medians[0].0 / medians[1].0;
    let p99_ratio = medians[0].1 / medians[1].1;
    println!(
        "ratio cutover/none under wrk (saturated): requests/s {rps_ratio:.3} (target >= 0.90: {}), p99 {p99_ratio:.3} (target <= 1.15: {})",
        if rps_ratio >= 0.90 { "met" } else { "MISSED" },
        if p99_ratio <= 1.15 { "met" } else { "MISSED" }
    );
    if sides.len() > 2 {
        println!(
            "ratio no-op wasm/none: requests/s {:.3}, p99 {:.3}; cutover/no-op: requests/s {:.3}",
            medians[2].0 / medians[1].0,
            medians[2].1 / medians[1].1,
            medians[0].0 / medians[2].0
        );
    }

    // Phase 2: the same request at a fixed rate below saturation — what a client waits.
    let paced_rate = env_or("BENCH_PACED_RATE", 2000);
    let paced_requests = env_or("BENCH_PACED_REQUESTS", 6000);
    let request = PacedRequest {
        method: "GET",
        target: path.clone(),
        body: Vec::new(),
    };
    println!("paced: {rounds} rounds × {paced_requests} requests per side at {paced_rate}/s from 8 connections");
    let latencies = paced_rounds(
        "paced round",
        &sides,
        &request,
        rounds,
        paced_requests,
        paced_rate,
        8,
    );
    let mut paced_p99 = Vec::new();
    for (i, (label, _)) in sides.iter().enumerate() {
        let (p50, p99) = (
            percentile(&latencies[i], 0.5),
            percentile(&latencies[i], 0.99),
        );
        println!(
            "paced all rounds {label:<18} p50 {:.3} ms  p99 {:.3} ms",
            ms(p50),
            ms(p99)
        );
        paced_p99.push(ms(p99));
    }
    let paced_ratio = paced_p99[0] / paced_p99[1];
    println!(
        "paced ratio cutover/none: p99 {paced_ratio:.3} (target <= 1.15: {})",
        if paced_ratio <= 1.15 { "met" } else { "MISSED" }
    );
    println!("filter routed {routed} requests");
}
