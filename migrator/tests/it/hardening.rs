//! Issue 8: no secret printed in any form, no row value from a server message, a lost lock stops
//! the run, and errors that say what failed. One binary (each test binary costs minutes to link),
//! one module per defect.
use crate::common;

use common::{migrator_cmd, Outcome};

/// Asserts that `secret` is in neither stdout nor stderr of `out`.
#[track_caller]
fn assert_hidden(out: &Outcome, secret: &str, what: &str) {
    assert!(
        !out.stdout.contains(secret) && !out.stderr.contains(secret),
        "{what}: the secret {secret:?} was printed\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
}

/// Asserts that no cause is printed twice in a row in the `error:` line (`a: b: b`).
#[track_caller]
fn assert_no_repeated_cause(stderr: &str) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{stderr}"));
    let parts: Vec<&str> = line.split(": ").collect();
    for pair in parts.windows(2) {
        assert_ne!(pair[0], pair[1], "a cause is printed twice: {line}");
    }
}

mod secrets {
    use super::*;
    use common::cluster::PasswordCluster;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    const PASSWORD: &str = "S3cretQuery";

    /// `migrator args…` with `env`, in the default environment and with `RUST_LOG=debug`.
    fn run_both_ways(args: &[&str], env: &[(&str, &str)]) -> Vec<Outcome> {
        [None, Some("debug")]
            .iter()
            .map(|log| {
                let mut cmd = migrator_cmd();
                cmd.args(args).env_remove("PGPASSWORD");
                for (k, v) in env {
                    cmd.env(k, v);
                }
                if let Some(level) = log {
                    cmd.env("RUST_LOG", level);
                }
                cmd.output().expect("run migrator").into()
            })
            .collect()
    }

