//! cutover-filter: a proxy-wasm HTTP filter for Envoy that splits each service's traffic
//! deterministically between its legacy and its new deployment (Unleash-compatible bucketing)
//! and, optionally, mirrors writes to the other side ("dual-write").
//!
//! With `shadow_reads` and `compare` it also mirrors a sample of reads and compares the other
//! side's answers with the primary's (`reads`, `compare`): a dark launch.
//!
//! The pure core (`config`, `bucket`, `routing`, `mirror`, `outcome`, `shadow`, `reads`,
//! `compare`, `metrics`) has no proxy-wasm dependency and is unit-tested natively; `glue` wires
//! it into the proxy-wasm ABI and only exists in the `.wasm`.
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
pub mod compare;
pub mod config;
pub mod ecds;
pub mod metrics;
pub mod mirror;
pub mod outcome;
pub mod reads;
pub mod routing;
pub mod shadow;

#[cfg(target_arch = "wasm32")]
mod glue;
