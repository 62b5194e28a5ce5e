//! cutover-filter (filled in by the filter work).
