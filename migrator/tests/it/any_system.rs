//! The migrator on a system none of this repository's code knows (issue 14): pgbench-like legacy
//! tables, a target schema made by hand or by the system's own migrations directory, a plan with
//! renamed columns, an expression and a default; `copy --prune` carrying deletions over.
use std::path::PathBuf;
use std::time::Duration;

use crate::common;
use common::{applied_versions, migrator_cmd, user_relations, wait_child, wait_for, Outcome};
use cutover_pgfixture::TestDb;

/// The legacy system: pgbench's branches and accounts (`filler` blank-padded, often empty).
const LEGACY_DDL: &str = "
CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int NOT NULL, filler char(88));
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int NOT NULL, abalance int NOT NULL, filler char(84));
INSERT INTO pgbench_branches SELECT b, b * 10, NULL FROM generate_series(1, 5) b;
INSERT INTO pgbench_accounts
  SELECT a, 1 + a % 5, a * 3 - 500, CASE WHEN a % 7 = 0 THEN 'vip ' || a ELSE '' END
  FROM generate_series(1, 2000) a;
";

/// The new system's schema, by hand (not by `migrator schema`): other names, other types.
const BANK_DDL: &str = "
CREATE SCHEMA bank;
CREATE TABLE bank.branches (branch_id int PRIMARY KEY, balance bigint NOT NULL);
CREATE TABLE bank.accounts (
  account_id    int PRIMARY KEY,
  branch_id     int NOT NULL REFERENCES bank.branches,
  balance_cents bigint NOT NULL,
  note          text NOT NULL,
  opened_at     timestamptz NOT NULL DEFAULT now()
);
";

const BANK_PLAN: &str = r#"
[[table]]
name = "branches"
source = "public.pgbench_branches"
target = "bank.branches"
key = "branch_id"
columns = [
  { name = "branch_id", from = "bid" },
  { name = "balance", from = "bbalance" },
]

[[table]]
name = "accounts"
source = "public.pgbench_accounts"
target = "bank.accounts"
key = "account_id"
columns = [
  { name = "account_id", from = "aid" },
  { name = "branch_id", from = "bid" },
  { name = "balance_cents", from = "abalance * 100" },
  { name = "note", from = "nullif(trim(filler), '')", default = "'none'" },
]
"#;

/// A scratch directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("mig_any_{}_{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.0.join(file);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A pgbench-like source, a target with the bank schema made by hand, and the bank plan.
struct Bank {
    source: TestDb,
    target: TestDb,
    dir: Dir,
    plan: PathBuf,
}

impl Bank {
    fn new(prefix: &str) -> Bank {
        let bank = Bank::unschemed(prefix);
        bank.target.client().batch_execute(BANK_DDL).unwrap();
        bank
    }

    /// Source filled, target empty.
    fn unschemed(prefix: &str) -> Bank {
        let source = TestDb::create(&format!("{prefix}_src"));
        let target = TestDb::create(&format!("{prefix}_tgt"));
        source.client().batch_execute(LEGACY_DDL).unwrap();
        let dir = Dir::new(prefix);
        let plan = dir.write("bank_plan.toml", BANK_PLAN);
        Bank {
            source,
            target,
            dir,
            plan,
        }
    }

    fn run(&self, args: &[&str]) -> Outcome {
        migrator_cmd()
            .args(args)
            .env("LEGACY_DATABASE_URL", &self.source.url)
            .env("DATABASE_URL", &self.target.url)
            .output()
            .unwrap()
            .into()
    }

    fn plan(&self) -> &str {
        self.plan.to_str().unwrap()
    }

    fn copy(&self, extra: &[&str]) -> Outcome {
        let mut args = vec!["copy", "--plan", self.plan(), "--batch-size", "300"];
        args.extend_from_slice(extra);
        self.run(&args)
    }

