//! A wrong password: exit 3, "authentication failed", and the password appears nowhere.
//!
//! The shared test server trusts every loopback connection (any password is accepted), so this
//! test starts a private throw-away cluster with scram-sha-256 authentication from the installed
//! PostgreSQL server binaries. Missing binaries are a failure with instructions, not a skip.
use crate::common;
use common::cluster::PasswordCluster;
use common::migrator_cmd;

#[test]
fn wrong_password_exits_3_and_never_shows_a_password() {
    let cluster = PasswordCluster::start("Right-Pa55word");
    // The right password works (so the failure below is about the password, not the server).
    let ok: common::Outcome = migrator_cmd()
        .args(["status", "--target-url", &cluster.url("Right-Pa55word")])
        .output()
        .unwrap()
        .into();
    ok.assert_code(0);
    assert!(!ok.stdout.contains("Right-Pa55word") && !ok.stderr.contains("Right-Pa55word"));

    let wrong = cluster.url("Wr0ng-Secret");
    for args in [
        vec!["status", "--target-url", wrong.as_str()],
        vec!["schema", "--target-url", wrong.as_str()],
    ] {
        let out: common::Outcome = migrator_cmd().args(&args).output().unwrap().into();
        out.assert_code(3);
        assert!(
            out.stderr.contains("authentication failed"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!("127.0.0.1:{}", cluster.port)),
            "{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("Wr0ng-Secret") && !out.stdout.contains("Wr0ng-Secret"),
            "password leaked:\n{}",
            out.stderr
        );
    }
    // Same through the environment variable.
    let out: common::Outcome = migrator_cmd()
        .arg("status")
        .env("DATABASE_URL", &wrong)
        .output()
        .unwrap()
        .into();
    out.assert_code(3);
    assert!(!out.stderr.contains("Wr0ng-Secret"), "{}", out.stderr);
}
