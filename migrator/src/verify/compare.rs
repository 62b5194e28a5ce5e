//! Comparing one table: bucket checksums on both sides at once, then row fingerprints only for
//! the buckets whose checksums differ, then column values for a sample of the changed rows.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::Context;
use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection, Row};

use super::job::TableJob;
use super::report::{ChangedRow, TableReport};
use super::sql::Projection;

/// Target rows per bucket the bucket count aims for: small enough that a differing bucket costs
/// little to fetch row by row, large enough that the bucket list itself stays small.
const ROWS_PER_BUCKET: f64 = 64.0;
const MIN_BUCKETS: u32 = 1024;
const MAX_BUCKETS: u32 = 1 << 18;

pub fn bucket_mask(estimated_rows: f64) -> u32 {
    let wanted = (estimated_rows / ROWS_PER_BUCKET).ceil().max(1.0) as u64;
    let buckets = wanted
        .next_power_of_two()
        .clamp(u64::from(MIN_BUCKETS), u64::from(MAX_BUCKETS)) as u32;
    buckets - 1
}

type Checksums = HashMap<i32, (i64, String)>;

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Runs one of the comparison queries on one side; errors name the table, the side and the step.
async fn fetch(
    conn: &mut PgConnection,
    query: PgQuery<'_>,
    step: &str,
    side: &str,
    table: &str,
) -> anyhow::Result<Vec<PgRow>> {
    query
        .fetch_all(conn)
        .await
        .map_err(|e| anyhow::anyhow!(crate::error::describe_db_error(&e)))
        .with_context(|| format!("table {table}: {step} on the {side}"))
}

async fn checksums(
    conn: &mut PgConnection,
    sql: &str,
    side: &str,
    table: &str,
) -> anyhow::Result<Checksums> {
    let rows = fetch(conn, sqlx::query(sql), "computing checksums", side, table).await?;
    rows.iter()
        .map(|row| -> anyhow::Result<_> {
            Ok((row.try_get(0)?, (row.try_get(1)?, row.try_get(2)?)))
        })
        .collect()
}

async fn fingerprints(
    conn: &mut PgConnection,
    sql: &str,
    buckets: &[i32],
    side: &str,
    table: &str,
) -> anyhow::Result<HashMap<String, i64>> {
    let query = sqlx::query(sql).bind(buckets);
    let rows = fetch(
        conn,
        query,
        "reading rows of differing buckets",
        side,
        table,
    )
    .await?;
    rows.iter()
        .map(|row| -> anyhow::Result<_> { Ok((row.try_get(0)?, row.try_get(1)?)) })
        .collect()
}

async fn column_values(
    conn: &mut PgConnection,
    sql: &str,
    keys: &[String],
    side: &str,
    table: &str,
) -> anyhow::Result<HashMap<String, Vec<Option<String>>>> {
    let query = sqlx::query(sql).bind(keys);
    let rows = fetch(conn, query, "reading changed rows", side, table).await?;
    rows.iter()
        .map(|row| -> anyhow::Result<_> { Ok((row.try_get(0)?, row.try_get(1)?)) })
        .collect()
}

