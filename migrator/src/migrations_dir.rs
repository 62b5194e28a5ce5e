//! Where `schema` and `status` take their migrations from: the ones embedded in the binary
//! (`migrations/`, the default), or any directory of sqlx-style migrations given with
//! `--migrations DIR` (env `MIGRATIONS_DIR`).
//!
//! A directory is read the way `sqlx migrate` reads one, but strictly: every `*.sql` file must be
//! named `NNN_name.sql` (digits, `_`, a name of letters, digits, `_` or `-`); another `.sql` name,
//! a version given twice, a directory without any migration, a file over [`MAX_MIGRATION_BYTES`]
//! or one that is not UTF-8 is refused (exit 2) naming the directory and file. Files not ending in
//! `.sql` (a README, a plan) and subdirectories are ignored, as by sqlx. Checksums are sqlx's
//! (SHA-384 of the file), so a directory applied by `sqlx migrate run` is recognised as applied.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

use sqlx::migrate::{Migration, MigrationType};

use crate::error::MigratorError;

/// Largest migration file read (bounded input).
pub const MAX_MIGRATION_BYTES: u64 = 16 * 1024 * 1024;

/// Largest number of directory entries looked at.
const MAX_ENTRIES: usize = 100_000;

/// The migrations a command works with, and where they came from (for messages).
#[derive(Debug, Clone)]
pub struct Migrations {
    /// Up migrations in version order.
    pub list: Vec<Migration>,
    /// "the embedded migrations" or "migrations directory DIR".
    pub origin: String,
    /// Whether these are the migrations compiled into the binary.
    pub embedded: bool,
}

impl Migrations {
    /// `dir` (from `--migrations` / `MIGRATIONS_DIR`), or the embedded migrations when `None`.
    pub fn load(dir: Option<&Path>) -> Result<Migrations, MigratorError> {
        match dir {
            None => Ok(Migrations::embedded()),
            Some(dir) => Ok(Migrations {
                list: read_dir(dir)?,
                origin: format!("migrations directory {}", dir.display()),
                embedded: false,
            }),
        }
    }

    pub fn embedded() -> Migrations {
        Migrations {
            list: crate::schema::embedded().cloned().collect(),
            origin: "the embedded migrations".into(),
            embedded: true,
        }
    }

    /// The migration the target recorded as `applied`: same version and description (a
    /// different description is another system's migration, not a changed one).
    pub fn find(&self, applied: &crate::schema::AppliedMigration) -> Option<&Migration> {
        self.list
            .iter()
            .find(|m| m.version == applied.version && m.description == applied.description)
    }

    /// Whether the target recorded `migration` as applied (by version and description).
    pub fn applied_as<'a>(
        migration: &Migration,
        applied: &'a [crate::schema::AppliedMigration],
    ) -> Option<&'a crate::schema::AppliedMigration> {
        applied
            .iter()
            .find(|a| a.version == migration.version && a.description == migration.description)
    }
}

fn bad(dir: &Path, what: impl std::fmt::Display) -> MigratorError {
    MigratorError::Usage(format!("migrations directory {}: {what}", dir.display()))
}

/// `(version, description)` of a file name `NNN_name.sql` (description as sqlx makes it: `_` → space).
fn parse_file_name(name: &str) -> Option<(i64, String)> {
    let stem = name.strip_suffix(".sql")?;
    let (digits, rest) = stem.split_once('_')?;
    let valid_name = !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) || !valid_name {
        return None;
    }
    Some((digits.parse().ok()?, rest.replace('_', " ")))
}

/// Reads the migrations of `dir` (see the module docs), in version order.
pub fn read_dir(dir: &Path) -> Result<Vec<Migration>, MigratorError> {
    let entries = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad(dir, "does not exist"),
        _ => bad(dir, format!("cannot be read: {e}")),
    })?;
    let mut files: Vec<(i64, String, PathBuf)> = Vec::new();
    for (index, entry) in entries.enumerate() {
        if index >= MAX_ENTRIES {
            return Err(bad(dir, format!("more than {MAX_ENTRIES} entries")));
        }
        let entry = entry.map_err(|e| bad(dir, format!("cannot be listed: {e}")))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.ends_with(".sql") || !path.is_file() {
            continue;
        }
        let Some((version, description)) = parse_file_name(&name) else {
            return Err(bad(
                dir,
                format!("file {name:?} is not named NNN_name.sql (digits, `_`, a name of letters, digits, `_` or `-`)"),
            ));
        };
        if let Some((_, _, other)) = files.iter().find(|(v, _, _)| *v == version) {
            return Err(bad(
                dir,
                format!(
                    "files {:?} and {name:?} have the same version {version}",
                    other.file_name().unwrap_or_default().to_string_lossy()
                ),
            ));
        }
        files.push((version, description, path));
    }
    if files.is_empty() {
        return Err(bad(dir, "holds no migration (no NNN_name.sql file)"));
    }
    files.sort_by_key(|(v, _, _)| *v);
    files
        .into_iter()
        .map(|(version, description, path)| {
            let sql = read_bounded(&path).map_err(|what| bad(dir, what))?;
            let no_tx = sql.starts_with("-- no-transaction");
            Ok(Migration::new(
                version,
                Cow::Owned(description),
                MigrationType::Simple,
                Cow::Owned(sql),
                no_tx,
            ))
        })
        .collect()
}

fn read_bounded(path: &Path) -> Result<String, String> {
    let shown = path
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let file = std::fs::File::open(path).map_err(|e| format!("file {shown:?}: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_MIGRATION_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("file {shown:?}: {e}"))?;
    if bytes.len() as u64 > MAX_MIGRATION_BYTES {
        return Err(format!(
            "file {shown:?} is larger than {MAX_MIGRATION_BYTES} bytes"
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("file {shown:?} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_nnn_name_sql() {
        assert_eq!(parse_file_name("001_users.sql"), Some((1, "users".into())));
        assert_eq!(
            parse_file_name("20240101_add_bank-tables.sql"),
            Some((20240101, "add bank-tables".into()))
        );
        for bad in [
            "users.sql",
            "001-users.sql",
            "001_.sql",
            "_users.sql",
            "001_users.up.sql",
            "x01_users.sql",
            "001_us ers.sql",
        ] {
            assert_eq!(parse_file_name(bad), None, "{bad}");
        }
    }
}
