//! `make demo`: the whole cutover on real services, narrated (`cutover_e2e::story`).
//!
//! Needs `DATABASE_URL` (an admin URL of a PostgreSQL server; `scripts/with-postgres` provides
//! one), Envoy 1.40 (`ENVOY_BIN`), the release filter (`CUTOVER_WASM`) and the binaries
//! `cutover-app` and `migrator` (`CUTOVER_APP_BIN`, `MIGRATOR_BIN`; else built with cargo).
//! Exit 0 when the story ends as told, 1 when a step did not (the message names it).

use std::process::ExitCode;

use cutover_e2e::story::{self, NoHooks, StoryConfig};

fn main() -> ExitCode {
    match story::run(&StoryConfig::demo(), &mut NoHooks) {
        Ok((world, _summary)) => {
            drop(world);
            println!("\nEverything the demo started is stopped and its databases are dropped.");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("\ncutover-demo: the story did not end as it should: {error}");
            ExitCode::FAILURE
        }
    }
}
