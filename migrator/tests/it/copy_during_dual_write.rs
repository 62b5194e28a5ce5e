//! `copy` while dual-write runs, interleaved deterministically: the test holds a SHARE lock on the
//! target table, so copy reads the source (and the target) and then waits to write; meanwhile the
//! test makes a dual write (source committed, target inside the locking transaction) and then
//! releases the lock. Copy must not revert the update (version guard) nor bring back the deleted
//! row (re-check of inserted rows). No timing: the test waits until copy's write is queued on the
//! lock (`pg_locks`).
use std::time::Duration;

use crate::common;
use common::{wait_child, wait_for, Env};

const BOUND: Duration = Duration::from_secs(120);

/// Sessions waiting for a lock on `table` in the target database.
fn lock_waiters(env: &Env, table: &str) -> i64 {
    env.target_client()
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE relation = to_regclass($1) AND NOT granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&table],
        )
        .unwrap()
        .get(0)
}

/// Runs `copy --tables <table> [extra]` while the test holds a SHARE lock on `target_table`; once
/// copy waits to write, `source_write` runs on the source and `target_write` inside the locking
/// transaction, which then commits. Returns copy's outcome.
fn copy_interleaved(
    env: &Env,
    table: &str,
    target_table: &str,
    extra: &[&str],
    source_write: &str,
    target_write: &str,
) -> common::Outcome {
    let mut target = env.target_client();
    let mut lock = target.transaction().unwrap();
    lock.batch_execute(&format!("LOCK TABLE {target_table} IN SHARE MODE"))
        .unwrap();
    let mut args = vec!["copy", "--tables", table];
    args.extend_from_slice(extra);
    let mut copy = env.spawn(&args);
    let mut exited = false;
    wait_for("copy to wait for the target table lock", BOUND, || {
        exited = copy.try_wait().expect("try_wait").is_some();
        exited || lock_waiters(env, target_table) > 0
    });
    if exited {
        let out = wait_child(copy, BOUND);
        panic!(
            "copy ended without waiting for the lock (exit {}):\n{}{}",
            out.code, out.stdout, out.stderr
        );
    }
    env.source_client().batch_execute(source_write).unwrap();
    lock.batch_execute(target_write).unwrap();
    lock.commit().unwrap();
    wait_child(copy, BOUND)
}

