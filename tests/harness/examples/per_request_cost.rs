//! In-VM cost of one request through the filter: request headers, response headers and the
//! stream's end, on one wasmtime VM, averaged over many matched requests. A benchmark, not a
//! test: `make bench-filter-vm`.
//!
//! The figure includes the harness's own work per request (building header maps, copying them
//! in and out of guest memory), so it is an upper bound on the filter's share.

use std::time::Instant;

use cutover_harness::Filter;

mod common;
use common::thread_cpu_time_ns;

const CONFIG: &str = r#"{
  "services": [
    { "name": "chat", "path_prefixes": ["/api/chat", "/api/conversations", "/hubs/chat"],
      "legacy_cluster": "chat_legacy", "new_cluster": "chat_new",
      "new_percentage": 10, "feature_header": "X-Feature-UseLegacyChat",
      "dual_write": { "enabled": true } },
    { "name": "orchestration", "path_prefixes": ["/api/orchestration"],
      "legacy_cluster": "orchestration_legacy", "new_cluster": "orchestration_new",
      "use_legacy": true, "feature_header": "X-Feature-UseLegacyOrchestration" } ]
}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(1_000_000);
    let mut filter = Filter::boot(CONFIG)?;
    let keys: Vec<String> = (0..1024)
        .map(|n| format!("3f2c9a1e-{n:04}-4b7d-9c1e-5a6b7c8d9e0f"))
        .collect();
    let response: [(&str, &str); 3] = [
        ("content-type", "application/json"),
        ("content-length", "512"),
        ("date", "Tue, 24 Nov 2026 22:00:00 GMT"),
    ];

    let mut run = |count: usize| -> Result<(f64, Option<f64>), cutover_harness::Error> {
        let cpu_start = thread_cpu_time_ns();
        let start = Instant::now();
        for i in 0..count {
            let headers: [(&str, &str); 7] = [
                (":method", "GET"),
                (":path", "/api/chat/conversations/42/messages?limit=50"),
                (":authority", "gateway.example"),
                (":scheme", "https"),
                ("user-agent", "bench/1.0"),
                ("x-correlation-id", &keys[i % keys.len()]),
                ("x-request-id", "0d4f1c2e-8a9b-4c3d-9e8f-7a6b5c4d3e2f"),
            ];
            let mut stream = filter.request(&headers, None)?;
            stream.respond(200, &response)?;
            stream.finish()?;
        }
        let wall = start.elapsed().as_nanos() as f64 / count as f64;
        let cpu = cpu_start
            .zip(thread_cpu_time_ns())
            .map(|(a, b)| (b - a) as f64 / count as f64);
        Ok((wall, cpu))
    };
    run(requests / 10)?; // warm-up: JIT code paged in, guest allocator grown
    let (wall_ns, cpu_ns) = run(requests)?;
    let routed =
        filter.counter("cutover.chat.routed_new") + filter.counter("cutover.chat.routed_legacy");
    println!("wasm: {}", filter.wasm_path().display());
    println!(
        "requests: {requests} matched (+{} warm-up), routed counters: {routed}",
        requests / 10
    );
    println!("per request (request headers + response headers + end of stream):");
    println!("  wall time: {:.2} µs", wall_ns / 1000.0);
    // CPU time leaves out the time this thread waited for a core; on a shared machine it is the
    // steadier figure of what one request costs.
    let cost = match cpu_ns {
        Some(cpu_ns) => {
            println!("  thread CPU time: {:.2} µs", cpu_ns / 1000.0);
            cpu_ns
        }
        None => wall_ns,
    };
    println!(
        "target: < 2 µs — {}",
        if cost < 2000.0 { "met" } else { "NOT met" }
    );
    Ok(())
}
