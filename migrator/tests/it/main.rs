//! The migrator's integration tests: one test binary (each binary links sqlx, tokio and the
//! fixtures; one link instead of forty), one module per behaviour. Shared fixtures: `common`
//! (source/target databases, the `migrator` binary), `verify_support`, `cutover_verify_support`
//! (a real Envoy with the filter).

mod common;
mod cutover_verify_support;
mod verify_support;

// Behaviours, one module each.
mod any_system;
mod bad_input_constraint_violation;
mod bad_input_missing_database;
mod bad_input_not_migrated;
mod bad_input_plan_invalid;
mod bad_input_source_key;
mod bad_input_unreachable;
mod bad_input_usage;
mod bad_input_wrong_password;
mod copy_after_takeover;
mod copy_carries_legacy_changes;
mod copy_concurrent_lock;
mod copy_dry_run;
mod copy_during_dual_write;
mod copy_fresh_equals_projection;
mod copy_null_defaults_deterministic;
mod copy_rerun_noop;
mod copy_restart;
mod copy_resume_after_kill;
mod copy_text_format_types;
mod copy_workers;
mod cutover_verify_data;
mod cutover_verify_dual_write;
mod cutover_verify_error_rate;
mod cutover_verify_health;
mod cutover_verify_healthy;
mod cutover_verify_no_data;
mod cutover_verify_services;
mod cutover_verify_split;
mod hardening;
mod rollout;
mod schema_concurrent_runs;
mod schema_dry_run;
mod schema_fresh_apply;
mod schema_modified_file_refused;
mod schema_rerun_noop;
mod schema_unknown_migration_refused;
mod status_reports_migrations_and_checkpoints;
mod verify_drift;
mod verify_errors;
mod verify_identical;
mod verify_ignore_column;
mod verify_jobs;
mod verify_large;
mod verify_numeric_scale;
mod verify_settle;
// Merge point: further behaviour modules (e.g. `rollout`) are listed here.
