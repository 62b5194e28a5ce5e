//! The copy plan: a TOML file that says which legacy data goes where (format in docs/migrator.md).
//!
//! Two steps, as everywhere in this project: [`Plan::parse`] reads the file into a checked,
//! typed [`Plan`] (errors name the table/column); [`resolve`] then checks it against both
//! databases and returns [`ResolvedTable`]s, which know the target column types and build every
//! SQL statement `copy` and `verify` run, so both read exactly the same projection:
//!
//! ```text
//! SELECT CAST(("id") AS uuid) AS "id", CAST(coalesce(("is_active"), (true)) AS boolean) AS "is_active", …
//! FROM "legacy"."users" AS src
//! ```
//!
//! Each source expression is cast to the target column's exact type (with typmod), so source and
//! target values have the same type and the same text rendering. Columns come in plan order with
//! the key column moved first. Keyset pagination compares and orders by the key *expression*
//! ([`ResolvedTable::source_key_sql`]), never by an output alias.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;
use sqlx::postgres::PgConnection;
use sqlx::Row;

use crate::db::{quote_ident, quote_literal};
use crate::error::MigratorError;

/// The plan shipped with the migrator (`migrations/plan.toml`), used when `--plan` is not given.
pub const SHIPPED_PLAN: &str = include_str!("../../migrations/plan.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanDto {
    /// The target has served requests as primary (the cutover happened): rows only in the target
    /// may be its own writes, so `copy --prune` is refused.
    #[serde(default)]
    target_has_taken_over: bool,
    #[serde(default)]
    table: Vec<TableDto>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableDto {
    name: String,
    source: Option<String>,
    source_query: Option<String>,
    target: String,
    key: String,
    /// A column that orders versions of a row (e.g. `updated_at`): `copy` never replaces a target
    /// row whose version is newer than the source's.
    version: Option<String>,
    /// Plan tables (earlier in the plan) that this table's copy may overlap: its ranges are
    /// claimable before those tables are done, although its target table references them.
    #[serde(default)]
    may_overlap: Vec<String>,
    columns: Vec<ColumnDto>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ColumnDto {
    name: String,
    from: Option<String>,
    default: Option<String>,
}

/// `schema.table` (schema defaults to `public`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    fn parse(text: &str) -> Option<TableName> {
        let parts: Vec<&str> = text.trim().split('.').collect();
        let valid = |s: &str| !s.is_empty() && !s.contains(char::is_whitespace) && !s.contains('"');
        match parts.as_slice() {
            [name] if valid(name) => Some(TableName {
                schema: "public".into(),
                name: name.to_string(),
            }),
            [schema, name] if valid(schema) && valid(name) => Some(TableName {
                schema: schema.to_string(),
                name: name.to_string(),
            }),
            _ => None,
        }
    }

    /// The quoted SQL name, `"schema"."table"`.
    pub fn sql(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Table(TableName),
    /// A SELECT whose output columns the `from` expressions refer to.
    Query(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnPlan {
    /// Target column name.
    pub name: String,
    /// SQL expression over the source row (default: the source column of the same name).
    pub from: String,
    /// SQL expression used when `from` is NULL.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePlan {
    /// The name used by `--tables`, checkpoints and reports.
    pub name: String,
    pub source: Source,
    pub target: TableName,
    /// Target column that identifies a row (must be unique in the target); its `from` expression
    /// is the source key.
    pub key: String,
    /// Target column that orders versions of a row (`version = "updated_at"`): the upsert keeps a
    /// target row whose version is newer than the source's, and `verify` reports it as such.
    pub version: Option<String>,
    /// Earlier plan tables this table's copy may overlap (`may_overlap = ["users"]`): `copy`
    /// does not wait for them to be done before claiming this table's ranges.
    pub may_overlap: Vec<String>,
    /// Key column first, then the others in plan order.
    pub columns: Vec<ColumnPlan>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub tables: Vec<TablePlan>,
    /// Stable hash of the plan text: a resumed copy must use the plan it started with.
    pub fingerprint: String,
    /// `target_has_taken_over = true`: the target has served as primary; `copy --prune` refuses.
    pub target_has_taken_over: bool,
}

fn invalid(msg: impl Into<String>) -> MigratorError {
    MigratorError::PlanInvalid(msg.into())
}

impl Plan {
    /// Reads `--plan` (or the shipped plan when `None`).
    pub fn load(path: Option<&Path>) -> Result<Plan, MigratorError> {
        match path {
            None => Plan::parse(SHIPPED_PLAN, "the shipped plan"),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    MigratorError::Usage(format!("cannot read plan file {}: {e}", path.display()))
                })?;
                Plan::parse(&text, &path.display().to_string())
            }
        }
    }

    /// Parses and checks a plan; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Plan, MigratorError> {
        let dto: PlanDto = toml::from_str(text).map_err(|e| invalid(format!("{origin}: {e}")))?;
        if dto.table.is_empty() {
            return Err(invalid(format!("{origin}: no [[table]] entries")));
        }
        let all_names: Vec<String> = dto.table.iter().map(|t| t.name.clone()).collect();
        let dto_names: HashSet<&str> = all_names.iter().map(String::as_str).collect();
        let mut names = HashSet::new();
        let mut tables = Vec::with_capacity(dto.table.len());
        for t in dto.table {
            let label = format!("{origin}: table {}", t.name);
            if t.name.trim().is_empty() {
                return Err(invalid(format!("{origin}: a table has an empty name")));
            }
            if !names.insert(t.name.clone()) {
                return Err(invalid(format!("{label}: listed twice")));
            }
            let source = match (t.source, t.source_query) {
                (Some(table), None) => {
                    Source::Table(TableName::parse(&table).ok_or_else(|| {
                        invalid(format!(
                            "{label}: source {table:?} is not a table name (schema.table)"
                        ))
                    })?)
                }
                (None, Some(query)) if !query.trim().is_empty() => Source::Query(query),
                (None, Some(_)) => return Err(invalid(format!("{label}: source_query is empty"))),
                (Some(_), Some(_)) => {
                    return Err(invalid(format!(
                        "{label}: give either source or source_query, not both"
                    )))
                }
                (None, None) => {
                    return Err(invalid(format!(
                        "{label}: source (a table) or source_query (a SELECT) is required"
                    )))
                }
            };
            let target = TableName::parse(&t.target).ok_or_else(|| {
                invalid(format!(
                    "{label}: target {:?} is not a table name (schema.table)",
                    t.target
                ))
            })?;
            if t.columns.is_empty() {
                return Err(invalid(format!("{label}: no columns")));
            }
            let mut seen = HashSet::new();
            let mut columns = Vec::with_capacity(t.columns.len());
            for c in t.columns {
                if c.name.is_empty() || !seen.insert(c.name.clone()) {
                    return Err(invalid(format!(
                        "{label}: column {:?} is empty or listed twice",
                        c.name
                    )));
                }
                let blank = |s: &Option<String>| s.as_deref().is_some_and(|s| s.trim().is_empty());
                if blank(&c.from) || blank(&c.default) {
                    return Err(invalid(format!(
                        "{label}: column {}: empty `from` or `default`",
                        c.name
                    )));
                }
                columns.push(ColumnPlan {
                    from: c.from.unwrap_or_else(|| quote_ident(&c.name)),
                    name: c.name,
                    default: c.default,
                });
            }
            let key_index = columns
                .iter()
                .position(|c| c.name == t.key)
                .ok_or_else(|| {
                    invalid(format!(
                        "{label}: key column {} is not among its columns",
                        t.key
                    ))
                })?;
            if columns[key_index].default.is_some() {
                return Err(invalid(format!(
                    "{label}: key column {} cannot have a default",
                    t.key
                )));
            }
            let key_column = columns.remove(key_index);
            columns.insert(0, key_column);
            if let Some(version) = &t.version {
                if *version == t.key || !columns.iter().any(|c| &c.name == version) {
                    return Err(invalid(format!(
                        "{label}: version column {version} must be one of its columns other than the key"
                    )));
                }
            }
            let mut overlaps = HashSet::new();
            for parent in &t.may_overlap {
                if !overlaps.insert(parent) {
                    return Err(invalid(format!(
                        "{label}: may_overlap lists {parent} twice"
                    )));
                }
                if *parent == t.name {
                    return Err(invalid(format!(
                        "{label}: may_overlap names the table itself"
                    )));
                }
                // Parents come first in the plan: only an earlier table can be waited for.
                if !tables.iter().any(|p: &TablePlan| p.name == *parent) {
                    let why = if dto_names.contains(parent.as_str()) {
                        "comes later in the plan (parents are listed before their children)"
                    } else {
                        "is not a table of the plan"
                    };
                    return Err(invalid(format!(
                        "{label}: may_overlap names {parent}, which {why}"
                    )));
                }
            }
            tables.push(TablePlan {
                name: t.name,
                source,
                target,
                key: t.key,
                version: t.version,
                may_overlap: t.may_overlap,
                columns,
            });
        }
        Ok(Plan {
            tables,
            fingerprint: fnv1a_hex(text),
            target_has_taken_over: dto.target_has_taken_over,
        })
    }

    /// Whether this is the plan shipped in the binary (given or not with `--plan`): the one plan
    /// whose target schema is this repository's migrations.
    pub fn is_shipped(&self) -> bool {
        self.fingerprint == fnv1a_hex(SHIPPED_PLAN)
    }

    /// The tables named in `--tables` (all when empty), in plan order.
    pub fn select(&self, names: &[String]) -> Result<Vec<&TablePlan>, MigratorError> {
        for name in names {
            if !self.tables.iter().any(|t| &t.name == name) {
                let known: Vec<&str> = self.tables.iter().map(|t| t.name.as_str()).collect();
                return Err(invalid(format!(
                    "--tables: the plan has no table {name} (it has: {})",
                    known.join(", ")
                )));
            }
        }
        Ok(self
            .tables
            .iter()
            .filter(|t| names.is_empty() || names.contains(&t.name))
            .collect())
    }
}

