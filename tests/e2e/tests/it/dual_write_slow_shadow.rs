//! A shadow answering after 500 ms does not delay the client, and every one of its outcomes is
//! still counted (the callback is not lost when the client's stream has ended).

use std::time::Duration;

use cutover_e2e::{config, Envoy, Upstream};

const WRITES: u64 = 6;
const SHADOW_DELAY: Duration = Duration::from_millis(500);

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Client latencies of `WRITES` POSTs routed to new (0 % → everything legacy; so use 100 %).
fn write_latencies(envoy: &Envoy) -> Vec<Duration> {
    let mut client = envoy.client();
    // Warm the connection up so connect time is not in the first sample.
    assert_eq!(
        client
            .get_with("/api/chat/warm-up", &[("x-correlation-id", b"warm-up")])
            .status,
        200
    );
    (0..WRITES)
        .map(|i| {
            let key = format!("slow-{i}");
            let response = client.send(
                "POST",
                "/api/chat/m",
                &[("x-correlation-id", key.as_bytes())],
                &[b'x'; 2048],
            );
            assert_eq!(response.status, 200);
            assert_eq!(response.served_by().as_deref(), Some("chat_new"));
            response.elapsed
        })
        .collect()
}

#[test]
fn slow_shadow_does_not_delay_the_client_and_is_counted() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    // At 100 % the primary is new and the shadow goes to legacy, which is slow.
    legacy.set_delay(SHADOW_DELAY);

    let off = Envoy::boot(&config::chat_config(100), &[&legacy, &new]);
    let latencies_off = write_latencies(&off);
    drop(off);
    assert_eq!(legacy.request_count(), 0, "no shadows without dual-write");

    let on = Envoy::boot(
        &config::chat_dual_write_config(100, 5000, 1024 * 1024),
        &[&legacy, &new],
    );
    let latencies_on = write_latencies(&on);

    // Had the client waited for the shadow it could not have finished before SHADOW_DELAY.
    for latency in &latencies_on {
        assert!(
            *latency < SHADOW_DELAY,
            "a write took {latency:?} with dual-write on (off: {latencies_off:?})"
        );
    }
    let (median_on, median_off) = (median(latencies_on.clone()), median(latencies_off.clone()));
    assert!(
        median_on <= median_off * 3 + Duration::from_millis(100),
        "median with dual-write {median_on:?} vs without {median_off:?}"
    );

    let succeeded = on.wait_for_stat(
        "wasmcustom.cutover.chat.shadow_succeeded",
        WRITES,
        Duration::from_secs(15),
    );
    assert_eq!(succeeded, WRITES, "every slow shadow's success is counted");
    assert_eq!(on.cutover_counter("chat", "shadow_sent"), WRITES);
    assert_eq!(on.cutover_counter("chat", "shadow_timed_out"), 0);
    assert_eq!(legacy.request_count() as u64, WRITES);
    for request in legacy.requests() {
        assert_eq!(request.header("x-cutover-shadow"), Some(&b"true"[..]));
    }
}