    #[test]
    fn passwords_in_query_parameters_keyword_strings_and_the_environment_are_never_printed() {
        let cluster = PasswordCluster::start(PASSWORD);
        let port = cluster.port;
        let good = cluster.url(PASSWORD);
        let base = format!("postgres://postgres@127.0.0.1:{port}");
        let missing_db = format!("{base}/nope?password={PASSWORD}&sslmode=disable");
        // sqlx honours ?password= : the right password in the query connects.
        for out in run_both_ways(
            &[
                "status",
                "--target-url",
                &format!("{base}/postgres?password={PASSWORD}"),
            ],
            &[],
        ) {
            out.assert_code(0);
            assert_hidden(&out, PASSWORD, "status with ?password=");
        }

        // A missing database behind a password query parameter, through every command and format.
        let cases: Vec<(Vec<&str>, i32)> = vec![
            (
                vec!["copy", "--source-url", &good, "--target-url", &missing_db],
                3,
            ),
            (
                vec!["plan", "--source-url", &good, "--target-url", &missing_db],
                3,
            ),
            (vec!["schema", "--target-url", &missing_db], 3),
            (vec!["status", "--target-url", &missing_db], 3),
            (
                vec!["verify", "--source-url", &good, "--target-url", &missing_db],
                2,
            ),
            (
                vec![
                    "verify",
                    "--format",
                    "json",
                    "--source-url",
                    &good,
                    "--target-url",
                    &missing_db,
                ],
                2,
            ),
        ];
        for (args, code) in &cases {
            for out in run_both_ways(args, &[]) {
                out.assert_code(*code);
                assert_hidden(&out, PASSWORD, &args.join(" "));
                assert!(
                    out.stderr.contains(&format!("127.0.0.1:{port}/nope")),
                    "the message still names the database: {}",
                    out.stderr
                );
            }
        }
        // The same through the environment variables.
        for out in run_both_ways(
            &["copy"],
            &[
                ("LEGACY_DATABASE_URL", &good),
                ("DATABASE_URL", &missing_db),
            ],
        ) {
            out.assert_code(3);
            assert_hidden(&out, PASSWORD, "copy from the environment");
        }

        // A wrong password in the query, and an sslpassword parameter.
        let wrong = format!("{base}/postgres?password=Wr0ngQuery&sslpassword=Ssl-Secret");
        for out in run_both_ways(&["status", "--target-url", &wrong], &[]) {
            out.assert_code(3);
            assert!(
                out.stderr.contains("authentication failed"),
                "{}",
                out.stderr
            );
            assert_hidden(&out, "Wr0ngQuery", "wrong ?password=");
            assert_hidden(&out, "Ssl-Secret", "sslpassword");
        }

        // A key=value connection string: refused without echoing it.
        let keyword =
            format!("host=127.0.0.1 port={port} user=postgres password={PASSWORD} dbname=postgres");
        for out in run_both_ways(&["status", "--target-url", &keyword], &[]) {
            out.assert_code(2);
            assert!(out.stderr.contains("key=value"), "{}", out.stderr);
            assert_hidden(&out, PASSWORD, "key=value string");
        }

        // PGPASSWORD and a password file: used to connect, never echoed.
        let no_password = format!("{base}/postgres");
        for out in run_both_ways(
            &["status", "--target-url", &no_password],
            &[("PGPASSWORD", PASSWORD)],
        ) {
            out.assert_code(0);
            assert_hidden(&out, PASSWORD, "PGPASSWORD");
        }
        for out in run_both_ways(
            &["status", "--target-url", &format!("{base}/nope")],
            &[("PGPASSWORD", PASSWORD)],
        ) {
            out.assert_code(3);
            assert_hidden(&out, PASSWORD, "PGPASSWORD, missing database");
        }
        let pgpass =
            std::env::temp_dir().join(format!("mig-hardening-pgpass-{}", std::process::id()));
        std::fs::write(&pgpass, format!("127.0.0.1:{port}:*:postgres:{PASSWORD}\n")).unwrap();
        let mut perms = std::fs::metadata(&pgpass).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(&pgpass, perms).unwrap();
        let pgpass_env = [("PGPASSFILE", pgpass.to_str().unwrap())];
        for out in run_both_ways(&["status", "--target-url", &no_password], &pgpass_env) {
            out.assert_code(0);
            assert_hidden(&out, PASSWORD, "password file");
        }
        for out in run_both_ways(
            &["status", "--target-url", &format!("{base}/nope")],
            &pgpass_env,
        ) {
            out.assert_code(3);
            assert_hidden(&out, PASSWORD, "password file, missing database");
        }
        let _ = std::fs::remove_file(&pgpass);
    }

    /// A fake Envoy admin endpoint answering up to `answers` requests (any path) with an empty stats
    /// document; cutover-verify asks for stats, its config dump and clusters, so allow plenty.
    fn fake_admin(answers: usize) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(answers) {
                let Ok(mut stream) = stream else { continue };
                let mut request = [0u8; 4096];
                let _ = stream.read(&mut request);
                // Envoy knows service `chat` and cluster `chat_new` (a typo would be exit 2).
                let body = r#"{"stats":[{"name":"wasmcustom.cutover.chat.new_percentage","value":10},{"name":"cluster.chat_new.upstream_rq_total","value":0}]}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        port
    }

    fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn credentials_in_admin_and_listener_urls_are_never_printed() {
        // Unreachable admin endpoint: an error naming it, without its password.
        let unreachable = format!("http://admin:AdminPw-1@127.0.0.1:{}", closed_port());
        for format in ["text", "json"] {
            for out in run_both_ways(
                &[
                    "cutover-verify",
                    "--admin-url",
                    &unreachable,
                    "--format",
                    format,
                ],
                &[],
            ) {
                out.assert_code(2);
                assert_hidden(&out, "AdminPw-1", "unreachable admin URL");
            }
        }
        // A reachable admin endpoint (the report prints its URL) and a health request through an
        // unreachable listener with credentials (the check's detail holds the request error).
        let listener = format!("http://user:ListenPw-2@127.0.0.1:{}", closed_port());
        for format in ["text", "json"] {
            let admin = format!(
                "http://admin:AdminPw-3@127.0.0.1:{}?token=T0ken-4",
                fake_admin(32)
            );
            for out in run_both_ways(
                &[
                    "cutover-verify",
                    "--admin-url",
                    &admin,
                    "--listener-url",
                    &listener,
                    "--service",
                    "chat=chat_new",
                    "--health",
                    "chat=/healthz",
                    "--format",
                    format,
                ],
                &[],
            ) {
                out.assert_code(1);
                for secret in ["AdminPw-3", "T0ken-4", "ListenPw-2"] {
                    assert_hidden(&out, secret, "admin/listener URLs in the report");
                }
                assert!(out.stdout.contains("admin:***@127.0.0.1"), "{}", out.stdout);
                if format == "json" {
                    let health = out.json()["checks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|c| c["kind"] == "health")
                        .cloned()
                        .expect("a health check");
                    assert_eq!(health["status"], "fail", "{health}");
                }
            }
        }
    }
}

mod row_values {
    use super::*;
    use common::Env;

    #[test]
    fn rejected_rows_name_table_key_and_constraint_but_no_value() {
        let env = Env::new("mig_hard_values", 300);
        let mut legacy = env.source_client();
        let row = legacy
            .query_one(
                "SELECT id::text, password_hash FROM legacy.users ORDER BY id OFFSET 150 LIMIT 1",
                &[],
            )
            .unwrap();
        let (culprit, hash): (String, String) = (row.get(0), row.get(1));
        legacy
            .execute(
                "UPDATE legacy.users SET email = 'user1234-secret@example.invalid' WHERE id = $1::text::uuid",
                &[&culprit],
            )
            .unwrap();
        let mut target = env.target_client();
        target
            .batch_execute(
                "ALTER TABLE auth.users ADD CONSTRAINT users_no_invalid CHECK (email NOT LIKE '%@example.invalid')",
            )
            .unwrap();
        for log in ["", "debug"] {
            let out: Outcome = env
                .cmd(&["copy", "--tables", "users", "--batch-size", "100"])
                .env("RUST_LOG", log)
                .output()
                .unwrap()
                .into();
            out.assert_code(7);
            for name in ["users", culprit.as_str(), "users_no_invalid"] {
                assert!(
                    out.stderr.contains(name),
                    "{name} not named:\n{}",
                    out.stderr
                );
            }
            for value in ["user1234-secret", hash.as_str(), "Failing row"] {
                assert_hidden(&out, value, "CHECK violation");
            }
        }
        // The batches before the rejected one are kept; the run is recorded as failed.
        assert_eq!(env.count("auth.users"), 100);
        assert_eq!(env.runs(), [(1, "failed".to_string())]);

        // A unique violation on a non-key column: the server's detail holds the email.
        target
            .batch_execute("ALTER TABLE auth.users DROP CONSTRAINT users_no_invalid")
            .unwrap();
        let email: String = legacy
            .query_one(
                "SELECT email FROM legacy.users ORDER BY id OFFSET 250 LIMIT 1",
                &[],
            )
            .unwrap()
            .get(0);
        target
            .execute(
                "INSERT INTO auth.users VALUES ('ffffffff-ffff-ffff-ffff-ffffffffffff', 'someone', $1, 'h', true, true, now(), now())",
                &[&email],
            )
            .unwrap();
        let out = env.run(&["copy", "--tables", "users", "--batch-size", "100"]);
        out.assert_code(7);
        assert!(
            out.stderr.contains("users_email_key") && out.stderr.contains("email"),
            "{}",
            out.stderr
        );
        assert_hidden(&out, &email, "unique violation");
        assert_eq!(env.runs(), [(1, "failed".to_string())]);
    }
}

mod lock_lost {
    use super::*;
    use common::{applied_versions, wait_child, wait_for, Env};
    use std::time::Duration;

