//! Connections: one place that opens them with fixed session settings, classifies failures and
//! keeps passwords out of every message.
//!
//! Both sides get the same session settings (UTC, ISO dates, `extra_float_digits = 3`) so that
//! a value rendered as text by the source and by the target is byte-for-byte the same when the
//! values are equal — `copy` relies on this to skip identical batches cheaply (any difference just
//! falls back to the exact upsert, so it is an optimisation, never a correctness assumption).

use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use crate::error::{ConnectFailure, MigratorError};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Passwords seen in URLs; [`scrub_secrets`] removes them from any text before it is printed.
static SECRETS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn register_secret(url: &str) {
    let Ok(parsed) = url::Url::parse(url) else {
        return;
    };
    let Some(password) = parsed.password() else {
        return;
    };
    let mut secrets = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    let mut add = |s: String| {
        if !s.is_empty() && !secrets.contains(&s) {
            secrets.push(s);
        }
    };
    add(password.to_string());
    if let Ok(decoded) = percent_decode(password) {
        add(decoded);
    }
}

fn percent_decode(s: &str) -> Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).map_err(|_| ())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

/// `text` with every password registered by [`connect`] / [`redact`] replaced by `***`.
pub fn scrub_secrets(text: &str) -> String {
    let secrets = SECRETS.lock().unwrap_or_else(|p| p.into_inner());
    let mut out = text.to_string();
    for secret in secrets.iter() {
        out = out.replace(secret.as_str(), "***");
    }
    out
}

/// `url` with its password replaced by `***` (and the password remembered for [`scrub_secrets`]).
/// Keyword/value connection strings (`host=… password=…`) are not URLs: they are reduced to a
/// placeholder rather than risk printing them.
pub fn redact(url: &str) -> String {
    register_secret(url);
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<unparseable database URL>".to_string(),
    }
}

/// The database name of `url` (for messages and lock names), if it has one.
pub fn database_name(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let name = parsed.path().trim_start_matches('/');
    (!name.is_empty()).then(|| name.to_string())
}

/// Opens one connection. `role` ("source", "target") names the side in error messages.
pub async fn connect(role: &'static str, url: &str) -> Result<PgConnection, MigratorError> {
    let shown = redact(url);
    let options = PgConnectOptions::from_str(url)
        .map_err(|e| MigratorError::BadUrl {
            role,
            detail: scrub_secrets(&e.to_string()),
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
        detail: scrub_secrets(&err.to_string()),
    })
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

/// The SQLSTATE of a database error, if `err` is one.
pub fn sqlstate(err: &sqlx::Error) -> Option<String> {
    match err {
        sqlx::Error::Database(db) => db.code().map(|c| c.to_string()),
        _ => None,
    }
}

/// A one-line description of a database error: message plus PostgreSQL's detail when present.
pub fn describe_db_error(err: &sqlx::Error) -> String {
    if let sqlx::Error::Database(db) = err {
        if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            return match pg.detail() {
                Some(detail) => scrub_secrets(&format!("{} ({detail})", pg.message())),
                None => scrub_secrets(pg.message()),
            };
        }
        return scrub_secrets(db.message());
    }
    scrub_secrets(&err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_password_and_scrub_removes_it_anywhere() {
        let url = "postgres://app:s3cr%3Et@db.internal:5432/app";
        let shown = redact(url);
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(shown.contains("app:***@db.internal"), "{shown}");
        let scrubbed = scrub_secrets("failed for s3cr>t and s3cr%3Et");
        assert!(!scrubbed.contains("s3cr"), "{scrubbed}");
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(quote_literal("o'k"), "'o''k'");
    }
}
