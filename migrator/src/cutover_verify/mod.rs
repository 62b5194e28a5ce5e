//! `migrator cutover-verify`: the cutover checklist computed from Envoy's live stats, health
//! requests through Envoy, and optionally a `verify` of the data.

pub mod checks;
pub mod http;
pub mod report;
pub mod services;
pub mod stats;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};

use checks::{Check, CheckKind, Status};
use report::Report;
use services::ServiceSpec;
use stats::Observed;

/// Options of `migrator cutover-verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct CutoverVerifyArgs {
    /// Envoy admin base URL, e.g. http://127.0.0.1:9901.
    #[arg(long, env = "ENVOY_ADMIN_URL")]
    pub admin_url: String,

    /// Envoy listener base URL, used for the health requests (--health).
    #[arg(long, env = "ENVOY_LISTENER_URL")]
    pub listener_url: Option<String>,

    /// The cutover filter's JSON configuration: which services exist, their new cluster, and the
    /// configured percentage when Envoy has no gauge for it. Without it (and without --service),
    /// services are discovered from Envoy's `wasmcustom.cutover.<S>.new_percentage` gauges and
    /// their new cluster is assumed to be `<S>_new`.
    #[arg(long, value_name = "FILE")]
    pub filter_config: Option<PathBuf>,

    /// A service to check and its new cluster, NAME=CLUSTER (repeatable), e.g. chat=chat_new.
    #[arg(long = "service", value_name = "NAME=CLUSTER")]
    pub services: Vec<String>,

    /// The percentage a service is expected to route to new, SERVICE=PERCENT (repeatable); compared
    /// with the observed split instead of the configured percentage Envoy reports.
    #[arg(long = "expect-percentage", value_name = "SERVICE=PERCENT")]
    pub expect_percentage: Vec<String>,

    /// A health path requested through the listener, SERVICE=PATH (repeatable); expects 200.
    #[arg(long = "health", value_name = "SERVICE=PATH")]
    pub health: Vec<String>,

    /// Sample the stats twice, SECS apart, and judge counters on the difference, so that traffic
    /// from earlier rollout steps does not count. Latency quantiles are Envoy's cumulative ones.
    #[arg(long, value_name = "SECS")]
    pub window: Option<f64>,

    #[command(flatten)]
    pub thresholds: checks::ThresholdArgs,

    /// PEM file with the CA certificate(s) of https:// admin or listener URLs.
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Timeout of each HTTP request to Envoy, in milliseconds.
    #[arg(long, default_value_t = 5000, value_name = "MS")]
    pub http_timeout_ms: u64,

    /// Output format.
    #[arg(long, value_enum, default_value_t = crate::verify::OutputFormat::Text)]
    pub format: crate::verify::OutputFormat,

    /// Also run `migrator verify` (source and target URLs, plan, as for verify) and add its result.
    #[arg(long)]
    pub verify: bool,

    #[command(flatten)]
    pub verify_args: crate::verify::VerifySharedArgs,
}

/// Runs the checklist and prints it; returns the exit code: 0 every check passed, 1 a check failed
/// or had no data, 2 any error (Envoy unreachable, bad options, verify error; printed here).
pub async fn run(args: CutoverVerifyArgs) -> anyhow::Result<u8> {
    let result = checklist(&args).await;
    Ok(result.unwrap_or_else(|e| crate::verify::error_exit(&e)))
}

async fn checklist(args: &CutoverVerifyArgs) -> anyhow::Result<u8> {
    let report = build_report(args).await?;
    match args.format {
        crate::verify::OutputFormat::Json => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).context("serializing the report")?
            )
        }
        crate::verify::OutputFormat::Text => {
            print!("{}", report.render_text());
            if report.verify.as_ref().is_some_and(|v| !v.identical) {
                println!("(verify details: run `migrator verify` or use --format json)");
            }
        }
    }
    Ok(if report.passed { 0 } else { 1 })
}