    const LOCK_LOST: i32 = migrator::error::exit::LOCK_LOST as i32;

    /// Terminates the session holding an advisory lock in `dbname`; returns how many were.
    fn terminate_lock_holder(client: &mut postgres::Client, dbname: &str) -> i64 {
        client
            .query_one(
                "SELECT count(pg_terminate_backend(l.pid)) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                 WHERE l.locktype = 'advisory' AND l.granted AND d.datname = $1",
                &[&dbname],
            )
            .unwrap()
            .get(0)
    }

    /// Whether a `migrator` session of `dbname` waits for a lock (a row or transaction lock).
    fn migrator_waits(client: &mut postgres::Client, dbname: &str) -> bool {
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'migrator'
                   AND wait_event_type = 'Lock'",
                &[&dbname],
            )
            .unwrap()
            .get::<_, i64>(0)
            > 0
    }

    /// Runs `migrator args…` until one of its sessions waits for a lock the test holds, then
    /// terminates the session holding the run's advisory lock: the run must stop with exit 8.
    fn lose_the_lock_while_waiting(env: &Env, args: &[&str]) -> Outcome {
        let child = env.spawn(args);
        let mut observer = env.target_client();
        wait_for(
            "the run to wait for the test's lock",
            Duration::from_secs(120),
            || migrator_waits(&mut observer, &env.target.name),
        );
        assert_eq!(terminate_lock_holder(&mut observer, &env.target.name), 1);
        let out = wait_child(child, Duration::from_secs(120));
        out.assert_code(LOCK_LOST);
        out
    }

    #[test]
    fn a_copy_that_loses_its_lock_stops_keeps_its_checkpoint_and_is_resumed() {
        let env = Env::new("mig_hard_copy_lock", 1000);
        let mut legacy = env.source_client();
        let keys: Vec<String> = legacy
            .query("SELECT id::text FROM legacy.users ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        // An uncommitted row with the key of batch 4 (100-row batches): the copy's writer waits for
        // it inside that batch, deterministically mid-copy, while holding the lock.
        let mut blocker = env.target_client();
        let mut tx = blocker.transaction().unwrap();
        tx.execute(
            "INSERT INTO auth.users VALUES ($1::text::uuid, 'blocker', 'blocker@example.org', 'h', true, true, now(), now())",
            &[&keys[350]],
        )
        .unwrap();

        let out = lose_the_lock_while_waiting(
            &env,
            &["copy", "--tables", "users", "--batch-size", "100"],
        );
        let mut observer = env.target_client();
        assert!(
            out.stderr.contains("lock was lost") && out.stderr.contains("table users"),
            "{}",
            out.stderr
        );
        assert_no_repeated_cause(&out.stderr);
        tx.rollback().unwrap();

        // The last committed checkpoint is intact: three batches, nothing of the fourth.
        assert_eq!(env.count("auth.users"), 300);
        let (last_key, rows_read, status): (Option<String>, i64, String) = {
            let r = observer
                .query_one(
                    "SELECT c.last_key, c.rows_read, r.status FROM cutover_migrator.copy_checkpoints c JOIN cutover_migrator.copy_runs r USING (run_id)",
                    &[],
                )
                .unwrap();
            (r.get(0), r.get(1), r.get(2))
        };
        assert_eq!(
            (last_key.as_deref(), rows_read, status.as_str()),
            (Some(keys[299].as_str()), 300, "lock_lost")
        );
        let status_out = env.run(&["status"]);
        status_out.assert_code(0);
        assert!(
            status_out.stdout.contains("lock_lost"),
            "{}",
            status_out.stdout
        );

        // A second copy resumes the run after the checkpoint and finishes it exactly.
        let resumed = env.run(&[
            "copy",
            "--tables",
            "users",
            "--batch-size",
            "100",
            "--no-wait",
        ]);
        resumed.assert_code(0);
        assert!(
            resumed.stderr.contains("resuming run 1"),
            "{}",
            resumed.stderr
        );
        assert_eq!(resumed.summary("users"), [1000, 0, 0]);
        assert_eq!(
            env.latest_checkpoints(),
            [("users".to_string(), 1000, 1000, 0, 0, true)]
        );
        assert_eq!(env.runs(), [(1, "complete".to_string())]);
        env.assert_equal("users");
    }

    #[test]
    fn a_schema_run_that_loses_its_lock_stops_and_keeps_the_applied_migrations() {
        let env = Env::unmigrated("mig_hard_schema_lock", 1);
        // An uncommitted schema of the same name as migration 003's: that migration waits for it.
        let mut blocker = env.target_client();
        let mut tx = blocker.transaction().unwrap();
        tx.batch_execute("CREATE SCHEMA orchestration").unwrap();

        let out = lose_the_lock_while_waiting(&env, &["schema"]);
        assert!(
            out.stderr.contains("schema lock was lost"),
            "{}",
            out.stderr
        );
        assert_no_repeated_cause(&out.stderr);
        tx.rollback().unwrap();

        let mut observer = env.target_client();
        assert_eq!(
            applied_versions(&mut observer),
            [1, 2],
            "the migrations before the lost lock are kept"
        );
        env.run(&["schema"]).assert_code(0);
        assert_eq!(applied_versions(&mut observer), [1, 2, 3]);
    }
}

mod messages {
    use super::*;
    use common::Env;
    use cutover_pgfixture::TestDb;

