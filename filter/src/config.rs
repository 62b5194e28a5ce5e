//! Filter configuration: the JSON DTO Envoy hands us, and the validated [`FilterConfig`] the
//! request path uses. Parsing and validation happen once, in `on_configure`; every error names
//! the offending field (`services[1].new_percentage: must be between 0 and 100, got 150`).

use crate::compare::path::JsonPath;
use crate::mirror::SHADOW_HEADER;
use crate::routing::{cookie, Side, ROUTED_TO_HEADER};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub const DEFAULT_CLUSTER_HEADER: &str = "x-cutover-cluster";
pub const DEFAULT_STICKINESS_HEADERS: [&str; 2] = ["x-correlation-id", "x-request-id"];
pub const DEFAULT_DUAL_WRITE_METHODS: [&str; 3] = ["POST", "PUT", "PATCH"];
pub const DEFAULT_DUAL_WRITE_TIMEOUT_MS: u64 = 5000;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1_048_576;
/// Upper bound for `dual_write.timeout_ms`: a shadow that needs longer than this is a bug, and
/// the filter keeps per-request state until the shadow answers.
pub const MAX_DUAL_WRITE_TIMEOUT_MS: u64 = 600_000;
/// Upper bound for `dual_write.max_body_bytes`; Envoy must also be allowed to buffer that much
/// (see docs/dual-write.md).
pub const MAX_BODY_BYTES_LIMIT: u64 = 64 * 1_048_576;
/// Upper bound for `services[i].overrides`: every rule is checked on every matched request.
pub const MAX_OVERRIDES: usize = 32;
/// Upper bound for `stickiness_cookies`: each name is looked up in the `Cookie` header.
pub const MAX_STICKINESS_COOKIES: usize = 16;
/// Methods a shadow may be configured for.
pub const KNOWN_METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
/// Methods `shadow_reads` may mirror: the safe methods (RFC 9110 §9.2.1), which change nothing
/// on the other side. Writes are mirrored by `dual_write`.
pub const READ_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];
pub const DEFAULT_SHADOW_READ_METHODS: [&str; 1] = ["GET"];
/// Upper bound for each of `compare.ignore` and `compare.unordered`: every rule is followed
/// through every compared document.
pub const MAX_NOISE_RULES: usize = 32;
/// Upper bound for `compare.headers`.
pub const MAX_COMPARED_HEADERS: usize = 16;
/// What `shadow_reads` sampling hashes the request id with, after the stickiness group
/// (`<group>.shadow_reads:<x-request-id>`), so that the sample is independent of routing.
pub const SHADOW_READS_GROUP_SUFFIX: &str = ".shadow_reads";

/// A configuration error: the JSON path of the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

// ---------------------------------------------------------------------------------------------
// DTO: exactly the JSON shape, with defaults, rejecting unknown fields.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_cluster_header")]
    pub cluster_header: String,
    #[serde(default = "default_stickiness_headers")]
    pub stickiness_headers: Vec<String>,
    /// Cookie names (case-sensitive) tried after the stickiness headers.
    #[serde(default)]
    pub stickiness_cookies: Vec<String>,
    #[serde(default = "default_true")]
    pub emit_feature_headers: bool,
    pub services: Vec<RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    pub name: String,
    pub path_prefixes: Vec<String>,
    pub legacy_cluster: String,
    pub new_cluster: String,
    #[serde(default)]
    pub use_legacy: bool,
    /// A JSON number so that out-of-range and fractional values get our message, not serde's.
    #[serde(default = "default_percentage")]
    pub new_percentage: serde_json::Number,
    #[serde(default)]
    pub feature_header: Option<String>,
    #[serde(default)]
    pub stickiness_group: Option<String>,
    #[serde(default)]
    pub dual_write: Option<RawDualWrite>,
    #[serde(default)]
    pub overrides: Vec<RawOverride>,
    #[serde(default)]
    pub shadow_reads: Option<RawShadowReads>,
    #[serde(default)]
    pub compare: Option<RawCompare>,
}

/// `{percentage, methods, timeout_ms}`: a sample of matched reads is mirrored to the other side.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShadowReads {
    /// A JSON number so that out-of-range and fractional values get our message, not serde's.
    pub percentage: serde_json::Number,
    #[serde(default = "default_read_methods")]
    pub methods: Vec<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// `{ignore, unordered, headers, writes, max_body_bytes, log_bodies}`: compare the responses
/// of mirrored requests.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCompare {
    #[serde(default)]
    pub ignore: Vec<String>,
    #[serde(default)]
    pub unordered: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub writes: bool,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default)]
    pub log_bodies: bool,
}

/// `{header | cookie, value, side}`: a request whose header (or cookie) equals `value` goes to
/// `side`, whatever its bucket.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    #[serde(default)]
    pub header: Option<String>,
    #[serde(default)]
    pub cookie: Option<String>,
    pub value: String,
    /// A string so that a wrong side gets our message, not serde's.
    pub side: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDualWrite {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default = "default_methods")]
    pub methods: Vec<String>,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
}

fn default_cluster_header() -> String {
    DEFAULT_CLUSTER_HEADER.to_string()
}
fn default_stickiness_headers() -> Vec<String> {
    DEFAULT_STICKINESS_HEADERS
        .iter()
        .map(|h| h.to_string())
        .collect()
}
fn default_true() -> bool {
    true
}
fn default_percentage() -> serde_json::Number {
    serde_json::Number::from(0u8)
}
fn default_methods() -> Vec<String> {
    DEFAULT_DUAL_WRITE_METHODS
        .iter()
        .map(|m| m.to_string())
        .collect()
}
fn default_read_methods() -> Vec<String> {
    DEFAULT_SHADOW_READ_METHODS
        .iter()
        .map(|m| m.to_string())
        .collect()
}
fn default_timeout_ms() -> u64 {
    DEFAULT_DUAL_WRITE_TIMEOUT_MS
}
fn default_max_body_bytes() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