pub async fn build_report(args: &CutoverVerifyArgs) -> anyhow::Result<Report> {
    // Credentials in the admin/listener URLs: never printed, also not inside HTTP errors.
    crate::redact::register(&args.admin_url);
    if let Some(listener) = &args.listener_url {
        crate::redact::register(listener);
    }
    let thresholds = args.thresholds.thresholds().map_err(anyhow::Error::msg)?;
    let timeout = Duration::from_millis(args.http_timeout_ms);
    let client = http::Client::new(http::ClientOptions {
        ca_cert: args.cacert.clone(),
        ..http::ClientOptions::with_timeout(timeout)
    })?;
    let expected = parse_expected(&args.expect_percentage)?;
    let health = parse_health(&args.health)?;
    if !health.is_empty() && args.listener_url.is_none() {
        bail!("--health needs --listener-url (the Envoy listener to send the health requests through)");
    }
    let file_services = match &args.filter_config {
        Some(path) => Some(services::from_filter_config_file(path)?),
        None => None,
    };

    // Verify runs concurrently with the stats window; it does not touch Envoy.
    let verify_future = async {
        if args.verify {
            Some(crate::verify::run_for_cutover(&args.verify_args).await)
        } else {
            None
        }
    };
    let stats_future = async {
        let window = match args.window {
            Some(w) if w.is_nan() || w <= 0.0 || w > 3600.0 => {
                bail!("--window must be between 0 and 3600 seconds, got {w}")
            }
            other => other,
        };
        let baseline = match window {
            Some(w) => {
                let first = stats::fetch(&client, &args.admin_url).await?;
                tokio::time::sleep(Duration::from_secs_f64(w)).await;
                Some(first)
            }
            None => None,
        };
        let latest = stats::fetch(&client, &args.admin_url).await?;
        anyhow::Ok(Observed { latest, baseline })
    };
    let (observed, verify) = tokio::join!(stats_future, verify_future);
    let observed = observed?;

    services::check_explicit(&observed.latest, file_services.as_deref(), &args.services)?;
    let service_list = services::resolve(
        services::from_gauges(&observed.latest),
        file_services,
        &args.services,
    )?;
    for name in expected.keys().chain(health.keys()) {
        if !service_list.iter().any(|s| &s.name == name) {
            bail!(
                "service {name:?} (from --expect-percentage/--health) is not among the checked services: {}",
                service_list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }

    let mut all_checks: Vec<Check> = Vec::new();
    for spec in &service_list {
        all_checks.extend(checks::service_checks(
            spec,
            &observed,
            &thresholds,
            expected.get(&spec.name).copied(),
        ));
        if let (Some(listener), Some(paths)) = (&args.listener_url, health.get(&spec.name)) {
            for path in paths {
                all_checks.push(health_check(spec, &client, listener, path).await);
            }
        }
    }
    let verify = verify.transpose()?;
    if let Some(verify_report) = &verify {
        all_checks.push(data_check(verify_report));
    }
    Ok(Report::new(
        crate::redact::url(&args.admin_url),
        args.window,
        thresholds,
        all_checks,
        verify,
    ))
}

async fn health_check(
    spec: &ServiceSpec,
    client: &http::Client,
    listener: &str,
    path: &str,
) -> Check {
    let url = http::join(listener, path);
    let answer = client.get(&url).await;
    checks::health_check(
        format!("{}.health:{path}", spec.name),
        &spec.name,
        answer.as_ref(),
        |response| {
            let routed = response
                .header("x-routed-to")
                .map(|s| format!(", routed to {s}"))
                .unwrap_or_default();
            format!("GET {path}: HTTP {}{routed}", response.status)
        },
    )
}

pub(crate) fn data_check(verify: &crate::verify::VerifyReport) -> Check {
    let differences = verify.differences as f64;
    Check {
        id: "data".to_string(),
        service: None,
        kind: CheckKind::Data,
        status: if verify.identical {
            Status::Pass
        } else {
            Status::Fail
        },
        value: Some(differences),
        unit: "rows",
        threshold: "0 differing rows".to_string(),
        detail: verify.summary_line(),
    }
}

fn parse_expected(args: &[String]) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for arg in args {
        let (service, value) = services::split_pair(arg)
            .ok_or_else(|| services::ServiceError::BadPercentageArg(arg.clone()))?;
        let pct: f64 = value
            .parse()
            .map_err(|_| services::ServiceError::BadPercentageArg(arg.clone()))?;
        if !(0.0..=100.0).contains(&pct) {
            return Err(services::ServiceError::BadPercentageArg(arg.clone()).into());
        }
        out.insert(service, pct);
    }
    Ok(out)
}

fn parse_health(args: &[String]) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for arg in args {
        let (service, path) = services::split_pair(arg)
            .ok_or_else(|| services::ServiceError::BadHealthArg(arg.clone()))?;
        if !path.starts_with('/') {
            return Err(services::ServiceError::BadHealthArg(arg.clone()).into());
        }
        out.entry(service).or_default().push(path);
    }
    Ok(out)
}
