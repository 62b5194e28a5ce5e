//! Identical databases: exit 0 and an empty report, over every table of the shipped plan.

use crate::verify_support;

use verify_support::Pair;

#[test]
fn identical_databases_exit_0_with_an_empty_report() {
    let pair = Pair::with_tasks("verify_same", 3000);
    let outcome = pair.verify(&[]);
    assert_eq!(
        outcome.code, 0,
        "stderr: {}\nstdout: {}",
        outcome.stderr, outcome.stdout
    );
    let report = outcome.json();
    assert_eq!(report["identical"], true);
    assert_eq!(report["differences"], 0);
    let tables = report["tables"].as_array().unwrap();
    let names: Vec<&str> = tables
        .iter()
        .map(|t| t["table"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "users",
            "conversations",
            "messages",
            "tasks",
            "task_executions"
        ]
    );
    for t in tables {
        assert_eq!(t["identical"], true, "{t}");
        for kind in ["missing", "extra", "changed"] {
            assert_eq!(t[kind].as_array().unwrap().len(), 0, "{kind} in {t}");
        }
        assert_eq!(t["differing_buckets"], 0);
        assert_eq!(
            t["rows_fetched"], 0,
            "no row-level reads when checksums agree"
        );
    }
    let tasks = tables.iter().find(|t| t["table"] == "tasks").unwrap();
    assert_eq!(tasks["source_rows"], 3000);
    assert_eq!(tasks["target_rows"], 3000);
}

#[test]
fn text_output_says_identical() {
    let pair = Pair::with_tasks("verify_text", 10);
    let outcome = verify_support::run(&[
        "verify",
        "--source-url",
        &pair.source.url,
        "--target-url",
        &pair.target.url,
        "--tables",
        "tasks",
    ]);
    assert_eq!(outcome.code, 0, "{}", outcome.stderr);
    let line = outcome
        .stdout
        .lines()
        .find(|l| l.starts_with("tasks"))
        .expect("a row for tasks");
    assert!(line.ends_with("identical"), "{line}");
}