// ---------------------------------------------------------------------------------------------
// Validated configuration.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfig {
    /// Lower-cased request header carrying the chosen cluster to Envoy's `cluster_header` route.
    pub cluster_header: String,
    /// Lower-cased, in priority order (`x-request-id` is always tried last, after the cookies).
    pub stickiness_headers: Vec<String>,
    /// Cookie names as written (cookie names are case-sensitive), in priority order.
    pub stickiness_cookies: Vec<String>,
    pub emit_feature_headers: bool,
    pub services: Vec<ServiceConfig>,
    /// Every path prefix with its service index, longest first (ties in configuration order).
    pub prefixes: Vec<(String, usize)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceConfig {
    pub name: String,
    pub path_prefixes: Vec<String>,
    pub legacy_cluster: String,
    pub new_cluster: String,
    pub use_legacy: bool,
    /// 0..=100.
    pub new_percentage: u8,
    pub feature_header: Option<String>,
    pub stickiness_group: String,
    pub dual_write: DualWriteConfig,
    /// Checked in order before bucketing; the first rule that matches decides. Empty: off.
    pub overrides: Vec<Override>,
    /// `None`: reads are not mirrored.
    pub shadow_reads: Option<ShadowReadsConfig>,
    /// `None`: responses are not compared. Shared with the comparisons in flight, which keep
    /// the rules they started with across configuration updates.
    pub compare: Option<Arc<CompareConfig>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShadowReadsConfig {
    /// 0..=100: the share of matched reads mirrored.
    pub percentage: u8,
    /// Upper-case names out of [`READ_METHODS`].
    pub methods: Vec<String>,
    pub timeout_ms: u64,
    /// `<stickiness_group>.shadow_reads`: the sampling hash's group.
    pub sampling_group: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareConfig {
    /// Locations left out of the comparison (on both sides).
    pub ignore: Vec<JsonPath>,
    /// Arrays compared as multisets.
    pub unordered: Vec<JsonPath>,
    /// Lower-cased response headers compared too (every value, in order).
    pub headers: Vec<String>,
    /// Also compare mirrored writes (reads are always compared).
    pub writes: bool,
    /// Bodies longer than this (either side) are not compared.
    pub max_body_bytes: u64,
    /// Debug: put both whole bodies (up to `max_body_bytes`) in each mismatch log line.
    pub log_bodies: bool,
    /// Not configuration: whether this service's last body comparison found a difference, which
    /// skips the digest fast path for the next one (see `compare.rs`).
    pub last_differed: crate::compare::LastDiffered,
}

impl CompareConfig {
    /// No rules: bodies compared exactly (structurally for JSON).
    pub fn plain() -> Self {
        Self {
            ignore: Vec::new(),
            unordered: Vec::new(),
            headers: Vec::new(),
            writes: false,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            log_bodies: false,
            last_differed: Default::default(),
        }
    }
}

/// A validated override rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub source: OverrideSource,
    /// Compared byte for byte with the header value or the (unquoted) cookie value.
    pub value: String,
    pub side: Side,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideSource {
    /// Lower-cased header name; its first value is compared.
    Header(String),
    /// Cookie name as written; its first valid occurrence in the `Cookie` header(s) is compared.
    Cookie(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DualWriteConfig {
    pub enabled: bool,
    /// Upper-case method names.
    pub methods: Vec<String>,
    pub timeout_ms: u64,
    pub max_body_bytes: u64,
}

impl DualWriteConfig {
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            methods: default_methods(),
            timeout_ms: DEFAULT_DUAL_WRITE_TIMEOUT_MS,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

impl FilterConfig {
    /// Request headers only the filter may set: a client's values must never reach an upstream,
    /// with the filter running (it removes or replaces them) or bypassed (the shipped Envoy
    /// configs remove them before route selection; docs/configuration.md).
    pub fn owned_request_headers(&self) -> [&str; 3] {
        [
            self.cluster_header.as_str(),
            ROUTED_TO_HEADER,
            SHADOW_HEADER,
        ]
    }

    /// Parses and validates the plugin configuration bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw = parse_raw(bytes)?;
        FilterConfig::try_from(raw)
    }
}

/// JSON → DTO. Errors carry the JSON path serde was at (`services[0].dual_write`).
pub fn parse_raw(bytes: &[u8]) -> Result<RawConfig, ConfigError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let raw: RawConfig = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { String::new() } else { path };
        ConfigError::new(field, err.inner().to_string())
    })?;
    deserializer
        .end()
        .map_err(|err| ConfigError::new("", err.to_string()))?;
    Ok(raw)
}

/// An HTTP field name (RFC 9110 token) — anything else could not be sent as a header.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

fn header_name(field: &str, value: &str) -> Result<String, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::new(field, "must not be empty"));
    }
    if !is_header_name(value) {
        return Err(ConfigError::new(
            field,
            format!("must be a valid HTTP header name, got {value:?}"),
        ));
    }
    Ok(value.to_ascii_lowercase())
}

/// Service names become part of metric names (`cutover.<name>.routed_new`), so they are kept
/// to characters that survive Envoy's stats and Prometheus naming.
fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn non_empty(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().is_empty() {
        Err(ConfigError::new(field, "must not be empty"))
    } else {
        Ok(())
    }
}

impl TryFrom<RawConfig> for FilterConfig {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Self, Self::Error> {
        let cluster_header = header_name("cluster_header", &raw.cluster_header)?;

        if raw.stickiness_headers.is_empty() {
            return Err(ConfigError::new(
                "stickiness_headers",
                "must not be empty (list at least one header carrying a user or correlation id)",
            ));
        }
        let mut stickiness_headers = Vec::with_capacity(raw.stickiness_headers.len());
        for (i, h) in raw.stickiness_headers.iter().enumerate() {
            stickiness_headers.push(header_name(&format!("stickiness_headers[{i}]"), h)?);
        }

        if raw.stickiness_cookies.len() > MAX_STICKINESS_COOKIES {
            return Err(ConfigError::new(
                "stickiness_cookies",
                format!(
                    "at most {MAX_STICKINESS_COOKIES} names, got {}",
                    raw.stickiness_cookies.len()
                ),
            ));
        }
        let mut stickiness_cookies = Vec::with_capacity(raw.stickiness_cookies.len());
        for (i, c) in raw.stickiness_cookies.into_iter().enumerate() {
            stickiness_cookies.push(cookie_name(&format!("stickiness_cookies[{i}]"), c)?);
        }

