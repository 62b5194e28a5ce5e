//! Paced (fixed-rate) load for the benchmarks: what a client waits at a given request rate, as
//! opposed to a saturating load generator, whose latencies mostly measure queueing.

use std::thread;
use std::time::{Duration, Instant};

use crate::client::HttpClient;

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
