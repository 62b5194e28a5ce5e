//! Which services are checked: discovered from Envoy's gauges, or those of --filter-config /
//! --service (with the clusters they name).

use crate::cutover_verify_support;

use cutover_verify_support::{boot, check, config};

fn service_ids(report: &serde_json::Value) -> Vec<String> {
    let mut services: Vec<String> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["service"].as_str().unwrap().to_string())
        .collect();
    services.dedup();
    services
}

#[test]
fn services_come_from_gauges_the_filter_config_or_the_command_line() {
    let setup = boot(&config::filter_config(vec![
        config::chat_service(50),
        config::orchestration_service(20),
    ]));
    setup.traffic(100, |i| format!("user-{i}"));
    setup.wait_for_latency_quantiles();

    let discovered = setup.cutover_verify(&["--min-requests", "20"]).json();
    assert_eq!(service_ids(&discovered), ["chat", "orchestration"]);
    assert_eq!(check(&discovered, "chat.split")["status"], "pass");

    // The file names a service Envoy does not know: its checks have no data, and the run fails.
    let mut file_config = config::filter_config(vec![config::chat_service(50)]);
    let mut billing = config::chat_service(10);
    billing["name"] = "billing".into();
    billing["new_cluster"] = "billing_new".into();
    billing["path_prefixes"] = serde_json::json!(["/api/billing"]);
    billing["stickiness_group"] = "billing".into();
    file_config["services"]
        .as_array_mut()
        .unwrap()
        .push(billing.clone());
    let path =
        std::env::temp_dir().join(format!("cutover-verify-filter-{}.json", std::process::id()));

    // The file is read with the filter's own rules: a configuration the filter would refuse is
    // an error naming the field (here two services claiming one prefix), not a checklist.
    let mut refused = file_config.clone();
    refused["services"][1]["path_prefixes"] = serde_json::json!(["/api/chat"]);
    std::fs::write(&path, refused.to_string()).unwrap();
    let outcome = setup.cutover_verify(&["--filter-config", path.to_str().unwrap()]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("services[1].path_prefixes[0]"),
        "{}",
        outcome.stderr
    );

    std::fs::write(&path, file_config.to_string()).unwrap();
    let outcome = setup.cutover_verify(&[
        "--min-requests",
        "20",
        "--filter-config",
        path.to_str().unwrap(),
    ]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let from_file = outcome.json();
    assert_eq!(service_ids(&from_file), ["billing", "chat"]);
    assert_eq!(check(&from_file, "chat.split")["status"], "pass");
    let billing_errors = check(&from_file, "billing.new_5xx_rate");
    assert_eq!(billing_errors["status"], "no_data");
    assert!(
        billing_errors["detail"]
            .as_str()
            .unwrap()
            .contains("billing_new"),
        "{billing_errors}"
    );

    let only_chat = setup.cutover_verify(&["--min-requests", "20", "--service", "chat=chat_new"]);
    assert_eq!(only_chat.code, 0, "{}", only_chat.stdout);
    assert_eq!(service_ids(&only_chat.json()), ["chat"]);

    // A configuration without services leaves nothing to check: that never passes.
    let empty = std::env::temp_dir().join(format!(
        "cutover-verify-no-services-{}.json",
        std::process::id()
    ));
    std::fs::write(&empty, r#"{"services":[]}"#).unwrap();
    let outcome = setup.cutover_verify(&["--filter-config", empty.to_str().unwrap()]);
    std::fs::remove_file(&empty).unwrap();
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let report = outcome.json();
    assert_eq!(report["passed"], false);
    assert_eq!(report["checks"].as_array().unwrap().len(), 0);
}

#[test]
fn a_bad_service_option_is_an_error() {
    let setup = boot(&config::chat_config(50));
    let outcome = setup.cutover_verify(&["--service", "chat"]);
    assert_eq!(outcome.code, 2);
    assert!(outcome.stderr.contains("--service"), "{}", outcome.stderr);
}
