//! Native cost of comparing two 4 KiB JSON responses with noise rules (parse both, walk, report),
//! averaged over many comparisons. A benchmark, not a test:
//! `cargo run -p cutover-filter --release --example compare_cost [-- COMPARISONS]`.

use std::time::Instant;

use cutover_filter::compare::{compare_responses, CapturedResponse, Verdict};
use cutover_filter::config::FilterConfig;
use serde_json::{json, Value};

const CONFIG: &str = r#"{"services":[{"name":"chat","path_prefixes":["/api/chat"],
  "legacy_cluster":"chat_legacy","new_cluster":"chat_new",
  "shadow_reads":{"percentage":10},
  "compare":{"ignore":["$.updated_at","$.messages[*].id","$..etag"],
             "unordered":["$.messages[*].tags"]}}]}"#;

/// A conversation page of about 4 KiB; `variant` changes the ignored fields and the order of
/// members and tags, `changed` one message text.
fn page(variant: u32, changed: bool) -> Vec<u8> {
    let messages: Vec<Value> = (0..16)
        .map(|i| {
            let mut tags = vec!["read", "pinned", "edited"];
            if variant % 2 == 1 {
                tags.reverse();
            }
            let text = if changed && i == 11 { "changed" } else { "a message of some length" };
            json!({
                "id": format!("m-{variant}-{i}"),
                "author": { "id": 1000 + i, "name": format!("user {i}"), "etag": format!("e{variant}") },
                "text": text,
                "created_at": format!("2026-12-01T10:{i:02}:00Z"),
                "tags": tags,
                "reactions": { "thumbs_up": i % 3, "heart": (i * 7) % 5 }
            })
        })
        .collect();
    let doc = json!({
        "conversation": 42,
        "updated_at": format!("2026-12-01T10:00:0{variant}Z"),
        "messages": messages,
        "next": "/api/chat/conversations/42/messages?cursor=abc"
    });
    serde_json::to_vec(&doc).unwrap_or_default()
}

/// This thread's CPU time (user + system) from `/proc/thread-self/stat`, in ns (10 ms ticks).
fn thread_cpu_time_ns() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // USER_HZ is 100 on Linux for every architecture this runs on.
    Some(ticks * 10_000_000)
}

fn response(body: Vec<u8>) -> CapturedResponse {
    CapturedResponse {
        status: 200,
        content_type: Some(b"application/json".to_vec()),
        headers: Vec::new(),
        body,
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let count: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let config = FilterConfig::from_json(CONFIG.as_bytes())?;
    let rules = config
        .services
        .first()
        .and_then(|s| s.compare.clone())
        .ok_or("no compare rules")?;
    let primary = response(page(0, false));
    let equal = response(page(1, false));
    let different = response(page(1, true));
    println!(
        "documents: {} and {} bytes; rules: 3 ignore, 1 unordered",
        primary.body.len(),
        equal.body.len()
    );
    for (name, shadow) in [("equal", &equal), ("one change", &different)] {
        let mut last = Verdict::Equal;
        for _ in 0..count / 10 {
            last = compare_responses(&rules, &primary, shadow);
        }
        let (cpu_start, start) = (thread_cpu_time_ns(), Instant::now());
        for _ in 0..count {
            last = compare_responses(&rules, &primary, shadow);
        }
        let wall = start.elapsed().as_nanos() as f64 / f64::from(count) / 1000.0;
        // CPU time leaves out the time this thread waited for a core on a shared machine.
        let cpu = cpu_start
            .zip(thread_cpu_time_ns())
            .map(|(a, b)| (b - a) as f64 / f64::from(count) / 1000.0);
        println!(
            "{name}: wall {wall:.1} µs, thread CPU {} per comparison ({count}); {last:?}",
            cpu.map_or_else(|| "n/a".to_string(), |c| format!("{c:.1} µs"))
        );
    }
    Ok(())
}
