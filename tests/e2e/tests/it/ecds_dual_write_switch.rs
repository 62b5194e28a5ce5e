//! Dual-write is switched on and off through ECDS without restarting Envoy: writes sent while it
//! is off are never mirrored, writes sent while it is on are.

use std::time::Duration;

use cutover_e2e::{config, wait_until, Envoy, HttpClient, Upstream};
use cutover_filter::bucket::bucket;

const WAIT: Duration = Duration::from_secs(10);

/// The "on" step runs at 99 % and the "off" step at 100 %, so `x-traffic-percentage` shows which
/// one the worker serves; the key is on new in both.
fn off() -> serde_json::Value {
    config::chat_config(100)
}

fn on() -> serde_json::Value {
    config::chat_dual_write_config(99, 5000, 1024 * 1024)
}

fn key() -> String {
    (0..)
        .map(|i| format!("switch-user-{i}"))
        .find(|k| bucket("chat", k.as_bytes()) <= 99)
        .expect("a key on new at 99 %")
}

fn switch(envoy: &Envoy, client: &mut HttpClient, config: &serde_json::Value, key: &str) {
    envoy.update_filter_config(config);
    let percentage = config["services"][0]["new_percentage"].to_string();
    wait_until("the worker to serve the update", WAIT, || {
        let response = client.get_with("/api/chat/m", &[("x-correlation-id", key.as_bytes())]);
        (response.header("x-traffic-percentage") == Some(percentage.clone())).then_some(())
    });
}

fn write(client: &mut HttpClient, key: &str, body: &str) {
    let response = client.send(
        "POST",
        "/api/chat/m",
        &[("x-correlation-id", key.as_bytes())],
        body.as_bytes(),
    );
    assert_eq!(response.status, 200);
    assert_eq!(response.served_by().as_deref(), Some("chat_new"));
}

#[test]
fn dual_write_follows_ecds_updates() {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let envoy = Envoy::builder(&off())
        .upstream(&legacy)
        .upstream(&new)
        .ecds()
        .boot();
    let pid = envoy.pid();
    let mut client = envoy.client();
    let key = key();
    let gauge = "wasmcustom.cutover.chat.dual_write_enabled";
    assert_eq!(envoy.stat(gauge), Some(0));

    write(&mut client, &key, "off-1");
    switch(&envoy, &mut client, &on(), &key);
    assert_eq!(envoy.stat(gauge), Some(1));
    write(&mut client, &key, "on-1");
    legacy.wait_for_requests(1, WAIT);

    switch(&envoy, &mut client, &off(), &key);
    assert_eq!(envoy.stat(gauge), Some(0));
    write(&mut client, &key, "off-2");

    // On again: once this write's shadow arrived, an earlier one would have arrived too.
    switch(&envoy, &mut client, &on(), &key);
    write(&mut client, &key, "on-2");
    legacy.wait_for_requests(2, WAIT);

    let shadows: Vec<String> = legacy
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert_eq!(
        shadows,
        ["on-1", "on-2"],
        "only writes sent while dual-write was on are mirrored"
    );
    assert_eq!(
        envoy.wait_for_stat("wasmcustom.cutover.chat.shadow_succeeded", 2, WAIT),
        2
    );
    assert_eq!(envoy.pid(), pid, "same Envoy process throughout");
}
