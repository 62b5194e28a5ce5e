//! A migration changed after it was applied is refused (exit 4), naming the migration — by
//! `schema`, `copy` and `status`. The binary embeds the files at build time, so the test changes
//! the recorded checksum instead, which is what the comparison sees.
use crate::common;
use common::{migrator_cmd, Env};

#[test]
fn changed_migration_is_refused_everywhere() {
    let env = Env::new("mig_schema_changed", 50);
    let mut client = env.target_client();
    client
        .execute(
            "UPDATE _sqlx_migrations SET checksum = sha384('tampered') WHERE version = 2",
            &[],
        )
        .unwrap();

    let out = env.run(&["schema"]);
    out.assert_code(4);
    assert!(
        out.stderr.contains('2') && out.stderr.contains("conversations"),
        "{}",
        out.stderr
    );

    let copy = env.run(&["copy"]);
    copy.assert_code(4);
    assert!(copy.stderr.contains("conversations"), "{}", copy.stderr);
    let users: i64 = client
        .query_one("SELECT count(*) FROM auth.users", &[])
        .unwrap()
        .get(0);
    assert_eq!(
        users, 0,
        "copy wrote into a target with a changed migration"
    );

    let status: common::Outcome = migrator_cmd()
        .args(["status", "--target-url", &env.target.url])
        .output()
        .unwrap()
        .into();
    status.assert_code(4);
    assert!(status.stdout.contains("CHANGED"), "{}", status.stdout);
}
