//! The ECDS document that carries the filter's configuration to Envoy: one
//! `TypedExtensionConfig` named [`FILTER_NAME`] whose `typed_config` is Envoy's Wasm HTTP filter
//! config, with the filter configuration as a JSON string in `config.configuration.value`:
//!
//! ```json
//! {"resources": [{"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
//!   "name": "cutover",
//!   "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
//!     "config": {"name": "cutover", "vm_config": {…}, "failure_policy": "FAIL_OPEN",
//!       "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
//!                         "value": "{\"services\": […]}"}}}}]}
//! ```
//!
//! The one place in the workspace that knows this shape: the migrator's `rollout` reads and
//! rewrites it, and tests build it.

use serde_json::{json, Value};
use std::fmt;

/// Name of the filter in the HTTP filter chain and of its ECDS resource (its discovery stats
/// are `extension_config_discovery.http_filter.<FILTER_NAME>.*`).
pub const FILTER_NAME: &str = "cutover";
pub const TYPED_EXTENSION_CONFIG_TYPE_URL: &str =
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";
pub const WASM_TYPE_URL: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
pub const STRING_VALUE_TYPE_URL: &str = "type.googleapis.com/google.protobuf.StringValue";
/// Envoy 1.40's only compiled-in Wasm runtime.
pub const V8_RUNTIME: &str = "envoy.wasm.runtime.v8";

/// Prefix of the ECDS subscription stats of the filter on Envoy's `/stats` (with
/// [`FILTER_NAME`]; a test checks the two agree).
pub const DISCOVERY_STATS_PREFIX: &str = "extension_config_discovery.http_filter.cutover.";

/// [`DISCOVERY_STATS_PREFIX`] as an owned string.
pub fn discovery_stats_prefix() -> String {
    DISCOVERY_STATS_PREFIX.to_string()
}

/// Why a document is not an ECDS document of this filter: the JSON path that is missing or wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcdsError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for EcdsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for EcdsError {}

fn error(field: &str, message: impl Into<String>) -> EcdsError {
    EcdsError {
        field: field.to_string(),
        message: message.into(),
    }
}

const CONFIG_PATH: &str = "resources[0].typed_config.config";
const VALUE_PATH: &str = "resources[0].typed_config.config.configuration.value";

/// The Wasm filter config (`typed_config`) for a `.wasm` file and a filter configuration JSON.
pub fn wasm_typed_config(
    wasm_path: &str,
    filter_config_json: &str,
    failure_policy: Option<&str>,
) -> Value {
    let mut plugin = json!({
        "name": FILTER_NAME,
        "vm_config": {
            "vm_id": FILTER_NAME,
            "runtime": V8_RUNTIME,
            "code": {"local": {"filename": wasm_path}}
        },
        "configuration": {"@type": STRING_VALUE_TYPE_URL, "value": filter_config_json}
    });
    if let (Some(policy), Some(object)) = (failure_policy, plugin.as_object_mut()) {
        object.insert("failure_policy".to_string(), json!(policy));
    }
    json!({"@type": WASM_TYPE_URL, "config": plugin})
}

/// An ECDS file body with one `TypedExtensionConfig` named [`FILTER_NAME`].
pub fn ecds_document(typed_config: Value) -> Value {
    json!({"resources": [{
        "@type": TYPED_EXTENSION_CONFIG_TYPE_URL,
        "name": FILTER_NAME,
        "typed_config": typed_config
    }]})
}

/// A parsed ECDS document of the filter; everything besides the filter configuration (the
/// `.wasm` path, `failure_policy`, …) is kept as it was.
#[derive(Debug, Clone, PartialEq)]
pub struct EcdsDocument {
    document: Value,
    filter_config: String,
}

impl EcdsDocument {
    /// Parses an ECDS file body. Checks the shape only; the filter configuration inside is
    /// validated with [`crate::config::FilterConfig::from_json`].
    pub fn parse(bytes: &[u8]) -> Result<EcdsDocument, EcdsError> {
        let document: Value =
            serde_json::from_slice(bytes).map_err(|e| error("", format!("not JSON: {e}")))?;
        let filter_config = Self::locate(&document)?.to_string();
        Ok(EcdsDocument {
            document,
            filter_config,
        })
    }

    fn locate(document: &Value) -> Result<&str, EcdsError> {
        let resources = document
            .get("resources")
            .and_then(Value::as_array)
            .ok_or_else(|| error("resources", "missing (not an ECDS file)"))?;
        if resources.len() != 1 {
            return Err(error(
                "resources",
                format!("expected exactly one resource, found {}", resources.len()),
            ));
        }
        let resource = resources
            .first()
            .ok_or_else(|| error("resources", "empty"))?;
        if let Some(name) = resource.get("name").and_then(Value::as_str) {
            if name != FILTER_NAME {
                return Err(error(
                    "resources[0].name",
                    format!(
                        "expected {FILTER_NAME:?}, got {name:?} (an ECDS file of another filter)"
                    ),
                ));
            }
        }
        let typed = resource
            .get("typed_config")
            .ok_or_else(|| error("resources[0].typed_config", "missing"))?;
        match typed.get("@type").and_then(Value::as_str) {
            Some(WASM_TYPE_URL) => {}
            Some(other) => {
                return Err(error(
                    "resources[0].typed_config.@type",
                    format!("expected {WASM_TYPE_URL}, got {other} (not the cutover Wasm filter)"),
                ))
            }
            None => return Err(error("resources[0].typed_config.@type", "missing")),
        }
        let config = typed
            .get("config")
            .ok_or_else(|| error(CONFIG_PATH, "missing"))?;
        if let Some(name) = config.get("name").and_then(Value::as_str) {
            if name != FILTER_NAME {
                return Err(error(
                    "resources[0].typed_config.config.name",
                    format!(
                        "expected {FILTER_NAME:?}, got {name:?} (a Wasm plugin of another filter)"
                    ),
                ));
            }
        }
        config
            .get("configuration")
            .and_then(|c| c.get("value"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                error(
                    VALUE_PATH,
                    "missing (expected the filter configuration as a JSON string)",
                )
            })
    }

