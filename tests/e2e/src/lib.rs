//! End-to-end fixtures: a real Envoy 1.40 loading the cutover filter, loopback upstreams that
//! say which side they are and record what they received, and a raw-bytes HTTP/1.1 client.
//!
//! ```no_run
//! use cutover_e2e::{config, Envoy, Upstream};
//!
//! let legacy = Upstream::start("chat_legacy");
//! let new = Upstream::start("chat_new");
//! let envoy = Envoy::boot(&config::chat_config(50), &[&legacy, &new]);
//! let mut client = envoy.client();
//! let response = client.get_with("/api/chat/1", &[("x-correlation-id", b"user-1")]);
//! assert_eq!(response.status, 200);
//! println!("served by {:?}", response.served_by());
//! println!("routed_new = {}", envoy.cutover_counter("chat", "routed_new"));
//! ```
//!
//! Binaries: `ENVOY_BIN` (else `scripts/ensure-envoy`), `CUTOVER_WASM` (else the workspace's
//! release build, rebuilt when older than `filter/src`). See [`envoy_bin`] and [`filter_wasm`].

pub mod app;
pub mod client;
pub mod config;
pub mod envoy;
mod http;
pub mod load;
pub mod paths;
pub mod story;
pub mod traffic;
pub mod upstream;

pub use app::App;
pub use client::{HttpClient, Response};
pub use envoy::{
    cutover_stat, validate_config, write_atomically, EcdsStats, Envoy, EnvoyBuilder, FailurePolicy,
    REQUEST_TIME_FORMAT,
};
pub use http::Header;
pub use paths::{app_bin, envoy_bin, filter_wasm, migrator_bin, workspace_root};
pub use traffic::{Ledger, Traffic, TrafficConfig};
pub use upstream::{Behaviour, RecordedRequest, Upstream, SERVED_BY_HEADER};

use std::time::{Duration, Instant};

/// Polls `probe` every 10 ms until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
