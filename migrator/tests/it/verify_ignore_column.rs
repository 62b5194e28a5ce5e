//! --ignore-column leaves a column that legitimately differs out of the comparison.

use crate::verify_support;

use verify_support::{strings, table, Pair};

#[test]
fn an_ignored_column_does_not_count_and_others_still_do() {
    let pair = Pair::with_tasks("verify_ignore", 300);
    pair.target_sql(
        "UPDATE orchestration.coding_tasks SET updated_at = updated_at + interval '1 day'",
    );
    let outcome = pair.verify(&["--tables", "tasks", "--ignore-column", "tasks.updated_at"]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    assert_eq!(
        strings(&table(&outcome.json(), "tasks")["ignored_columns"]),
        vec!["updated_at".to_string()]
    );

    let key = pair.key(42);
    pair.update_target_task(42, "title = 'changed'");
    let outcome = pair.verify(&[
        "--tables",
        "tasks",
        "--ignore-column",
        "orchestration.coding_tasks.updated_at",
    ]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    let report = outcome.json();
    let changed = table(&report, "tasks")["changed"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0]["key"], key.as_str());
    assert_eq!(strings(&changed[0]["columns"]), vec!["title".to_string()]);
}

#[test]
fn an_unknown_column_is_an_error_naming_it() {
    let pair = Pair::with_tasks("verify_ignore_bad", 1);
    let outcome = pair.verify(&[
        "--tables",
        "tasks",
        "--ignore-column",
        "tasks.no_such_column",
    ]);
    assert_eq!(outcome.code, 2);
    assert!(
        outcome.stderr.contains("no_such_column"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.stdout.is_empty(),
        "no report on error: {}",
        outcome.stdout
    );
}

#[test]
fn the_key_cannot_be_ignored() {
    let pair = Pair::with_tasks("verify_ignore_key", 1);
    let outcome = pair.verify(&["--tables", "tasks", "--ignore-column", "tasks.id"]);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("--ignore-column") && outcome.stderr.contains("key"),
        "{}",
        outcome.stderr
    );
    assert!(outcome.stdout.is_empty(), "{}", outcome.stdout);
}