    /// The document whose resource carries `typed_config` (a Wasm filter config, e.g. the one
    /// Envoy reports serving in its config dump); checked like [`EcdsDocument::parse`].
    pub fn from_typed_config(typed_config: Value) -> Result<EcdsDocument, EcdsError> {
        let document = ecds_document(typed_config);
        let filter_config = Self::locate(&document)?.to_string();
        Ok(EcdsDocument {
            document,
            filter_config,
        })
    }

    /// The filter configuration JSON (what the plugin's `on_configure` receives).
    pub fn filter_config_json(&self) -> &str {
        &self.filter_config
    }

    /// The same document with another filter configuration.
    pub fn with_filter_config(&self, filter_config_json: &str) -> EcdsDocument {
        let mut document = self.document.clone();
        if let Some(configuration) = document
            .pointer_mut("/resources/0/typed_config/config/configuration")
            .and_then(Value::as_object_mut)
        {
            configuration.insert("value".to_string(), json!(filter_config_json));
        }
        EcdsDocument {
            document,
            filter_config: filter_config_json.to_string(),
        }
    }

    /// The whole document.
    pub fn as_json(&self) -> &Value {
        &self.document
    }

    /// The file body: pretty JSON and a final newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = serde_json::to_string_pretty(&self.document).unwrap_or_default();
        text.push('\n');
        text.into_bytes()
    }
}

/// The Wasm filter config of this filter that Envoy serves, found in its admin `/config_dump`:
/// the first `typed_config` of type [`WASM_TYPE_URL`] whose plugin is named [`FILTER_NAME`]
/// (in an ECDS dump, `ecds_filters[].ecds_filter.typed_config`: the configuration Envoy last
/// accepted, whatever the file holds now; in a static listener, the HTTP filter's).
pub fn served_typed_config(config_dump: &Value) -> Option<&Value> {
    match config_dump {
        Value::Object(map) => {
            let ours = map.get("@type").and_then(Value::as_str) == Some(WASM_TYPE_URL)
                && map
                    .get("config")
                    .and_then(|c| c.get("name"))
                    .and_then(Value::as_str)
                    .is_none_or(|name| name == FILTER_NAME);
            if ours {
                return Some(config_dump);
            }
            map.values().find_map(served_typed_config)
        }
        Value::Array(items) => items.iter().find_map(served_typed_config),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTER: &str = r#"{"services":[{"name":"chat","path_prefixes":["/api/chat"],"legacy_cluster":"chat_legacy","new_cluster":"chat_new","new_percentage":10}]}"#;

    #[test]
    fn the_discovery_stats_prefix_names_the_filter() {
        assert_eq!(
            DISCOVERY_STATS_PREFIX,
            format!("extension_config_discovery.http_filter.{FILTER_NAME}.")
        );
    }

    #[test]
    fn builds_and_parses_the_same_shape() {
        let doc = ecds_document(wasm_typed_config("/f.wasm", FILTER, Some("FAIL_OPEN")));
        let parsed = EcdsDocument::parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.filter_config_json(), FILTER);
        let changed = parsed.with_filter_config("{\"services\":[]}");
        let reparsed = EcdsDocument::parse(&changed.to_bytes()).unwrap();
        assert_eq!(reparsed.filter_config_json(), "{\"services\":[]}");
        assert_eq!(
            reparsed.as_json()["resources"][0]["typed_config"]["config"]["failure_policy"],
            "FAIL_OPEN",
            "plugin settings kept"
        );
    }

    #[test]
    fn finds_the_served_config_in_a_config_dump() {
        let typed = wasm_typed_config("/f.wasm", FILTER, None);
        let dump = json!({"configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump"},
            {"@type": "type.googleapis.com/envoy.admin.v3.EcdsConfigDump", "ecds_filters": [
                {"ecds_filter": ecds_document(typed.clone())["resources"][0], "version_info": "1"}]}]});
        let served = served_typed_config(&dump).unwrap();
        assert_eq!(served, &typed);
        let document = EcdsDocument::from_typed_config(served.clone()).unwrap();
        assert_eq!(document.filter_config_json(), FILTER);
        assert_eq!(served_typed_config(&json!({"configs": []})), None);
        let mut other = wasm_typed_config("/f.wasm", FILTER, None);
        other["config"]["name"] = json!("other");
        assert_eq!(served_typed_config(&json!([other])), None);
    }

    #[test]
    fn names_what_is_wrong() {
        let err = EcdsDocument::parse(b"{}").unwrap_err();
        assert_eq!(err.field, "resources");
        let mut other = ecds_document(wasm_typed_config("/f.wasm", FILTER, None));
        other["resources"][0]["typed_config"]["@type"] =
            json!("type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua");
        let err = EcdsDocument::parse(other.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.field, "resources[0].typed_config.@type");
        let mut renamed = ecds_document(wasm_typed_config("/f.wasm", FILTER, None));
        renamed["resources"][0]["name"] = json!("ratelimit");
        assert_eq!(
            EcdsDocument::parse(renamed.to_string().as_bytes())
                .unwrap_err()
                .field,
            "resources[0].name"
        );
        assert!(EcdsDocument::parse(b"not json").is_err());
    }
}
