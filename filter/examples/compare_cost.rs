//! Native cost of comparing two 4 KiB JSON responses with noise rules (parse both, walk, report),
//! averaged over many comparisons: the same documents and rules as the in-VM figure
//! (tests/harness/examples/compare_vm_cost.rs), for profiling the comparer with native tools.
//! A benchmark, not a test:
//! `cargo run -p cutover-filter --release --example compare_cost [-- COMPARISONS [CASE]]`, CASE
//! `equal` or `one change` to run only that one (for `perf stat` / `perf record`).

use std::time::Instant;

use cutover_filter::compare::{compare_responses, CapturedResponse, Verdict};
use cutover_filter::config::FilterConfig;

const CONFIG: &str = r#"{"services":[{"name":"chat","path_prefixes":["/api/chat"],
  "legacy_cluster":"chat_legacy","new_cluster":"chat_new",
  "shadow_reads":{"percentage":10},
  "compare":{"ignore":["$.updated_at","$.messages[*].id","$..etag"],
             "unordered":["$.messages[*].tags"]}}]}"#;

const PRIMARY: &[u8] = include_bytes!("../../tests/harness/examples/compare-docs/primary.json");
const EQUAL: &[u8] = include_bytes!("../../tests/harness/examples/compare-docs/equal.json");
const CHANGED: &[u8] = include_bytes!("../../tests/harness/examples/compare-docs/changed.json");

/// This thread's CPU time (user + system) from `/proc/thread-self/stat`, in ns (10 ms ticks).
fn thread_cpu_time_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux for every architecture this runs on.
    Some(ticks * 10_000_000)
}

fn response(body: &[u8]) -> CapturedResponse {
    CapturedResponse {
        status: 200,
        content_type: Some(b"application/json".to_vec()),
        headers: Vec::new(),
        body: body.to_vec(),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(100_000);
    let config = FilterConfig::from_json(CONFIG.as_bytes())?;
    let rules = config
        .services
        .first()
        .and_then(|s| s.compare.clone())
        .ok_or("no compare rules")?;
    let primary = response(PRIMARY);
    println!(
        "documents: {} / {} / {} bytes; rules: 3 ignore, 1 unordered",
        PRIMARY.len(),
        EQUAL.len(),
        CHANGED.len()
    );
    let only = std::env::args().nth(2);
    for (name, shadow) in [
        ("equal", response(EQUAL)),
        ("one change", response(CHANGED)),
    ] {
        if only.as_deref().is_some_and(|case| case != name) {
            continue;
        }
        let mut last = Verdict::Equal;
        for _ in 0..count / 10 {
            last = compare_responses(&rules, &primary, &shadow);
        }
        let (cpu_start, start) = (thread_cpu_time_ns(), Instant::now());
        for _ in 0..count {
            last = compare_responses(&rules, &primary, &shadow);
        }
        let wall = start.elapsed().as_nanos() as f64 / f64::from(count) / 1000.0;
        // CPU time leaves out the time this thread waited for a core on a shared machine.
        let cpu = cpu_start
            .zip(thread_cpu_time_ns())
            .map(|(a, b)| (b - a) as f64 / f64::from(count) / 1000.0);
        println!(
            "{name}: wall {wall:.2} µs, thread CPU {} per comparison ({count}); {last:?}",
            cpu.map_or_else(|| "n/a".to_string(), |c| format!("{c:.2} µs"))
        );
    }
    Ok(())
}
