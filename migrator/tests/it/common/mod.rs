//! Shared fixtures of the migrator tests: a legacy source database filled by
//! `migrator generate-legacy`, a target database (migrated or not), the `migrator` binary run
//! against them, and a row-for-row comparison of the source projection with the target (in SQL).
#![allow(dead_code)]

pub mod cluster;

use std::io::{Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cutover_pgfixture::TestDb;
use migrator::plan::{Plan, ResolvedTable, SHIPPED_PLAN};

pub const ALL_TABLES: [&str; 5] = [
    "users",
    "conversations",
    "messages",
    "tasks",
    "task_executions",
];

/// The `migrator` binary with no database URLs inherited from the test's environment.
pub fn migrator_cmd() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_migrator"));
    cmd.env_remove("DATABASE_URL")
        .env_remove("LEGACY_DATABASE_URL");
    cmd
}

/// Exit code and output of one `migrator` run.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Outcome {
    fn from(out: Output) -> Outcome {
        Outcome {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Outcome {
    /// Stdout parsed as JSON (a `--format json` report).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }

    /// The figures of `table`'s line in the copy summary on stdout: inserted (or would insert),
    /// updated (or would update), unchanged.
    #[track_caller]
    pub fn summary(&self, table: &str) -> [u64; 3] {
        let line = self
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(table))
            .unwrap_or_else(|| panic!("no summary line for {table}:\n{}", self.stdout));
        let figures: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(3)
            .map(|f| f.parse().expect("a count"))
            .collect();
        figures.try_into().expect("three counts")
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// A source database holding the legacy fixture and a target database.
pub struct Env {
    pub source: TestDb,
    pub target: TestDb,
}

impl Env {
    /// Legacy fixture with `rows` rows per table; target migrated with `migrator schema`.
    pub fn new(prefix: &str, rows: u64) -> Env {
        let env = Env::unmigrated(prefix, rows);
        env.run(&["schema"]).assert_code(0);
        env
    }

    /// Legacy fixture with `rows` rows per table; empty target.
    pub fn unmigrated(prefix: &str, rows: u64) -> Env {
        let env = Env {
            source: TestDb::create(&format!("{prefix}_src")),
            target: TestDb::create(&format!("{prefix}_tgt")),
        };
        env.run(&["generate-legacy", "--rows", &rows.to_string()])
            .assert_code(0);
        env
    }

    /// `migrator` with LEGACY_DATABASE_URL / DATABASE_URL pointing at this environment.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = migrator_cmd();
        cmd.args(args)
            .env("LEGACY_DATABASE_URL", &self.source.url)
            .env("DATABASE_URL", &self.target.url);
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Outcome {
        self.cmd(args).output().expect("run migrator").into()
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        self.cmd(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn migrator")
    }

    pub fn source_client(&self) -> postgres::Client {
        self.source.client()
    }

    pub fn target_client(&self) -> postgres::Client {
        self.target.client()
    }

    /// The shipped plan's tables resolved against this environment (needs a migrated target).
    pub fn resolved(&self) -> Vec<ResolvedTable> {
        let plan = Plan::parse(SHIPPED_PLAN, "shipped").expect("shipped plan");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut source = migrator::db::connect("source", &self.source.url)
                .await
                .expect("source");
            let mut target = migrator::db::connect("target", &self.target.url)
                .await
                .expect("target");
            let tables: Vec<_> = plan.tables.iter().collect();
            migrator::plan::resolve(&mut source, &mut target, &tables)
                .await
                .expect("resolve plan")
        })
    }

    pub fn table(&self, name: &str) -> ResolvedTable {
        self.resolved()
            .into_iter()
            .find(|t| t.name() == name)
            .expect("plan table")
    }

    /// Asserts in SQL that the target table equals the source projection row for row: the
    /// projection is copied into a scratch table in the target, then EXCEPT ALL both ways.
    /// Returns the number of rows.
    #[track_caller]
    pub fn assert_equal(&self, name: &str) -> i64 {
        let table = self.table(name);
        let scratch = format!("expected_{name}");
        let mut target = self.target_client();
        target
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS public.{scratch}; CREATE TABLE public.{scratch} AS SELECT {} FROM {} WITH NO DATA",
                table.target_column_list(),
                table.plan.target.sql()
            ))
            .unwrap();
        let mut data = Vec::new();
        let mut source = self.source_client();
        source
            .copy_out(&format!(
                "COPY ({}) TO STDOUT",
                table.source_projection_sql()
            ))
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        let mut writer = target
            .copy_in(&format!("COPY public.{scratch} FROM STDIN"))
            .unwrap();
        writer.write_all(&data).unwrap();
        writer.finish().unwrap();
        let cols = table.target_column_list();
        let target_table = table.plan.target.sql();
        let row = target
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM (TABLE public.{scratch} EXCEPT ALL SELECT {cols} FROM {target_table}) a),
                            (SELECT count(*) FROM (SELECT {cols} FROM {target_table} EXCEPT ALL TABLE public.{scratch}) b),
                            (SELECT count(*) FROM public.{scratch}),
                            (SELECT count(*) FROM {target_table})"
                ),
                &[],
            )
            .unwrap();
        let (missing, extra, expected, actual): (i64, i64, i64, i64) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        target
            .batch_execute(&format!("DROP TABLE public.{scratch}"))
            .unwrap();
        assert_eq!(
            (missing, extra, actual),
            (0, 0, expected),
            "table {name}: source projection rows missing from the target / target rows not in the projection / counts"
        );
        assert!(
            expected > 0,
            "table {name}: the source is empty, the comparison proves nothing"
        );
        expected
    }

    /// Checkpoint rows of the latest run: (table, rows_read, inserted, updated, unchanged, done).
    pub fn latest_checkpoints(&self) -> Vec<(String, i64, i64, i64, i64, bool)> {
        self.target_client()
            .query(
                "SELECT table_name, rows_read, inserted, updated, unchanged, done FROM cutover_migrator.copy_checkpoints
                 WHERE run_id = (SELECT max(run_id) FROM cutover_migrator.copy_runs) ORDER BY table_name",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
            .collect()
    }

    /// Copy runs: (run_id, status), in run order.
    pub fn runs(&self) -> Vec<(i64, String)> {
        self.target_client()
            .query(
                "SELECT run_id, status FROM cutover_migrator.copy_runs ORDER BY run_id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    }

    /// Whether the target has the copy's bookkeeping schema.
    pub fn has_bookkeeping(&self) -> bool {
        self.target_client()
            .query_one(
                "SELECT to_regnamespace('cutover_migrator') IS NOT NULL",
                &[],
            )
            .unwrap()
            .get(0)
    }

    pub fn count(&self, target_table: &str) -> i64 {
        self.target_client()
            .query_one(&format!("SELECT count(*) FROM {target_table}"), &[])
            .unwrap()
            .get(0)
    }
}

/// Waits until `cond` holds (polling), panicking after `timeout`.
#[track_caller]
pub fn wait_for(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child with a bound, killing it when the bound passes.
#[track_caller]
pub fn wait_child(mut child: Child, timeout: Duration) -> Outcome {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output").into();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "migrator did not finish within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Number of relations outside the system schemas: 0 in a database nothing was written to.
pub fn user_relations(client: &mut postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')",
            &[],
        )
        .unwrap()
        .get(0)
}

/// Versions of the migrations recorded as applied in `_sqlx_migrations`, in order.
pub fn applied_versions(client: &mut postgres::Client) -> Vec<i64> {
    client
        .query(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Number of sessions waiting for an advisory lock in the database `dbname`.
pub fn advisory_waiters(client: &mut postgres::Client, dbname: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
             WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = $1",
            &[&dbname],
        )
        .unwrap()
        .get(0)
}
