//! `make bench-compare`: client latency of reads with the dark launch on — `shadow_reads` at
//! 10 %, every mirrored read compared, the shadow answering after 200 ms — against the same
//! Envoy set-up with comparison off, in one run, interleaved rounds, the same paced load (not
//! saturating: it measures what a client waits). Target: p99 on ≤ 1.10× p99 off.
//!
//! Both sides answer from legacy (`new_percentage` 0) with the same 4,096-byte JSON page; new,
//! the shadow, answers the same page from another serialiser (other member order, other values
//! under the `ignore` rules, tags reordered under `unordered`), so every comparison walks both
//! documents and ends equal.
//!
//! Env: BENCH_REQUESTS (per round and side, default 1500), BENCH_ROUNDS (default 3),
//! BENCH_RATE (requests/s, default 300), ENVOY_BIN, CUTOVER_WASM.

use std::time::{Duration, Instant};

use cutover_e2e::load::{env_or, millis as ms, paced, paced_rounds, percentile, PacedRequest};
use cutover_e2e::{config, Envoy, Upstream};
use serde_json::json;

const CLIENTS: u64 = 4;
const PAGE_PATH: &str = "/api/chat/conversations/42/messages";
const PRIMARY_PAGE: &[u8] = include_bytes!("../../harness/examples/compare-docs/primary.json");
const SHADOW_PAGE: &[u8] = include_bytes!("../../harness/examples/compare-docs/equal.json");
const SHADOW_DELAY: Duration = Duration::from_millis(200);
const SAMPLED_PERCENT: u8 = 10;

fn main() {
    let requests = env_or("BENCH_REQUESTS", 1500);
    let rounds = env_or("BENCH_ROUNDS", 3);
    let rate = env_or("BENCH_RATE", 300);

    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    for (upstream, page) in [(&legacy, PRIMARY_PAGE), (&new, SHADOW_PAGE)] {
        upstream.set_recording(false);
        upstream.set_canned(PAGE_PATH, 200, "application/json", page);
    }
    new.set_delay(SHADOW_DELAY);

    let mut dark_launch = config::chat_service(0);
    dark_launch["shadow_reads"] =
        json!({ "percentage": SAMPLED_PERCENT, "methods": ["GET"], "timeout_ms": 5000 });
    dark_launch["compare"] = json!({
        "ignore": ["$.updated_at", "$.messages[*].id", "$..etag"],
        "unordered": ["$.messages[*].tags"]
    });
    let boot = |filter_config: &serde_json::Value| {
        Envoy::builder(filter_config)
            .upstream(&legacy)
            .upstream(&new)
            .log_level("warning")
            .boot()
    };
    let sides = [
        ("comparison off", boot(&config::chat_config(0))),
        (
            "10 % compared, 200 ms shadow",
            boot(&config::filter_config(vec![dark_launch])),
        ),
    ];
    println!(
        "bench-compare: {rounds} rounds × {requests} GETs ({} B JSON) per side at {rate}/s from {CLIENTS} connections, Envoy --concurrency 1",
        PRIMARY_PAGE.len()
    );
    let read = PacedRequest {
        method: "GET",
        target: PAGE_PATH.into(),
        body: Vec::new(),
    };
    for (_, envoy) in &sides {
        paced(&envoy.listener_url(), &read, 200, rate, CLIENTS);
    }
    let all = paced_rounds("round", &sides, &read, rounds, requests, rate, CLIENTS);
    let mut p99s = Vec::new();
    for ((label, _), latencies) in sides.iter().zip(&all) {
        let p99 = percentile(latencies, 0.99);
        println!(
            "all rounds: {label:<28} p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms  ({} requests)",
            ms(percentile(latencies, 0.5)),
            ms(p99),
            ms(latencies.last().copied().unwrap_or_default()),
            latencies.len()
        );
        p99s.push(p99);
    }
    if let [off, on] = p99s[..] {
        let ratio = ms(on) / ms(off);
        println!(
            "p99 ratio compared / off: {ratio:.3} (target <= 1.10: {})",
            if ratio <= 1.10 { "met" } else { "MISSED" }
        );
    }
    // The comparisons' outcomes, so the figures are from a filter that did compare.
    let (_, envoy) = &sides[1];
    let total = envoy.cutover_counter("chat", "compare_total");
    let deadline = Instant::now() + Duration::from_secs(15);
    let equal = envoy.wait_for_stat_where(
        "wasmcustom.cutover.chat.compare_equal",
        deadline.saturating_duration_since(Instant::now()),
        |v| v >= total,
    );
    let reads = (requests * rounds + 200) as f64;
    println!(
        "compared side: compare_total {total} ({:.1} % of {reads} reads), compare_equal {equal}, compare_body_mismatch {}, shadow_timed_out {}",
        total as f64 * 100.0 / reads,
        envoy.cutover_counter("chat", "compare_body_mismatch"),
        envoy.cutover_counter("chat", "shadow_timed_out")
    );
}