        let mut services: Vec<ServiceConfig> = Vec::with_capacity(raw.services.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut prefix_owner: HashMap<String, usize> = HashMap::new();
        let mut prefixes: Vec<(String, usize)> = Vec::new();

        for (i, s) in raw.services.into_iter().enumerate() {
            let at = |field: &str| format!("services[{i}].{field}");

            if s.name.is_empty() {
                return Err(ConfigError::new(at("name"), "must not be empty"));
            }
            if !is_service_name(&s.name) {
                return Err(ConfigError::new(
                    at("name"),
                    format!(
                        "must contain only ASCII letters, digits, '_' and '-' (it is part of metric names), got {:?}",
                        s.name
                    ),
                ));
            }
            if let Some(first) = names.get(&s.name) {
                return Err(ConfigError::new(
                    at("name"),
                    format!(
                        "duplicate service name {:?} (also services[{first}])",
                        s.name
                    ),
                ));
            }
            names.insert(s.name.clone(), i);

            if s.path_prefixes.is_empty() {
                return Err(ConfigError::new(at("path_prefixes"), "must not be empty"));
            }
            for (j, p) in s.path_prefixes.iter().enumerate() {
                let field = at(&format!("path_prefixes[{j}]"));
                if !p.starts_with('/') {
                    return Err(ConfigError::new(
                        field,
                        format!("must start with '/', got {p:?}"),
                    ));
                }
                if let Some(owner) = prefix_owner.get(p) {
                    let owner_name = if *owner == i {
                        s.name.as_str()
                    } else {
                        services
                            .get(*owner)
                            .map(|o| o.name.as_str())
                            .unwrap_or_default()
                    };
                    return Err(ConfigError::new(
                        field,
                        format!("prefix {p:?} is already claimed by service {owner_name:?}"),
                    ));
                }
                prefix_owner.insert(p.clone(), i);
                prefixes.push((p.clone(), i));
            }

            non_empty(&at("legacy_cluster"), &s.legacy_cluster)?;
            non_empty(&at("new_cluster"), &s.new_cluster)?;
            if s.legacy_cluster == s.new_cluster {
                return Err(ConfigError::new(
                    at("new_cluster"),
                    format!(
                        "must differ from legacy_cluster (both are {:?})",
                        s.new_cluster
                    ),
                ));
            }

            let new_percentage = percentage(&at("new_percentage"), &s.new_percentage)?;

            let feature_header = match &s.feature_header {
                Some(h) => {
                    header_name(&at("feature_header"), h)?;
                    Some(h.clone())
                }
                None => None,
            };

            let stickiness_group = match s.stickiness_group {
                Some(g) => {
                    non_empty(&at("stickiness_group"), &g)?;
                    g
                }
                None => s.name.clone(),
            };

            let dual_write_configured = s.dual_write.is_some();
            let dual_write = match s.dual_write {
                None => DualWriteConfig::disabled(),
                Some(d) => validate_dual_write(&at("dual_write"), d)?,
            };

            if s.overrides.len() > MAX_OVERRIDES {
                return Err(ConfigError::new(
                    at("overrides"),
                    format!("at most {MAX_OVERRIDES} rules, got {}", s.overrides.len()),
                ));
            }
            let mut overrides = Vec::with_capacity(s.overrides.len());
            for (j, o) in s.overrides.into_iter().enumerate() {
                overrides.push(validate_override(
                    &at(&format!("overrides[{j}]")),
                    o,
                    &cluster_header,
                )?);
            }

            let shadow_reads = match s.shadow_reads {
                None => None,
                Some(r) => Some(validate_shadow_reads(
                    &at("shadow_reads"),
                    r,
                    dual_write_configured.then_some(&dual_write),
                    &stickiness_group,
                )?),
            };
            let compare = match s.compare {
                None => None,
                Some(c) => Some(Arc::new(validate_compare(
                    &at("compare"),
                    c,
                    shadow_reads.is_some(),
                    dual_write_configured,
                )?)),
            };

            services.push(ServiceConfig {
                name: s.name,
                path_prefixes: s.path_prefixes,
                legacy_cluster: s.legacy_cluster,
                new_cluster: s.new_cluster,
                use_legacy: s.use_legacy,
                new_percentage,
                feature_header,
                stickiness_group,
                dual_write,
                overrides,
                shadow_reads,
                compare,
            });
        }

        // Longest prefix first; the sort is stable so equal lengths keep configuration order
        // (equal-length prefixes are distinct strings, so at most one of them can match).
        prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));

        Ok(FilterConfig {
            cluster_header,
            stickiness_headers,
            stickiness_cookies,
            emit_feature_headers: raw.emit_feature_headers,
            services,
            prefixes,
        })
    }
}

/// A cookie name: an RFC 6265 token, kept as written (cookie names are case-sensitive).
fn cookie_name(field: &str, value: String) -> Result<String, ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::new(field, "must not be empty"));
    }
    if !is_header_name(&value) {
        return Err(ConfigError::new(
            field,
            format!("must be a valid cookie name (an HTTP token), got {value:?}"),
        ));
    }
    Ok(value)
}

fn validate_override(
    at: &str,
    o: RawOverride,
    cluster_header: &str,
) -> Result<Override, ConfigError> {
    let source = match (o.header, o.cookie) {
        (Some(header), None) => {
            let name = header_name(&format!("{at}.header"), &header)?;
            if [cluster_header, ROUTED_TO_HEADER, SHADOW_HEADER].contains(&name.as_str()) {
                return Err(ConfigError::new(
                    format!("{at}.header"),
                    format!("{name:?} is set by the filter itself and cannot choose a side"),
                ));
            }
            OverrideSource::Header(name)
        }
        (None, Some(cookie)) => {
            OverrideSource::Cookie(cookie_name(&format!("{at}.cookie"), cookie)?)
        }
        (Some(_), Some(_)) | (None, None) => {
            return Err(ConfigError::new(
                at,
                "must name exactly one of \"header\" or \"cookie\"",
            ))
        }
    };
    let value_field = format!("{at}.value");
    if o.value.is_empty() {
        return Err(ConfigError::new(value_field, "must not be empty"));
    }
    let matchable = match source {
        // Envoy trims surrounding whitespace and rejects control characters in header values.
        OverrideSource::Header(_) => {
            o.value.trim() == o.value && !o.value.bytes().any(|b| b.is_ascii_control())
        }
        OverrideSource::Cookie(_) => cookie::is_cookie_value(o.value.as_bytes()),
    };
    if !matchable {
        let what = match source {
            OverrideSource::Header(_) => {
                "must not have surrounding whitespace or control characters (no request could match it)"
            }
            OverrideSource::Cookie(_) => {
                "must consist of cookie-value characters: no whitespace, '\"', ',', ';', '\\' or control characters (no request could match it)"
            }
        };
        return Err(ConfigError::new(
            value_field,
            format!("{what}, got {:?}", o.value),
        ));
    }
    let side = match o.side.as_str() {
        "new" => Side::New,
        "legacy" => Side::Legacy,
        other => {
            return Err(ConfigError::new(
                format!("{at}.side"),
                format!("expected \"new\" or \"legacy\", got {other:?}"),
            ))
        }
    };
    Ok(Override {
        source,
        value: o.value,
        side,
    })
}

fn validate_dual_write(at: &str, d: RawDualWrite) -> Result<DualWriteConfig, ConfigError> {
    if d.methods.is_empty() && d.enabled {
        return Err(ConfigError::new(
            format!("{at}.methods"),
            "must not be empty when dual_write is enabled",
        ));
    }
    let methods = methods_out_of(
        &format!("{at}.methods"),
        &d.methods,
        &KNOWN_METHODS,
        "unknown HTTP method",
    )?;
    shadow_timeout(&format!("{at}.timeout_ms"), d.timeout_ms)?;
    body_cap(&format!("{at}.max_body_bytes"), d.max_body_bytes)?;
    Ok(DualWriteConfig {
        enabled: d.enabled,
        methods,
        timeout_ms: d.timeout_ms,
        max_body_bytes: d.max_body_bytes,
    })
}

