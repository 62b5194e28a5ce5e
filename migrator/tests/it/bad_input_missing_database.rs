//! A database that does not exist: exit 3, naming the database; for the source side of a copy too.
use crate::common;
use common::{migrator_cmd, Env};

#[test]
fn missing_database_exits_3_naming_it() {
    let env = Env::new("mig_bad_missing_db", 10);
    let mut missing = url::Url::parse(&env.target.url).unwrap();
    missing.set_path("/no_such_database_xyz");
    let out: common::Outcome = migrator_cmd()
        .args([
            "copy",
            "--source-url",
            missing.as_str(),
            "--target-url",
            &env.target.url,
        ])
        .output()
        .unwrap()
        .into();
    out.assert_code(3);
    assert!(
        out.stderr.contains("source") && out.stderr.contains("no_such_database_xyz"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
    assert_eq!(env.count("auth.users"), 0);
}
