//! Errors exit 2 (differences are 1): unreachable server, missing table, bad options; never a password.

use crate::verify_support;

use verify_support::{run, Pair};

#[test]
fn an_unreachable_database_exits_2_without_printing_the_password() {
    let pair = Pair::with_tasks("verify_unreach", 1);
    // Port 1 on loopback: nothing listens there.
    let outcome = run(&[
        "verify",
        "--source-url",
        "postgres://legacy:hunter2@127.0.0.1:1/legacy",
        "--target-url",
        &pair.target.url,
        "--format",
        "json",
    ]);
    assert_eq!(outcome.code, 2, "stderr: {}", outcome.stderr);
    assert!(
        outcome.stderr.contains("source"),
        "names the side: {}",
        outcome.stderr
    );
    assert!(
        !outcome.stderr.contains("hunter2") && !outcome.stdout.contains("hunter2"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stdout.is_empty());
}

#[test]
fn a_target_without_the_schema_exits_2_naming_the_table() {
    let pair = Pair::with_tasks("verify_noschema", 1);
    pair.target_sql("DROP SCHEMA orchestration CASCADE");
    let outcome = pair.verify(&["--tables", "tasks"]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("orchestration.coding_tasks"),
        "{}",
        outcome.stderr
    );
}

#[test]
fn a_missing_url_exits_2() {
    let outcome = run(&[
        "verify",
        "--target-url",
        "postgres://postgres@127.0.0.1:5432/postgres",
    ]);
    assert_eq!(outcome.code, 2);
    assert!(
        outcome.stderr.contains("--source-url"),
        "{}",
        outcome.stderr
    );
}
