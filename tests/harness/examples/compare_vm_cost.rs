//! In-VM cost of comparing two 4 KiB JSON responses (dark launch), on one wasmtime VM of the
//! release `.wasm`. A benchmark, not a test: the first half of `make bench-compare`
//! (`scripts/bench-compare`), or alone
//! `cargo run -p cutover-harness --release --example compare_vm_cost [-- READS_PER_ROUND [CASE]]`,
//! CASE `identical`, `equal` or `one change` to run only that one: under callgrind, the
//! instructions of `equal` less those of `identical`, over the reads, are the comparison's in the
//! VM, a count that does not move with the machine's load (docs/benchmarks.md).
//!
//! Every read is sampled (`shadow_reads` at 100 %) and compared: the primary's 4,096-byte body
//! streams to the client, the tick dispatches the shadow, and the shadow's 4,096-byte answer is
//! delivered to `proxy_on_http_call_response`, where the comparison runs (the primary is
//! complete by then). Three shadow answers, in alternating rounds:
//! - `identical`: the primary's bytes (equal without parsing: everything but the comparison);
//! - `equal`: the same page from another serialiser — other member order, other ignored values
//!   (`$.updated_at`, `$.messages[*].id`, `$..etag`), tags in another order (`unordered`);
//! - `one change`: as `equal` with one message text changed (a body mismatch and its warn line).
//!
//! The cost of a comparison is the time of the call response with `equal` (or `one change`)
//! minus the time with `identical`: the shadow body's copy into the VM and the rest of the
//! callback are the same in both.

use std::time::{Duration, Instant};

use cutover_harness::Filter;

mod common;
use common::thread_cpu_time_ns;

const CONFIG: &str = r#"{"services":[{"name":"chat","path_prefixes":["/api/chat"],
  "legacy_cluster":"chat_legacy","new_cluster":"chat_new","new_percentage":0,
  "feature_header":"X-Feature-UseLegacyChat",
  "shadow_reads":{"percentage":100},
  "compare":{"ignore":["$.updated_at","$.messages[*].id","$..etag"],
             "unordered":["$.messages[*].tags"]}}]}"#;

const PRIMARY: &[u8] = include_bytes!("compare-docs/primary.json");
const EQUAL: &[u8] = include_bytes!("compare-docs/equal.json");
const CHANGED: &[u8] = include_bytes!("compare-docs/changed.json");

const ROUNDS: usize = 5;

