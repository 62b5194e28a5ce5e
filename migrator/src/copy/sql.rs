//! The SQL `copy` writes the target with (staging table, COPY, the upsert and its dry-run count)
//! and the queries of the rejected-row diagnosis: pure string builders over a
//! [`ResolvedTable`], unit-tested below. The source side's SQL lives with the plan
//! ([`crate::plan::ResolvedTable`]'s `source_*_sql`).

use super::format::CopyFormat;
use crate::db::{quote_ident, quote_literal};
use crate::plan::ResolvedTable;

/// The name of a table's staging table (a temporary table in the target session).
pub fn staging_name(table: &ResolvedTable) -> String {
    format!(
        "cutover_staging_{}",
        table
            .name()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

/// (Re)creates the staging table: the target table's copied columns, emptied at every commit.
pub fn create_staging(table: &ResolvedTable, staging: &str) -> String {
    format!(
        "DROP TABLE IF EXISTS pg_temp.{s}; CREATE TEMP TABLE {s} ON COMMIT DELETE ROWS AS SELECT {cols} FROM {t} WITH NO DATA",
        s = quote_ident(staging),
        cols = table.target_column_list(),
        t = table.plan.target.sql()
    )
}

pub fn drop_staging(staging: &str) -> String {
    format!("DROP TABLE IF EXISTS pg_temp.{}", quote_ident(staging))
}

/// Total and non-NULL-key row counts of the source (a NULL key falls outside every key window).
pub fn source_row_counts(table: &ResolvedTable) -> String {
    format!(
        "SELECT count(*), count({}) FROM {}",
        table.source_key_sql(),
        table.source_from_sql()
    )
}

/// `COPY (select) TO STDOUT` in `format`.
pub fn copy_out(select: &str, format: CopyFormat) -> String {
    format!("COPY ({select}) TO STDOUT{}", format.option())
}

/// `COPY` straight into the target table (a window the target has no rows in).
pub fn copy_into_target(table: &ResolvedTable, format: CopyFormat) -> String {
    format!(
        "COPY {} ({}) FROM STDIN{}",
        table.plan.target.sql(),
        table.target_column_list(),
        format.option()
    )
}

/// `COPY` into the staging table.
pub fn copy_into_staging(table: &ResolvedTable, staging: &str, format: CopyFormat) -> String {
    format!(
        "COPY pg_temp.{} ({}) FROM STDIN{}",
        quote_ident(staging),
        table.target_column_list(),
        format.option()
    )
}

fn non_key_columns(table: &ResolvedTable) -> Vec<String> {
    table.columns[1..]
        .iter()
        .map(|c| quote_ident(&c.name))
        .collect()
}

/// `(cur.a, cur.b) IS DISTINCT FROM (s.a, s.b)` over the non-key columns; `None` when there are none.
fn rows_differ(left: &str, right: &str, rest: &[String]) -> Option<String> {
    (!rest.is_empty()).then(|| {
        format!(
            "{} IS DISTINCT FROM {}",
            row_of(left, rest),
            row_of(right, rest)
        )
    })
}

fn row_of(alias: &str, cols: &[String]) -> String {
    format!(
        "({})",
        cols.iter()
            .map(|c| format!("{alias}.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// `(<cur>.v > <staged>.v) IS NOT TRUE`: the target row's version is not newer than the staged
/// one (a NULL version on either side is not newer). `None` without a version column.
fn not_newer(table: &ResolvedTable, cur: &str, staged: &str) -> Option<String> {
    table.version().map(|v| {
        let v = quote_ident(&v.name);
        format!("({cur}.{v} > {staged}.{v}) IS NOT TRUE")
    })
}

/// The staged rows the target holds a newer version of (0 without a version column): the
/// upsert keeps them, and `copy` warns.
fn target_newer_count(table: &ResolvedTable, staging: &str) -> String {
    match table.version() {
        None => "CAST(0 AS int8)".into(),
        Some(v) => format!(
            "(SELECT count(*) FROM pg_temp.{staging} AS s JOIN {target} AS cur ON cur.{key} = s.{key} WHERE cur.{v} > s.{v})",
            key = quote_ident(&table.key().name),
            v = quote_ident(&v.name),
            target = table.plan.target.sql()
        ),
    }
}

/// Counts what an upsert of the staged rows would insert and update, and how many staged rows
/// the target holds a newer version of.
pub fn dry_run_counts(table: &ResolvedTable, staging: &str) -> String {
    let key = quote_ident(&table.key().name);
    let rest = non_key_columns(table);
    let mut changed = rows_differ("cur", "s", &rest).unwrap_or_else(|| "false".into());
    if let Some(guard) = not_newer(table, "cur", "s") {
        changed = format!("{changed} AND {guard}");
    }
    let staging = quote_ident(staging);
    format!(
        "SELECT count(*) FILTER (WHERE cur.{key} IS NULL), count(*) FILTER (WHERE cur.{key} IS NOT NULL AND {changed}), {newer} \
         FROM pg_temp.{staging} AS s LEFT JOIN {target} AS cur ON cur.{key} = s.{key}",
        newer = target_newer_count(table, &staging),
        target = table.plan.target.sql()
    )
}

/// ` AND s.key <= up_to` (only staged keys up to this one: used to find a rejected row), or "".
fn staged_up_to(table: &ResolvedTable, up_to: Option<&str>) -> String {
    up_to
        .map(|k| {
            format!(
                " AND s.{} <= CAST({} AS {})",
                quote_ident(&table.key().name),
                quote_literal(k),
                table.key().sql_type
            )
        })
        .unwrap_or_default()
}

/// The first of the two statements that write the staged rows ([`update_changed`] is the
/// second): inserts the staged rows whose key the target lacks. A row the target gained meanwhile
/// (dual-write inserted it) conflicts and is updated like [`update_changed`] would (only if it
/// differs, and with a version column only where the target's version is not newer). Returns
/// (inserted, updated, the inserted keys as text[], staged keys that occur more than once).
/// `up_to`: only staged keys up to this one.
///
/// Two statements, not one `INSERT … ON CONFLICT DO UPDATE` over every staged row: an
/// `UPDATE … FROM` of the rows that exist costs about half as much as routing them through the
/// conflict path (which locks each row and then updates it).
pub fn insert_missing(table: &ResolvedTable, staging: &str, up_to: Option<&str>) -> String {
    let key = quote_ident(&table.key().name);
    let rest = non_key_columns(table);
    let all: Vec<String> = table.columns.iter().map(|c| quote_ident(&c.name)).collect();
    let target = table.plan.target.sql();
    let staging = quote_ident(staging);
    let select_cols = all
        .iter()
        .map(|c| format!("s.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let conflict = match rows_differ("t", "excluded", &rest) {
        None => "DO NOTHING".to_string(),
        Some(differ) => format!(
            "DO UPDATE SET {} WHERE {}",
            set_from(&rest, "excluded"),
            guarded(table, differ, "t", "excluded")
        ),
    };
    // A correlated subquery, not NOT EXISTS: the planner could turn an anti-join into a scan of
    // the whole target table; this stays one index probe per staged row.
    format!(
        "WITH upserted AS ( \
           INSERT INTO {target} AS t ({cols}) \
           SELECT {select_cols} FROM pg_temp.{staging} AS s \
           WHERE (SELECT true FROM {target} AS cur WHERE cur.{key} = s.{key}) IS NULL{limit} \
           ON CONFLICT ({key}) {conflict} \
           RETURNING t.{key} AS k, (t.xmax = 0) AS inserted) \
         SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted), \
                coalesce(array_agg(CAST(k AS text)) FILTER (WHERE inserted), '{{}}'), \
                (SELECT count(*) - count(DISTINCT s.{key}) FROM pg_temp.{staging} AS s) FROM upserted",
        cols = all.join(", "),
        limit = staged_up_to(table, up_to),
    )
}

/// The second statement writing the staged rows: updates the target rows that differ from their
/// staged row (with a version column: only where the target's version is not newer). Its row count
/// is the rows updated. `None` for a table with only a key column (nothing to update).
pub fn update_changed(table: &ResolvedTable, staging: &str, up_to: Option<&str>) -> Option<String> {
    let key = quote_ident(&table.key().name);
    let rest = non_key_columns(table);
    let differ = rows_differ("t", "s", &rest)?;
    Some(format!(
        "UPDATE {target} AS t SET {set} FROM pg_temp.{staging} AS s \
         WHERE t.{key} = s.{key} AND {changed}{limit}",
        target = table.plan.target.sql(),
        set = set_from(&rest, "s"),
        staging = quote_ident(staging),
        changed = guarded(table, differ, "t", "s"),
        limit = staged_up_to(table, up_to),
    ))
}

/// The staged rows the target holds a newer version of (0 without a version column), which the
/// writes kept: for the warning.
pub fn target_newer(table: &ResolvedTable, staging: &str) -> String {
    format!(
        "SELECT {}",
        target_newer_count(table, &quote_ident(staging))
    )
}

/// `a = <from>.a, …` over `cols`.
fn set_from(cols: &[String], from: &str) -> String {
    cols.iter()
        .map(|c| format!("{c} = {from}.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `(differ AND <cur not newer than staged>)`, or `differ` without a version column.
fn guarded(table: &ResolvedTable, differ: String, cur: &str, staged: &str) -> String {
    match not_newer(table, cur, staged) {
        Some(guard) => format!("({differ} AND {guard})"),
        None => differ,
    }
}

/// Deletes the target rows of the keys `$1` (text[]).
pub fn delete_target_keys(table: &ResolvedTable) -> String {
    format!(
        "DELETE FROM {} WHERE {} = ANY(CAST(CAST($1 AS text[]) AS {}[]))",
        table.plan.target.sql(),
        quote_ident(&table.key().name),
        table.key().sql_type
    )
}

/// The first staged key that occurs more than once, as text.
pub fn repeated_staged_key(table: &ResolvedTable, staging: &str) -> String {
    let key = quote_ident(&table.key().name);
    format!(
        "SELECT s.{key}::text FROM pg_temp.{} AS s GROUP BY s.{key} HAVING count(*) > 1 ORDER BY s.{key} LIMIT 1",
        quote_ident(staging)
    )
}

/// The staged keys as text, in key order.
pub fn staged_keys(table: &ResolvedTable, staging: &str) -> String {
    let key = quote_ident(&table.key().name);
    format!(
        "SELECT s.{key}::text FROM pg_temp.{} AS s ORDER BY s.{key}",
        quote_ident(staging)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Plan, ResolvedColumn};

    fn table(columns: &[&str]) -> ResolvedTable {
        let cols: Vec<String> = columns
            .iter()
            .map(|c| format!("{{ name = \"{c}\" }}"))
            .collect();
        let text = format!(
            "[[table]]\nname = \"my-users\"\nsource = \"legacy.users\"\ntarget = \"auth.users\"\nkey = \"id\"\ncolumns = [{}]\n",
            cols.join(", ")
        );
        let plan = Plan::parse(&text, "test.toml").unwrap();
        let t = plan.tables[0].clone();
        ResolvedTable {
            columns: t
                .columns
                .iter()
                .map(|c| ResolvedColumn {
                    name: c.name.clone(),
                    sql_type: if c.name == "id" { "uuid" } else { "text" }.into(),
                    binary_portable: true,
                    from: c.from.clone(),
                    default: c.default.clone(),
                })
                .collect(),
            plan: t,
        }
    }

    #[test]
    fn staging_is_named_after_the_table_and_quoted() {
        let t = table(&["id", "email"]);
        let staging = staging_name(&t);
        assert_eq!(staging, "cutover_staging_my_users");
        assert_eq!(
            create_staging(&t, &staging),
            r#"DROP TABLE IF EXISTS pg_temp."cutover_staging_my_users"; CREATE TEMP TABLE "cutover_staging_my_users" ON COMMIT DELETE ROWS AS SELECT "id", "email" FROM "auth"."users" WITH NO DATA"#
        );
        assert_eq!(
            copy_into_staging(&t, &staging, CopyFormat::Binary),
            r#"COPY pg_temp."cutover_staging_my_users" ("id", "email") FROM STDIN (FORMAT binary)"#
        );
        assert_eq!(
            copy_into_target(&t, CopyFormat::Text),
            r#"COPY "auth"."users" ("id", "email") FROM STDIN"#
        );
    }

    #[test]
    fn the_writes_insert_missing_rows_update_rows_that_differ_and_limit_by_key() {
        let t = table(&["id", "email", "name"]);
        let insert = insert_missing(&t, "st", None);
        assert!(
            insert.contains(r#"WHERE (SELECT true FROM "auth"."users" AS cur WHERE cur."id" = s."id") IS NULL ON CONFLICT ("id") DO UPDATE SET "email" = excluded."email", "name" = excluded."name" WHERE (t."email", t."name") IS DISTINCT FROM (excluded."email", excluded."name") RETURNING"#),
            "{insert}"
        );
        assert!(
            insert.contains(r#"(SELECT count(*) - count(DISTINCT s."id") FROM pg_temp."st" AS s)"#),
            "{insert}"
        );
        let update = update_changed(&t, "st", None).unwrap();
        assert_eq!(
            update,
            r#"UPDATE "auth"."users" AS t SET "email" = s."email", "name" = s."name" FROM pg_temp."st" AS s WHERE t."id" = s."id" AND (t."email", t."name") IS DISTINCT FROM (s."email", s."name")"#
        );
        let limit = r#" AND s."id" <= CAST('k''1' AS uuid)"#;
        assert!(
            insert_missing(&t, "st", Some("k'1")).contains(&format!("IS NULL{limit} ON CONFLICT"))
        );
        assert!(update_changed(&t, "st", Some("k'1"))
            .unwrap()
            .ends_with(limit));
    }

    #[test]
    fn a_version_column_guards_the_update_and_counts_newer_target_rows() {
        let mut t = table(&["id", "email", "updated_at"]);
        t.plan.version = Some("updated_at".into());
        let insert = insert_missing(&t, "st", None);
        assert!(
            insert.contains(r#"WHERE ((t."email", t."updated_at") IS DISTINCT FROM (excluded."email", excluded."updated_at") AND (t."updated_at" > excluded."updated_at") IS NOT TRUE) RETURNING"#),
            "{insert}"
        );
        let update = update_changed(&t, "st", None).unwrap();
        assert!(
            update.ends_with(r#"AND ((t."email", t."updated_at") IS DISTINCT FROM (s."email", s."updated_at") AND (t."updated_at" > s."updated_at") IS NOT TRUE)"#),
            "{update}"
        );
        assert!(
            target_newer(&t, "st").contains(r#"WHERE cur."updated_at" > s."updated_at")"#),
            "{}",
            target_newer(&t, "st")
        );
        assert!(dry_run_counts(&t, "st")
            .contains(r#"AND (cur."updated_at" > s."updated_at") IS NOT TRUE"#));
        let unguarded = table(&["id", "email"]);
        assert!(!insert_missing(&unguarded, "st", None).contains("IS NOT TRUE"));
        assert!(!update_changed(&unguarded, "st", None)
            .unwrap()
            .contains("IS NOT TRUE"));
        assert_eq!(target_newer(&unguarded, "st"), "SELECT CAST(0 AS int8)");
    }

    #[test]
    fn a_key_only_table_inserts_missing_rows_and_updates_nothing() {
        let t = table(&["id"]);
        assert!(
            insert_missing(&t, "st", None).contains(r#"IS NULL ON CONFLICT ("id") DO NOTHING"#),
            "{}",
            insert_missing(&t, "st", None)
        );
        assert!(update_changed(&t, "st", None).is_none());
        assert!(dry_run_counts(&t, "st").contains("IS NOT NULL AND false"));
    }

    #[test]
    fn diagnosis_queries_read_the_staged_keys_in_order() {
        let t = table(&["id", "email"]);
        assert_eq!(
            staged_keys(&t, "st"),
            r#"SELECT s."id"::text FROM pg_temp."st" AS s ORDER BY s."id""#
        );
        assert!(repeated_staged_key(&t, "st").contains(r#"GROUP BY s."id" HAVING count(*) > 1"#));
        assert_eq!(
            copy_out("SELECT 1", CopyFormat::Binary),
            "COPY (SELECT 1) TO STDOUT (FORMAT binary)"
        );
    }
}
