//! Health of each side of a service, checked explicitly (never through the split, which would
//! test whichever side the request happened to land on): one GET per side, reported per side as
//! `<service>.health.legacy` / `<service>.health.new`. Used by `cutover-verify --health` and by
//! the gate of `rollout run --health`.
//!
//! How a side is reached: through Envoy's listener with one of the service's override rules for
//! that side (its header, or its cookie), the filter's `x-routed-to` answer confirming the side;
//! or, without such a rule (or without a listener URL), directly at the first host of the side's
//! cluster as Envoy reports it on `/clusters`; or at a URL given for the side.

use cutover_filter::config::{OverrideSource, ServiceConfig};
use cutover_filter::routing::{Side, COOKIE_HEADER, ROUTED_TO_HEADER};

use super::checks::{self, Check};
use super::http;

/// One health request to one side.
#[derive(Debug, Clone, PartialEq)]
pub struct SideRequest {
    pub side: Side,
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// How the request reaches the side, for the report.
    pub via: String,
    /// Through the filter: its `x-routed-to` answer must name this side.
    pub through_filter: bool,
    /// The health path, when the request was built from one (it is then part of the check id,
    /// `<service>.health.<side>:<path>`; a URL given for the side: `<service>.health.<side>`).
    pub path: Option<String>,
}

impl SideRequest {
    /// A URL given for the side (`rollout run --health SIDE=URL`).
    pub fn direct(side: Side, url: String) -> SideRequest {
        SideRequest {
            side,
            url,
            headers: Vec::new(),
            via: "directly".to_string(),
            through_filter: false,
            path: None,
        }
    }
}

pub const SIDES: [Side; 2] = [Side::Legacy, Side::New];

/// `legacy` / `new` as a side.
pub fn parse_side(text: &str) -> Option<Side> {
    SIDES.into_iter().find(|s| s.as_str() == text)
}

/// The request that checks `side` of `service` at `path`: through `listener` with an override
/// rule of the service for that side, else at the first host Envoy reports for the side's
/// cluster (`hosts`: cluster name → `host:port`, from `/clusters`). `Err`: why the side cannot
/// be reached (reported as a failed check).
pub fn resolve(
    service: &ServiceConfig,
    side: Side,
    path: &str,
    listener: Option<&str>,
    hosts: &[(String, Vec<String>)],
) -> Result<SideRequest, String> {
    let rule = service.overrides.iter().find(|o| o.side == side);
    if let (Some(listener), Some(rule)) = (listener, rule) {
        let (header, value, via) = match &rule.source {
            OverrideSource::Header(name) => (
                name.clone(),
                rule.value.clone(),
                format!(
                    "through the listener with override header {name}: {}",
                    rule.value
                ),
            ),
            OverrideSource::Cookie(name) => (
                COOKIE_HEADER.to_string(),
                format!("{name}={}", rule.value),
                format!(
                    "through the listener with override cookie {name}={}",
                    rule.value
                ),
            ),
        };
        return Ok(SideRequest {
            side,
            url: http::join(listener, path),
            headers: vec![(header, value)],
            via,
            through_filter: true,
            path: Some(path.to_string()),
        });
    }
    let cluster = side.cluster(service);
    let host = hosts
        .iter()
        .find(|(name, _)| name == cluster)
        .and_then(|(_, hosts)| hosts.first())
        .ok_or_else(|| format!("Envoy reports no host for cluster {cluster:?} (and the service has no override rule for {})", side.as_str()))?;
    Ok(SideRequest {
        side,
        url: format!("http://{host}{path}"),
        headers: Vec::new(),
        via: format!("directly at cluster {cluster}'s host {host}"),
        through_filter: false,
        path: Some(path.to_string()),
    })
}

fn check_id(service: &str, side: Side, path: Option<&str>) -> String {
    match path {
        Some(path) => format!("{service}.health.{}:{path}", side.as_str()),
        None => format!("{service}.health.{}", side.as_str()),
    }
}

/// The check of a side that could not be reached (`reason`) for health path `path`.
pub fn unreachable_side(service: &str, side: Side, path: &str, reason: &str) -> Check {
    checks::health_check(
        check_id(service, side, Some(path)),
        service,
        Err(reason),
        |_| String::new(),
    )
}

/// GETs the side's health URL: HTTP 200 passes; through the filter, the answer must also say it
/// was routed to that side.
pub async fn side_check(client: &http::Client, service: &str, request: &SideRequest) -> Check {
    let side = request.side.as_str();
    let shown = crate::redact::url(&request.url);
    let answer = client
        .get_with_headers(&request.url, &request.headers)
        .await;
    let error = answer
        .as_ref()
        .err()
        .map(|e| format!("{side}: {e}"))
        .unwrap_or_default();
    let mut check = checks::health_check(
        check_id(service, request.side, request.path.as_deref()),
        service,
        answer.as_ref().map_err(|_| error.as_str()),
        |response| {
            let routed = response
                .header(ROUTED_TO_HEADER)
                .map(|s| format!(", routed to {s}"))
                .unwrap_or_default();
            format!(
                "{side}: GET {shown} {}: HTTP {}{routed}",
                request.via, response.status
            )
        },
    );
    if let Ok(response) = &answer {
        let routed = response.header(ROUTED_TO_HEADER);
        if request.through_filter && routed != Some(side) {
            check.status = checks::Status::Fail;
            check.detail = format!(
                "{}; the override did not reach {side} ({ROUTED_TO_HEADER}: {})",
                check.detail,
                routed.unwrap_or("absent")
            );
        }
    }
    check
}
