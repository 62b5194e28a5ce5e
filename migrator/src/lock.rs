//! The advisory lock that keeps two runs of one command (`copy`, `schema`) out of one target
//! database.
//!
//! The lock is a session lock taken on the very connection that does the run's writes and commits
//! its checkpoints (copy) or migrations (schema). A session lock lives exactly as long as its
//! connection, so a commit can only succeed while the lock is held: when the connection is lost
//! (terminated by an operator, `idle_session_timeout`, a dropped network path), the next statement
//! of the run fails, [`AdvisoryLock::lost`] tells that the lock went with it, and the run stops
//! (exit 8) instead of carrying on beside a second run that may already have taken the lock.

use sqlx::postgres::PgConnection;
use sqlx::Connection;

use crate::error::MigratorError;

/// Advisory lock key of `schema` (advisory locks are per database).
pub const SCHEMA_LOCK_KEY: i64 = 0x6375_746f_7665_0001;
/// Advisory lock key of `copy`.
pub const COPY_LOCK_KEY: i64 = 0x6375_746f_7665_0002;

/// A held session advisory lock; it is released when its connection closes.
#[derive(Debug)]
pub struct AdvisoryLock {
    key: i64,
    /// The command holding it (`copy`, `schema`), for messages.
    command: &'static str,
    /// The server process of the holding connection.
    pid: i32,
}

impl AdvisoryLock {
    /// Takes the lock on `conn`: at once if free; otherwise waits (saying so on stderr, naming the
    /// holder), or with `no_wait` fails with [`MigratorError::Locked`] (exit 6).
    pub async fn acquire(
        conn: &mut PgConnection,
        key: i64,
        command: &'static str,
        database: &str,
        no_wait: bool,
    ) -> anyhow::Result<AdvisoryLock> {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        if !got {
            let who = holder(conn, key)
                .await
                .map(|pid| format!(" (server process {pid})"))
                .unwrap_or_default();
            if no_wait {
                return Err(MigratorError::Locked(format!(
                    "another `migrator {command}` is working on {database}{who}; not waiting (--no-wait)"
                ))
                .into());
            }
            eprintln!(
                "{command}: another `migrator {command}` is working on {database}{who}; waiting for it to finish"
            );
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(key)
                .execute(&mut *conn)
                .await?;
            eprintln!("{command}: lock acquired");
        }
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await?;
        Ok(AdvisoryLock { key, command, pid })
    }

    /// Takes the lock `key` in shared mode on `conn`: many holders at once (the workers of one
    /// copy run), excluded by an exclusive holder (a copy starting or resuming a run). Waits while
    /// an exclusive holder has it, or with `no_wait` fails with [`MigratorError::Locked`].
    pub async fn acquire_shared(
        conn: &mut PgConnection,
        key: i64,
        command: &'static str,
        database: &str,
        no_wait: bool,
    ) -> anyhow::Result<AdvisoryLock> {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock_shared($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await?;
        if !got {
            if no_wait {
                return Err(MigratorError::Locked(format!(
                    "a `migrator {command}` is starting a run on {database}; not waiting (--no-wait)"
                ))
                .into());
            }
            sqlx::query("SELECT pg_advisory_lock_shared($1)")
                .bind(key)
                .execute(&mut *conn)
                .await?;
        }
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *conn)
            .await?;
        Ok(AdvisoryLock { key, command, pid })
    }

    /// Turns an exclusive lock into a shared one on the same connection, without a moment in
    /// which neither is held.
    pub async fn downgrade(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_advisory_lock_shared($1)")
            .bind(self.key)
            .execute(&mut *conn)
            .await?;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// The server process of the holding connection.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn key(&self) -> i64 {
        self.key
    }

    /// After the run failed with `failure`: `Some` when the lock's connection `conn` — and with it
    /// the lock — is gone (checked by a round trip, whatever the error was), naming `during` (what
    /// the run was doing) and `kept` (what stays committed).
    pub async fn lost(
        &self,
        conn: &mut PgConnection,
        failure: &anyhow::Error,
        during: impl FnOnce() -> String,
        kept: impl FnOnce() -> String,
    ) -> Option<MigratorError> {
        // Only the lock's own connection decides: a lost reader connection is an ordinary error.
        let gone = conn.ping().await.is_err();
        gone.then(|| MigratorError::LockLost {
            command: self.command,
            during: during(),
            cause: format!(
                "server process {}: {}",
                self.pid,
                crate::error::render(failure)
            ),
            kept: kept(),
        })
    }

    /// Releases the lock while keeping the connection open.
    pub async fn release(self, conn: &mut PgConnection) -> sqlx::Result<()> {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }
}

/// The server process holding the advisory lock `key` in the current database, if any.
async fn holder(conn: &mut PgConnection, key: i64) -> Option<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND objid = ($1::int8 & 4294967295)::oid AND classid = ($1::int8 >> 32)::oid LIMIT 1",
    )
    .bind(key)
    .fetch_optional(&mut *conn)
    .await
    .ok()
    .flatten()
}

/// Runs `work` in a transaction on `conn` that holds the lock `key` for its duration only
/// (`pg_try_advisory_xact_lock`), e.g. to record the end of a run whose session lock was lost.
/// Returns `None` without running `work` when another session holds the lock.
pub async fn with_transaction_lock<T>(
    conn: &mut PgConnection,
    key: i64,
    work: impl AsyncFnOnce(&mut PgConnection) -> sqlx::Result<T>,
) -> sqlx::Result<Option<T>> {
    let mut tx = conn.begin().await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(key)
        .fetch_one(&mut *tx)
        .await?;
    if !got {
        tx.rollback().await?;
        return Ok(None);
    }
    let out = work(&mut *tx).await?;
    tx.commit().await?;
    Ok(Some(out))
}
