//! Throw-away PostgreSQL databases for tests.
//!
//! `DATABASE_URL` is an admin URL (user allowed to `CREATE DATABASE`). Each [`TestDb`] creates a
//! uniquely named database and drops it on `Drop` — unless the test is panicking, in which case
//! the database is kept for inspection and its name printed.
//!
//! A missing `DATABASE_URL` or an unreachable server is a test failure with instructions, never a skip.

use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The admin URL from `DATABASE_URL`, or a panic explaining how to get one.
pub fn admin_url() -> String {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => url,
        _ => panic!(
            "DATABASE_URL is not set. These tests need a real PostgreSQL server: run them through \
             `make test` (which uses 127.0.0.1:5432 or starts a private cluster), or set \
             DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres"
        ),
    }
}

fn connect(url: &str) -> postgres::Client {
    postgres::Client::connect(url, postgres::NoTls).unwrap_or_else(|e| {
        panic!(
            "cannot connect to PostgreSQL at {} ({e}). Start a server (Debian: apt-get install \
             postgresql) or run the tests through `make test`.",
            redact(url)
        )
    })
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "<unparseable database url>".to_string(),
    }
}

/// A database that exists for the lifetime of this value.
pub struct TestDb {
    pub name: String,
    /// Connection URL of this database (same server and credentials as the admin URL).
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// Creates a fresh, empty database whose name starts with `prefix`.
    pub fn create(prefix: &str) -> TestDb {
        let admin_url = admin_url();
        let name = format!(
            "{}_{}_{}",
            prefix
                .to_lowercase()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = connect(&admin_url);
        admin
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} failed: {e}"));
        let mut url = url::Url::parse(&admin_url).expect("DATABASE_URL is not a valid URL");
        url.set_path(&format!("/{name}"));
        TestDb {
            name,
            url: url.to_string(),
            admin_url,
        }
    }

    /// A synchronous client connected to this database, for setting up and asserting on state.
    pub fn client(&self) -> postgres::Client {
        connect(&self.url)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: keeping database {} for inspection ({})",
                self.name,
                redact(&self.url)
            );
            return;
        }
        let mut admin = connect(&self.admin_url);
        if let Err(e) = admin.batch_execute(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )) {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}
