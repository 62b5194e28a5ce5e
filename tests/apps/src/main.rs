use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = cutover_apps::Cli::parse();
    match cutover_apps::run(cli).await {
        Ok(()) => ExitCode::from(cutover_apps::EXIT_OK),
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "cutover-app: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