fn fnv1a_hex(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.as_bytes() {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// A target column with its type, and the source expression that fills it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedColumn {
    pub name: String,
    /// `format_type` of the target column, e.g. `timestamp with time zone`, `numeric(10,2)`.
    pub sql_type: String,
    /// The binary COPY format of the type holds no database-specific type OIDs (it is not a
    /// composite, nor an array of a user-defined type), so binary data moves between databases.
    pub binary_portable: bool,
    pub from: String,
    pub default: Option<String>,
}

impl ResolvedColumn {
    /// The source expression with its NULL default, cast to the target type.
    pub fn source_expr(&self) -> String {
        match &self.default {
            Some(default) => format!(
                "CAST(coalesce(({}), ({default})) AS {})",
                self.from, self.sql_type
            ),
            None => format!("CAST(({}) AS {})", self.from, self.sql_type),
        }
    }
}

/// A plan table checked against both databases.
#[derive(Debug, Clone)]
pub struct ResolvedTable {
    pub plan: TablePlan,
    /// Key first, then plan order.
    pub columns: Vec<ResolvedColumn>,
}

/// Optional parts of a generated SELECT.
#[derive(Debug, Clone, Default)]
pub struct Window<'a> {
    /// Only keys strictly greater than this key (as text; cast to the key type).
    pub after: Option<&'a str>,
    /// Only keys less than or equal to this key.
    pub up_to: Option<&'a str>,
    pub ordered: bool,
    pub limit: Option<u64>,
}

