//! Issue 13: key ranges as work units, `--jobs` workers, several processes on one run (`--join`),
//! leases taken over after a worker dies, and what is refused (join to a finished or unknown run,
//! two runs at once).
use crate::common;
use std::process::Command;
use std::time::Duration;

use common::{wait_child, wait_for, Env};

const TABLES: &str = "users,conversations,messages";

/// Ranges of the latest run: (table, range_no, done, holder, claims, batches).
fn ranges(env: &Env) -> Vec<(String, i32, bool, Option<String>, i32, i64)> {
    env.target_client()
        .query(
            "SELECT table_name, range_no, done, holder, claims, batches FROM cutover_migrator.copy_ranges
              WHERE to_regclass('cutover_migrator.copy_ranges') IS NOT NULL
                AND run_id = (SELECT max(run_id) FROM cutover_migrator.copy_runs)
              ORDER BY table_order, range_no",
            &[],
        )
        .map(|rows| {
            rows.iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
                .collect()
        })
        .unwrap_or_default()
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// The range (table, range_no) a process holds and has committed a batch of, unfinished.
fn held_by(env: &Env, pid: u32) -> Option<(String, i32)> {
    let prefix = format!("pid {pid} ");
    ranges(env)
        .into_iter()
        .find(|(_, _, done, holder, _, batches)| {
            !done && *batches > 0 && holder.as_deref().is_some_and(|h| h.starts_with(&prefix))
        })
        .map(|(t, n, ..)| (t, n))
}

#[track_caller]
fn assert_exact(env: &Env, rows: i64) {
    for table in ["users", "conversations", "messages"] {
        assert_eq!(env.assert_equal(table), rows);
    }
    for (table, read, inserted, updated, unchanged, done) in env.latest_checkpoints() {
        assert_eq!(
            (read, inserted, updated, unchanged, done),
            (rows, rows, 0, 0, true),
            "{table}: every row inserted exactly once over all workers"
        );
    }
}

#[test]
fn jobs_copy_ranges_in_parallel_exactly_and_status_lists_them() {
    let env = Env::new("mig_copy_jobs", 3_000);
    let out = env.run(&[
        "copy",
        "--tables",
        TABLES,
        "--jobs",
        "3",
        "--range-rows",
        "700",
        "--batch-size",
        "200",
    ]);
    out.assert_code(0);
    assert_exact(&env, 3_000);
    let all = ranges(&env);
    for table in ["users", "conversations", "messages"] {
        let of_table: Vec<_> = all.iter().filter(|r| r.0 == table).collect();
        // 3,000 rows in ranges of 700: four full ranges and an open last one.
        assert_eq!(of_table.len(), 5, "{table}: {of_table:?}");
        assert!(
            of_table.iter().all(|r| r.2 && r.3.is_none()),
            "{of_table:?}"
        );
    }
    assert_eq!(out.summary("messages"), [3_000, 0, 0]);
    let status = env.run(&["status"]);
    status.assert_code(0);
    let range_lines = status
        .stdout
        .lines()
        .filter(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.len() > 3
                && w[0] == "range"
                && w[1].split_once('/').is_some_and(|(t, n)| {
                    ["users", "conversations", "messages"].contains(&t) && n.parse::<i32>().is_ok()
                })
        })
        .count();
    assert_eq!(
        range_lines, 15,
        "status lists every range:\n{}",
        status.stdout
    );

    // A re-run with other range sizes finds nothing to do.
    let again = env.run(&[
        "copy",
        "--tables",
        TABLES,
        "--jobs",
        "2",
        "--range-rows",
        "1000",
    ]);
    again.assert_code(0);
    assert_eq!(again.summary("users"), [0, 0, 3_000]);
}

