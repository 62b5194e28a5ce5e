//! The legacy and the new service of the end-to-end cutover (issue 10): one binary,
//! `cutover-app --flavor legacy|new`, because only the storage layout differs ([`store`]).
//! The HTTP API is in [`api`]; the contract it meets for dual-write (client-chosen ids,
//! idempotent writes, the request-time header) is in docs/dual-write.md.
//!
//! Exit codes: [`EXIT_OK`], [`EXIT_RUNTIME`], [`EXIT_USAGE`] (clap), [`EXIT_SCHEMA`],
//! [`EXIT_CONNECT`].

pub mod api;
pub mod fault;
pub mod request_time;
pub mod store;

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use store::{Flavor, Store};

/// Stopped by SIGTERM or SIGINT.
pub const EXIT_OK: u8 = 0;
/// The listener could not be bound, or serving failed.
pub const EXIT_RUNTIME: u8 = 1;
/// Bad command line (clap's own exit code).
pub const EXIT_USAGE: u8 = 2;
/// The database lacks this flavor's schema (a table or column is missing).
pub const EXIT_SCHEMA: u8 = 3;
/// The database URL is invalid or the database cannot be reached.
pub const EXIT_CONNECT: u8 = 4;

/// Line printed on stdout once the listener is bound: `listening on http://ADDR`.
pub const LISTENING_PREFIX: &str = "listening on http://";
/// Line printed on stdout after it when `--admin-listen` is given: `admin on http://ADDR`.
pub const ADMIN_PREFIX: &str = "admin on http://";

/// One service of the cutover: the legacy or the new system, on its own database.
#[derive(Debug, Parser)]
#[command(name = "cutover-app", version, about)]
pub struct Cli {
    /// Storage layout: `legacy` (migrations/legacy/legacy_schema.sql) or `new` (migrations/, by
    /// `migrator schema`).
    #[arg(long, value_enum)]
    pub flavor: Flavor,
    /// The service's own database. Never printed.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Address to listen on; port 0 picks a free port (printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Database connections in the pool.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub pool_size: u32,
    /// Admin listener for the fault switch (`PUT /fault {"fail_percent": N}`, see [`fault`]);
    /// port 0 picks a free port (printed on stdout). None: no switch.
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
}

/// Why the process stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("invalid --database-url: {0}")]
    BadUrl(sqlx::Error),
    #[error("cannot connect to the database: {0}")]
    Connect(sqlx::Error),
    #[error("the database does not have the {} schema: {source}", flavor.name())]
    Schema {
        flavor: Flavor,
        source: store::SchemaError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving failed: {0}")]
    Serve(std::io::Error),
}

impl AppError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::BadUrl(_) | AppError::Connect(_) => EXIT_CONNECT,
            AppError::Schema { .. } => EXIT_SCHEMA,
            AppError::Bind { .. } | AppError::Serve(_) => EXIT_RUNTIME,
        }
    }
}

/// Bounds on every database interaction.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const STATEMENT_TIMEOUT_MS: &str = "5000";

/// Connects, checks the schema, serves until SIGTERM/SIGINT.
pub async fn run(cli: Cli) -> Result<(), AppError> {
    let options = PgConnectOptions::from_str(&cli.database_url)
        .map_err(AppError::BadUrl)?
        .options([
            ("statement_timeout", STATEMENT_TIMEOUT_MS),
            ("TimeZone", "UTC"),
        ]);
    let pool = PgPoolOptions::new()
        .max_connections(cli.pool_size)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(AppError::Connect)?;
    store::check_schema(&pool, cli.flavor)
        .await
        .map_err(|source| match source {
            store::SchemaError::Database(e) => AppError::Connect(e),
            source => AppError::Schema {
                flavor: cli.flavor,
                source,
            },
        })?;
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|source| AppError::Bind {
            addr: cli.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(AppError::Serve)?;
    let fault = std::sync::Arc::new(fault::Fault::default());
    let admin = match cli.admin_listen {
        Some(admin_addr) => Some(tokio::net::TcpListener::bind(admin_addr).await.map_err(
            |source| AppError::Bind {
                addr: admin_addr,
                source,
            },
        )?),
        None => None,
    };
    println!("{LISTENING_PREFIX}{addr}");
    if let Some(admin) = admin {
        println!(
            "{ADMIN_PREFIX}{}",
            admin.local_addr().map_err(AppError::Serve)?
        );
        let router = fault::admin_router(fault.clone());
        tokio::spawn(async move { axum::serve(admin, router).await });
    }
    eprintln!(
        "cutover-app: {} flavor serving on {addr}",
        cli.flavor.name()
    );
    let router = api::router(Store::new(pool, cli.flavor))
        .layer(axum::middleware::from_fn_with_state(fault, fault::inject));
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(AppError::Serve)
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}
