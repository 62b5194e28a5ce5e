//! The watched ECDS file: read (bounded), validated with the filter's own `config` module, and
//! replaced atomically (temporary file in the same directory, then a rename, which is what
//! Envoy's directory watch reacts to), keeping the file's owner and mode.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use cutover_filter::config::FilterConfig;
use cutover_filter::ecds::EcdsDocument;
use serde::Serialize;

use super::{Result, RolloutError};

/// An ECDS file larger than this is not ours.
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// What Envoy is told about one service: the three values the filter reports as gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ServiceState {
    pub new_percentage: u8,
    pub use_legacy: bool,
    pub dual_write: bool,
}

impl ServiceState {
    pub fn describe(&self) -> String {
        format!(
            "new_percentage={} use_legacy={} dual_write={}",
            self.new_percentage,
            self.use_legacy,
            if self.dual_write { "on" } else { "off" }
        )
    }
}

/// A validated ECDS document of the filter.
#[derive(Debug, Clone)]
pub struct Ecds {
    pub document: EcdsDocument,
    pub config: FilterConfig,
}

impl Ecds {
    /// Parses and validates (ECDS shape, then the filter's rules). A shape error is exit 3, a
    /// configuration the filter refuses exit 2, both naming `what` and the field.
    pub fn parse(bytes: &[u8], what: &str) -> Result<Ecds> {
        let document = EcdsDocument::parse(bytes).map_err(|e| {
            RolloutError::file(format!(
                "{what}: not an ECDS file of the cutover filter: {e}"
            ))
        })?;
        let config = validate(document.filter_config_json(), what)?;
        Ok(Ecds { document, config })
    }

    /// Per service (configuration order): name and state.
    pub fn services(&self) -> Vec<(String, ServiceState)> {
        self.config
            .services
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    ServiceState {
                        new_percentage: s.new_percentage,
                        use_legacy: s.use_legacy,
                        dual_write: s.dual_write.enabled,
                    },
                )
            })
            .collect()
    }

    pub fn service(&self, name: &str) -> Result<&cutover_filter::config::ServiceConfig> {
        self.config
            .services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| unknown_service(name, &self.config))
    }

    /// The same document with the filter configuration JSON changed by `edit` (on the service
    /// object named `service`), validated by the filter's rules before it is returned.
    pub fn edit_service(
        &self,
        service: &str,
        edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) -> Result<Ecds> {
        let mut filter: serde_json::Value =
            serde_json::from_str(self.document.filter_config_json())
                .map_err(|e| RolloutError::file(format!("filter configuration: {e}")))?;
        let object = filter
            .get_mut("services")
            .and_then(serde_json::Value::as_array_mut)
            .and_then(|services| {
                services
                    .iter_mut()
                    .find(|s| s.get("name").and_then(serde_json::Value::as_str) == Some(service))
            })
            .and_then(serde_json::Value::as_object_mut)
            .ok_or_else(|| unknown_service(service, &self.config))?;
        edit(object);
        let json = filter.to_string();
        let config = validate(&json, "the new configuration")?;
        Ok(Ecds {
            document: self.document.with_filter_config(&json),
            config,
        })
    }
}

fn unknown_service(name: &str, config: &FilterConfig) -> RolloutError {
    let known: Vec<&str> = config.services.iter().map(|s| s.name.as_str()).collect();
    RolloutError::usage(format!(
        "services: no service named {name:?} (configured: {})",
        known.join(", ")
    ))
}

/// The filter's own validation (the rules and field paths of `on_configure`).
pub fn validate(filter_json: &str, what: &str) -> Result<FilterConfig> {
    FilterConfig::from_json(filter_json.as_bytes())
        .map_err(|e| RolloutError::usage(format!("{what}: the filter would refuse it: {e}")))
}

/// Reads a file of at most [`MAX_FILE_BYTES`]; missing or unreadable is exit 3.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            RolloutError::file(format!(
                "{}: no such file (give the file Envoy watches with --file or CUTOVER_ECDS_FILE)",
                path.display()
            ))
        } else {
            RolloutError::file(format!("{}: {e}", path.display()))
        }
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| RolloutError::file(format!("{}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(RolloutError::file(format!(
            "{}: larger than {MAX_FILE_BYTES} bytes, not an ECDS file of the filter",
            path.display()
        )));
    }
    Ok(bytes)
}

/// Loads and validates the live file.
pub fn load(path: &Path) -> Result<(Ecds, Vec<u8>)> {
    let bytes = read(path)?;
    let ecds = Ecds::parse(&bytes, &path.display().to_string()).map_err(|e| {
        // A live file the filter would refuse is not a usable cutover file either.
        RolloutError::file(e.message)
    })?;
    Ok((ecds, bytes))
}

/// Replaces `path` with `contents` atomically: a temporary file in the same directory, synced,
/// given the live file's mode and owner, then renamed over it.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let directory = parent_dir(path);
    let existing = std::fs::metadata(path).ok();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = directory.join(format!(".{name}.rollout-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temporary)?;
        file.write_all(contents)?;
        file.sync_all()?;
        if let Some(meta) = &existing {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                &temporary,
                std::fs::Permissions::from_mode(meta.mode() & 0o7777),
            )?;
            if meta.uid() != file.metadata()?.uid() || meta.gid() != file.metadata()?.gid() {
                std::os::unix::fs::chown(&temporary, Some(meta.uid()), Some(meta.gid()))?;
            }
        }
        drop(file);
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// The directory a path lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_filter::ecds::{ecds_document, wasm_typed_config};

    fn doc(filter: &str) -> Vec<u8> {
        ecds_document(wasm_typed_config("/f.wasm", filter, None))
            .to_string()
            .into_bytes()
    }

    const CHAT: &str = r#"{"services":[{"name":"chat","path_prefixes":["/api/chat"],"legacy_cluster":"chat_legacy","new_cluster":"chat_new","new_percentage":10}]}"#;

    #[test]
    fn edits_are_validated_by_the_filter() {
        let ecds = Ecds::parse(&doc(CHAT), "f").unwrap();
        let edited = ecds
            .edit_service("chat", |s| {
                s.insert("new_percentage".into(), 50.into());
            })
            .unwrap();
        assert_eq!(edited.config.services[0].new_percentage, 50);
        let err = ecds
            .edit_service("chat", |s| {
                s.insert("path_prefixes".into(), serde_json::json!(["api/chat"]));
            })
            .unwrap_err();
        assert_eq!(err.code, super::super::exit::USAGE);
        assert!(
            err.message.contains("services[0].path_prefixes[0]"),
            "{}",
            err.message
        );
        let err = ecds.edit_service("chats", |_| {}).unwrap_err();
        assert_eq!(err.code, super::super::exit::USAGE);
        assert!(err.message.contains("configured: chat"));
    }

    #[test]
    fn shape_errors_are_exit_3() {
        assert_eq!(Ecds::parse(b"{}", "f").unwrap_err().code, 3);
    }

    #[test]
    fn atomic_write_keeps_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rollout-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cutover.json");
        std::fs::write(&path, b"old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_atomically(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
