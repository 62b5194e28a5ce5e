//! Envoy end-to-end fixtures (filled in).