    /// A login role without CREATE on the target database, dropped at the end.
    struct Role {
        name: String,
        admin: postgres::Client,
    }

    impl Drop for Role {
        fn drop(&mut self) {
            let _ = self.admin.batch_execute(&format!(
                "DROP OWNED BY {0}; DROP ROLE IF EXISTS {0}",
                self.name
            ));
        }
    }

    #[test]
    fn permission_denied_for_the_bookkeeping_schema_says_so_once() {
        let env = Env::new("mig_hard_perm", 50);
        let name = format!("mig_ro_{}", std::process::id());
        let mut admin = env.target_client();
        admin
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN; GRANT USAGE ON SCHEMA auth TO {name}; \
                 GRANT SELECT ON auth.users, public._sqlx_migrations TO {name}"
            ))
            .unwrap();
        let _role = Role {
            name: name.clone(),
            admin,
        };
        let mut url = url::Url::parse(&env.target.url).unwrap();
        url.set_username(&name).unwrap();
        let out: Outcome = env
            .cmd(&["copy", "--tables", "users"])
            .env("DATABASE_URL", url.as_str())
            .output()
            .unwrap()
            .into();
        out.assert_code(2);
        assert!(
            out.stderr.contains("bookkeeping schema cutover_migrator")
                && out.stderr.contains("CREATE privilege"),
            "{}",
            out.stderr
        );
        assert_eq!(
            out.stderr.matches("permission denied").count(),
            1,
            "{}",
            out.stderr
        );
        assert!(!env.has_bookkeeping(), "nothing was created");
    }

    const FLAGS_PLAN: &str = r#"
