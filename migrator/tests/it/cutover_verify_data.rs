//! `cutover-verify --verify` runs verify and makes its result a check (and embeds the report).

use crate::cutover_verify_support;

use cutover_verify_support::verify_support::Pair;
use cutover_verify_support::{boot, check, config};

#[test]
fn verify_result_is_a_check() {
    let setup = boot(&config::chat_config(50));
    setup.traffic(100, |i| format!("user-{i}"));
    let pair = Pair::with_tasks("cv_data", 200);
    let args = [
        "--min-requests",
        "20",
        "--verify",
        "--source-url",
        &pair.source.url,
        "--target-url",
        &pair.target.url,
        "--tables",
        "tasks",
    ];

    let report = setup.cutover_verify(&args).json();
    let data = check(&report, "data");
    assert_eq!(data["status"], "pass", "{data}");
    assert_eq!(data["value"], 0.0);
    assert_eq!(report["verify"]["identical"], true);

    let key = pair.key(17);
    pair.target_sql(&format!(
        "DELETE FROM orchestration.coding_tasks WHERE id = '{key}'"
    ));
    let outcome = setup.cutover_verify(&args);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let report = outcome.json();
    let data = check(&report, "data");
    assert_eq!(data["status"], "fail", "{data}");
    assert_eq!(data["value"], 1.0);
    assert_eq!(report["verify"]["tables"][0]["missing"][0], key.as_str());
}