/// Each side reads the table in one snapshot (a `REPEATABLE READ READ ONLY` transaction for the
/// whole comparison), so that the row counts and the keys found by the drill-down agree even
/// while rows are being written: `source_rows - target_rows = missing - extra`.
const SNAPSHOT: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// Compares one table. `helpers`: further (source, target) connection pairs that compute shares
/// of the bucket checksums in the same snapshots (`verify --jobs`), exported by the first pair.
pub async fn compare_table(
    source: &mut PgConnection,
    target: &mut PgConnection,
    helpers: &mut [(PgConnection, PgConnection)],
    job: &TableJob,
    mask: u32,
    sample: usize,
) -> anyhow::Result<TableReport> {
    let begin = |side: &'static str| {
        move |e: sqlx::Error| {
            anyhow::anyhow!(
                "table {}: starting a snapshot on the {side}: {}",
                job.name,
                crate::error::describe_db_error(&e)
            )
        }
    };
    let (source_tx, target_tx) =
        tokio::join!(source.begin_with(SNAPSHOT), target.begin_with(SNAPSHOT));
    let mut source_tx = source_tx.map_err(begin("source"))?;
    let mut target_tx = target_tx.map_err(begin("target"))?;
    let mut shares = Vec::with_capacity(helpers.len());
    if !helpers.is_empty() {
        let export = "SELECT pg_export_snapshot()";
        let source_snapshot: String = sqlx::query_scalar(export)
            .fetch_one(&mut *source_tx)
            .await
            .map_err(begin("source"))?;
        let target_snapshot: String = sqlx::query_scalar(export)
            .fetch_one(&mut *target_tx)
            .await
            .map_err(begin("target"))?;
        for (helper_source, helper_target) in helpers.iter_mut() {
            let s = join_snapshot(helper_source, &source_snapshot)
                .await
                .map_err(begin("source"))?;
            let t = join_snapshot(helper_target, &target_snapshot)
                .await
                .map_err(begin("target"))?;
            shares.push((s, t));
        }
    }
    let report = compare_in_snapshots(
        &mut source_tx,
        &mut target_tx,
        &mut shares,
        job,
        mask,
        sample,
    )
    .await?;
    // Read-only: ending the snapshots cannot lose anything.
    for (s, t) in shares {
        let _ = tokio::join!(s.commit(), t.commit());
    }
    let _ = tokio::join!(source_tx.commit(), target_tx.commit());
    Ok(report)
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Postgres>;

/// A read-only transaction on `conn` that sees exactly the exported snapshot `id`.
async fn join_snapshot<'c>(conn: &'c mut PgConnection, id: &str) -> sqlx::Result<Tx<'c>> {
    let mut tx = conn.begin_with(SNAPSHOT).await?;
    sqlx::query(&format!(
        "SET TRANSACTION SNAPSHOT {}",
        crate::db::quote_literal(id)
    ))
    .execute(&mut *tx)
    .await?;
    Ok(tx)
}

/// The bucket checksums of one side: the first connection and each helper compute a share of
/// the buckets at once; the shares are disjoint, so their union is the whole.
async fn all_checksums(
    main: &mut PgConnection,
    helpers: Vec<&mut PgConnection>,
    p: &Projection,
    from: &str,
    mask: u32,
    side: &str,
    table: &str,
) -> anyhow::Result<Checksums> {
    let parts = helpers.len() as u32 + 1;
    let mut queries = vec![p.bucket_checksums_share(from, mask, 0, parts)];
    queries.extend((1..parts).map(|part| p.bucket_checksums_share(from, mask, part, parts)));
    let mut conns = vec![main];
    conns.extend(helpers);
    let shares = futures_util::future::try_join_all(
        conns
            .into_iter()
            .zip(&queries)
            .map(|(conn, sql)| checksums(conn, sql, side, table)),
    )
    .await?;
    Ok(shares.into_iter().flatten().collect())
}