[[table]]
name = "flags"
source = "legacy.flags"
target = "app.flags"
key = "id"
columns = [{ name = "id" }, { name = "active", from = "FROM_EXPR" }]
"#;

    #[test]
    fn a_value_that_does_not_convert_names_the_column_and_key_and_fails_the_run() {
        let source = TestDb::create("mig_hard_cast_src");
        let target = TestDb::create("mig_hard_cast_tgt");
        source
            .client()
            .batch_execute(
                "CREATE SCHEMA legacy;
                 CREATE TABLE legacy.flags (id int PRIMARY KEY, active text NOT NULL);
                 INSERT INTO legacy.flags SELECT i, CASE WHEN i = 251 THEN 'user_19520' WHEN i % 2 = 0 THEN 'true' ELSE 'false' END
                 FROM generate_series(1, 400) AS i;",
            )
            .unwrap();
        target
            .client()
            .batch_execute("CREATE SCHEMA app; CREATE TABLE app.flags (id int PRIMARY KEY, active boolean NOT NULL);")
            .unwrap();
        let env = Env { source, target };
        env.run(&["schema"]).assert_code(0);
        let dir = std::env::temp_dir().join(format!("mig-hard-cast-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let plan = |file: &str, from: &str| {
            let path = dir.join(file);
            std::fs::write(&path, FLAGS_PLAN.replace("FROM_EXPR", from)).unwrap();
            path.display().to_string()
        };

        // text → boolean without a conversion written in the plan: refused before copying.
        let implicit = plan("implicit.toml", "active");
        for command in ["plan", "copy"] {
            let out = env.run(&[command, "--plan", &implicit]);
            out.assert_code(5);
            for name in ["flags", "column active", "text", "boolean"] {
                assert!(out.stderr.contains(name), "{name}:\n{}", out.stderr);
            }
        }
        assert_eq!(env.count("app.flags"), 0);

        // Written as a conversion: accepted; the row that does not convert stops the copy, named.
        let explicit = plan("explicit.toml", "active::boolean");
        env.run(&["plan", "--plan", &explicit]).assert_code(0);
        let out = env.run(&["copy", "--plan", &explicit, "--batch-size", "100"]);
        out.assert_code(7);
        for name in ["table flags", "key 251", "column active", "boolean"] {
            assert!(out.stderr.contains(name), "{name}:\n{}", out.stderr);
        }
        assert_hidden(&out, "user_19520", "conversion failure");
        assert_no_repeated_cause(&out.stderr);
        assert_eq!(env.count("app.flags"), 200);
        assert_eq!(env.runs(), [(1, "failed".to_string())]);
        let status = env.run(&["status"]);
        status.assert_code(0);
        assert!(status.stdout.contains("run 1: failed"), "{}", status.stdout);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn verify_counts_and_keys_agree_while_rows_are_written() {
        let env = Env::new("mig_hard_verify", 20_000);
        env.run(&["copy", "--tables", "users"]).assert_code(0);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            let (mut legacy, mut target) = (env.source_client(), env.target_client());
            std::thread::spawn(move || {
                // Dual writes: legacy first, then the new system, one commit each.
                for i in 0..20_000 {
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        break;
                    }
                    let row = "SELECT md5('hardening' || $1::int)::uuid, 'hard_' || $1::int, 'hard_' || $1::int || '@example.org', 'h', true, true,
                                      timestamptz '2020-01-01 00:00:00+00', timestamptz '2020-01-01 00:00:00+00'";
                    legacy
                        .execute(&format!("INSERT INTO legacy.users {row}"), &[&i])
                        .unwrap();
                    target
                        .execute(&format!("INSERT INTO auth.users {row}"), &[&i])
                        .unwrap();
                }
            })
        };
        for _ in 0..6 {
            let out = env.run(&["verify", "--tables", "users", "--format", "json"]);
            assert!(out.code == 0 || out.code == 1, "{}", out.stderr);
            let report = out.json();
            let t = &report["tables"][0];
            let len = |k: &str| t[k].as_array().unwrap().len() as i64;
            let (source_rows, target_rows) = (
                t["source_rows"].as_i64().unwrap(),
                t["target_rows"].as_i64().unwrap(),
            );
            assert_eq!(
                source_rows - target_rows,
                len("missing") - len("extra"),
                "the counts and the keys disagree: {t}"
            );
            assert_eq!(
                out.code == 0,
                report["differences"].as_u64() == Some(0),
                "exit code and differences disagree: {t}"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        writer.join().unwrap();
        env.run(&["verify", "--tables", "users"]).assert_code(0);
    }
}
