//! The cutover's two real services (`tests/apps`, binary `cutover-app`) as child processes, each
//! on a free loopback port with its own throw-away PostgreSQL database.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use cutover_pgfixture::TestDb;

pub use cutover_apps::request_time::REQUEST_TIME_HEADER;
pub use cutover_apps::store::{Flavor, Tables};
pub use cutover_apps::{ADMIN_PREFIX, EXIT_SCHEMA, LISTENING_PREFIX};

use crate::client::HttpClient;
use crate::envoy::{kill_with_parent, new_workdir};
use crate::paths::{app_bin, migrator_bin, workspace_root};

/// How long [`App::start`] waits for the service to say it listens.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Creates the flavor's schema in an empty database: the legacy schema file, or `migrator schema`
/// (the binary, as an operator runs it) for the new one.
pub fn apply_schema(flavor: Flavor, db: &TestDb) {
    match flavor {
        Flavor::Legacy => {
            let sql =
                fs::read_to_string(workspace_root().join("migrations/legacy/legacy_schema.sql"))
                    .expect("read migrations/legacy/legacy_schema.sql");
            db.client()
                .batch_execute(&sql)
                .expect("apply the legacy schema");
        }
        Flavor::New => {
            let output = Command::new(migrator_bin())
                .args(["schema", "--target-url", &db.url])
                .stdin(Stdio::null())
                .output()
                .expect("run migrator schema");
            assert!(
                output.status.success(),
                "migrator schema failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }
}

/// Why [`App::try_start`] failed.
#[derive(Debug)]
pub struct StartError {
    pub exit_status: Option<ExitStatus>,
    /// The service's stderr.
    pub log: String,
}

/// A running `cutover-app`. Dropping it kills and reaps the process, then drops its database
/// (kept, with the log, when the thread is panicking).
pub struct App {
    child: Option<Child>,
    flavor: Flavor,
    addr: SocketAddr,
    /// The fault switch's admin listener.
    admin_addr: SocketAddr,
    log_path: PathBuf,
    workdir: PathBuf,
    // Declared last: dropped after the process is gone.
    db: TestDb,
}

impl App {
    /// A fresh database with the flavor's schema and the service on it; panics with its log when
    /// it does not come up.
    pub fn start(flavor: Flavor) -> App {
        let db = TestDb::create(&format!("cutover_app_{}", flavor.name()));
        apply_schema(flavor, &db);
        App::start_on(flavor, db)
    }

    /// The service on an existing database (which it then owns).
    pub fn start_on(flavor: Flavor, db: TestDb) -> App {
        App::try_start(flavor, db).unwrap_or_else(|(error, _)| {
            panic!(
                "cutover-app --flavor {} did not start (exit {:?}):\n{}",
                flavor.name(),
                error.exit_status,
                error.log
            )
        })
    }

    /// Like [`App::start_on`]; on failure returns the exit status, the log and the database.
    pub fn try_start(flavor: Flavor, db: TestDb) -> Result<App, (StartError, TestDb)> {
        let workdir = new_workdir();
        let log_path = workdir.join(format!("app-{}.log", flavor.name()));
        let log = fs::File::create(&log_path).expect("create the app log file");
        let mut command = Command::new(app_bin());
        command
            .args([
                "--flavor",
                flavor.name(),
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .env("DATABASE_URL", &db.url)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        kill_with_parent(&mut command);
        let mut child = command.spawn().expect("start cutover-app");
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, listening) = mpsc::channel();
        // Reads the announcement, then keeps draining stdout until the process exits.
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        let announced = |prefix: &str| -> Option<SocketAddr> {
            listening
                .recv_timeout(START_TIMEOUT)
                .ok()
                .and_then(|line| line.strip_prefix(prefix)?.parse().ok())
        };
        let addr =
            announced(LISTENING_PREFIX).and_then(|addr| Some((addr, announced(ADMIN_PREFIX)?)));
        match addr {
            Some((addr, admin_addr)) => Ok(App {
                child: Some(child),
                flavor,
                addr,
                admin_addr,
                log_path,
                workdir,
                db,
            }),
            None => {
                let _ = child.kill();
                let exit_status = child.wait().ok();
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                let _ = fs::remove_dir_all(&workdir);
                Err((StartError { exit_status, log }, db))
            }
        }
    }

    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`, the service directly (not through Envoy).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn client(&self) -> HttpClient {
        HttpClient::new(&self.url())
    }

    /// Makes the service answer 503 to `percent` % of its API requests (0: off), through its
    /// admin listener (`cutover_apps::fault`).
    pub fn set_fault(&self, percent: u64) {
        let body = serde_json::json!({ "fail_percent": percent }).to_string();
        let response = HttpClient::new(&format!("http://{}", self.admin_addr)).send(
            "PUT",
            "/fault",
            &[("content-type", b"application/json")],
            body.as_bytes(),
        );
        assert_eq!(
            response.status,
            200,
            "set the fault: {}",
            response.body_text()
        );
    }

    /// The service's own database.
    pub fn db(&self) -> &TestDb {
        &self.db
    }

    /// The service's stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "cutover-e2e: test failed; {} app log kept at {}",
                self.flavor.name(),
                self.log_path.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.workdir);
        }
    }
}