async fn compare_in_snapshots(
    source: &mut PgConnection,
    target: &mut PgConnection,
    shares: &mut [(Tx<'_>, Tx<'_>)],
    job: &TableJob,
    mask: u32,
    sample: usize,
) -> anyhow::Result<TableReport> {
    let started = Instant::now();
    let p = &job.projection;
    let name = job.name.as_str();

    let (source_helpers, target_helpers): (Vec<&mut PgConnection>, Vec<&mut PgConnection>) =
        shares.iter_mut().map(|(s, t)| (&mut **s, &mut **t)).unzip();
    let (source_sums, target_sums) = tokio::join!(
        all_checksums(
            source,
            source_helpers,
            p,
            &job.source_from,
            mask,
            "source",
            name
        ),
        all_checksums(
            target,
            target_helpers,
            p,
            &job.target_from,
            mask,
            "target",
            name
        )
    );
    let (source_sums, target_sums) = (source_sums?, target_sums?);
    let source_rows: i64 = source_sums.values().map(|(n, _)| n).sum();
    let target_rows: i64 = target_sums.values().map(|(n, _)| n).sum();

    let mut differing: Vec<i32> = source_sums
        .iter()
        .filter(|(b, sum)| target_sums.get(b) != Some(sum))
        .map(|(b, _)| *b)
        .chain(
            target_sums
                .keys()
                .filter(|b| !source_sums.contains_key(b))
                .copied(),
        )
        .collect();
    differing.sort_unstable();

    let mut missing = Vec::new();
    let mut extra = Vec::new();
    let mut changed_keys = Vec::new();
    let mut rows_fetched = 0usize;
    if !differing.is_empty() {
        let source_sql = p.rows_in_buckets(&job.source_from, mask);
        let target_sql = p.rows_in_buckets(&job.target_from, mask);
        let (source_rows_map, target_rows_map) = tokio::join!(
            fingerprints(source, &source_sql, &differing, "source", name),
            fingerprints(target, &target_sql, &differing, "target", name)
        );
        let (source_rows_map, target_rows_map) = (source_rows_map?, target_rows_map?);
        rows_fetched = source_rows_map.len() + target_rows_map.len();
        for (key, hash) in &source_rows_map {
            match target_rows_map.get(key) {
                None => missing.push(key.clone()),
                Some(other) if other != hash => changed_keys.push(key.clone()),
                Some(_) => {}
            }
        }
        extra.extend(
            target_rows_map
                .keys()
                .filter(|k| !source_rows_map.contains_key(*k))
                .cloned(),
        );
    }
    missing.sort();
    extra.sort();
    changed_keys.sort();
    let target_newer = match &job.version {
        Some(version) if !changed_keys.is_empty() => {
            let source_sql = version.versions(p, &job.source_from);
            let rows = fetch(
                source,
                sqlx::query(&source_sql).bind(&changed_keys),
                "reading versions of changed rows",
                "source",
                name,
            )
            .await?;
            let mut keys = Vec::with_capacity(rows.len());
            let mut versions: Vec<Option<String>> = Vec::with_capacity(rows.len());
            for row in &rows {
                keys.push(row.try_get::<String, _>(0)?);
                versions.push(row.try_get(1)?);
            }
            let target_sql = version.newer_than(p, &job.target_from);
            let rows = fetch(
                target,
                sqlx::query(&target_sql).bind(&keys).bind(&versions),
                "comparing versions of changed rows",
                "target",
                name,
            )
            .await?;
            let mut newer: Vec<String> = rows
                .iter()
                .map(|row| row.try_get(0))
                .collect::<sqlx::Result<_>>()?;
            newer.sort();
            changed_keys.retain(|k| newer.binary_search(k).is_err());
            newer
        }
        _ => Vec::new(),
    };

    // Column names only for a sample: values may be secrets and are never printed.
    let sampled: Vec<String> = changed_keys.iter().take(sample).cloned().collect();
    let mut columns_by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !sampled.is_empty() {
        let source_sql = p.column_values(&job.source_from);
        let target_sql = p.column_values(&job.target_from);
        let (source_values, target_values) = tokio::join!(
            column_values(source, &source_sql, &sampled, "source", name),
            column_values(target, &target_sql, &sampled, "target", name)
        );
        let (source_values, target_values) = (source_values?, target_values?);
        for key in &sampled {
            if let (Some(s), Some(t)) = (source_values.get(key), target_values.get(key)) {
                let differing_columns = p
                    .columns
                    .iter()
                    .zip(s.iter().zip(t.iter()))
                    .filter(|(_, (a, b))| a != b)
                    .map(|((c, _), _)| c.clone())
                    .collect();
                columns_by_key.insert(key.clone(), differing_columns);
            }
        }
    }
    let changed = changed_keys
        .into_iter()
        .map(|key| ChangedRow {
            columns: columns_by_key.remove(&key),
            key,
        })
        .collect();

    Ok(TableReport::new(
        job,
        source_rows,
        target_rows,
        mask + 1,
        differing.len(),
        rows_fetched,
        missing,
        extra,
        changed,
        target_newer,
        started.elapsed(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_count_follows_the_table_size() {
        assert_eq!(bucket_mask(0.0), 1023);
        assert_eq!(bucket_mask(1_000_000.0), 16383);
        assert_eq!(bucket_mask(1e12), (1 << 18) - 1);
    }
}
