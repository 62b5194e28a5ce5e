//! One integration-test binary for the crate, a module per behaviour.
mod common;
mod dark_launch;
mod determinism;
mod dual_write_body_cap;
mod dual_write_mirror;
mod dual_write_outcomes;
mod metrics;
mod obs_text;
mod overrides_and_cookies;
mod rejected_configs;
mod response_headers;
mod routing;
mod tick_period;
mod wasm_location;
