//! Hot rollout through ECDS: 10 → 50 → 100 → kill switch by renaming a new file into the watched
//! directory, while a client keeps sending; the observed split follows each step and no request
//! fails during the switches.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use cutover_e2e::{config, wait_until, Envoy, HttpClient, Upstream};
use cutover_filter::bucket::bucket;

const KEYS: usize = 300;

fn expected(key: &str, percentage: u8, use_legacy: bool) -> &'static str {
    if !use_legacy && percentage > 0 && bucket("chat", key.as_bytes()) <= percentage {
        "chat_new"
    } else {
        "chat_legacy"
    }
}

/// Sends every key once and checks each lands where this step says.
fn check_step(client: &mut HttpClient, percentage: u8, use_legacy: bool) -> usize {
    let mut to_new = 0;
    for i in 0..KEYS {
        let key = format!("step-user-{i}");
        let response = client.get_with("/api/chat/feed", &[("x-correlation-id", key.as_bytes())]);
        assert_eq!(response.status, 200);
        let served_by = response.served_by().expect("x-served-by");
        assert_eq!(
            served_by,
            expected(&key, percentage, use_legacy),
            "step {percentage}% use_legacy={use_legacy}, key {key}"
        );
        to_new += usize::from(served_by == "chat_new");
    }
    to_new
}

#[test]
fn split_follows_each_ecds_step_without_restart() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let envoy = Envoy::builder(&config::chat_config(10))
        .upstream(&legacy)
        .upstream(&new)
        .ecds()
        .boot();
    let pid = envoy.pid();

    // Background traffic on one keep-alive connection for the whole test.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let background = {
        let (stop, sent, url) = (Arc::clone(&stop), Arc::clone(&sent), envoy.listener_url());
        thread::spawn(move || {
            let mut client = HttpClient::new(&url);
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) && i < 200_000 {
                let key = format!("background-{}", i % 97);
                match client.try_send(
                    "POST",
                    "/api/chat/typing",
                    &[("x-correlation-id", key.as_bytes())],
                    b"{}",
                ) {
                    Ok(response) if response.status == 200 => {}
                    Ok(response) => failures.push(format!("status {}", response.status)),
                    Err(error) => failures.push(error.to_string()),
                }
                i += 1;
                sent.store(i, Ordering::SeqCst);
            }
            failures
        })
    };

    let mut client = envoy.client();
    let mut shares = Vec::new();
    for (percentage, use_legacy) in [(10u8, false), (50, false), (100, false), (100, true)] {
        let mut step = config::chat_config(percentage);
        step["services"][0]["use_legacy"] = use_legacy.into();
        envoy.update_filter_config(&step);
        // Workers pick the update up right after the main thread; the kill switch shows in the
        // feature header, the percentage in x-traffic-percentage.
        wait_until(
            "the step to reach the worker",
            Duration::from_secs(10),
            || {
                let response =
                    client.get_with("/api/chat/probe", &[("x-correlation-id", b"probe")]);
                let live = response.header("x-traffic-percentage") == Some(percentage.to_string())
                    && response.header("x-feature-uselegacychat") == Some(use_legacy.to_string());
                live.then_some(())
            },
        );
        shares.push(check_step(&mut client, percentage, use_legacy));
    }

    stop.store(true, Ordering::SeqCst);
    let failures = background.join().expect("background client");
    assert!(
        failures.is_empty(),
        "background requests failed during the switches: {failures:?}"
    );
    assert!(
        sent.load(Ordering::SeqCst) > 0,
        "the background client sent requests"
    );
    assert_eq!(envoy.pid(), pid, "same Envoy process throughout");
    assert!(
        shares[0] < shares[1] && shares[1] < shares[2],
        "shares {shares:?}"
    );
    assert_eq!(shares[2], KEYS);
    assert_eq!(shares[3], 0);
    assert_eq!(envoy.ecds_stats().update_rejected, 0);
}
