use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    migrator::run(migrator::cli::Cli::parse()).await
}
