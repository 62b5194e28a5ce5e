//! The verify report: a table for people, JSON (schema `migrator-verify/v1`) for pipelines.

use std::time::Duration;

use serde::Serialize;

use super::job::TableJob;

/// `migrator verify --format json`. Stable schema, documented in docs/migrator.md.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub schema: &'static str,
    /// True when no table has a difference.
    pub identical: bool,
    /// Sum over tables of missing + extra + changed + target_newer rows.
    pub differences: u64,
    pub tables: Vec<TableReport>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableReport {
    /// Plan table name.
    pub table: String,
    /// The plan's source (table name or SELECT).
    pub source: String,
    /// Target table, `schema.table`.
    pub target: String,
    /// Key column (target name).
    pub key: String,
    pub identical: bool,
    /// Rows of the source projection.
    pub source_rows: i64,
    pub target_rows: i64,
    /// Keys present in the source projection and absent from the target, sorted.
    pub missing: Vec<String>,
    /// Keys present in the target and absent from the source projection, sorted.
    pub extra: Vec<String>,
    /// Keys present on both sides with different values, sorted.
    pub changed: Vec<ChangedRow>,
    /// Keys present on both sides whose target row has a newer version (plan `version` column)
    /// than the source's, sorted: writes the target holds that the source lacks. Not in `changed`.
    pub target_newer: Vec<String>,
    /// With `--settle`: keys that differed at first and no longer did at a later check (rows in
    /// flight while writes go on), sorted. Not differences.
    pub in_flux: Vec<String>,
    /// Columns left out of the comparison (`--ignore-column`).
    pub ignored_columns: Vec<String>,
    /// How the comparison went: number of key buckets, buckets whose checksums differed, rows
    /// fetched (both sides) to find the differing keys.
    pub buckets: u32,
    pub differing_buckets: usize,
    pub rows_fetched: usize,
    pub elapsed_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangedRow {
    pub key: String,
    /// Names of the columns that differ, for the first `--sample` changed rows of the table;
    /// `null` for the others.
    pub columns: Option<Vec<String>>,
}

impl TableReport {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        job: &TableJob,
        source_rows: i64,
        target_rows: i64,
        buckets: u32,
        differing_buckets: usize,
        rows_fetched: usize,
        missing: Vec<String>,
        extra: Vec<String>,
        changed: Vec<ChangedRow>,
        target_newer: Vec<String>,
        elapsed: Duration,
    ) -> TableReport {
        TableReport {
            table: job.name.clone(),
            source: job.source_label.clone(),
            target: job.target.clone(),
            key: job.projection.key.clone(),
            identical: missing.is_empty()
                && extra.is_empty()
                && changed.is_empty()
                && target_newer.is_empty()
                && source_rows == target_rows,
            source_rows,
            target_rows,
            missing,
            extra,
            changed,
            target_newer,
            in_flux: Vec::new(),
            ignored_columns: job.ignored_columns.clone(),
            buckets,
            differing_buckets,
            rows_fetched,
            elapsed_ms: elapsed.as_millis() as u64,
        }
    }

    /// `--settle`: keeps only the differences `later` (a re-check of the same table) still finds
    /// of the same kind; the others become in flux. Row counts are the later check's.
    pub fn keep_persistent(&mut self, later: &TableReport) {
        let mut flux = Vec::new();
        let mut keep = |keys: &mut Vec<String>, again: Vec<&String>| {
            keys.retain(|k| {
                let stays = again.contains(&k);
                if !stays {
                    flux.push(k.clone());
                }
                stays
            });
        };
        keep(&mut self.missing, later.missing.iter().collect());
        keep(&mut self.extra, later.extra.iter().collect());
        keep(&mut self.target_newer, later.target_newer.iter().collect());
        let changed_again: Vec<&String> = later.changed.iter().map(|c| &c.key).collect();
        self.changed.retain(|c| {
            let stays = changed_again.contains(&&c.key);
            if !stays {
                flux.push(c.key.clone());
            }
            stays
        });
        self.in_flux.extend(flux);
        self.in_flux.sort();
        self.in_flux.dedup();
        self.source_rows = later.source_rows;
        self.target_rows = later.target_rows;
        self.identical = self.differences() == 0;
    }

    pub fn differences(&self) -> u64 {
        (self.missing.len() + self.extra.len() + self.changed.len() + self.target_newer.len())
            as u64
    }
}

