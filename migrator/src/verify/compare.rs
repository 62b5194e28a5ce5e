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

/// One key range of a table, as each side reads it (`verify --jobs`: one range per connection).
#[derive(Debug, Clone)]
pub struct Share {
    pub source_from: String,
    pub target_from: String,
}

/// The checksums of the whole table from those of its key ranges: a bucket holds rows of every
/// range, so its counts and fingerprint sums add up (sums as exact integers: each fingerprint is
/// 64 bits, so 2^63 rows would be needed to leave an i128). One share is passed through as is.
pub fn merge(shares: Vec<Checksums>) -> anyhow::Result<Checksums> {
    if shares.len() <= 1 {
        return Ok(shares.into_iter().next().unwrap_or_default());
    }
    let mut sums: HashMap<i32, (i64, i128)> = HashMap::new();
    for share in shares {
        for (bucket, (n, fingerprint)) in share {
            let value: i128 = fingerprint.parse().with_context(|| {
                format!("bucket {bucket}: fingerprint sum {fingerprint:?} is not an integer")
            })?;
            let entry = sums.entry(bucket).or_insert((0, 0));
            entry.0 += n;
            entry.1 += value;
        }
    }
    Ok(sums
        .into_iter()
        .map(|(bucket, (n, sum))| (bucket, (n, sum.to_string())))
        .collect())
}

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

/// Compares one table. `shares`: its key ranges (`verify --jobs`; empty or one: the whole table),
/// the first computed by the first pair, each further one by one of the `helpers`, (source,
/// target) connection pairs in the same snapshots, exported by the first pair.
pub async fn compare_table(
    source: &mut PgConnection,
    target: &mut PgConnection,
    helpers: &mut [(PgConnection, PgConnection)],
    job: &TableJob,
    shares: &[Share],
    mask: u32,
    sample: usize,
) -> anyhow::Result<TableReport> {
    let whole = [Share {
        source_from: job.source_from.clone(),
        target_from: job.target_from.clone(),
    }];
    let shares = if shares.len() > 1 { shares } else { &whole };
    anyhow::ensure!(
        shares.len() <= helpers.len() + 1,
        "table {}: {} key ranges for {} connections",
        job.name,
        shares.len(),
        helpers.len() + 1
    );
    let helpers = &mut helpers[..shares.len() - 1];
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
    let mut joined = Vec::with_capacity(helpers.len());
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
            joined.push((s, t));
        }
    }
    let report = compare_in_snapshots(
        &mut source_tx,
        &mut target_tx,
        &mut joined,
        job,
        shares,
        mask,
        sample,
    )
    .await?;
    // Read-only: ending the snapshots cannot lose anything.
    for (s, t) in joined {
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

/// The bucket checksums of one side: the first connection and each helper compute those of one
/// key range (`froms`, one per connection) at once; the ranges are disjoint and cover every key,
/// so their merged checksums are the whole table's.
async fn all_checksums(
    main: &mut PgConnection,
    helpers: Vec<&mut PgConnection>,
    p: &Projection,
    froms: &[&str],
    mask: u32,
    side: &str,
    table: &str,
) -> anyhow::Result<Checksums> {
    let queries: Vec<String> = froms
        .iter()
        .map(|from| p.bucket_checksums(from, mask))
        .collect();
    let mut conns = vec![main];
    conns.extend(helpers);
    let shares = futures_util::future::try_join_all(
        conns
            .into_iter()
            .zip(&queries)
            .map(|(conn, sql)| checksums(conn, sql, side, table)),
    )
    .await?;
    merge(shares).with_context(|| format!("table {table}: adding up the checksums of the {side}"))
}

async fn compare_in_snapshots(
    source: &mut PgConnection,
    target: &mut PgConnection,
    joined: &mut [(Tx<'_>, Tx<'_>)],
    job: &TableJob,
    shares: &[Share],
    mask: u32,
    sample: usize,
) -> anyhow::Result<TableReport> {
    let started = Instant::now();
    let p = &job.projection;
    let name = job.name.as_str();

    let (source_helpers, target_helpers): (Vec<&mut PgConnection>, Vec<&mut PgConnection>) =
        joined.iter_mut().map(|(s, t)| (&mut **s, &mut **t)).unzip();
    let source_froms: Vec<&str> = shares.iter().map(|s| s.source_from.as_str()).collect();
    let target_froms: Vec<&str> = shares.iter().map(|s| s.target_from.as_str()).collect();
    let (source_sums, target_sums) = tokio::join!(
        all_checksums(
            source,
            source_helpers,
            p,
            &source_froms,
            mask,
            "source",
            name
        ),
        all_checksums(
            target,
            target_helpers,
            p,
            &target_froms,
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
    fn key_range_checksums_add_up_to_the_whole_table() {
        let share = |entries: &[(i32, i64, &str)]| -> Checksums {
            entries
                .iter()
                .map(|(b, n, f)| (*b, (*n, f.to_string())))
                .collect()
        };
        let big = "9223372036854775807"; // i64::MAX: two of them leave 64 bits
        let merged = merge(vec![
            share(&[(0, 2, big), (1, 1, "-5")]),
            share(&[(0, 1, big), (2, 4, "17")]),
        ])
        .unwrap();
        assert_eq!(merged[&0], (3, "18446744073709551614".to_string()));
        assert_eq!(merged[&1], (1, "-5".to_string()));
        assert_eq!(merged[&2], (4, "17".to_string()));
        // One share (one connection): the sums exactly as the server rendered them.
        let one = share(&[(3, 1, "0042")]);
        assert_eq!(merge(vec![one.clone()]).unwrap(), one);
        assert!(merge(vec![share(&[(0, 1, "1.5")]), share(&[])]).is_err());
    }

    #[test]
    fn bucket_count_follows_the_table_size() {
        assert_eq!(bucket_mask(0.0), 1023);
        assert_eq!(bucket_mask(1_000_000.0), 16383);
        assert_eq!(bucket_mask(1e12), (1 << 18) - 1);
    }
}
