//! cutover-filter: a proxy-wasm HTTP filter for Envoy that splits each service's traffic
//! deterministically between its legacy and its new deployment (Unleash-compatible bucketing)
//! and, optionally, mirrors writes to the other side ("dual-write").
//!
//! With `shadow_reads` and `compare` it also mirrors a sample of reads and compares the other
//! side's answers with the primary's (`reads`, `compare`): a dark launch.
//!
//! The pure core has no proxy-wasm dependency and is unit-tested natively: `config`, `bucket`,
//! `routing`, `mirror`, `outcome`, `metrics`, `reads`, `compare`, `header_map` (a header map as
//! Envoy serialises it, parsed in place), the state machines `stream` (one HTTP stream) and
//! `root` (the shadows of one VM across its root contexts, with `shadow`'s tracker), and `host`
//! (Envoy as one trait of host calls, the core's effects built on it). `glue` is the adapter to
//! the proxy-wasm ABI: it implements `host::Envoy` with the SDK's hostcalls and hands each
//! callback to the core; it only exists in the `.wasm`.
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
pub mod header_map;
pub mod host;
pub mod metrics;
pub mod mirror;
pub mod outcome;
pub mod reads;
pub mod root;
pub mod routing;
pub mod shadow;
pub mod stream;

#[cfg(target_arch = "wasm32")]
mod glue;
