//! migrator library (filled in by the migrator work).