/// A percentage 0..=100, given as a JSON number.
fn percentage(field: &str, value: &serde_json::Number) -> Result<u8, ConfigError> {
    match (value.as_u64(), value.as_i64()) {
        (Some(p), _) if p <= 100 => Ok(p as u8),
        (Some(_), _) | (None, Some(_)) => Err(ConfigError::new(
            field,
            format!("must be between 0 and 100, got {value}"),
        )),
        (None, None) => Err(ConfigError::new(
            field,
            format!("must be an integer between 0 and 100, got {value}"),
        )),
    }
}

/// A shadow's `timeout_ms`: 1..=[`MAX_DUAL_WRITE_TIMEOUT_MS`].
fn shadow_timeout(field: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 || value > MAX_DUAL_WRITE_TIMEOUT_MS {
        return Err(ConfigError::new(
            field,
            format!("must be between 1 and {MAX_DUAL_WRITE_TIMEOUT_MS}, got {value}"),
        ));
    }
    Ok(())
}

/// A `max_body_bytes`: at most [`MAX_BODY_BYTES_LIMIT`].
fn body_cap(field: &str, value: u64) -> Result<(), ConfigError> {
    if value > MAX_BODY_BYTES_LIMIT {
        return Err(ConfigError::new(
            field,
            format!("must be at most {MAX_BODY_BYTES_LIMIT}, got {value}"),
        ));
    }
    Ok(())
}

/// Upper-cases and de-duplicates `methods`, each of which must be in `allowed`.
fn methods_out_of(
    at: &str,
    methods: &[String],
    allowed: &[&str],
    why: &str,
) -> Result<Vec<String>, ConfigError> {
    let mut validated: Vec<String> = Vec::with_capacity(methods.len());
    for (k, m) in methods.iter().enumerate() {
        let upper = m.to_ascii_uppercase();
        if !allowed.contains(&upper.as_str()) {
            return Err(ConfigError::new(
                format!("{at}[{k}]"),
                format!("{why} {m:?} (expected one of {})", allowed.join(", ")),
            ));
        }
        if !validated.contains(&upper) {
            validated.push(upper);
        }
    }
    Ok(validated)
}

fn validate_shadow_reads(
    at: &str,
    r: RawShadowReads,
    dual_write: Option<&DualWriteConfig>,
    stickiness_group: &str,
) -> Result<ShadowReadsConfig, ConfigError> {
    let percentage = percentage(&format!("{at}.percentage"), &r.percentage)?;
    let methods_at = format!("{at}.methods");
    if r.methods.is_empty() {
        return Err(ConfigError::new(methods_at, "must not be empty"));
    }
    for (k, m) in r.methods.iter().enumerate() {
        let upper = m.to_ascii_uppercase();
        if KNOWN_METHODS.contains(&upper.as_str()) && !READ_METHODS.contains(&upper.as_str()) {
            return Err(ConfigError::new(
                format!("{methods_at}[{k}]"),
                format!(
                    "{m:?} is not a read: a shadow of it would change the other side (mirror writes with dual_write); expected one of {}",
                    READ_METHODS.join(", ")
                ),
            ));
        }
    }
    let methods = methods_out_of(
        &methods_at,
        &r.methods,
        &READ_METHODS,
        "unknown read method",
    )?;
    if let Some(dual_write) = dual_write {
        if let Some((k, m)) = r
            .methods
            .iter()
            .enumerate()
            .find(|(_, m)| dual_write.methods.contains(&m.to_ascii_uppercase()))
        {
            return Err(ConfigError::new(
                format!("{methods_at}[{k}]"),
                format!(
                    "{m:?} is already mirrored by dual_write (every such request, not a sample)"
                ),
            ));
        }
    }
    shadow_timeout(&format!("{at}.timeout_ms"), r.timeout_ms)?;
    Ok(ShadowReadsConfig {
        percentage,
        methods,
        timeout_ms: r.timeout_ms,
        sampling_group: format!("{stickiness_group}{SHADOW_READS_GROUP_SUFFIX}"),
    })
}

/// A list of noise-rule paths, each parsed; `$` alone is refused (it would ignore, or reorder,
/// the whole body).
fn noise_rules(at: &str, paths: &[String]) -> Result<Vec<JsonPath>, ConfigError> {
    if paths.len() > MAX_NOISE_RULES {
        return Err(ConfigError::new(
            at,
            format!("at most {MAX_NOISE_RULES} paths, got {}", paths.len()),
        ));
    }
    let mut rules: Vec<JsonPath> = Vec::with_capacity(paths.len());
    for (k, text) in paths.iter().enumerate() {
        let field = format!("{at}[{k}]");
        let path = JsonPath::parse(text).map_err(|err| {
            ConfigError::new(&field, format!("invalid JSON path {text:?}: {err}"))
        })?;
        if text == "$" {
            return Err(ConfigError::new(
                field,
                "\"$\" is the whole body; name the members or elements instead",
            ));
        }
        if !rules.contains(&path) {
            rules.push(path);
        }
    }
    Ok(rules)
}

fn validate_compare(
    at: &str,
    c: RawCompare,
    shadow_reads: bool,
    dual_write: bool,
) -> Result<CompareConfig, ConfigError> {
    let ignore = noise_rules(&format!("{at}.ignore"), &c.ignore)?;
    let unordered = noise_rules(&format!("{at}.unordered"), &c.unordered)?;
    if c.headers.len() > MAX_COMPARED_HEADERS {
        return Err(ConfigError::new(
            format!("{at}.headers"),
            format!(
                "at most {MAX_COMPARED_HEADERS} headers, got {}",
                c.headers.len()
            ),
        ));
    }
    let mut headers: Vec<String> = Vec::with_capacity(c.headers.len());
    for (k, h) in c.headers.iter().enumerate() {
        let name = header_name(&format!("{at}.headers[{k}]"), h)?;
        if !headers.contains(&name) {
            headers.push(name);
        }
    }
    if c.writes && !dual_write {
        return Err(ConfigError::new(
            format!("{at}.writes"),
            "is true but the service has no dual_write: there are no mirrored writes to compare",
        ));
    }
    if !shadow_reads && !c.writes {
        // Name the rule the operator expects to take effect, if any.
        let field = if !c.ignore.is_empty() {
            format!("{at}.ignore")
        } else if !c.unordered.is_empty() {
            format!("{at}.unordered")
        } else {
            at.to_string()
        };
        return Err(ConfigError::new(
            field,
            "the service compares no responses: add shadow_reads, or dual_write with compare.writes: true",
        ));
    }
    body_cap(&format!("{at}.max_body_bytes"), c.max_body_bytes)?;
    Ok(CompareConfig {
        ignore,
        unordered,
        headers,
        writes: c.writes,
        max_body_bytes: c.max_body_bytes,
        log_bodies: c.log_bodies,
        last_differed: Default::default(),
    })
}

