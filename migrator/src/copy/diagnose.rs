//! Naming the row (and column) behind a failure, by bisecting on key prefixes: a source value that
//! does not convert to its target type ([`locate_conversion_failure`]), a staged row the target
//! rejects ([`diagnose`]). Row values never appear in the result: table, key, column, constraint.

use sqlx::postgres::PgConnection;

use super::apply::write_staged;
use super::sql;
use crate::error::{self, MigratorError};
use crate::plan::{self, ResolvedTable, Window};

/// After reading the source window failed with a data exception: finds the first
/// column (plan order, key first) whose cast to the target type fails in the window, and the first
/// key in the window whose row fails, by bisecting on key prefixes. `None` when no single column
/// fails (the error then is reported as it came).
pub async fn locate_conversion_failure(
    conn: &mut PgConnection,
    table: &ResolvedTable,
    window: &Window<'_>,
) -> Option<MigratorError> {
    let fails = async |conn: &mut PgConnection, column: &plan::ResolvedColumn, w: &Window<'_>| {
        match sqlx::query(&table.source_column_check_sql(column, w))
            .fetch_one(&mut *conn)
            .await
        {
            Ok(_) => Ok(None),
            Err(e) if error::is_statement_error(&e) => Ok(Some(e)),
            Err(e) => Err(e),
        }
    };
    for column in &table.columns {
        let Ok(Some(mut err)) = fails(conn, column, window).await else {
            continue;
        };
        let keys: Vec<String> = sqlx::query_scalar(&table.source_keys_sql(window))
            .fetch_all(&mut *conn)
            .await
            .ok()?;
        // Smallest prefix (after, keys[i]] that fails: keys[i] is the first failing row.
        let (mut lo, mut hi) = (0usize, keys.len().checked_sub(1)?);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let prefix = Window {
                up_to: Some(&keys[mid]),
                ..window.clone()
            };
            match fails(conn, column, &prefix).await.ok()? {
                Some(e) => {
                    err = e;
                    hi = mid;
                }
                None => lo = mid + 1,
            }
        }
        return Some(MigratorError::ConversionFailed {
            table: table.name().to_string(),
            key: keys[lo].clone(),
            column: column.name.clone(),
            detail: format!(
                "the source expression `{}` does not convert to the target type {}: {}",
                column.from,
                column.sql_type,
                error::describe_db_error(&err)
            ),
        });
    }
    None
}

/// The first staged key that occurs more than once, named as the rejected row.
async fn repeated_staged_key(
    conn: &mut PgConnection,
    table: &ResolvedTable,
    staging: &str,
) -> sqlx::Result<Option<MigratorError>> {
    let dup: Option<String> = sqlx::query_scalar(&sql::repeated_staged_key(table, staging))
        .fetch_optional(&mut *conn)
        .await?;
    Ok(dup.map(|key| MigratorError::DataRejected {
        table: table.name().to_string(),
        key,
        detail: "the source has this key more than once".into(),
    }))
}

/// After the writes found a staged key more than once: names it.
pub async fn repeated_key(
    conn: &mut PgConnection,
    table: &ResolvedTable,
    staging: &str,
) -> anyhow::Result<MigratorError> {
    repeated_staged_key(conn, table, staging)
        .await?
        .ok_or_else(|| anyhow::anyhow!("table {}: a staged key repeats", table.name()))
}

/// After writing a batch's staged rows failed: finds the first staged row (in key order) that the
/// target rejects, by bisecting on key prefixes inside savepoints, and names it.
pub async fn diagnose(
    conn: &mut PgConnection,
    table: &ResolvedTable,
    staging: &str,
    original: &sqlx::Error,
    range: &str,
) -> anyhow::Result<MigratorError> {
    let name = table.name().to_string();
    if error::sqlstate(original).as_deref() == Some("21000") {
        // "ON CONFLICT DO UPDATE command cannot affect row a second time": a key repeats.
        if let Some(repeated) = repeated_staged_key(conn, table, staging).await? {
            return Ok(repeated);
        }
    }
    let keys: Vec<String> = sqlx::query_scalar(&sql::staged_keys(table, staging))
        .fetch_all(&mut *conn)
        .await?;
    let probe =
        async |conn: &mut PgConnection, up_to: &str| -> anyhow::Result<Option<sqlx::Error>> {
            sqlx::query("SAVEPOINT cutover_probe")
                .execute(&mut *conn)
                .await?;
            let outcome = write_staged(&mut *conn, table, staging, Some(up_to)).await;
            sqlx::query("ROLLBACK TO SAVEPOINT cutover_probe")
                .execute(&mut *conn)
                .await?;
            match outcome {
                Ok(_) => Ok(None),
                Err(e) if error::is_statement_error(&e) => Ok(Some(e)),
                Err(e) => Err(e.into()),
            }
        };
    let (mut lo, mut hi) = (0usize, keys.len().saturating_sub(1));
    let mut error = match keys.last() {
        Some(last) => probe(conn, last).await?,
        None => None,
    };
    if error.is_none() {
        return Ok(MigratorError::DataRejected {
            table: name,
            key: format!("(batch {range})"),
            detail: error::describe_db_error(original),
        });
    }
    // Smallest prefix that fails: its last key is the rejected row.
    while lo < hi {
        let mid = (lo + hi) / 2;
        match probe(conn, &keys[mid]).await? {
            Some(e) => {
                error = Some(e);
                hi = mid;
            }
            None => lo = mid + 1,
        }
    }
    let detail = error
        .as_ref()
        .map(error::describe_db_error)
        .unwrap_or_else(|| error::describe_db_error(original));
    Ok(MigratorError::DataRejected {
        table: name,
        key: keys[lo].clone(),
        detail,
    })
}
