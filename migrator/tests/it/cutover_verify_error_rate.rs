//! An upstream for new that answers 500 for a share of requests fails the error-rate check, and
//! the check shows the figure.

use crate::cutover_verify_support;

use cutover_verify_support::{boot, check, config};

#[test]
fn a_failing_share_on_new_fails_the_error_rate_check_with_its_figure() {
    let setup = boot(&config::chat_config(50));
    setup.new.set_fail_every(5);
    setup.traffic(400, |i| format!("user-{i}"));

    let outcome = setup.cutover_verify(&["--min-requests", "20"]);
    assert_eq!(
        outcome.code, 1,
        "stdout: {}\nstderr: {}",
        outcome.stdout, outcome.stderr
    );
    let report = outcome.json();
    assert_eq!(report["passed"], false);
    let errors = check(&report, "chat.new_5xx_rate");
    assert_eq!(errors["status"], "fail");
    assert_eq!(errors["kind"], "new_5xx_rate");
    let completed = setup.stat("cluster.chat_new.upstream_rq_completed") as f64;
    let failed = setup.stat("cluster.chat_new.upstream_rq_5xx") as f64;
    assert!(failed > 0.0 && completed >= 20.0);
    let value = errors["value"].as_f64().unwrap();
    assert!(
        (value - failed / completed * 100.0).abs() < 1e-9,
        "{value} vs {failed}/{completed}"
    );
    assert!(
        (value - 20.0).abs() < 1.0,
        "every 5th request fails: {value}"
    );
    // The split is unaffected.
    assert_eq!(check(&report, "chat.split")["status"], "pass");

    let text = cutover_verify_support::run(&[
        "cutover-verify",
        "--admin-url",
        &setup.envoy.admin_url(),
        "--min-requests",
        "20",
    ]);
    assert_eq!(text.code, 1);
    let line = text
        .stdout
        .lines()
        .find(|l| l.contains("5xx rate"))
        .expect("an error-rate line");
    assert!(
        line.starts_with('❌')
            && line.contains(&format!("{}%", (value * 100.0).round() / 100.0))
            && line.contains("< 1%"),
        "{line}"
    );
}