/// Test helper for the core modules: the one service of a configuration with `fields` spliced
/// into a minimal `chat` service (`/api/chat`, `chat_legacy`, `chat_new`).
#[cfg(test)]
pub(crate) fn test_service(fields: &str) -> ServiceConfig {
    let json = format!(
        r#"{{"services":[{{"name":"chat","path_prefixes":["/api/chat"],
            "legacy_cluster":"chat_legacy","new_cluster":"chat_new"{fields}}}]}}"#
    );
    match FilterConfig::from_json(json.as_bytes()) {
        Ok(mut config) => config.services.remove(0),
        Err(err) => panic!("{json}: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"{
      "cluster_header": "x-cutover-cluster",
      "stickiness_headers": ["x-correlation-id", "x-request-id"],
      "emit_feature_headers": true,
      "services": [
        { "name": "chat",
          "path_prefixes": ["/api/chat", "/api/conversations", "/hubs/chat"],
          "legacy_cluster": "chat_legacy", "new_cluster": "chat_new",
          "use_legacy": false, "new_percentage": 10,
          "feature_header": "X-Feature-UseLegacyChat",
          "stickiness_group": "chat",
          "dual_write": { "enabled": true, "methods": ["POST","PUT","PATCH"], "timeout_ms": 5000, "max_body_bytes": 1048576 } },
        { "name": "orchestration",
          "path_prefixes": ["/api/orchestration"],
          "legacy_cluster": "orchestration_legacy", "new_cluster": "orchestration_new",
          "use_legacy": true, "new_percentage": 50 } ]
    }"#;

    /// A one-service configuration with `service_fields` spliced into the service object.
    fn one_service(service_fields: &str) -> String {
        format!(
            r#"{{"services":[{{"name":"chat","path_prefixes":["/api/chat"],
                "legacy_cluster":"chat_legacy","new_cluster":"chat_new"{service_fields}}}]}}"#
        )
    }

    fn reject(json: &str) -> ConfigError {
        match FilterConfig::from_json(json.as_bytes()) {
            Ok(c) => panic!("accepted {json}: {c:?}"),
            Err(e) => e,
        }
    }

    fn assert_rejected(json: &str, field: &str, message_part: &str) {
        let err = reject(json);
        assert_eq!(err.field, field, "{err}");
        assert!(err.message.contains(message_part), "{err}");
    }

    #[test]
    fn full_example_is_accepted() {
        let c = FilterConfig::from_json(FULL.as_bytes()).unwrap();
        assert_eq!(c.cluster_header, "x-cutover-cluster");
        assert_eq!(c.stickiness_headers, ["x-correlation-id", "x-request-id"]);
        assert!(c.emit_feature_headers);
        assert_eq!(c.services.len(), 2);
        let chat = &c.services[0];
        assert_eq!(chat.new_percentage, 10);
        assert_eq!(
            chat.feature_header.as_deref(),
            Some("X-Feature-UseLegacyChat")
        );
        assert_eq!(
            chat.dual_write,
            DualWriteConfig {
                enabled: true,
                methods: vec!["POST".into(), "PUT".into(), "PATCH".into()],
                timeout_ms: 5000,
                max_body_bytes: 1_048_576
            }
        );
        let orchestration = &c.services[1];
        assert!(orchestration.use_legacy);
        assert!(!orchestration.dual_write.enabled);
        assert_eq!(orchestration.stickiness_group, "orchestration");
    }

    #[test]
    fn defaults() {
        let c = FilterConfig::from_json(one_service("").as_bytes()).unwrap();
        assert_eq!(c.cluster_header, DEFAULT_CLUSTER_HEADER);
        assert_eq!(c.stickiness_headers, DEFAULT_STICKINESS_HEADERS);
        assert!(c.emit_feature_headers);
        let s = &c.services[0];
        assert_eq!(s.stickiness_group, "chat");
        assert_eq!(s.feature_header, None);
        assert!(!s.use_legacy);
        assert_eq!(s.new_percentage, 0);
        assert!(!s.dual_write.enabled);
        // Overrides and cookie stickiness are off unless configured.
        assert!(s.overrides.is_empty());
        assert!(c.stickiness_cookies.is_empty());

        let c = FilterConfig::from_json(one_service(r#","dual_write":{}"#).as_bytes()).unwrap();
        assert_eq!(
            c.services[0].dual_write,
            DualWriteConfig {
                enabled: true,
                methods: vec!["POST".into(), "PUT".into(), "PATCH".into()],
                timeout_ms: DEFAULT_DUAL_WRITE_TIMEOUT_MS,
                max_body_bytes: DEFAULT_MAX_BODY_BYTES
            }
        );
    }

    #[test]
    fn header_names_are_lower_cased_methods_upper_cased() {
        let c = FilterConfig::from_json(
            r#"{"cluster_header":"X-Cluster","stickiness_headers":["X-User"],"services":[
                {"name":"chat","path_prefixes":["/a"],"legacy_cluster":"l","new_cluster":"n",
                 "dual_write":{"methods":["post","Delete","POST"]}}]}"#
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(c.cluster_header, "x-cluster");
        assert_eq!(c.stickiness_headers, ["x-user"]);
        assert_eq!(c.services[0].dual_write.methods, ["POST", "DELETE"]);
    }

    #[test]
    fn prefixes_are_sorted_longest_first() {
        let c = FilterConfig::from_json(FULL.as_bytes()).unwrap();
        let lengths: Vec<usize> = c.prefixes.iter().map(|(p, _)| p.len()).collect();
        let mut sorted = lengths.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(lengths, sorted);
        assert_eq!(c.prefixes.len(), 4);
    }

    #[test]
    fn rejects_invalid_json() {
        let err = reject(r#"{"services": ["#);
        assert!(err.message.starts_with("EOF while parsing a list"), "{err}");
        let err = reject("");
        assert!(
            err.message.starts_with("EOF while parsing a value"),
            "{err}"
        );
        let err = reject(r#"{"services": []} trailing"#);
        assert!(err.message.starts_with("trailing characters"), "{err}");
        let err = reject("[1, 2]");
        assert!(err.message.starts_with("invalid type"), "{err}");
    }

    #[test]
    fn rejects_missing_services() {
        assert_rejected("{}", "", "missing field `services`");
    }

    #[test]
    fn rejects_unknown_fields_naming_them() {
        assert_rejected(
            r#"{"services":[],"clusterHeader":"x"}"#,
            "clusterHeader",
            "unknown field `clusterHeader`",
        );
        assert_rejected(
            &one_service(r#","percentage":10"#),
            "services[0].percentage",
            "unknown field `percentage`",
        );
        assert_rejected(
            &one_service(r#","dual_write":{"timeout":5}"#),
            "services[0].dual_write.timeout",
            "unknown field `timeout`",
        );
    }

    #[test]
    fn rejects_wrong_types_naming_the_field() {
        assert_rejected(
            &one_service(r#","use_legacy":"yes""#),
            "services[0].use_legacy",
            "invalid type",
        );
    }

    #[test]
    fn rejects_percentage_outside_0_to_100() {
        let err = reject(&one_service(r#","new_percentage":150"#));
        assert_eq!(
            err.to_string(),
            "services[0].new_percentage: must be between 0 and 100, got 150"
        );
        assert_rejected(
            &one_service(r#","new_percentage":-1"#),
            "services[0].new_percentage",
            "got -1",
        );
        assert_rejected(
            &one_service(r#","new_percentage":10.5"#),
            "services[0].new_percentage",
            "must be an integer",
        );
        for ok in [0, 1, 99, 100] {
            let c = FilterConfig::from_json(
                one_service(&format!(r#","new_percentage":{ok}"#)).as_bytes(),
            )
            .unwrap();
            assert_eq!(u64::from(c.services[0].new_percentage), ok);
        }
    }

    #[test]
    fn rejects_empty_service_name() {
        assert_rejected(
            r#"{"services":[{"name":"","path_prefixes":["/a"],"legacy_cluster":"l","new_cluster":"n"}]}"#,
            "services[0].name",
            "must not be empty",
        );
    }

    #[test]
    fn rejects_service_names_unfit_for_metrics() {
        assert_rejected(
            r#"{"services":[{"name":"my chat","path_prefixes":["/a"],"legacy_cluster":"l","new_cluster":"n"}]}"#,
            "services[0].name",
            "ASCII letters",
        );
        assert_rejected(
            r#"{"services":[{"name":"chat.v2","path_prefixes":["/a"],"legacy_cluster":"l","new_cluster":"n"}]}"#,
            "services[0].name",
            "ASCII letters",
        );
    }

    #[test]
    fn rejects_duplicate_service_names() {
        assert_rejected(
            r#"{"services":[
                {"name":"chat","path_prefixes":["/a"],"legacy_cluster":"l","new_cluster":"n"},
                {"name":"chat","path_prefixes":["/b"],"legacy_cluster":"l","new_cluster":"n"}]}"#,
            "services[1].name",
            "duplicate service name \"chat\" (also services[0])",
        );
    }

    #[test]
    fn rejects_empty_cluster_names() {
        assert_rejected(
            r#"{"services":[{"name":"chat","path_prefixes":["/a"],"legacy_cluster":"","new_cluster":"n"}]}"#,
            "services[0].legacy_cluster",
            "must not be empty",
        );
        assert_rejected(
            r#"{"services":[{"name":"chat","path_prefixes":["/a"],"legacy_cluster":"l","new_cluster":" "}]}"#,
            "services[0].new_cluster",
            "must not be empty",
        );
        assert_rejected(
            r#"{"services":[{"name":"chat","path_prefixes":["/a"],"legacy_cluster":"same","new_cluster":"same"}]}"#,
            "services[0].new_cluster",
            "must differ from legacy_cluster",
        );
    }

    #[test]
    fn rejects_a_prefix_claimed_by_two_services() {
        assert_rejected(
            r#"{"services":[
                {"name":"chat","path_prefixes":["/api/chat"],"legacy_cluster":"l","new_cluster":"n"},
                {"name":"other","path_prefixes":["/x","/api/chat"],"legacy_cluster":"l2","new_cluster":"n2"}]}"#,
            "services[1].path_prefixes[1]",
            "prefix \"/api/chat\" is already claimed by service \"chat\"",
        );
        assert_rejected(
            r#"{"services":[{"name":"chat","path_prefixes":["/a","/a"],"legacy_cluster":"l","new_cluster":"n"}]}"#,
            "services[0].path_prefixes[1]",
            "already claimed by service \"chat\"",
        );
    }

    #[test]
    fn rejects_bad_prefixes() {
        assert_rejected(
            r#"{"services":[{"name":"chat","path_prefixes":[],"legacy_cluster":"l","new_cluster":"n"}]}"#,
            "services[0].path_prefixes",
            "must not be empty",
        );
        assert_rejected(
            r#"{"services":[{"name":"chat","path_prefixes":["api"],"legacy_cluster":"l","new_cluster":"n"}]}"#,
            "services[0].path_prefixes[0]",
            "must start with '/'",
        );
    }

    #[test]
    fn rejects_empty_stickiness_headers() {
        assert_rejected(
            r#"{"stickiness_headers":[],"services":[]}"#,
            "stickiness_headers",
            "must not be empty",
        );
        assert_rejected(
            r#"{"stickiness_headers":["x-a",""],"services":[]}"#,
            "stickiness_headers[1]",
            "must not be empty",
        );
        assert_rejected(
            r#"{"stickiness_headers":["x a"],"services":[]}"#,
            "stickiness_headers[0]",
            "valid HTTP header name",
        );
    }

    #[test]
    fn rejects_bad_header_names() {
        assert_rejected(
            r#"{"cluster_header":"","services":[]}"#,
            "cluster_header",
            "must not be empty",
        );
        assert_rejected(
            &one_service(r#","feature_header":"X Feature""#),
            "services[0].feature_header",
            "valid HTTP header name",
        );
        assert_rejected(
            &one_service(r#","stickiness_group":"""#),
            "services[0].stickiness_group",
            "must not be empty",
        );
    }

    #[test]
    fn rejects_unknown_dual_write_methods() {
        assert_rejected(
            &one_service(r#","dual_write":{"methods":["POST","FETCH"]}"#),
            "services[0].dual_write.methods[1]",
            "unknown HTTP method \"FETCH\"",
        );
        assert_rejected(
            &one_service(r#","dual_write":{"methods":[]}"#),
            "services[0].dual_write.methods",
            "must not be empty",
        );
        // A disabled block may list no methods.
        assert!(FilterConfig::from_json(
            one_service(r#","dual_write":{"enabled":false,"methods":[]}"#).as_bytes()
        )
        .is_ok());
    }

    #[test]
    fn rejects_zero_or_huge_timeout() {
        assert_rejected(
            &one_service(r#","dual_write":{"timeout_ms":0}"#),
            "services[0].dual_write.timeout_ms",
            "must be between 1 and 600000, got 0",
        );
        assert_rejected(
            &one_service(r#","dual_write":{"timeout_ms":600001}"#),
            "services[0].dual_write.timeout_ms",
            "got 600001",
        );
        assert_rejected(
            &one_service(r#","dual_write":{"timeout_ms":-5}"#),
            "services[0].dual_write.timeout_ms",
            "invalid value",
        );
    }

    #[test]
    fn rejects_huge_body_cap() {
        assert_rejected(
            &one_service(r#","dual_write":{"max_body_bytes":67108865}"#),
            "services[0].dual_write.max_body_bytes",
            "must be at most 67108864",
        );
    }

    #[test]
    fn overrides_are_validated_into_rules() {
        let c = FilterConfig::from_json(
            one_service(
                r#","overrides":[
                {"header":"X-Cutover-Side","value":"new","side":"new"},
                {"cookie":"Cutover","value":"stay","side":"legacy"}]"#,
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            c.services[0].overrides,
            [
                Override {
                    source: OverrideSource::Header("x-cutover-side".into()),
                    value: "new".into(),
                    side: Side::New
                },
                Override {
                    source: OverrideSource::Cookie("Cutover".into()),
                    value: "stay".into(),
                    side: Side::Legacy
                }
            ]
        );
    }

    #[test]
    fn rejects_bad_override_rules_naming_the_rule() {
        let rules = |rules: &str| one_service(&format!(r#","overrides":{rules}"#));
        let ok = r#"{"header":"x-a","value":"1","side":"new"}"#;
        let err = reject(&rules(&format!(
            r#"[{ok},{{"header":"x-a","value":"2","side":"canary"}}]"#
        )));
        assert_eq!(
            err.to_string(),
            r#"services[0].overrides[1].side: expected "new" or "legacy", got "canary""#
        );
        // A side is a side, never a cluster.
        assert_rejected(
            &rules(r#"[{"header":"x-a","value":"1","side":"chat_new"}]"#),
            "services[0].overrides[0].side",
            r#"got "chat_new""#,
        );
        assert_rejected(
            &rules(r#"[{"header":"x-a","value":"1","side":"new","cluster":"admin"}]"#),
            "services[0].overrides[0].cluster",
            "unknown field `cluster`",
        );
        assert_rejected(
            &rules(r#"[{"header":"x-a","cookie":"b","value":"1","side":"new"}]"#),
            "services[0].overrides[0]",
            r#"exactly one of "header" or "cookie""#,
        );
        assert_rejected(
            &rules(r#"[{"value":"1","side":"new"}]"#),
            "services[0].overrides[0]",
            r#"exactly one of "header" or "cookie""#,
        );
        assert_rejected(
            &rules(r#"[{"header":"x-a","side":"new"}]"#),
            "services[0].overrides[0]",
            "missing field `value`",
        );
        assert_rejected(
            &rules(r#"[{"header":"x-a","value":"","side":"new"}]"#),
            "services[0].overrides[0].value",
            "must not be empty",
        );
        assert_rejected(
            &rules(r#"[{"header":"x-a","value":" 1","side":"new"}]"#),
            "services[0].overrides[0].value",
            "surrounding whitespace",
        );
        assert_rejected(
            &rules(r#"[{"header":"x-a","value":"1\n","side":"new"}]"#),
            "services[0].overrides[0].value",
            "control characters",
        );
        assert_rejected(
            &rules(r#"[{"cookie":"c","value":"a b","side":"new"}]"#),
            "services[0].overrides[0].value",
            "cookie-value characters",
        );
        assert_rejected(
            &rules(r#"[{"cookie":"c","value":"a;b=1","side":"new"}]"#),
            "services[0].overrides[0].value",
            "cookie-value characters",
        );
        assert_rejected(
            &rules(r#"[{"header":"x a","value":"1","side":"new"}]"#),
            "services[0].overrides[0].header",
            "valid HTTP header name",
        );
        assert_rejected(
            &rules(r#"[{"cookie":"","value":"1","side":"new"}]"#),
            "services[0].overrides[0].cookie",
            "must not be empty",
        );
        assert_rejected(
            &rules(r#"[{"cookie":"a=b","value":"1","side":"new"}]"#),
            "services[0].overrides[0].cookie",
            "valid cookie name",
        );
        let too_many = format!("[{}]", vec![ok; MAX_OVERRIDES + 1].join(","));
        assert_rejected(
            &rules(&too_many),
            "services[0].overrides",
            "at most 32 rules, got 33",
        );
    }

    #[test]
    fn override_headers_cannot_be_the_filters_own() {
        for header in ["x-cutover-cluster", "X-Routed-To", "x-cutover-shadow"] {
            assert_rejected(
                &one_service(&format!(
                    r#","overrides":[{{"header":"{header}","value":"1","side":"new"}}]"#
                )),
                "services[0].overrides[0].header",
                "set by the filter itself",
            );
        }
        // The configured cluster header, whatever its name.
        assert_rejected(
            r#"{"cluster_header":"x-pick","services":[{"name":"chat","path_prefixes":["/a"],
                "legacy_cluster":"l","new_cluster":"n",
                "overrides":[{"header":"X-Pick","value":"n","side":"new"}]}]}"#,
            "services[0].overrides[0].header",
            "set by the filter itself",
        );
    }

    #[test]
    fn stickiness_cookies_are_validated_and_kept_as_written() {
        let c = FilterConfig::from_json(
            r#"{"stickiness_cookies":["SessionId","visitor"],"services":[]}"#.as_bytes(),
        )
        .unwrap();
        assert_eq!(c.stickiness_cookies, ["SessionId", "visitor"]);
        assert_rejected(
            r#"{"stickiness_cookies":["ok",""],"services":[]}"#,
            "stickiness_cookies[1]",
            "must not be empty",
        );
        assert_rejected(
            r#"{"stickiness_cookies":["a b"],"services":[]}"#,
            "stickiness_cookies[0]",
            "valid cookie name",
        );
        assert_rejected(
            r#"{"stickiness_cookies":"sid","services":[]}"#,
            "stickiness_cookies",
            "invalid type",
        );
        let many = format!(
            r#"{{"stickiness_cookies":[{}],"services":[]}}"#,
            (0..=MAX_STICKINESS_COOKIES)
                .map(|i| format!(r#""c{i}""#))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_rejected(&many, "stickiness_cookies", "at most 16 names, got 17");
    }

    #[test]
    fn owned_request_headers_follow_the_cluster_header() {
        let c = FilterConfig::from_json(r#"{"cluster_header":"X-Pick","services":[]}"#.as_bytes())
            .unwrap();
        assert_eq!(
            c.owned_request_headers(),
            ["x-pick", "x-routed-to", "x-cutover-shadow"]
        );
    }

    #[test]
    fn shadow_reads_and_compare_are_off_by_default() {
        let c = FilterConfig::from_json(one_service("").as_bytes()).unwrap();
        assert_eq!(c.services[0].shadow_reads, None);
        assert_eq!(c.services[0].compare, None);
    }

    #[test]
    fn shadow_reads_and_compare_are_validated() {
        let c = FilterConfig::from_json(
            one_service(
                r#","stickiness_group":"g","dual_write":{},
                "shadow_reads":{"percentage":10,"methods":["get","HEAD","GET"],"timeout_ms":800},
                "compare":{"ignore":["$.updated_at","$.items[*].id","$..etag","$.updated_at"],
                           "unordered":["$.tags"],"headers":["ETag","etag"],"writes":true,
                           "max_body_bytes":4096,"log_bodies":true}"#,
            )
            .as_bytes(),
        )
        .unwrap();
        let s = &c.services[0];
        assert_eq!(
            s.shadow_reads,
            Some(ShadowReadsConfig {
                percentage: 10,
                methods: vec!["GET".into(), "HEAD".into()],
                timeout_ms: 800,
                sampling_group: "g.shadow_reads".into(),
            })
        );
        let compare = s.compare.as_ref().unwrap();
        let texts: Vec<&str> = compare.ignore.iter().map(JsonPath::as_str).collect();
        assert_eq!(texts, ["$.updated_at", "$.items[*].id", "$..etag"]);
        assert_eq!(compare.unordered[0].as_str(), "$.tags");
        assert_eq!(compare.headers, ["etag"]);
        assert!(compare.writes);
        assert_eq!(compare.max_body_bytes, 4096);
        assert!(compare.log_bodies);

        let c = FilterConfig::from_json(
            one_service(r#","shadow_reads":{"percentage":0},"compare":{}"#).as_bytes(),
        )
        .unwrap();
        let s = &c.services[0];
        let reads = s.shadow_reads.as_ref().unwrap();
        assert_eq!(reads.methods, ["GET"]);
        assert_eq!(reads.timeout_ms, DEFAULT_DUAL_WRITE_TIMEOUT_MS);
        assert_eq!(reads.sampling_group, "chat.shadow_reads");
        let mut plain = CompareConfig::plain();
        assert_eq!(s.compare.as_deref(), Some(&plain));
        plain.writes = true;
        assert_ne!(s.compare.as_deref(), Some(&plain));
    }

    #[test]
    fn rejects_bad_shadow_reads() {
        let reads = |fields: &str| one_service(&format!(r#","shadow_reads":{{{fields}}}"#));
        let err = reject(&reads(r#""percentage":101"#));
        assert_eq!(
            err.to_string(),
            "services[0].shadow_reads.percentage: must be between 0 and 100, got 101"
        );
        assert_rejected(
            &reads(r#""percentage":-3"#),
            "services[0].shadow_reads.percentage",
            "got -3",
        );
        assert_rejected(
            &reads(r#""percentage":2.5"#),
            "services[0].shadow_reads.percentage",
            "must be an integer",
        );
        assert_rejected(
            &reads(""),
            "services[0].shadow_reads",
            "missing field `percentage`",
        );
        assert_rejected(
            &reads(r#""percentage":5,"sample":5"#),
            "services[0].shadow_reads.sample",
            "unknown field `sample`",
        );
        assert_rejected(
            &reads(r#""percentage":5,"methods":[]"#),
            "services[0].shadow_reads.methods",
            "must not be empty",
        );
        assert_rejected(
            &reads(r#""percentage":5,"methods":["GET","POST"]"#),
            "services[0].shadow_reads.methods[1]",
            "\"POST\" is not a read",
        );
        assert_rejected(
            &reads(r#""percentage":5,"methods":["FETCH"]"#),
            "services[0].shadow_reads.methods[0]",
            "unknown read method \"FETCH\" (expected one of GET, HEAD, OPTIONS)",
        );
        assert_rejected(
            &reads(r#""percentage":5,"timeout_ms":0"#),
            "services[0].shadow_reads.timeout_ms",
            "must be between 1 and 600000, got 0",
        );
        // A method dual_write already mirrors, whole, cannot be sampled as well.
        assert_rejected(
            &one_service(
                r#","dual_write":{"enabled":false,"methods":["POST","GET"]},"shadow_reads":{"percentage":5,"methods":["HEAD","get"]}"#,
            ),
            "services[0].shadow_reads.methods[1]",
            "already mirrored by dual_write",
        );
    }

    #[test]
    fn rejects_bad_compare_rules_naming_the_rule() {
        let compare = |fields: &str| {
            one_service(&format!(
                r#","shadow_reads":{{"percentage":5}},"compare":{{{fields}}}"#
            ))
        };
        let err = reject(&compare(r#""ignore":["$.ok","updated_at"]"#));
        assert_eq!(
            err.to_string(),
            r#"services[0].compare.ignore[1]: invalid JSON path "updated_at": must start with '$' (at byte 0)"#
        );
        assert_rejected(
            &compare(r#""unordered":["$.items[*"]"#),
            "services[0].compare.unordered[0]",
            "expected ']'",
        );
        assert_rejected(
            &compare(r#""ignore":["$"]"#),
            "services[0].compare.ignore[0]",
            "the whole body",
        );
        assert_rejected(
            &compare(r#""ignore":"$.a""#),
            "services[0].compare.ignore",
            "invalid type",
        );
        let many = format!(
            r#""ignore":[{}]"#,
            (0..=MAX_NOISE_RULES)
                .map(|i| format!(r#""$.f{i}""#))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_rejected(
            &compare(&many),
            "services[0].compare.ignore",
            "at most 32 paths, got 33",
        );
        assert_rejected(
            &compare(r#""headers":["etag","x y"]"#),
            "services[0].compare.headers[1]",
            "valid HTTP header name",
        );
        assert_rejected(
            &compare(r#""headers":[":status"]"#),
            "services[0].compare.headers[0]",
            "valid HTTP header name",
        );
        assert_rejected(
            &compare(r#""max_body_bytes":67108865"#),
            "services[0].compare.max_body_bytes",
            "must be at most 67108864",
        );
        assert_rejected(
            &compare(r#""ignored":["$.a"]"#),
            "services[0].compare.ignored",
            "unknown field `ignored`",
        );
    }

    #[test]
    fn rejects_compare_rules_on_a_service_that_compares_nothing() {
        let err = reject(&one_service(r#","compare":{"ignore":["$.updated_at"]}"#));
        assert_eq!(
            err.to_string(),
            "services[0].compare.ignore: the service compares no responses: add shadow_reads, or dual_write with compare.writes: true"
        );
        assert_rejected(
            &one_service(r#","compare":{"unordered":["$.a"]}"#),
            "services[0].compare.unordered",
            "compares no responses",
        );
        // Mirrored writes alone are not compared unless asked.
        assert_rejected(
            &one_service(r#","dual_write":{},"compare":{}"#),
            "services[0].compare",
            "compares no responses",
        );
        assert_rejected(
            &one_service(r#","shadow_reads":{"percentage":5},"compare":{"writes":true}"#),
            "services[0].compare.writes",
            "no dual_write",
        );
        // A service whose comparison is configured but momentarily off is fine.
        assert!(FilterConfig::from_json(
            one_service(r#","dual_write":{"enabled":false},"compare":{"writes":true}"#).as_bytes()
        )
        .is_ok());
    }

    #[test]
    fn error_display_names_the_field() {
        let err = reject(&one_service(r#","dual_write":{"timeout_ms":0}"#));
        assert!(err
            .to_string()
            .starts_with("services[0].dual_write.timeout_ms: "));
    }
}