struct Case {
    name: &'static str,
    shadow: &'static [u8],
    /// The `compare_*` counter each of its reads must end in.
    counter: &'static str,
    /// Per round: the call response's wall time, the whole read's wall and CPU time (ns/read).
    rounds: Vec<(f64, f64, Option<f64>)>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reads: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let only = std::env::args().nth(2);
    let mut filter = Filter::boot(CONFIG)?;
    let cases = [
        Case {
            name: "identical",
            shadow: PRIMARY,
            counter: "compare_equal",
            rounds: Vec::new(),
        },
        Case {
            name: "equal",
            shadow: EQUAL,
            counter: "compare_equal",
            rounds: Vec::new(),
        },
        Case {
            name: "one change",
            shadow: CHANGED,
            counter: "compare_body_mismatch",
            rounds: Vec::new(),
        },
    ];
    let mut cases: Vec<Case> = cases
        .into_iter()
        .filter(|case| only.as_deref().is_none_or(|name| name == case.name))
        .collect();
    if cases.is_empty() {
        return Err(format!("no case {only:?}: identical, equal or one change").into());
    }
    // Warm-up: JIT code paged in, the guest allocator grown.
    for case in &cases {
        run(&mut filter, case.shadow, reads / 10)?;
    }
    for _ in 0..ROUNDS {
        for case in &mut cases {
            let before = filter.counter(&format!("cutover.chat.{}", case.counter));
            case.rounds.push(run(&mut filter, case.shadow, reads)?);
            let counted = filter.counter(&format!("cutover.chat.{}", case.counter)) - before;
            if counted != reads as u64 {
                return Err(format!(
                    "{}: {counted} of {reads} reads counted in {}",
                    case.name, case.counter
                )
                .into());
            }
        }
    }
    println!("wasm: {}", filter.wasm_path().display());
    println!(
        "documents: {} / {} / {} bytes; rules: 3 ignore (one of them $..etag), 1 unordered",
        PRIMARY.len(),
        EQUAL.len(),
        CHANGED.len()
    );
    println!("{ROUNDS} rounds × {reads} compared reads per case (medians of the rounds):");
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let (mut call, mut read_cpu) = (Vec::new(), Vec::new());
    for case in &cases {
        let response = median(case.rounds.iter().map(|r| r.0).collect());
        let read = median(case.rounds.iter().map(|r| r.1).collect());
        let cpu: Vec<f64> = case.rounds.iter().filter_map(|r| r.2).collect();
        let cpu = (!cpu.is_empty()).then(|| median(cpu));
        println!(
            "  {:<10}  call response {:>7.2} µs   whole read {:>7.2} µs wall{}",
            case.name,
            response / 1000.0,
            read / 1000.0,
            cpu.map_or_else(String::new, |c| format!(", {:.2} µs CPU", c / 1000.0))
        );
        call.push(response);
        read_cpu.push(cpu);
    }
    let identical = call.first().copied().unwrap_or(f64::NAN);
    let identical_cpu = read_cpu.first().copied().flatten();
    for ((case, response), cpu) in cases.iter().zip(&call).zip(&read_cpu).skip(1) {
        let cost = (response - identical) / 1000.0;
        // The CPU-time difference of whole reads: the steadier figure on a loaded machine.
        let cpu_cost = identical_cpu.zip(*cpu).map_or_else(String::new, |(i, c)| {
            format!(", {:.2} µs CPU", (c - i) / 1000.0)
        });
        println!(
            "comparison cost, {}: {cost:.2} µs wall{cpu_cost} (target ≤ 20 µs)",
            case.name,
        );
    }
    Ok(())
}

/// `reads` compared reads whose shadow answers `shadow`; per read: the call response's wall
/// time, the whole read's wall time and this thread's CPU time (ns).
fn run(
    filter: &mut Filter,
    shadow: &[u8],
    reads: usize,
) -> Result<(f64, f64, Option<f64>), Box<dyn std::error::Error>> {
    const JSON: [(&str, &str); 2] = [
        ("content-type", "application/json"),
        ("content-length", "4096"),
    ];
    let mut in_call_response = Duration::ZERO;
    let cpu_start = thread_cpu_time_ns();
    let start = Instant::now();
    for i in 0..reads {
        let request_id = format!("0d4f1c2e-8a9b-4c3d-9e8f-{i:012}");
        let headers: [(&str, &str); 6] = [
            (":method", "GET"),
            (":path", "/api/chat/conversations/42/messages?limit=18"),
            (":authority", "gateway.example"),
            (":scheme", "https"),
            ("x-correlation-id", "c-bench"),
            ("x-request-id", &request_id),
        ];
        let mut stream = filter.request(&headers, None)?;
        stream.respond_headers(200, &JSON)?;
        stream.send_response_body(PRIMARY, true)?;
        stream.finish()?;
        filter.tick()?;
        let token = match filter.pending_http_calls() {
            [call] => call.token,
            calls => return Err(format!("expected one shadow, got {}", calls.len()).into()),
        };
        let called = Instant::now();
        filter.deliver_http_call_response(token, Some(200), &JSON, shadow)?;
        in_call_response += called.elapsed();
        // The harness keeps every log line; a mismatch writes one per read.
        filter.clear_logs();
    }
    let per_read = |ns: f64| ns / reads as f64;
    let wall = per_read(start.elapsed().as_nanos() as f64);
    let cpu = cpu_start
        .zip(thread_cpu_time_ns())
        .map(|(a, b)| per_read((b - a) as f64));
    Ok((per_read(in_call_response.as_nanos() as f64), wall, cpu))
}