impl ResolvedTable {
    pub fn name(&self) -> &str {
        &self.plan.name
    }

    pub fn key(&self) -> &ResolvedColumn {
        &self.columns[0]
    }

    /// The version column, when the plan names one.
    pub fn version(&self) -> Option<&ResolvedColumn> {
        let name = self.plan.version.as_deref()?;
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|c| c.name.as_str()).collect()
    }

    /// Quoted, comma-separated target column list (key first).
    pub fn target_column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `FROM` item of the source, aliased `src`.
    pub fn source_from_sql(&self) -> String {
        match &self.plan.source {
            Source::Table(t) => format!("{} AS src", t.sql()),
            Source::Query(q) => format!("({q}) AS src"),
        }
    }

    /// The source key expression (cast to the key type) used for WHERE and ORDER BY.
    pub fn source_key_sql(&self) -> String {
        self.key().source_expr()
    }

    /// `key_sql > after AND key_sql <= up_to`, literal keys cast to the key type.
    fn window_predicate(&self, key_sql: &str, window: &Window<'_>) -> Vec<String> {
        let ty = &self.key().sql_type;
        let mut preds = Vec::new();
        if let Some(after) = window.after {
            preds.push(format!(
                "{key_sql} > CAST({} AS {ty})",
                quote_literal(after)
            ));
        }
        if let Some(up_to) = window.up_to {
            preds.push(format!(
                "{key_sql} <= CAST({} AS {ty})",
                quote_literal(up_to)
            ));
        }
        preds
    }

    fn finish(
        select: String,
        key_sql: &str,
        mut preds: Vec<String>,
        extra: Option<&str>,
        window: &Window<'_>,
    ) -> String {
        if let Some(extra) = extra {
            preds.push(format!("({extra})"));
        }
        let mut sql = select;
        if !preds.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&preds.join(" AND "));
        }
        if window.ordered {
            sql.push_str(&format!(" ORDER BY {key_sql}"));
        }
        if let Some(limit) = window.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        sql
    }

    /// The source projection: `SELECT <expr> AS "<target column>", … FROM <source> AS src`.
    pub fn source_projection_sql(&self) -> String {
        let items: Vec<String> = self
            .columns
            .iter()
            .map(|c| format!("{} AS {}", c.source_expr(), quote_ident(&c.name)))
            .collect();
        format!(
            "SELECT {} FROM {}",
            items.join(", "),
            self.source_from_sql()
        )
    }

    /// The source projection restricted to a key window; `extra` is an additional predicate over
    /// source columns (use [`Self::source_key_sql`] to refer to the key).
    pub fn source_select_sql(&self, window: &Window<'_>, extra: Option<&str>) -> String {
        let key_sql = self.source_key_sql();
        let preds = self.window_predicate(&key_sql, window);
        Self::finish(self.source_projection_sql(), &key_sql, preds, extra, window)
    }

    /// The key (as text) `offset` rows after `after` (and not beyond `up_to`) in key order: `copy`
    /// uses it to cut the source into ranges and windows of `offset + 1` rows (an index-only scan
    /// when the key is a plain column).
    pub fn source_key_at_sql(
        &self,
        after: Option<&str>,
        up_to: Option<&str>,
        offset: u64,
    ) -> String {
        let key_sql = self.source_key_sql();
        let window = Window {
            after,
            up_to,
            ordered: true,
            ..Window::default()
        };
        let preds = self.window_predicate(&key_sql, &window);
        let select = format!(
            "SELECT CAST({key_sql} AS text) FROM {}",
            self.source_from_sql()
        );
        let sql = Self::finish(select, &key_sql, preds, None, &window);
        format!("{sql} OFFSET {offset} LIMIT 1")
    }

    /// The greatest key (as text) after `after` and up to `up_to`; NULL keys excluded.
    pub fn source_last_key_sql(&self, after: Option<&str>, up_to: Option<&str>) -> String {
        let key_sql = self.source_key_sql();
        let mut preds = self.window_predicate(
            &key_sql,
            &Window {
                after,
                up_to,
                ..Window::default()
            },
        );
        preds.push(format!("{key_sql} IS NOT NULL"));
        format!(
            "SELECT CAST({key_sql} AS text) FROM {} WHERE {} ORDER BY {key_sql} DESC LIMIT 1",
            self.source_from_sql(),
            preds.join(" AND ")
        )
    }

    /// `SELECT count(<column's source expression>)` over a key window: fails exactly when the
    /// column's value of some row in the window does not convert to the target type.
    pub fn source_column_check_sql(&self, column: &ResolvedColumn, window: &Window<'_>) -> String {
        let key_sql = self.source_key_sql();
        let preds = self.window_predicate(&key_sql, window);
        let select = format!(
            "SELECT count({}) FROM {}",
            column.source_expr(),
            self.source_from_sql()
        );
        let unordered = Window {
            ordered: false,
            ..window.clone()
        };
        Self::finish(select, &key_sql, preds, None, &unordered)
    }

    /// The keys (as text) of a key window, in key order.
    pub fn source_keys_sql(&self, window: &Window<'_>) -> String {
        let key_sql = self.source_key_sql();
        let preds = self.window_predicate(&key_sql, window);
        let select = format!(
            "SELECT CAST({key_sql} AS text) FROM {}",
            self.source_from_sql()
        );
        let ordered = Window {
            ordered: true,
            ..window.clone()
        };
        Self::finish(select, &key_sql, preds, None, &ordered)
    }

    /// The target's keys (as text) in a key window.
    pub fn target_keys_sql(&self, window: &Window<'_>) -> String {
        let key_sql = quote_ident(&self.key().name);
        let preds = self.window_predicate(&key_sql, window);
        let select = format!(
            "SELECT CAST({key_sql} AS text) FROM {}",
            self.plan.target.sql()
        );
        Self::finish(select, &key_sql, preds, None, window)
    }

    /// The target table's rows in a key window (every column): `verify --jobs` reads one key
    /// range per connection.
    pub fn target_window_sql(&self, window: &Window<'_>) -> String {
        let key_sql = quote_ident(&self.key().name);
        let preds = self.window_predicate(&key_sql, window);
        let select = format!("SELECT * FROM {}", self.plan.target.sql());
        Self::finish(select, &key_sql, preds, None, window)
    }

    /// The target side: `SELECT "<col>", … FROM <target table>` over the same key window.
    pub fn target_select_sql(&self, window: &Window<'_>, extra: Option<&str>) -> String {
        let key_sql = quote_ident(&self.key().name);
        let preds = self.window_predicate(&key_sql, window);
        let select = format!(
            "SELECT {} FROM {}",
            self.target_column_list(),
            self.plan.target.sql()
        );
        Self::finish(select, &key_sql, preds, extra, window)
    }
}

