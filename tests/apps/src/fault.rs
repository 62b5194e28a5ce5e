//! A runtime fault switch: the service answers `503` to a chosen share of its API requests, so a
//! rollout gate can be seen failing (the demo and the whole-cutover story). Set through an admin
//! listener of its own (`--admin-listen`), never through the API port Envoy routes to:
//! `PUT /fault {"fail_percent": 20}`, `GET /fault`. Health checks (`/healthz`) never fail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

/// The share of API requests that fail, and a counter that spreads the failures evenly: of every
/// 100 consecutive requests exactly `fail_percent` fail (deterministic, no randomness).
#[derive(Debug, Default)]
pub struct Fault {
    fail_percent: AtomicU64,
    requests: AtomicU64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FaultSetting {
    /// 0 (off) to 100.
    pub fail_percent: u64,
}

impl Fault {
    pub fn set(&self, percent: u64) {
        self.fail_percent.store(percent.min(100), Ordering::Relaxed);
    }

    pub fn setting(&self) -> FaultSetting {
        FaultSetting {
            fail_percent: self.fail_percent.load(Ordering::Relaxed),
        }
    }

    /// Whether the next request fails.
    pub fn next_fails(&self) -> bool {
        let percent = self.fail_percent.load(Ordering::Relaxed);
        if percent == 0 {
            return false;
        }
        let n = self.requests.fetch_add(1, Ordering::Relaxed);
        // 37 is coprime to 100: the failing slots of each 100 requests are spread out.
        (n * 37) % 100 < percent
    }
}

/// Middleware of the API router: answers 503 when the switch says so.
pub async fn inject(State(fault): State<Arc<Fault>>, request: Request, next: Next) -> Response {
    if request.uri().path() != "/healthz" && fault.next_fails() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "injected fault (cutover-app --admin-listen, PUT /fault)"})),
        )
            .into_response();
    }
    next.run(request).await
}

/// The admin listener's routes.
pub fn admin_router(fault: Arc<Fault>) -> Router {
    Router::new()
        .route(
            "/fault",
            get(|State(fault): State<Arc<Fault>>| async move { Json(fault.setting()) }).put(
                |State(fault): State<Arc<Fault>>, setting: Result<Json<FaultSetting>, axum::extract::rejection::JsonRejection>| async move {
                    match setting {
                        Ok(Json(setting)) if setting.fail_percent <= 100 => {
                            fault.set(setting.fail_percent);
                            Json(fault.setting()).into_response()
                        }
                        Ok(_) => (StatusCode::BAD_REQUEST, "fail_percent: 0 to 100").into_response(),
                        Err(rejection) => (StatusCode::BAD_REQUEST, rejection.body_text()).into_response(),
                    }
                },
            ),
        )
        .with_state(fault)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_the_share_fails_in_every_hundred_requests() {
        let fault = Fault::default();
        assert!(!(0..100).any(|_| fault.next_fails()), "off by default");
        fault.set(20);
        for _ in 0..3 {
            let failed = (0..100).filter(|_| fault.next_fails()).count();
            assert_eq!(failed, 20);
        }
        fault.set(0);
        assert!(!(0..100).any(|_| fault.next_fails()));
        fault.set(250);
        assert_eq!(fault.setting().fail_percent, 100);
    }
}
