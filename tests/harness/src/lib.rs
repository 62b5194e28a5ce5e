//! proxy-wasm host harness (filled in).