/// A row present on both sides (`a`) and one only in the source (`n`), so that copy's batch is
/// written through the upsert (not skipped as identical, not copied straight in).
fn first_conversation(env: &Env) -> (String, String) {
    let row = env
        .source_client()
        .query_one(
            "SELECT id::text, user_id::text FROM legacy.conversations ORDER BY id LIMIT 1",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

const RENAME_AT: &str = "2031-01-01 00:00:00+00";

fn rename_sql(table: &str, id: &str) -> String {
    format!("UPDATE {table} SET title = 'renamed by dual-write', updated_at = '{RENAME_AT}' WHERE id = '{id}'")
}

fn target_title(env: &Env, id: &str) -> String {
    env.target_client()
        .query_one(
            &format!("SELECT title FROM chat.conversations WHERE id = '{id}'"),
            &[],
        )
        .unwrap()
        .get(0)
}

/// Copy read the old title; dual-write renamed the conversation on both sides; copy then wrote:
/// with the shipped plan's `version = "updated_at"` the rename stays. Without the version column
/// (control), the same interleaving reverts it — the bug the guard is for.
#[test]
fn a_dual_written_update_after_copy_read_the_source_is_kept() {
    let env = Env::new("mig_dual_guard", 40);
    env.run(&["copy"]).assert_code(0);
    let unguarded_plan =
        tempfile_plan(&migrator::plan::SHIPPED_PLAN.replace("version = \"updated_at\"\n", ""));
    for (guarded, plan) in [(true, None), (false, Some(unguarded_plan.path()))] {
        let (a, user) = first_conversation(&env);
        let n = if guarded {
            "ffffffff-0000-0000-0000-000000000001"
        } else {
            "ffffffff-0000-0000-0000-000000000002"
        };
        env.source_client()
            .batch_execute(&format!(
                "UPDATE legacy.conversations SET title = 'before', updated_at = '2030-01-01 00:00:00+00' WHERE id = '{a}'"
            ))
            .unwrap();
        let plan_arg = plan.as_ref().map(|p| p.to_str().unwrap().to_string());
        let mut extra = Vec::new();
        if let Some(p) = &plan_arg {
            extra.extend(["--plan", p.as_str()]);
        }
        let mut prepare = vec!["copy", "--tables", "conversations"];
        prepare.extend_from_slice(&extra);
        env.run(&prepare).assert_code(0);
        assert_eq!(target_title(&env, &a), "before");
        // Only in the source: the next batch goes through the upsert.
        env.source_client()
            .batch_execute(&format!(
                "INSERT INTO legacy.conversations (id, user_id, title, status, created_at, updated_at)
                 VALUES ('{n}', '{user}', 'only in the source', 'active', now(), now())"
            ))
            .unwrap();
        let outcome = copy_interleaved(
            &env,
            "conversations",
            "chat.conversations",
            &extra,
            &rename_sql("legacy.conversations", &a),
            &rename_sql("chat.conversations", &a),
        );
        outcome.assert_code(0);
        let inserted: i64 = env
            .target_client()
            .query_one(
                &format!("SELECT count(*) FROM chat.conversations WHERE id = '{n}'"),
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(inserted, 1, "the batch was written");
        if guarded {
            assert_eq!(target_title(&env, &a), "renamed by dual-write");
            env.assert_equal("conversations");
        } else {
            assert_eq!(
                target_title(&env, &a),
                "before",
                "control: without a version column copy reverts the rename"
            );
            // Put the rename back for the guarded run's comparison.
            env.target_client()
                .batch_execute(&rename_sql("chat.conversations", &a))
                .unwrap();
        }
    }
}

/// Copy read a message; dual-write deleted it on both sides; copy then inserted it again — and
/// deleted it once more when it re-checked the source after the batch committed.
#[test]
fn a_row_deleted_by_dual_write_after_copy_read_it_is_not_brought_back() {
    let env = Env::new("mig_dual_delete", 40);
    env.run(&["copy"]).assert_code(0);
    let mut source = env.source_client();
    let row = source
        .query_one(
            "SELECT id::text, conversation_id::text FROM legacy.messages ORDER BY id LIMIT 1",
            &[],
        )
        .unwrap();
    let (m, conversation): (String, String) = (row.get(0), row.get(1));
    let n = "ffffffff-0000-0000-0000-0000000000aa";
    source
        .batch_execute(&format!(
            "INSERT INTO legacy.messages (id, conversation_id, sender, content) VALUES ('{n}', '{conversation}', 'user', 'only in the source')"
        ))
        .unwrap();
    let outcome = copy_interleaved(
        &env,
        "messages",
        "chat.messages",
        &[],
        &format!("DELETE FROM legacy.messages WHERE id = '{m}'"),
        &format!("DELETE FROM chat.messages WHERE id = '{m}'"),
    );
    outcome.assert_code(0);
    let count = |id: &str| -> i64 {
        env.target_client()
            .query_one(
                &format!("SELECT count(*) FROM chat.messages WHERE id = '{id}'"),
                &[],
            )
            .unwrap()
            .get(0)
    };
    assert_eq!(count(&m), 0, "the deleted message stays deleted");
    assert_eq!(count(n), 1, "the rest of the batch was written");
    env.assert_equal("messages");
}

/// A target row newer than the source's is its own kind in `verify` (text and JSON), and `copy`
/// keeps it and warns.
#[test]
fn verify_reports_target_newer_rows_and_copy_keeps_them() {
    let env = Env::new("mig_target_newer", 30);
    env.run(&["copy"]).assert_code(0);
    let (a, _) = first_conversation(&env);
    env.target_client()
        .batch_execute(&rename_sql("chat.conversations", &a))
        .unwrap();
    let report = env.run(&["verify", "--format", "json"]);
    report.assert_code(1);
    let json = report.json();
    let table = json["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == "conversations")
        .unwrap()
        .clone();
    assert_eq!(table["target_newer"], serde_json::json!([a]));
    assert_eq!(table["changed"], serde_json::json!([]));
    let text = env.run(&["verify"]);
    text.assert_code(1);
    assert!(
        text.stdout
            .lines()
            .any(|l| l.trim_start().starts_with("newer") && l.contains(&a)),
        "{}",
        text.stdout
    );

    let copy = env.run(&["copy", "--tables", "conversations"]);
    copy.assert_code(0);
    assert_eq!(copy.summary("conversations")[1], 0, "nothing updated");
    assert!(copy.stderr.contains("WARNING"), "{}", copy.stderr);
    assert_eq!(target_title(&env, &a), "renamed by dual-write");
}

/// A plan whose version column is not among the table's columns, or not orderable, is refused
/// naming table and column.
#[test]
fn a_version_column_that_is_missing_or_not_orderable_is_refused() {
    let env = Env::new("mig_version_bad", 5);
    let shipped = migrator::plan::SHIPPED_PLAN;
    let missing = tempfile_plan(&shipped.replacen(
        "version = \"updated_at\"",
        "version = \"modified_at\"",
        1,
    ));
    let out = env.run(&["copy", "--plan", missing.path().to_str().unwrap()]);
    out.assert_code(migrator::error::exit::PLAN_INVALID.into());
    assert!(
        out.stderr.contains("users") && out.stderr.contains("modified_at"),
        "{}",
        out.stderr
    );
    let json = tempfile_plan(&shipped.replacen(
        "target = \"chat.conversations\"\nkey = \"id\"\nversion = \"updated_at\"",
        "target = \"chat.conversations\"\nkey = \"id\"\nversion = \"metadata\"",
        1,
    ));
    let out = env.run(&["verify", "--plan", json.path().to_str().unwrap()]);
    out.assert_code(2);
    assert!(
        out.stderr.contains("conversations") && out.stderr.contains("metadata"),
        "{}",
        out.stderr
    );
}

/// A plan file in a temporary directory, removed on drop.
pub struct TempPlan {
    dir: std::path::PathBuf,
}

impl TempPlan {
    pub fn path(&self) -> std::path::PathBuf {
        self.dir.join("plan.toml")
    }
}

impl Drop for TempPlan {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn tempfile_plan(text: &str) -> TempPlan {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "migrator-plan-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plan.toml"), text).unwrap();
    TempPlan { dir }
}
