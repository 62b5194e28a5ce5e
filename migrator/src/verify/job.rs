//! What `verify` compares per table ([`TableJob`]: both sides' FROM clauses and the compared
//! projection), built from the resolved plan tables and `--ignore-column`. A leaf of the verify
//! modules: `compare` reads it, `report` names what it compared.

use anyhow::bail;

use super::sql::{self, Projection};
use crate::plan::{ResolvedTable, Source};

/// One table to compare, as both sides read it.
#[derive(Debug, Clone)]
pub struct TableJob {
    pub name: String,
    /// Shown in the report: the plan's source (table or SELECT).
    pub source_label: String,
    pub target: String,
    /// The target table as quoted SQL, `"schema"."table"`.
    pub target_sql: String,
    /// FROM clauses (with alias `v`) for each side.
    pub source_from: String,
    pub target_from: String,
    pub projection: Projection,
    pub ignored_columns: Vec<String>,
}

pub fn build_jobs(resolved: &[ResolvedTable], ignore: &[String]) -> anyhow::Result<Vec<TableJob>> {
    let mut ignored: Vec<(String, String)> = Vec::new();
    for spec in ignore {
        let Some((table, column)) = spec.rsplit_once('.') else {
            bail!("--ignore-column {spec:?}: expected TABLE.COLUMN, e.g. users.updated_at");
        };
        let Some(t) = resolved
            .iter()
            .find(|t| t.name() == table || t.plan.target.to_string() == table)
        else {
            let known: Vec<&str> = resolved.iter().map(|t| t.name()).collect();
            bail!(
                "--ignore-column {spec:?}: no table {table} among the verified tables ({})",
                known.join(", ")
            );
        };
        if !t.columns.iter().any(|c| c.name == column) {
            bail!(
                "--ignore-column {spec:?}: table {} has no compared column {column}",
                t.name()
            );
        }
        if t.key().name == column {
            bail!("--ignore-column {spec:?}: {column} is the key of table {}; the key cannot be ignored", t.name());
        }
        ignored.push((t.name().to_string(), column.to_string()));
    }
    Ok(resolved
        .iter()
        .map(|t| {
            let ignored_here: Vec<String> = ignored
                .iter()
                .filter(|(tn, _)| tn == t.name())
                .map(|(_, c)| c.clone())
                .collect();
            let projection = Projection {
                key: t.key().name.clone(),
                key_type: t.key().sql_type.clone(),
                columns: t
                    .columns
                    .iter()
                    .filter(|c| !ignored_here.contains(&c.name))
                    .map(|c| (c.name.clone(), c.sql_type.clone()))
                    .collect(),
            };
            TableJob {
                name: t.name().to_string(),
                source_label: match &t.plan.source {
                    Source::Table(name) => name.to_string(),
                    Source::Query(q) => q.clone(),
                },
                target: t.plan.target.to_string(),
                target_sql: t.plan.target.sql(),
                source_from: sql::from_clause(&t.source_projection_sql(), true),
                target_from: sql::from_clause(&t.plan.target.sql(), false),
                projection,
                ignored_columns: ignored_here,
            }
        })
        .collect())
}