/// Target column types a version column may have: totally ordered, compared the same way on both
/// sides, and rendered as text that casts back to the same value (`verify` sends one side's
/// versions to the other to compare them).
pub const VERSION_TYPES: [&str; 7] = [
    "smallint",
    "integer",
    "bigint",
    "date",
    "timestamp without time zone",
    "timestamp with time zone",
    "numeric",
];

struct TargetColumn {
    name: String,
    sql_type: String,
    not_null: bool,
    has_default: bool,
    attnum: i16,
    binary_portable: bool,
}

/// Checks `tables` against both databases: tables and columns exist, every target column that
/// needs a value gets one, the key is unique in the target, and every source expression runs.
/// Errors are [`MigratorError::PlanInvalid`] naming the table and column.
pub async fn resolve(
    source: &mut PgConnection,
    target: &mut PgConnection,
    tables: &[&TablePlan],
) -> anyhow::Result<Vec<ResolvedTable>> {
    let mut resolved = Vec::with_capacity(tables.len());
    for table in tables {
        resolved.push(resolve_table(source, target, table).await?);
    }
    Ok(resolved)
}

async fn regclass(conn: &mut PgConnection, name: &TableName) -> sqlx::Result<Option<i64>> {
    let row = sqlx::query("SELECT to_regclass($1)::oid::int8 AS oid")
        .bind(name.sql())
        .fetch_one(&mut *conn)
        .await?;
    row.try_get::<Option<i64>, _>("oid")
}

