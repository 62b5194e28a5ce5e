//! `scripts/rollout` switches a running Envoy (ECDS mode) between the ready steps and per-service
//! steps, waits for Envoy's confirmation with `--admin`, and refuses invalid values without
//! touching the live file.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use cutover_e2e::{config, wait_until, workspace_root, Envoy, HttpClient, Upstream};

fn run_rollout(live_file: &Path, args: &[&str]) -> Output {
    let root = workspace_root();
    Command::new(root.join("scripts/rollout"))
        .current_dir(&root)
        .arg("--file")
        .arg(live_file)
        .args(args)
        .output()
        .expect("run scripts/rollout")
}

fn rollout(envoy: &Envoy, args: &[&str]) -> Output {
    let admin = envoy.admin_url();
    let with_admin = [&["--admin", admin.as_str(), "--timeout", "20"], args].concat();
    run_rollout(envoy.ecds_file().expect("ECDS mode"), &with_admin)
}

fn live_step(client: &mut HttpClient) -> (String, String) {
    let response = client.get_with("/api/chat/x", &[("x-correlation-id", b"k")]);
    assert_eq!(response.status, 200);
    (
        response.header("x-traffic-percentage").unwrap_or_default(),
        response
            .header("x-feature-uselegacychat")
            .unwrap_or_default(),
    )
}

fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn rollout_command_switches_steps_on_a_running_envoy() {
    let upstreams: Vec<Upstream> = [
        "chat_legacy",
        "chat_new",
        "orchestration_legacy",
        "orchestration_new",
    ]
    .into_iter()
    .map(Upstream::start)
    .collect();
    let envoy = upstreams
        .iter()
        .fold(
            Envoy::builder(&config::chat_config(10)).ecds(),
            |builder, upstream| builder.upstream(upstream),
        )
        .boot();
    let mut client = envoy.client();
    assert_eq!(live_step(&mut client).0, "10");

    let step_50 = workspace_root().join("envoy/ecds/step-50.json");
    assert_ok(
        &rollout(&envoy, &["install", step_50.to_str().unwrap()]),
        "install step-50",
    );
    wait_until("step 50 live", Duration::from_secs(10), || {
        (live_step(&mut client) == ("50".into(), "false".into())).then_some(())
    });
    assert_eq!(
        envoy.stat("wasmcustom.cutover.orchestration.new_percentage"),
        Some(50),
        "the ready file's services"
    );

    assert_ok(&rollout(&envoy, &["set", "chat", "100"]), "set chat 100");
    wait_until("chat 100 live", Duration::from_secs(10), || {
        (live_step(&mut client).0 == "100").then_some(())
    });
    assert_eq!(
        envoy.stat("wasmcustom.cutover.orchestration.new_percentage"),
        Some(50),
        "other services untouched"
    );

    assert_ok(&rollout(&envoy, &["set", "chat", "legacy"]), "kill switch");
    wait_until("kill switch live", Duration::from_secs(10), || {
        (live_step(&mut client) == ("100".into(), "true".into())).then_some(())
    });
    for i in 0..50 {
        let key = format!("u{i}");
        let response = client.get_with("/api/chat/x", &[("x-correlation-id", key.as_bytes())]);
        assert_eq!(response.served_by().as_deref(), Some("chat_legacy"));
    }

    // Invalid values: exit 2, the live file is untouched.
    let live: &Path = envoy.ecds_file().unwrap();
    let before = std::fs::read(live).unwrap();
    let ecds_before = envoy.ecds_stats();
    let output = rollout(&envoy, &["set", "chat", "150"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("new_percentage"));
    assert_eq!(
        rollout(&envoy, &["set", "billing", "10"]).status.code(),
        Some(2)
    );
    assert_eq!(std::fs::read(live).unwrap(), before);
    assert_eq!(envoy.ecds_stats(), ecds_before);

    assert_ok(&rollout(&envoy, &["set", "chat", "resume"]), "resume");
    wait_until("resume live", Duration::from_secs(10), || {
        (live_step(&mut client) == ("100".into(), "false".into())).then_some(())
    });
    let response = client.get_with("/api/chat/x", &[("x-correlation-id", b"anyone")]);
    assert_eq!(response.served_by().as_deref(), Some("chat_new"));

    // Dual-write (on in the ready step) off and on again; --admin waits for the gauge.
    let gauge = "wasmcustom.cutover.chat.dual_write_enabled";
    assert_eq!(envoy.stat(gauge), Some(1));
    assert_ok(
        &rollout(&envoy, &["dual-write", "chat", "off"]),
        "dual-write off",
    );
    assert_eq!(envoy.stat(gauge), Some(0));
    assert_ok(
        &rollout(&envoy, &["dual-write", "chat", "on"]),
        "dual-write on",
    );
    assert_eq!(envoy.stat(gauge), Some(1));

    // `show` prints the live configuration per service.
    let output = rollout(&envoy, &["show"]);
    assert_ok(&output, "show");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(
        shown.contains("chat: new_percentage=100 use_legacy=false dual_write=on"),
        "{shown}"
    );

    // A ready file the filter refuses: Envoy rejects it (exit 4), the previous step keeps serving.
    let mut ready: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&step_50).unwrap()).unwrap();
    let configuration = &mut ready["resources"][0]["typed_config"]["config"]["configuration"];
    let mut filter: serde_json::Value =
        serde_json::from_str(configuration["value"].as_str().unwrap()).unwrap();
    filter["services"][0]["new_percentage"] = 150.into();
    configuration["value"] = filter.to_string().into();
    let invalid_ready = envoy.workdir().join("invalid-ready.json");
    std::fs::write(&invalid_ready, ready.to_string()).unwrap();
    let output = rollout(&envoy, &["install", invalid_ready.to_str().unwrap()]);
    assert_eq!(
        output.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(live_step(&mut client), ("100".into(), "false".into()));
    assert_eq!(
        envoy.stat("wasmcustom.cutover.chat.new_percentage"),
        Some(100)
    );

    // No live file: exit 3.
    let missing = envoy.workdir().join("no-such-dir/cutover.json");
    assert_eq!(run_rollout(&missing, &["show"]).status.code(), Some(3));
}