    fn spawn_copy(&self, extra: &[&str]) -> std::process::Child {
        migrator_cmd()
            .args(["copy", "--plan", self.plan(), "--batch-size", "300"])
            .args(extra)
            .env("LEGACY_DATABASE_URL", &self.source.url)
            .env("DATABASE_URL", &self.target.url)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn verify(&self) -> Outcome {
        self.run(&["verify", "--plan", self.plan()])
    }

    fn target_keys(&self, table: &str, key: &str) -> Vec<i32> {
        self.target
            .client()
            .query(&format!("SELECT {key} FROM {table} ORDER BY {key}"), &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Schemas in the target other than PostgreSQL's own.
    fn target_schemas(&self) -> Vec<String> {
        self.target
            .client()
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' \
                 AND nspname <> 'information_schema' ORDER BY 1",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }
}

/// The (deleted column of the) summary line of `table`: the fourth figure.
#[track_caller]
fn deleted(out: &Outcome, table: &str) -> u64 {
    let line = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(table))
        .unwrap_or_else(|| panic!("no summary line for {table}:\n{}", out.stdout));
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

#[test]
fn copy_into_a_hand_made_schema_reruns_as_noop_and_verifies_exact() {
    let bank = Bank::new("mig_any_hand");
    let out = bank.copy(&[]);
    out.assert_code(0);
    assert_eq!(out.summary("branches"), [5, 0, 0], "{}", out.stdout);
    assert_eq!(out.summary("accounts"), [2000, 0, 0], "{}", out.stdout);
    let mut target = bank.target.client();
    let (cents, note, vip): (i64, String, String) = {
        let r = target
            .query_one(
                "SELECT (SELECT balance_cents FROM bank.accounts WHERE account_id = 1), \
                        (SELECT note FROM bank.accounts WHERE account_id = 1), \
                        (SELECT note FROM bank.accounts WHERE account_id = 14)",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(
        (cents, note.as_str(), vip.as_str()),
        (-49_700, "none", "vip 14")
    );
    bank.verify().assert_code(0);

    let again = bank.copy(&[]);
    again.assert_code(0);
    assert_eq!(again.summary("accounts"), [0, 0, 2000], "{}", again.stdout);
    assert_eq!(again.summary("branches"), [0, 0, 5], "{}", again.stdout);
    bank.verify().assert_code(0);

    // The one thing copy added: its bookkeeping schema (no `_sqlx_migrations`, none of our schemas).
    assert_eq!(
        bank.target_schemas(),
        ["bank", "cutover_migrator", "public"]
    );
    let ours: i64 = target
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'public'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(ours, 0, "copy created relations in public");
}

#[test]
fn a_plan_naming_a_missing_target_table_or_column_is_refused_naming_it() {
    let bank = Bank::new("mig_any_missing");
    let missing_table = bank.dir.write(
        "missing_table.toml",
        &BANK_PLAN.replace("bank.accounts", "bank.ledger"),
    );
    let out = bank.run(&["copy", "--plan", missing_table.to_str().unwrap()]);
    out.assert_code(5);
    assert!(out.stderr.contains("bank.ledger"), "{}", out.stderr);
    let missing_column = bank.dir.write(
        "missing_column.toml",
        &BANK_PLAN.replace("balance_cents", "cents"),
    );
    let out = bank.run(&["copy", "--plan", missing_column.to_str().unwrap()]);
    out.assert_code(5);
    assert!(out.stderr.contains("bank.accounts.cents"), "{}", out.stderr);
    assert!(
        !bank
            .target_schemas()
            .contains(&"cutover_migrator".to_string()),
        "a refused copy created its bookkeeping"
    );
    assert_eq!(
        bank.target_keys("bank.accounts", "account_id"),
        Vec::<i32>::new()
    );
}

#[test]
fn shipped_plan_on_a_hand_made_schema_is_still_not_migrated() {
    let bank = Bank::new("mig_any_shipped");
    let out = bank.run(&["copy"]);
    out.assert_code(4);
    assert!(out.stderr.contains("001_users"), "{}", out.stderr);
}

const MIGRATION_1: &str = "CREATE SCHEMA bank;
CREATE TABLE bank.branches (branch_id int PRIMARY KEY, balance bigint NOT NULL);
";
const MIGRATION_2: &str = "CREATE TABLE bank.accounts (
  account_id    int PRIMARY KEY,
  branch_id     int NOT NULL REFERENCES bank.branches,
  balance_cents bigint NOT NULL,
  note          text NOT NULL,
  opened_at     timestamptz NOT NULL DEFAULT now()
);
";

#[test]
fn a_migrations_directory_is_applied_reapplied_as_noop_and_a_changed_file_refused() {
    let bank = Bank::unschemed("mig_any_dir");
    let dir = Dir::new("mig_any_dir_migrations");
    dir.write("001_bank_branches.sql", MIGRATION_1);
    dir.write("002_bank_accounts.sql", MIGRATION_2);
    dir.write("README.md", "not a migration; ignored");

    let out = bank.run(&["schema", "--migrations", dir.path(), "--dry-run"]);
    out.assert_code(0);
    assert!(out.stdout.contains("002_bank accounts"), "{}", out.stdout);
    assert_eq!(
        user_relations(&mut bank.target.client()),
        0,
        "dry run wrote"
    );

    bank.run(&["schema", "--migrations", dir.path()])
        .assert_code(0);
    let mut target = bank.target.client();
    assert_eq!(applied_versions(&mut target), [1, 2]);
    assert_eq!(
        bank.target_keys("bank.accounts", "account_id"),
        Vec::<i32>::new()
    );

    // Again, through MIGRATIONS_DIR: nothing to apply, nothing recorded anew.
    let installed = |c: &mut postgres::Client| -> Vec<String> {
        c.query(
            "SELECT installed_on::text FROM _sqlx_migrations ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let before = installed(&mut target);
    let again: Outcome = migrator_cmd()
        .args(["schema"])
        .env("DATABASE_URL", &bank.target.url)
        .env("MIGRATIONS_DIR", dir.path())
        .output()
        .unwrap()
        .into();
    again.assert_code(0);
    assert_eq!(installed(&mut target), before);
    let status = bank.run(&["status", "--migrations", dir.path()]);
    status.assert_code(0);
    assert!(
        status.stdout.contains("001_bank branches") && !status.stdout.contains("pending"),
        "{}",
        status.stdout
    );

    // The migrated schema takes the plan.
    bank.copy(&[]).assert_code(0);
    bank.verify().assert_code(0);

    // A changed file: refused by schema and status, naming it; nothing applied.
    dir.write(
        "002_bank_accounts.sql",
        &format!("{MIGRATION_2}-- edited\n"),
    );
    dir.write(
        "003_bank_index.sql",
        "CREATE INDEX accounts_branch ON bank.accounts (branch_id);",
    );
    let changed = bank.run(&["schema", "--migrations", dir.path()]);
    changed.assert_code(4);
    assert!(
        changed.stderr.contains("bank accounts"),
        "{}",
        changed.stderr
    );
    assert_eq!(applied_versions(&mut target), [1, 2]);
    let status = bank.run(&["status", "--migrations", dir.path()]);
    status.assert_code(4);
    assert!(status.stdout.contains("CHANGED"), "{}", status.stdout);

    // This repository's migrations do not know the directory's: refused as unknown.
    let ours = bank.run(&["schema"]);
    ours.assert_code(4);
    assert!(
        ours.stderr.contains("embedded migrations"),
        "{}",
        ours.stderr
    );
}

#[test]
fn bad_migrations_directories_are_named_with_exit_2() {
    let target = TestDb::create("mig_any_baddir");
    let schema = |dir: &str| -> Outcome {
        migrator_cmd()
            .args(["schema", "--migrations", dir, "--target-url", &target.url])
            .output()
            .unwrap()
            .into()
    };
    let missing = std::env::temp_dir().join("mig_any_no_such_dir");
    let missing = missing.to_str().unwrap();
    let out = schema(missing);
    out.assert_code(2);
    assert!(
        out.stderr.contains(missing) && out.stderr.contains("does not exist"),
        "{}",
        out.stderr
    );

    let empty = Dir::new("empty");
    empty.write("README.md", "no migrations here");
    let out = schema(empty.path());
    out.assert_code(2);
    assert!(
        out.stderr.contains(empty.path()) && out.stderr.contains("no migration"),
        "{}",
        out.stderr
    );

    for bad in ["accounts.sql", "001-accounts.sql", "002_accounts.up.sql"] {
        let dir = Dir::new("badname");
        dir.write("001_branches.sql", MIGRATION_1);
        dir.write(bad, MIGRATION_2);
        let out = schema(dir.path());
        out.assert_code(2);
        assert!(
            out.stderr.contains(bad) && out.stderr.contains("NNN_name.sql"),
            "{}",
            out.stderr
        );
        let status: Outcome = migrator_cmd()
            .args([
                "status",
                "--migrations",
                dir.path(),
                "--target-url",
                &target.url,
            ])
            .output()
            .unwrap()
            .into();
        status.assert_code(2);
        assert!(status.stderr.contains(bad), "{}", status.stderr);
    }

    let twice = Dir::new("twice");
    twice.write("001_branches.sql", MIGRATION_1);
    twice.write("1_accounts.sql", MIGRATION_2);
    let out = schema(twice.path());
    out.assert_code(2);
    assert!(out.stderr.contains("same version 1"), "{}", out.stderr);

    assert_eq!(
        user_relations(&mut target.client()),
        0,
        "bad input wrote to the target"
    );
}

#[test]
fn prune_removes_exactly_the_rows_deleted_in_the_source_and_nothing_newer_than_the_run() {
    let bank = Bank::new("mig_any_prune");
    bank.copy(&[]).assert_code(0);
    let mut source = bank.source.client();
    let mut target = bank.target.client();

    // Deleted in the source (batch jobs, admin scripts), across several prune batches.
    source
        .batch_execute("DELETE FROM pgbench_accounts WHERE aid IN (5, 10, 1500)")
        .unwrap();
    // A source write its dual-write shadow repeated in the target: in both, never a candidate.
    source
        .batch_execute("INSERT INTO pgbench_accounts VALUES (3001, 1, 7, 'shadowed')")
        .unwrap();
    target
        .batch_execute(
            "INSERT INTO bank.accounts (account_id, branch_id, balance_cents, note) VALUES (3001, 1, 700, 'shadowed')",
        )
        .unwrap();
    // A target-only row committed after the run started: the run must leave it. A transaction
    // holds bank.accounts until the copy waits for it (so the run has started), then commits.
    let mut late = bank.target.client();
    late.batch_execute(
        "BEGIN; LOCK TABLE bank.accounts IN ACCESS EXCLUSIVE MODE; \
         INSERT INTO bank.accounts (account_id, branch_id, balance_cents, note) VALUES (4001, 1, 1, 'late')",
    )
    .unwrap();
    let child = bank.spawn_copy(&["--prune", "--no-target-writes"]);
    wait_for(
        "the copy to wait for bank.accounts",
        Duration::from_secs(60),
        || {
            let waiting: i64 = target
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE relation = 'bank.accounts'::regclass AND NOT granted",
                &[],
            )
            .unwrap()
            .get(0);
            waiting > 0
        },
    );
    late.batch_execute("COMMIT").unwrap();
    let out = wait_child(child, Duration::from_secs(120));
    out.assert_code(0);
    assert_eq!(deleted(&out, "accounts"), 3, "{}", out.stdout);
    assert_eq!(deleted(&out, "branches"), 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("--no-target-writes"),
        "the confirmation is not logged: {}",
        out.stderr
    );

    let keys = bank.target_keys("bank.accounts", "account_id");
    assert_eq!(keys.len(), 2000 - 3 + 2);
    for gone in [5, 10, 1500] {
        assert!(!keys.contains(&gone), "{gone} was not pruned");
    }
    for kept in [1, 3001, 4001] {
        assert!(keys.contains(&kept), "{kept} was pruned");
    }
    // The run's report: each pruned key, with the confirmation recorded.
    let run_id: i64 = target
        .query_one(
            "SELECT max(run_id) FROM cutover_migrator.copy_runs WHERE status = 'complete'",
            &[],
        )
        .unwrap()
        .get(0);
    let pruned: Vec<String> = target
        .query(
            "SELECT key FROM cutover_migrator.pruned_keys WHERE run_id = $1 AND table_name = 'accounts' ORDER BY key::int",
            &[&run_id],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(pruned, ["5", "10", "1500"]);
    let (done, count, ack): (bool, i64, String) = {
        let r = target
            .query_one(
                "SELECT done, deleted, acknowledged_by FROM cutover_migrator.prune_checkpoints WHERE run_id = $1 AND table_name = 'accounts'",
                &[&run_id],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert!(
        done && count == 3 && ack.contains("--no-target-writes"),
        "{done} {count} {ack}"
    );

    // The late row is older than the next run's start: a dry run counts it and deletes nothing.
    let dry = bank.copy(&["--prune", "--dry-run"]);
    dry.assert_code(0);
    assert_eq!(deleted(&dry, "accounts"), 1, "{}", dry.stdout);
    assert!(bank
        .target_keys("bank.accounts", "account_id")
        .contains(&4001));
    bank.verify().assert_code(1);

    let last = bank.copy(&["--prune", "--no-target-writes"]);
    last.assert_code(0);
    assert_eq!(deleted(&last, "accounts"), 1, "{}", last.stdout);
    bank.verify().assert_code(0);
}

#[test]
fn prune_is_refused_without_confirmation_or_once_the_target_has_taken_over() {
    let bank = Bank::new("mig_any_prune_refused");
    bank.copy(&[]).assert_code(0);
    bank.source
        .client()
        .batch_execute("DELETE FROM pgbench_accounts WHERE aid = 7")
        .unwrap();

    let unconfirmed = bank.copy(&["--prune"]);
    unconfirmed.assert_code(2);
    assert!(
        unconfirmed.stderr.contains("--no-target-writes"),
        "{}",
        unconfirmed.stderr
    );

    let taken_over = bank.dir.write(
        "taken_over.toml",
        &format!("target_has_taken_over = true\n{BANK_PLAN}"),
    );
    let taken_over = taken_over.to_str().unwrap();
    for extra in [&["--no-target-writes"][..], &["--dry-run"][..]] {
        let mut args = vec!["copy", "--plan", taken_over, "--prune"];
        args.extend_from_slice(extra);
        let out = bank.run(&args);
        out.assert_code(2);
        assert!(
            out.stderr.contains("target_has_taken_over"),
            "{}",
            out.stderr
        );
    }
    // The confirmation alone is not a prune.
    bank.copy(&["--no-target-writes"]).assert_code(2);

    assert!(
        bank.target_keys("bank.accounts", "account_id").contains(&7),
        "a refused prune deleted"
    );
    let tables: bool = bank
        .target
        .client()
        .query_one(
            "SELECT to_regclass('cutover_migrator.pruned_keys') IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!tables, "a refused prune created its bookkeeping");
}

#[test]
fn prune_deletes_referencing_rows_before_the_rows_they_reference() {
    let bank = Bank::new("mig_any_prune_fk");
    bank.copy(&[]).assert_code(0);
    // Branch 5 closed in the source, with its 400 accounts (bid = 1 + aid % 5).
    bank.source
        .client()
        .batch_execute("DELETE FROM pgbench_accounts WHERE bid = 5; DELETE FROM pgbench_branches WHERE bid = 5")
        .unwrap();
    let out = bank.copy(&["--prune", "--no-target-writes"]);
    out.assert_code(0);
    assert_eq!(deleted(&out, "accounts"), 400, "{}", out.stdout);
    assert_eq!(deleted(&out, "branches"), 1, "{}", out.stdout);
    assert_eq!(bank.target_keys("bank.branches", "branch_id"), [1, 2, 3, 4]);
    bank.verify().assert_code(0);
    // Nothing left to prune: a re-run deletes nothing.
    let again = bank.copy(&["--prune", "--no-target-writes"]);
    again.assert_code(0);
    assert_eq!(deleted(&again, "accounts"), 0, "{}", again.stdout);
}

#[test]
fn a_rejected_prune_batch_keeps_the_batches_before_it_and_the_next_run_resumes_after_them() {
    let bank = Bank::new("mig_any_prune_resume");
    bank.copy(&[]).assert_code(0);
    let mut target = bank.target.client();
    // A table of the new system the plan does not know references account 1500.
    target
        .batch_execute(
            "CREATE TABLE bank.statements (id int PRIMARY KEY, account_id int NOT NULL REFERENCES bank.accounts); \
             INSERT INTO bank.statements VALUES (1, 1500)",
        )
        .unwrap();
    bank.source
        .client()
        .batch_execute("DELETE FROM pgbench_accounts WHERE aid IN (5, 10, 1500)")
        .unwrap();

    // Batches of 300 keys: 5 and 10 go in the first; 1500 ends the fifth, which is rejected.
    let out = bank.copy(&["--prune", "--no-target-writes"]);
    out.assert_code(7);
    assert!(
        out.stderr.contains("accounts") && out.stderr.contains("up to 1500"),
        "{}",
        out.stderr
    );
    let keys = bank.target_keys("bank.accounts", "account_id");
    assert!(!keys.contains(&5) && !keys.contains(&10) && keys.contains(&1500));
    let checkpoint: (Option<String>, i64, bool) = {
        let r = target
            .query_one(
                "SELECT last_key, deleted, done FROM cutover_migrator.prune_checkpoints WHERE table_name = 'accounts'",
                &[],
            )
            .unwrap();
        (r.get(0), r.get(1), r.get(2))
    };
    assert_eq!(checkpoint, (Some("1200".to_string()), 2, false));
    let status = bank.run(&["status"]);
    status.assert_code(0);
    assert!(
        status
            .stdout
            .contains("accounts             prune: 2 deleted, not done"),
        "{}",
        status.stdout
    );

    // Once the new system lets go of it, the next copy resumes the run after key 1200.
    target.batch_execute("DELETE FROM bank.statements").unwrap();
    let resumed = bank.copy(&["--prune", "--no-target-writes"]);
    resumed.assert_code(0);
    assert!(
        resumed.stderr.contains("resuming run"),
        "{}",
        resumed.stderr
    );
    assert_eq!(deleted(&resumed, "accounts"), 3, "{}", resumed.stdout);
    assert!(!bank
        .target_keys("bank.accounts", "account_id")
        .contains(&1500));
    let pruned: i64 = target
        .query_one("SELECT count(*) FROM cutover_migrator.pruned_keys", &[])
        .unwrap()
        .get(0);
    assert_eq!(pruned, 3, "a key was pruned twice or not recorded");
    bank.verify().assert_code(0);
}
