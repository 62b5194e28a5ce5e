//! A wrong password: exit 3, "authentication failed", and the password appears nowhere.
//!
//! The shared test server trusts every loopback connection (any password is accepted), so this
//! test starts a private throw-away cluster with scram-sha-256 authentication from the installed
//! PostgreSQL server binaries. Missing binaries are a failure with instructions, not a skip.
mod common;
use std::path::PathBuf;
use std::process::Command;

use common::migrator_cmd;

struct PasswordCluster {
    dir: PathBuf,
    bindir: PathBuf,
    as_postgres: bool,
    port: u16,
}

fn server_bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if dir.join("initdb").exists() && dir.join("pg_ctl").exists() {
            return dir;
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dirs| {
            dirs.filter_map(|d| d.ok())
                .map(|d| d.path().join("bin"))
                .filter(|b| b.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    candidates.sort();
    candidates.pop().unwrap_or_else(|| {
        panic!("this test needs the PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")
    })
}

impl PasswordCluster {
    fn start(password: &str) -> PasswordCluster {
        let bindir = server_bindir();
        // initdb refuses to run as root: run the cluster as the postgres user then.
        let uid = Command::new("id").arg("-u").output().expect("id -u");
        let as_postgres = String::from_utf8_lossy(&uid.stdout).trim() == "0";
        let dir = std::env::temp_dir().join(format!("mig-pw-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pwfile"), password).unwrap();
        if as_postgres {
            run(Command::new("chown").args(["-R", "postgres", dir.to_str().unwrap()]));
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = PasswordCluster {
            dir,
            bindir,
            as_postgres,
            port,
        };
        let data = cluster.dir.join("data");
        let pwfile = format!("--pwfile={}", cluster.dir.join("pwfile").display());
        run(cluster.command("initdb").args([
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=scram-sha-256",
            &pwfile,
            "--no-sync",
        ]));
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1",
            cluster.dir.display()
        );
        let log = cluster.dir.join("server.log");
        run(cluster.command("pg_ctl").args([
            "-D",
            data.to_str().unwrap(),
            "-l",
            log.to_str().unwrap(),
            "-w",
            "-o",
            &options,
            "start",
        ]));
        cluster
    }

    fn command(&self, tool: &str) -> Command {
        let path = self.bindir.join(tool);
        if self.as_postgres {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(path);
            cmd
        } else {
            Command::new(path)
        }
    }

    fn url(&self, password: &str) -> String {
        format!(
            "postgres://postgres:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }
}

impl Drop for PasswordCluster {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D", data.to_str().unwrap(), "-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wrong_password_exits_3_and_never_shows_a_password() {
    let cluster = PasswordCluster::start("Right-Pa55word");
    // The right password works (so the failure below is about the password, not the server).
    let ok: common::Outcome = migrator_cmd()
        .args(["status", "--target-url", &cluster.url("Right-Pa55word")])
        .output()
        .unwrap()
        .into();
    ok.assert_code(0);
    assert!(!ok.stdout.contains("Right-Pa55word") && !ok.stderr.contains("Right-Pa55word"));

    let wrong = cluster.url("Wr0ng-Secret");
    for args in [
        vec!["status", "--target-url", wrong.as_str()],
        vec!["schema", "--target-url", wrong.as_str()],
    ] {
        let out: common::Outcome = migrator_cmd().args(&args).output().unwrap().into();
        out.assert_code(3);
        assert!(
            out.stderr.contains("authentication failed"),
            "{}",
            out.stderr
        );
        assert!(
            out.stderr.contains(&format!("127.0.0.1:{}", cluster.port)),
            "{}",
            out.stderr
        );
        assert!(
            !out.stderr.contains("Wr0ng-Secret") && !out.stdout.contains("Wr0ng-Secret"),
            "password leaked:\n{}",
            out.stderr
        );
    }
    // Same through the environment variable.
    let out: common::Outcome = migrator_cmd()
        .arg("status")
        .env("DATABASE_URL", &wrong)
        .output()
        .unwrap()
        .into();
    out.assert_code(3);
    assert!(!out.stderr.contains("Wr0ng-Secret"), "{}", out.stderr);
}
