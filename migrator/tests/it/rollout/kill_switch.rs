//! The kill switch works in every state of the live file: after a hand edit Envoy refused, and
//! after one Envoy could not even read, `rollout set SERVICE legacy` puts traffic on legacy,
//! built from the configuration Envoy serves, and leaves the file holding what Envoy serves.

use super::*;

/// Every request of 20 distinct keys is answered by `chat_legacy`.
fn all_on_legacy(bench: &Bench) {
    let mut client = bench.envoy.client();
    for i in 0..20 {
        let key = format!("k{i}");
        let r = client.get_with("/api/chat/x", &[("x-correlation-id", key.as_bytes())]);
        assert_eq!(r.served_by().as_deref(), Some("chat_legacy"), "key {key}");
    }
}

/// Writes `contents` as the live file by hand and waits until Envoy has refused it.
fn hand_edit_refused(bench: &Bench, contents: &[u8]) {
    let before = bench.envoy.ecds_stats();
    bench.envoy.write_ecds_raw(contents);
    wait_until(
        "Envoy refuses the hand edit",
        Duration::from_secs(20),
        || {
            let now = bench.envoy.ecds_stats();
            (now.update_rejected > before.update_rejected
                || now.update_failure > before.update_failure)
                .then_some(())
        },
    );
}

/// The live file as the filter crate reads it: (use_legacy of chat, the plugin's runtime).
fn file_state(bench: &Bench) -> (bool, String) {
    let bytes = std::fs::read(bench.file()).unwrap();
    let document =
        cutover_filter::ecds::EcdsDocument::parse(&bytes).expect("the file is an ECDS document");
    let config =
        cutover_filter::config::FilterConfig::from_json(document.filter_config_json().as_bytes())
            .expect("the filter accepts the file");
    let runtime = document.as_json()["resources"][0]["typed_config"]["config"]["vm_config"]
        ["runtime"]
        .as_str()
        .unwrap()
        .to_string();
    (config.services[0].use_legacy, runtime)
}

#[test]
fn after_a_hand_edit_envoy_refused_the_kill_switch_still_reaches_legacy() {
    let bench = boot(&config::chat_config(100));
    // Any rollout command records what Envoy confirms serving (Envoy's config dump shows the last
    // configuration it *received*, also a refused one, so the dump alone cannot tell after a
    // refusal).
    assert_code(&bench.rollout(&["show"]), 0, "show");
    // A runtime this Envoy does not have: the filter configuration is fine, Envoy refuses the
    // resource (`update_rejected`); it keeps serving 100 % new.
    let mut doc: Value = serde_json::from_slice(&std::fs::read(bench.file()).unwrap()).unwrap();
    doc["resources"][0]["typed_config"]["config"]["vm_config"]["runtime"] =
        "envoy.wasm.runtime.wamr".into();
    hand_edit_refused(&bench, doc.to_string().as_bytes());
    assert_eq!(bench.gauge("new_percentage"), Some(100));
    assert_eq!(bench.gauge("use_legacy"), Some(0));

    let out = bench.rollout(&["set", "chat", "legacy"]);
    assert_code(&out, 0, "kill switch after a refused hand edit");
    assert!(
        out.stderr
            .contains("the kill switch is built from the last configuration Envoy confirmed"),
        "{}",
        out.stderr
    );
    assert_eq!(bench.gauge("use_legacy"), Some(1));
    all_on_legacy(&bench);
    assert_eq!(
        file_state(&bench),
        (true, "envoy.wasm.runtime.v8".to_string()),
        "the file holds what Envoy serves, with the kill switch on"
    );
    assert_code(&bench.rollout(&["show"]), 0, "file and Envoy agree again");
    assert_eq!(bench.audit().last().unwrap()["outcome"], "applied");
}

#[test]
fn after_a_hand_edit_envoy_could_not_read_the_kill_switch_still_reaches_legacy() {
    let bench = boot(&config::chat_config(100));
    // Half a file: not JSON (`update_failure`), and not a file the migrator can edit either.
    let whole = std::fs::read(bench.file()).unwrap();
    hand_edit_refused(&bench, &whole[..whole.len() / 2]);
    assert_eq!(bench.gauge("use_legacy"), Some(0));

    let out = bench.rollout(&["set", "chat", "legacy"]);
    assert_code(&out, 0, "kill switch after an unreadable hand edit");
    assert_eq!(bench.gauge("use_legacy"), Some(1));
    all_on_legacy(&bench);
    assert!(file_state(&bench).0, "the file has the kill switch on");

    // The other changes still refuse a file they cannot read (nothing is guessed for them).
    let whole = std::fs::read(bench.file()).unwrap();
    hand_edit_refused(&bench, &whole[..whole.len() / 2]);
    assert_code(
        &bench.rollout(&["set", "chat", "50"]),
        3,
        "set 50 on an unreadable file",
    );
    assert_eq!(bench.gauge("use_legacy"), Some(1), "still on legacy");
}
