//! Connections: one place that opens them with fixed session settings, classifies failures and
//! keeps passwords out of every message (through [`crate::redact`]).
//!
//! Both sides get the same session settings (UTC, ISO dates, `extra_float_digits = 3`) so that
//! a value rendered as text by the source and by the target is byte-for-byte the same when the
//! values are equal — `copy` relies on this to skip identical batches cheaply (any difference just
//! falls back to the exact upsert, so it is an optimisation, never a correctness assumption).

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use crate::error::{ConnectFailure, MigratorError};
use crate::redact;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The database name of `url` (for messages and lock names), if it has one.
pub fn database_name(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let name = parsed.path().trim_start_matches('/');
    (!name.is_empty()).then(|| name.to_string())
}

/// Opens one connection. `role` ("source", "target") names the side in error messages.
///
/// Only `postgres://` URLs are accepted (sqlx 0.8 parses nothing else); a libpq `key=value`
/// string is refused without being echoed. The URL's secrets and `PGPASSWORD` are registered
/// with [`redact`], so no message can print them; the options (whose `Debug` would show the
/// password) are never printed.
pub async fn connect(role: &'static str, url: &str) -> Result<PgConnection, MigratorError> {
    let shown = redact::url(url);
    if let Ok(password) = std::env::var("PGPASSWORD") {
        redact::register_secret(&password);
    }
    if url::Url::parse(url).is_err() {
        return Err(MigratorError::BadUrl {
            role,
            detail: format!(
                "not a postgres:// URL (key=value connection strings are not supported): {shown}"
            ),
        });
    }
    let options = PgConnectOptions::from_str(&without_unused_secrets(url))
        .map_err(|e| MigratorError::BadUrl {
            role,
            detail: redact::scrub(&e.to_string()),
        })?
        .application_name("migrator")
        .options([
            ("TimeZone", "UTC"),
            ("DateStyle", "ISO"),
            ("IntervalStyle", "postgres"),
            ("extra_float_digits", "3"),
            ("standard_conforming_strings", "on"),
            ("client_encoding", "UTF8"),
        ])
        .disable_statement_logging();
    let attempt = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await;
    let err = match attempt {
        Ok(Ok(conn)) => return Ok(conn),
        Ok(Err(err)) => err,
        Err(_elapsed) => {
            return Err(MigratorError::Connect {
                role,
                url: shown,
                failure: ConnectFailure::Unreachable,
                detail: format!("no answer within {} s", CONNECT_TIMEOUT.as_secs()),
            })
        }
    };
    let failure = classify_connect_error(&err);
    Err(MigratorError::Connect {
        role,
        url: shown,
        failure,
        detail: crate::error::describe_db_error(&err),
    })
}

/// `url` without the secret-bearing query parameters sqlx does not use (`sslpassword`, …): sqlx
/// logs the value of every parameter it does not know (at warn level, through `tracing`).
fn without_unused_secrets(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return url.to_string();
    };
    let unused = |key: &str| redact::is_secret_key(key) && key != "password";
    if !parsed.query_pairs().any(|(k, _)| unused(&k)) {
        return url.to_string();
    }
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| !unused(k))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed.query_pairs_mut().clear().extend_pairs(kept);
    parsed.to_string()
}

fn classify_connect_error(err: &sqlx::Error) -> ConnectFailure {
    match err {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut => {
            ConnectFailure::Unreachable
        }
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // invalid_password, invalid_authorization_specification
            Some("28P01") | Some("28000") => ConnectFailure::Authentication,
            // invalid_catalog_name
            Some("3D000") => ConnectFailure::MissingDatabase,
            _ => ConnectFailure::Other,
        },
        other if other.to_string().to_lowercase().contains("password") => {
            ConnectFailure::Authentication
        }
        _ => ConnectFailure::Other,
    }
}

/// Closes a connection, ignoring errors (the server drops session state, advisory locks included,
/// when the connection ends in any way).
pub async fn close(conn: PgConnection) {
    let _ = conn.close().await;
}

/// `ident` quoted as a PostgreSQL identifier.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `value` quoted as a PostgreSQL string literal (standard_conforming_strings is on, see [`connect`]).
pub fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_secret_parameters_never_reach_the_driver() {
        let url = "postgres://u@h/db?sslpassword=K3y&password=P&sslmode=require";
        assert_eq!(
            without_unused_secrets(url),
            "postgres://u@h/db?password=P&sslmode=require"
        );
        assert_eq!(
            without_unused_secrets("postgres://u@h/db"),
            "postgres://u@h/db"
        );
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("o'k"), "'o''k'");
    }
}