#[test]
fn a_killed_worker_process_is_taken_over_after_its_lease() {
    let env = Env::new("mig_copy_takeover", 6_000);
    let common_args = [
        "copy",
        "--tables",
        TABLES,
        "--range-rows",
        "1500",
        "--batch-size",
        "50",
        "--lease-secs",
        "5",
    ];
    let first = env.spawn(&common_args);
    wait_for("the run's ranges", Duration::from_secs(120), || {
        ranges(&env).iter().any(|r| r.5 > 0)
    });
    let mut join_args = common_args.to_vec();
    join_args.push("--join");
    let second = env.spawn(&join_args);
    let second_pid = second.id();
    wait_for(
        "the joined worker to commit in a range",
        Duration::from_secs(120),
        || held_by(&env, second_pid).is_some(),
    );
    // Freeze it so that it is caught inside its range, then SIGKILL it there.
    let mut taken = None;
    for _ in 0..200 {
        signal(second_pid, "-STOP");
        taken = held_by(&env, second_pid);
        if taken.is_some() {
            break;
        }
        signal(second_pid, "-CONT");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (table, range_no) = taken.expect("the joined worker holds a range");
    let mut second = second;
    second.kill().expect("SIGKILL the joined worker");
    second.wait().unwrap();

    wait_child(first, Duration::from_secs(300)).assert_code(0);
    let after = ranges(&env);
    let range = after
        .iter()
        .find(|r| r.0 == table && r.1 == range_no)
        .expect("the range");
    assert!(range.2, "the dead worker's range is done: {range:?}");
    assert!(range.4 >= 2, "it was claimed again (taken over): {range:?}");
    assert_eq!(env.runs(), [(1, "complete".to_string())]);
    assert_exact(&env, 6_000);
}

#[test]
fn a_terminated_worker_connection_stops_the_process_and_its_range_is_redone() {
    let env = Env::new("mig_copy_terminated", 6_000);
    let args = [
        "copy",
        "--tables",
        TABLES,
        "--jobs",
        "2",
        "--range-rows",
        "3000",
        "--batch-size",
        "50",
    ];
    let child = env.spawn(&args);
    let mut observer = env.target_client();
    // The second worker's writing connection (not the one holding the run lock).
    let mut victim: Option<(String, i32, i32)> = None;
    wait_for(
        "the second worker inside a range",
        Duration::from_secs(120),
        || {
            victim = ranges(&env)
                .into_iter()
                .find_map(|(t, n, done, holder, _, batches)| {
                    let holder = holder?;
                    let pid = holder
                        .split(" worker 1 (server process ")
                        .nth(1)?
                        .split(',')
                        .next()?
                        .parse()
                        .ok()?;
                    (!done && batches > 0 && batches < 20).then_some((t, n, pid))
                });
            victim.is_some()
        },
    );
    let (table, range_no, pid) = victim.unwrap();
    let terminated: bool = observer
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap()
        .get(0);
    assert!(terminated);
    let out = wait_child(child, Duration::from_secs(300));
    out.assert_code(8);
    assert!(out.stderr.contains("worker 1"), "{}", out.stderr);
    let open = ranges(&env)
        .into_iter()
        .find(|r| r.0 == table && r.1 == range_no)
        .expect("the range");
    assert!(
        !open.2,
        "the terminated worker's range is not done: {open:?}"
    );
    assert_eq!(env.runs(), [(1, "running".to_string())]);

    let rerun = env.run(&args);
    rerun.assert_code(0);
    let redone = ranges(&env)
        .into_iter()
        .find(|r| r.0 == table && r.1 == range_no)
        .expect("the range");
    assert!(
        redone.2 && redone.4 >= 2,
        "redone by the next copy: {redone:?}"
    );
    assert_eq!(env.runs(), [(1, "complete".to_string())]);
    assert_exact(&env, 6_000);
}

#[test]
fn join_is_refused_for_unknown_and_finished_runs() {
    let env = Env::new("mig_copy_join_refused", 200);
    let before_any = env.run(&["copy", "--tables", "users", "--join"]);
    before_any.assert_code(2);
    assert!(
        before_any.stderr.contains("--join"),
        "{}",
        before_any.stderr
    );
    assert!(!env.has_bookkeeping() || env.runs().is_empty());

    env.run(&["copy", "--tables", "users"]).assert_code(0);
    let finished = env.run(&["copy", "--tables", "users", "--join"]);
    finished.assert_code(2);
    let by_id = env.run(&["copy", "--tables", "users", "--join", "1"]);
    by_id.assert_code(2);
    assert!(
        by_id.stderr.contains("run 1 is complete"),
        "{}",
        by_id.stderr
    );
    let unknown = env.run(&["copy", "--tables", "users", "--join", "42"]);
    unknown.assert_code(2);
    assert!(unknown.stderr.contains("run 42"), "{}", unknown.stderr);
    assert_eq!(
        env.runs(),
        [(1, "complete".to_string())],
        "a refused join starts nothing"
    );
}

#[test]
fn a_second_run_is_refused_while_workers_run() {
    let env = Env::new("mig_copy_two_runs", 20_000);
    let first = env.spawn(&[
        "copy",
        "--tables",
        "users",
        "--jobs",
        "2",
        "--range-rows",
        "5000",
        "--batch-size",
        "50",
    ]);
    wait_for("the first run's batches", Duration::from_secs(120), || {
        ranges(&env).iter().any(|r| r.5 > 0)
    });
    // Another table selection is another run: refused while the first one's workers hold the lock.
    let refused = env.run(&["copy", "--tables", "users,conversations", "--no-wait"]);
    refused.assert_code(6);
    assert_eq!(env.runs().len(), 1, "the refused copy starts no run");
    wait_child(first, Duration::from_secs(300)).assert_code(0);
    assert_eq!(env.assert_equal("users"), 20_000);
}

/// Holds the target row of the first key of a table locked (a transaction of the test's own)
/// after changing that row in the source: the worker whose range holds it blocks on its first
/// batch, before committing anything, until the lock is released (`release`, or drop).
struct FirstRowBlocked {
    client: Option<postgres::Client>,
}

impl FirstRowBlocked {
    /// `table`: `users` or `conversations` (both have `updated_at`, the plan's version column).
    fn new(env: &Env, table: &str) -> FirstRowBlocked {
        let (source_table, target_table, column) = match table {
            "users" => ("legacy.users", "auth.users", "username"),
            _ => ("legacy.conversations", "chat.conversations", "title"),
        };
        let mut source = env.source_client();
        let id: String = source
            .query_one(
                &format!("SELECT id::text FROM {source_table} ORDER BY id LIMIT 1"),
                &[],
            )
            .unwrap()
            .get(0);
        source
            .batch_execute(&format!(
                "UPDATE {source_table} SET {column} = {column} || '-renamed', updated_at = now() WHERE id = '{id}'"
            ))
            .unwrap();
        let mut client = env.target_client();
        client
            .batch_execute(&format!(
                "BEGIN; SELECT 1 FROM {target_table} WHERE id = '{id}' FOR UPDATE"
            ))
            .unwrap();
        FirstRowBlocked {
            client: Some(client),
        }
    }

    fn release(&mut self) {
        if let Some(mut client) = self.client.take() {
            client.batch_execute("ROLLBACK").unwrap();
        }
    }
}

impl Drop for FirstRowBlocked {
    fn drop(&mut self) {
        self.release();
    }
}

/// Whether a backend of the target database waits for a row lock (the blocked worker).
fn a_worker_waits_for_the_lock(env: &Env) -> bool {
    env.target_client()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
        > 0
}

/// Per table of the latest run: first claim of a range, last range done (epoch seconds).
fn claim_and_done_times(env: &Env, table: &str) -> (f64, f64) {
    let row = env
        .target_client()
        .query_one(
            "SELECT extract(epoch FROM min(claimed_at))::float8, extract(epoch FROM max(done_at))::float8
               FROM cutover_migrator.copy_ranges
              WHERE run_id = (SELECT max(run_id) FROM cutover_migrator.copy_runs) AND table_name = $1",
            &[&table],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

/// The summary line of `table`: (inserted, updated, unchanged, workers, processes).
fn summary_with_workers(out: &common::Outcome, table: &str) -> (u64, u64, u64, u64, u64) {
    let line = out
        .stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(table))
        .unwrap_or_else(|| panic!("no summary line for {table}:\n{}", out.stdout));
    let w: Vec<&str> = line.split_whitespace().collect();
    let n = |i: usize| -> u64 { w[i].parse().unwrap_or_else(|_| panic!("{line}")) };
    (n(1), n(2), n(3), n(6), n(7))
}

#[test]
fn the_summary_adds_up_every_process_of_the_run() {
    let env = Env::new("mig_copy_two_process_summary", 3_000);
    // A first run copies everything; the second (the one observed) updates one user.
    env.run(&["copy", "--tables", TABLES]).assert_code(0);
    let mut blocked = FirstRowBlocked::new(&env, "users");
    let args = [
        "copy",
        "--tables",
        TABLES,
        "--range-rows",
        "500",
        "--batch-size",
        "50",
        "--lease-secs",
        "300",
    ];
    let first = env.spawn(&args);
    wait_for(
        "the first process blocked in users range 0",
        Duration::from_secs(120),
        || a_worker_waits_for_the_lock(&env),
    );
    let mut join_args = args.to_vec();
    join_args.push("--join");
    let second = env.spawn(&join_args);
    // The joined process does every other range; the first stays blocked in users range 0.
    wait_for(
        "the joined process to finish users' other ranges",
        Duration::from_secs(120),
        || {
            let users: Vec<_> = ranges(&env)
                .into_iter()
                .filter(|r| r.0 == "users")
                .collect();
            users.len() > 1 && users.iter().filter(|r| !r.2).count() == 1
        },
    );
    blocked.release();
    let (first, second) = (
        wait_child(first, Duration::from_secs(300)),
        wait_child(second, Duration::from_secs(300)),
    );
    first.assert_code(0);
    second.assert_code(0);
    for out in [&first, &second] {
        // Both processes report the whole run: one user updated, whoever did it.
        let (inserted, updated, unchanged, workers, processes) = summary_with_workers(out, "users");
        assert_eq!(
            (inserted, updated, unchanged),
            (0, 1, 2_999),
            "{}",
            out.stdout
        );
        assert_eq!((workers, processes), (2, 2), "{}", out.stdout);
        let (_, _, unchanged, _, _) = summary_with_workers(out, "messages");
        assert_eq!(unchanged, 3_000, "{}", out.stdout);
    }
    assert_eq!(env.assert_equal("users"), 3_000);
}

#[test]
fn a_child_waits_for_its_parent_unless_the_plan_lets_it_overlap() {
    let env = Env::new("mig_copy_overlap", 3_000);
    let shipped = migrator::plan::SHIPPED_PLAN;
    let overlapping = crate::copy_during_dual_write::tempfile_plan(&shipped.replacen(
        "target = \"chat.messages\"\n",
        "target = \"chat.messages\"\nmay_overlap = [\"conversations\"]\n",
        1,
    ));
    // The messages' parents are in the target already (a first copy), so an overlapping
    // messages range never writes a row before its conversation.
    env.run(&["copy", "--tables", "conversations,messages"])
        .assert_code(0);
    let plain = crate::copy_during_dual_write::tempfile_plan(shipped);
    for (plan, may_overlap) in [(plain.path(), false), (overlapping.path(), true)] {
        let mut blocked = FirstRowBlocked::new(&env, "conversations");
        let plan = plan.to_str().unwrap().to_string();
        let child = env.spawn(&[
            "copy",
            "--plan",
            &plan,
            "--tables",
            "conversations,messages",
            "--jobs",
            "2",
            "--range-rows",
            "1000",
            "--batch-size",
            "50",
        ]);
        wait_for(
            "a worker blocked in conversations range 0",
            Duration::from_secs(120),
            || a_worker_waits_for_the_lock(&env),
        );
        let parent_open = |env: &Env| {
            ranges(env)
                .into_iter()
                .filter(|r| r.0 == "conversations" && !r.2)
                .count()
        };
        if may_overlap {
            wait_for(
                "the other worker to claim a messages range",
                Duration::from_secs(120),
                || ranges(&env).iter().any(|r| r.0 == "messages" && r.4 > 0),
            );
            assert_eq!(parent_open(&env), 1, "conversations is not done yet");
        } else {
            wait_for(
                "the other worker to finish conversations' other ranges",
                Duration::from_secs(120),
                || parent_open(&env) == 1,
            );
            // A few claim polls of the idle worker (every 200 ms): none may take a child range.
            std::thread::sleep(Duration::from_secs(1));
            let claimed: Vec<_> = ranges(&env)
                .into_iter()
                .filter(|r| r.0 == "messages" && r.4 > 0)
                .collect();
            assert!(
                claimed.is_empty(),
                "messages waits for conversations: {claimed:?}"
            );
        }
        blocked.release();
        wait_child(child, Duration::from_secs(300)).assert_code(0);
        let (_, parent_done) = claim_and_done_times(&env, "conversations");
        let (child_claimed, _) = claim_and_done_times(&env, "messages");
        assert_eq!(
            child_claimed < parent_done,
            may_overlap,
            "may_overlap {may_overlap}: messages first claimed at {child_claimed}, conversations done at {parent_done}"
        );
    }
    assert_eq!(env.assert_equal("conversations"), 3_000);
    assert_eq!(env.assert_equal("messages"), 3_000);
}
