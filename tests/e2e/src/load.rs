//! Paced (fixed-rate) load for the benchmarks: what a client waits at a given request rate, as
//! opposed to a saturating load generator, whose latencies mostly measure queueing.

use std::thread;
use std::time::{Duration, Instant};

use crate::client::HttpClient;
use crate::envoy::Envoy;

/// One kind of request the paced load sends; the key header gets a fresh value per request.
#[derive(Clone, Debug)]
pub struct PacedRequest {
    pub method: &'static str,
    pub target: String,
    pub body: Vec<u8>,
}

/// Sends `total` requests at `rate` per second in all, from `connections` keep-alive
/// connections (each paced at `rate / connections`), and returns every latency, unsorted.
/// Panics on a transport error or a status other than 200.
pub fn paced(
    url: &str,
    request: &PacedRequest,
    total: u64,
    rate: u64,
    connections: u64,
) -> Vec<Duration> {
    let per_connection = total / connections;
    let interval = Duration::from_secs_f64(connections as f64 / rate as f64);
    let handles: Vec<_> = (0..connections)
        .map(|c| {
            let (url, request) = (url.to_string(), request.clone());
            thread::spawn(move || {
                let mut client = HttpClient::new(&url);
                let start = Instant::now();
                (0..per_connection)
                    .map(|i| {
                        let due = start + interval.mul_f64(i as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            thread::sleep(wait);
                        }
                        let key = format!("load-{c}-{i}");
                        let response = client.send(
                            request.method,
                            &request.target,
                            &[("x-correlation-id", key.as_bytes())],
                            &request.body,
                        );
                        assert_eq!(response.status, 200, "{}", response.body_text());
                        response.elapsed
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("load thread"))
        .collect()
}

/// The `p`-quantile (0 < p ≤ 1) of sorted latencies, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// `rounds` interleaved rounds of the same paced load (`total` requests at `rate` per second from
/// `connections` connections) on every labelled Envoy, so drift hits all sides alike. Prints each
/// round's p50/p99 per side on a line starting with `title`; returns each side's latencies over
/// all rounds, sorted.
pub fn paced_rounds(
    title: &str,
    sides: &[(&str, Envoy)],
    request: &PacedRequest,
    rounds: u64,
    total: u64,
    rate: u64,
    connections: u64,
) -> Vec<Vec<Duration>> {
    let mut all: Vec<Vec<Duration>> = vec![Vec::new(); sides.len()];
    for round in 1..=rounds {
        let mut line = format!("{title} {round}:");
        for (i, (label, envoy)) in sides.iter().enumerate() {
            let mut run = paced(&envoy.listener_url(), request, total, rate, connections);
            run.sort();
            line += &format!(
                " | {label} p50 {:.3} ms p99 {:.3} ms",
                millis(percentile(&run, 0.5)),
                millis(percentile(&run, 0.99))
            );
            all[i].extend(run);
        }
        println!("{line}");
    }
    for latencies in &mut all {
        latencies.sort();
    }
    all
}

/// A duration in (fractional) milliseconds, for printing.
pub fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The benchmark knob `name` from the environment, else `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