impl VerifyReport {
    pub fn new(tables: Vec<TableReport>) -> VerifyReport {
        let differences = tables.iter().map(TableReport::differences).sum();
        let identical = tables.iter().all(|t| t.identical);
        VerifyReport {
            schema: "migrator-verify/v1",
            identical,
            differences,
            tables,
        }
    }

    /// One line for the cutover checklist.
    pub fn summary_line(&self) -> String {
        let differing: Vec<String> = self
            .tables
            .iter()
            .filter(|t| !t.identical)
            .map(|t| {
                format!(
                    "{} ({} missing, {} extra, {} changed, {} newer on the target)",
                    t.table,
                    t.missing.len(),
                    t.extra.len(),
                    t.changed.len(),
                    t.target_newer.len()
                )
            })
            .collect();
        if differing.is_empty() {
            format!("{} tables identical", self.tables.len())
        } else {
            format!("differences in {}", differing.join(", "))
        }
    }

    /// The readable report; `sample` limits the keys listed per kind and table.
    pub fn render_text(&self, sample: usize) -> String {
        let mut out = String::new();
        let width = self
            .tables
            .iter()
            .map(|t| t.table.len())
            .max()
            .unwrap_or(5)
            .max(5);
        out.push_str(&format!(
            "{:<width$}  {:>12}  {:>12}  {:>8}  {:>8}  {:>8}  {:>8}  {:>9}  result\n",
            "table", "source rows", "target rows", "missing", "extra", "changed", "newer", "time"
        ));
        for t in &self.tables {
            out.push_str(&format!(
                "{:<width$}  {:>12}  {:>12}  {:>8}  {:>8}  {:>8}  {:>8}  {:>7}ms  {}\n",
                t.table,
                t.source_rows,
                t.target_rows,
                t.missing.len(),
                t.extra.len(),
                t.changed.len(),
                t.target_newer.len(),
                t.elapsed_ms,
                if t.identical { "identical" } else { "DIFFERS" }
            ));
        }
        for t in self
            .tables
            .iter()
            .filter(|t| !t.identical || !t.in_flux.is_empty())
        {
            out.push_str(&format!(
                "\n{} ({} → {}, key {}):\n",
                t.table, t.source, t.target, t.key
            ));
            let list = |out: &mut String, kind: &str, keys: Vec<String>| {
                for line in keys.iter().take(sample) {
                    out.push_str(&format!("  {kind:<8} {line}\n"));
                }
                if keys.len() > sample {
                    out.push_str(&format!(
                        "  {kind:<8} … and {} more (all keys: --format json)\n",
                        keys.len() - sample
                    ));
                }
            };
            list(&mut out, "missing", t.missing.clone());
            list(&mut out, "extra", t.extra.clone());
            let changed = t
                .changed
                .iter()
                .map(|c| match &c.columns {
                    Some(cols) => format!("{}  columns: {}", c.key, cols.join(", ")),
                    None => c.key.clone(),
                })
                .collect();
            list(&mut out, "changed", changed);
            list(&mut out, "newer", t.target_newer.clone());
            list(&mut out, "in flux", t.in_flux.clone());
            if !t.ignored_columns.is_empty() {
                out.push_str(&format!(
                    "  (ignored columns: {})\n",
                    t.ignored_columns.join(", ")
                ));
            }
        }
        let in_flux: usize = self.tables.iter().map(|t| t.in_flux.len()).sum();
        if in_flux > 0 {
            out.push_str(&format!(
                "\n{in_flux} keys were in flux (differed, then settled): not differences\n"
            ));
        }
        out.push_str(&if self.identical {
            format!("\nidentical: {} tables, 0 differences\n", self.tables.len())
        } else {
            format!("\nDIFFERENT: {} differing rows\n", self.differences)
        });
        out
    }
}
