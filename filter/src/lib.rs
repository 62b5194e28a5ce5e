//! cutover-filter: a proxy-wasm HTTP filter for Envoy that splits each service's traffic
//! deterministically between its legacy and its new deployment (Unleash-compatible bucketing)
//! and, optionally, mirrors writes to the other side ("dual-write").
//!
//! The pure core (`config`, `bucket`, `routing`, `mirror`, `outcome`, `shadow`, `metrics`) has no
//! proxy-wasm dependency and is unit-tested natively; `glue` wires it into the proxy-wasm ABI
//! and only exists in the `.wasm`.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod bucket;
pub mod config;
pub mod ecds;
pub mod metrics;
pub mod mirror;
pub mod outcome;
pub mod routing;
pub mod shadow;

#[cfg(target_arch = "wasm32")]
mod glue;