async fn resolve_table(
    source: &mut PgConnection,
    target: &mut PgConnection,
    table: &TablePlan,
) -> anyhow::Result<ResolvedTable> {
    let label = format!("table {}", table.name);

    // Target: table, columns, types, key uniqueness.
    let Some(target_oid) = regclass(target, &table.target).await? else {
        return Err(invalid(format!(
            "{label}: target table {} does not exist in the target database",
            table.target
        ))
        .into());
    };
    let rows = sqlx::query(
        "SELECT attname::text AS name, format_type(atttypid, atttypmod) AS sql_type, attnotnull AS not_null, \
                atthasdef AS has_default, attnum, \
                NOT (t.typtype = 'c' OR (t.typcategory = 'A' AND t.typelem >= 16384)) AS binary_portable \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
    )
    .bind(target_oid)
    .fetch_all(&mut *target)
    .await?;
    let target_columns: Vec<TargetColumn> = rows
        .iter()
        .map(|r| {
            Ok(TargetColumn {
                name: r.try_get("name")?,
                sql_type: r.try_get("sql_type")?,
                not_null: r.try_get("not_null")?,
                has_default: r.try_get("has_default")?,
                attnum: r.try_get("attnum")?,
                binary_portable: r.try_get("binary_portable")?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    let mut columns = Vec::with_capacity(table.columns.len());
    for c in &table.columns {
        let Some(tc) = target_columns.iter().find(|tc| tc.name == c.name) else {
            return Err(invalid(format!(
                "{label}: target column {}.{} does not exist in the target database",
                table.target, c.name
            ))
            .into());
        };
        columns.push(ResolvedColumn {
            name: c.name.clone(),
            sql_type: tc.sql_type.clone(),
            binary_portable: tc.binary_portable,
            from: c.from.clone(),
            default: c.default.clone(),
        });
    }
    for tc in &target_columns {
        if tc.not_null && !tc.has_default && !table.columns.iter().any(|c| c.name == tc.name) {
            return Err(invalid(format!(
                "{label}: target column {}.{} is NOT NULL without a default, but the plan gives it no value",
                table.target, tc.name
            ))
            .into());
        }
    }
    let key_attnum = target_columns
        .iter()
        .find(|tc| tc.name == table.key)
        .map(|tc| tc.attnum)
        .unwrap_or(0);
    let unique: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = $1::int8::oid AND indisunique AND indpred IS NULL \
                 AND indnkeyatts = 1 AND indkey[0] = $2)",
    )
    .bind(target_oid)
    .bind(key_attnum)
    .fetch_one(&mut *target)
    .await?;
    if !unique {
        return Err(invalid(format!(
            "{label}: key column {}.{} has no unique index or primary key of its own in the target",
            table.target, table.key
        ))
        .into());
    }

    if let Some(version) = &table.version {
        let sql_type = columns
            .iter()
            .find(|c| &c.name == version)
            .map(|c| c.sql_type.clone())
            .unwrap_or_default();
        if !VERSION_TYPES.contains(&sql_type.as_str()) {
            return Err(invalid(format!(
                "{label}: version column {}.{version} is of type {sql_type}, which does not order versions: \
                 a version column is an integer or a date/time ({})",
                table.target,
                VERSION_TYPES.join(", ")
            ))
            .into());
        }
    }

    let resolved = ResolvedTable {
        plan: table.clone(),
        columns,
    };

    // Source: table and plain columns first (precise messages), then every expression runs.
    match &table.source {
        Source::Table(source_table) => {
            let Some(source_oid) = regclass(source, source_table).await? else {
                return Err(invalid(format!(
                    "{label}: source table {source_table} does not exist in the source database"
                ))
                .into());
            };
            let names: Vec<String> = sqlx::query_scalar(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = $1::int8::oid AND attnum > 0 AND NOT attisdropped",
            )
            .bind(source_oid)
            .fetch_all(&mut *source)
            .await?;
            for c in &table.columns {
                if c.from == quote_ident(&c.name) && !names.contains(&c.name) {
                    return Err(invalid(format!(
                        "{label}: source column {source_table}.{} does not exist in the source database (give the column a `from` expression)",
                        c.name
                    ))
                    .into());
                }
            }
        }
        Source::Query(query) => {
            let probe = format!("SELECT * FROM ({query}) AS src LIMIT 0");
            if let Err(e) = sqlx::query(&probe).fetch_optional(&mut *source).await {
                if crate::error::is_statement_error(&e) {
                    return Err(invalid(format!(
                        "{label}: source_query fails on the source: {}",
                        crate::error::describe_db_error(&e)
                    ))
                    .into());
                }
                return Err(e.into());
            }
        }
    }
    let probe = format!("{} LIMIT 0", resolved.source_projection_sql());
    if let Err(e) = sqlx::query(&probe).fetch_optional(&mut *source).await {
        if !crate::error::is_statement_error(&e) {
            return Err(e.into());
        }
        // Find the column whose expression fails, to name it.
        for c in &resolved.columns {
            let one = format!(
                "SELECT {} FROM {} LIMIT 0",
                c.source_expr(),
                resolved.source_from_sql()
            );
            if let Err(e) = sqlx::query(&one).fetch_optional(&mut *source).await {
                return Err(invalid(format!(
                    "{label}: column {}: source expression `{}`{} fails on the source: {}",
                    c.name,
                    c.from,
                    c.default
                        .as_deref()
                        .map(|d| format!(" (default `{d}`)"))
                        .unwrap_or_default(),
                    crate::error::describe_db_error(&e)
                ))
                .into());
            }
        }
        return Err(invalid(format!(
            "{label}: the source projection fails: {}",
            crate::error::describe_db_error(&e)
        ))
        .into());
    }
    check_types(source, &resolved, &label).await?;
    Ok(resolved)
}

/// Refuses a column whose source expression has a type that converts to the target column's type
/// only by parsing text that may not parse (`text` → `boolean`, `uuid`, `timestamptz`, an enum …):
/// such a copy fails on the first value that does not convert. Compatible are: the same type, a
/// string target, types of the same category (numbers, date/times, arrays, …), and types with an
/// implicit or assignment cast. The source expression's type comes from preparing the projection
/// on the source (no row is read); when the driver cannot describe it, nothing is refused.
async fn check_types(
    source: &mut PgConnection,
    table: &ResolvedTable,
    label: &str,
) -> anyhow::Result<()> {
    use sqlx::{Executor, Statement};

    let raw: Vec<String> = table
        .columns
        .iter()
        .map(|c| match &c.default {
            Some(default) => format!("coalesce(({}), ({default}))", c.from),
            None => format!("({})", c.from),
        })
        .collect();
    let sql = format!(
        "SELECT {} FROM {} LIMIT 0",
        raw.join(", "),
        table.source_from_sql()
    );
    let Ok(statement) = source.prepare(&sql).await else {
        return Ok(());
    };
    let source_types: Vec<Option<i64>> = statement
        .columns()
        .iter()
        .map(|c| sqlx::Column::type_info(c).oid().map(|oid| i64::from(oid.0)))
        .collect();
    for (column, source_type) in table.columns.iter().zip(source_types) {
        let Some(oid) = source_type else {
            continue;
        };
        let found: Option<(bool, String)> = sqlx::query_as(
            "SELECT s.oid = t.oid OR t.typcategory = 'S' OR s.typcategory = t.typcategory \
                    OR EXISTS (SELECT 1 FROM pg_cast WHERE castsource = s.oid AND casttarget = t.oid AND castcontext IN ('i', 'a')), \
                    format_type(s.oid, NULL) \
             FROM pg_type s, pg_type t WHERE s.oid = $1::int8::oid AND t.oid = to_regtype($2)",
        )
        .bind(oid)
        .bind(&column.sql_type)
        .fetch_optional(&mut *source)
        .await?;
        if let Some((false, source_name)) = found {
            return Err(invalid(format!(
                "{label}: column {}: the source expression `{}`{} is of type {source_name}, the target column is {}: \
                 {source_name} converts to {} only by parsing, which fails on values that do not parse; \
                 write the conversion into the plan (e.g. from = \"({})::{}\", or a CASE expression) to accept it",
                column.name,
                column.from,
                column
                    .default
                    .as_deref()
                    .map(|d| format!(" (default `{d}`)"))
                    .unwrap_or_default(),
                column.sql_type,
                column.sql_type,
                column.from,
                column.sql_type,
            ))
            .into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_plan_parses_with_key_first() {
        let plan = Plan::parse(SHIPPED_PLAN, "shipped").expect("shipped plan");
        let names: Vec<&str> = plan.tables.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "users",
                "conversations",
                "messages",
                "tasks",
                "task_executions"
            ]
        );
        for t in &plan.tables {
            assert_eq!(t.columns[0].name, t.key);
        }
    }

    #[test]
    fn may_overlap_names_earlier_plan_tables_only() {
        let plan_with = |overlap: &str| {
            format!(
                "[[table]]\nname='users'\nsource='legacy.users'\ntarget='auth.users'\nkey='id'\ncolumns=[{{name='id'}}]\n\
                 [[table]]\nname='conversations'\nsource='legacy.conversations'\ntarget='chat.conversations'\nkey='id'\n\
                 may_overlap={overlap}\ncolumns=[{{name='id'}}]\n\
                 [[table]]\nname='messages'\nsource='legacy.messages'\ntarget='chat.messages'\nkey='id'\ncolumns=[{{name='id'}}]\n"
            )
        };
        let plan = Plan::parse(&plan_with("['users']"), "p.toml").expect("valid");
        assert_eq!(plan.tables[1].may_overlap, ["users"]);
        assert!(plan.tables[0].may_overlap.is_empty());
        for (overlap, expected) in [
            (
                "['userz']",
                "may_overlap names userz, which is not a table of the plan",
            ),
            (
                "['messages']",
                "may_overlap names messages, which comes later in the plan",
            ),
            ("['conversations']", "may_overlap names the table itself"),
            ("['users', 'users']", "may_overlap lists users twice"),
        ] {
            let err = Plan::parse(&plan_with(overlap), "p.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("table conversations") && err.contains(expected),
                "{overlap}: {err}"
            );
        }
    }

    #[test]
    fn errors_name_the_table_and_column() {
        let text = r#"
[[table]]
name = "users"
source = "legacy.users"
target = "auth.users"
key = "uid"
columns = [{ name = "id" }]
"#;
        let err = Plan::parse(text, "p.toml").unwrap_err().to_string();
        assert!(err.contains("table users") && err.contains("uid"), "{err}");
        let err = Plan::parse("[[table]]\nname='x'\nsource='a'\ntarget='b'\nkey='id'\ncolumns=[{name='id'}]\nbogus=1\n", "p")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn a_version_column_must_be_a_non_key_column_of_the_table() {
        let plan = |version: &str| {
            Plan::parse(
                &format!("[[table]]\nname='users'\nsource='legacy.users'\ntarget='auth.users'\nkey='id'\nversion='{version}'\ncolumns=[{{name='id'}}, {{name='updated_at'}}]\n"),
                "p.toml",
            )
        };
        assert_eq!(
            plan("updated_at").unwrap().tables[0].version.as_deref(),
            Some("updated_at")
        );
        for bad in ["id", "modified_at"] {
            let err = plan(bad).unwrap_err().to_string();
            assert!(err.contains("table users") && err.contains(bad), "{err}");
        }
        let shipped = Plan::parse(SHIPPED_PLAN, "shipped").unwrap();
        let versioned: Vec<&str> = shipped
            .tables
            .iter()
            .filter(|t| t.version.is_some())
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(versioned, ["users", "conversations", "tasks"]);
    }

    #[test]
    fn projection_orders_by_the_key_expression() {
        let plan = Plan::parse(SHIPPED_PLAN, "shipped").unwrap();
        let t = &plan.tables[0];
        let resolved = ResolvedTable {
            plan: t.clone(),
            columns: t
                .columns
                .iter()
                .map(|c| ResolvedColumn {
                    name: c.name.clone(),
                    sql_type: "text".into(),
                    binary_portable: true,
                    from: c.from.clone(),
                    default: c.default.clone(),
                })
                .collect(),
        };
        let sql = resolved.source_select_sql(
            &Window {
                after: Some("k'1"),
                ordered: true,
                limit: Some(5),
                ..Default::default()
            },
            None,
        );
        assert!(sql.ends_with(r#"WHERE CAST(("id") AS text) > CAST('k''1' AS text) ORDER BY CAST(("id") AS text) LIMIT 5"#), "{sql}");
    }
}
