//! The SQL both sides run. Each side renders every compared value the same way: cast to the
//! target column's type (so source expressions are typed exactly like the target), then to text in
//! sessions with identical settings (see `crate::db::connect`). A row's fingerprint is
//! `hashtextextended(ROW(…)::text, 0)`: the row literal keeps NULL (empty field) apart from `''`
//! (`""`), `jsonb` renders canonically (key order, whitespace), timestamps keep microseconds, and
//! `numeric` scale is trimmed so `1.0` equals `1.00`.

use crate::db::quote_ident;

/// One table as both sides see it.
#[derive(Debug, Clone)]
pub struct Projection {
    /// The target's key column.
    pub key: String,
    /// `format_type` of the key column in the target.
    pub key_type: String,
    /// Compared columns (the key included) and their target types, ignored columns left out.
    pub columns: Vec<(String, String)>,
}

/// Where a side reads its rows: the source projection (a SELECT whose output columns are named
/// like the target's) or the target table.
pub fn from_clause(relation_sql: &str, is_select: bool) -> String {
    if is_select {
        format!("({relation_sql}) AS v")
    } else {
        format!("{relation_sql} AS v")
    }
}

fn typed(column: &str, ty: &str) -> String {
    let cast = format!("CAST(v.{} AS {ty})", quote_ident(column));
    // numeric keeps the scale it was written with; equal values must compare equal.
    if ty.starts_with("numeric") {
        format!("trim_scale({cast})")
    } else {
        cast
    }
}

impl Projection {
    pub fn key_text(&self) -> String {
        format!("CAST({} AS text)", typed(&self.key, &self.key_type))
    }

    pub fn row_text(&self) -> String {
        let fields: Vec<String> = self.columns.iter().map(|(c, t)| typed(c, t)).collect();
        format!("CAST(ROW({}) AS text)", fields.join(", "))
    }

    /// The bucket of a row: a hash of its key (both sides' keys have the target's key type), so
    /// a row is in the same bucket on both sides. uuid and integer keys are hashed as such, which
    /// costs a fraction of rendering them as text first; other key types by their text.
    fn bucket(&self, mask: u32) -> String {
        let key = typed(&self.key, &self.key_type);
        match self.key_type.as_str() {
            "uuid" => format!("CAST(uuid_hash_extended({key}, 0) & {mask} AS int4)"),
            "bigint" | "integer" | "smallint" => {
                format!("CAST(hashint8extended(CAST({key} AS bigint), 0) & {mask} AS int4)")
            }
            _ => format!("(hashtext({}) & {mask})", self.key_text()),
        }
    }

    /// Per-bucket `count` and sum of row fingerprints (as text: a numeric that may exceed 64 bits)
    /// of the rows of `from` (the whole table, or one key range of it: `verify --jobs`).
    pub fn bucket_checksums(&self, from: &str, mask: u32) -> String {
        format!(
            "SELECT {bucket} AS bucket, count(*) AS n, CAST(sum(hashtextextended({row}, 0)) AS text) AS fingerprint \
             FROM {from} GROUP BY 1",
            bucket = self.bucket(mask),
            row = self.row_text(),
        )
    }

    /// Key and row fingerprint of every row in the buckets `$1` (int4[]).
    pub fn rows_in_buckets(&self, from: &str, mask: u32) -> String {
        format!(
            "SELECT {key} AS k, hashtextextended({row}, 0) AS h FROM {from} WHERE {bucket} = ANY($1)",
            key = self.key_text(),
            row = self.row_text(),
            bucket = self.bucket(mask),
        )
    }

    /// Each compared column as text (NULL stays NULL) for the keys `$1` (text[]).
    pub fn column_values(&self, from: &str) -> String {
        let values: Vec<String> = self
            .columns
            .iter()
            .map(|(c, t)| format!("CAST({} AS text)", typed(c, t)))
            .collect();
        format!(
            "SELECT {key} AS k, ARRAY[{values}]::text[] AS vals FROM {from} WHERE {typed_key} = ANY(CAST(CAST($1 AS text[]) AS {key_type}[]))",
            key = self.key_text(),
            values = values.join(", "),
            typed_key = typed(&self.key, &self.key_type),
            key_type = self.key_type,
        )
    }
}

/// A version column (plan `version`) and its target type.
#[derive(Debug, Clone)]
pub struct VersionColumn {
    pub name: String,
    pub sql_type: String,
}

impl VersionColumn {
    /// Key and version (as text) of the keys `$1` (text[]) — read on the source.
    pub fn versions(&self, projection: &Projection, from: &str) -> String {
        format!(
            "SELECT {key} AS k, CAST({v} AS text) AS ver FROM {from} WHERE {key} = ANY($1)",
            key = projection.key_text(),
            v = typed(&self.name, &self.sql_type),
        )
    }

    /// The keys of `$1` (text[]) whose version on this side is newer than the one given in `$2`
    /// (text[], the other side's) — run on the target with the source's versions.
    pub fn newer_than(&self, projection: &Projection, from: &str) -> String {
        format!(
            "SELECT {key} FROM {from} JOIN unnest(CAST($1 AS text[]), CAST($2 AS text[])) AS other(k, ver) \
             ON {key} = other.k WHERE {v} > CAST(other.ver AS {ty})",
            key = projection.key_text(),
            v = typed(&self.name, &self.sql_type),
            ty = self.sql_type,
        )
    }
}

/// The planner's row estimate for the target table, to size the buckets. A table never analyzed
/// (just copied, autovacuum not yet run) has no estimate: assume 64 bytes per row of its size, as
/// too many buckets cost little and too few make the drill-down read more rows.
pub const TARGET_ROW_ESTIMATE: &str = "SELECT (CASE WHEN c.reltuples > 0 THEN c.reltuples \
     ELSE pg_relation_size(c.oid) / 64.0 END)::float8 FROM pg_class c WHERE c.oid = to_regclass($1)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_to_target_types_and_trims_numeric_scale() {
        let p = Projection {
            key: "id".into(),
            key_type: "uuid".into(),
            columns: vec![
                ("id".into(), "uuid".into()),
                ("amount".into(), "numeric(10,2)".into()),
            ],
        };
        assert_eq!(p.key_text(), r#"CAST(CAST(v."id" AS uuid) AS text)"#);
        assert_eq!(
            p.row_text(),
            r#"CAST(ROW(CAST(v."id" AS uuid), trim_scale(CAST(v."amount" AS numeric(10,2)))) AS text)"#
        );
        assert!(p.bucket_checksums("auth.users AS v", 1023).starts_with(
            r#"SELECT CAST(uuid_hash_extended(CAST(v."id" AS uuid), 0) & 1023 AS int4) AS bucket"#
        ));
        let by_int = Projection {
            key: "n".into(),
            key_type: "bigint".into(),
            columns: vec![("n".into(), "bigint".into())],
        };
        assert!(by_int
            .rows_in_buckets("t AS v", 255)
            .ends_with(r#"WHERE CAST(hashint8extended(CAST(CAST(v."n" AS bigint) AS bigint), 0) & 255 AS int4) = ANY($1)"#));
        let by_text = Projection {
            key: "code".into(),
            key_type: "character varying(20)".into(),
            columns: vec![("code".into(), "character varying(20)".into())],
        };
        assert!(by_text.bucket_checksums("t AS v", 255).contains(
            r#"(hashtext(CAST(CAST(v."code" AS character varying(20)) AS text)) & 255) AS bucket"#
        ));
    }
}
