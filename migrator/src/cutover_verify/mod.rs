//! `migrator cutover-verify`: the cutover checklist computed from Envoy's live stats, health
//! requests to each side, and optionally a `verify` of the data.

pub mod checks;
pub mod health;
pub mod http;
pub mod report;
pub mod served;
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

    /// Envoy listener base URL: the health requests (--health) of a side that has an override
    /// rule in the filter configuration go through it, with that rule's header or cookie.
    #[arg(long, env = "ENVOY_LISTENER_URL")]
    pub listener_url: Option<String>,

    /// The cutover filter's JSON configuration: which services exist, their new cluster, and the
    /// configured percentage when Envoy has no gauge for it (the plugin's JSON or a whole ECDS
    /// file; validated by the filter's own rules). Without it (and without --service), services
    /// are discovered from Envoy's `wasmcustom.cutover.<S>.new_percentage` gauges, with the
    /// configuration Envoy's config dump shows (else their new cluster is assumed `<S>_new`).
    #[arg(long, value_name = "FILE")]
    pub filter_config: Option<PathBuf>,

    /// A service to check and its new cluster, NAME=CLUSTER (repeatable), e.g. chat=chat_new.
    #[arg(long = "service", value_name = "NAME=CLUSTER")]
    pub services: Vec<String>,

    /// The percentage a service is expected to route to new, SERVICE=PERCENT (repeatable); compared
    /// with the observed split instead of the configured percentage Envoy reports.
    #[arg(long = "expect-percentage", value_name = "SERVICE=PERCENT")]
    pub expect_percentage: Vec<String>,

    /// A health path of a service, SERVICE=PATH (repeatable), requested on each
    /// side explicitly (through the listener with the service's override rule for that side, or
    /// directly at the side's cluster host); expects 200 from each, reported per side.
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
    if let Some(listener) = &args.listener_url {
        http::parse_url(listener).map_err(|e| anyhow::anyhow!("--listener-url: {e}"))?;
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
    // What Envoy serves (clusters, override rules, comparison settings of each service); an
    // Envoy that cannot show it leaves the services as the gauges and options describe them.
    let served = match served::config_dump(&client, &args.admin_url).await {
        Ok(dump) => served::served_filter(&dump, &observed.latest).and_then(|s| s.config.ok()),
        Err(_) => None,
    };
    let service_list = services::with_served(
        services::resolve(
            services::discovered(&observed.latest, served.as_ref()),
            file_services,
            &args.services,
        )?,
        served.as_ref(),
        &args.services,
    );
    for name in expected.keys().chain(health.keys()) {
        if !service_list.iter().any(|s| &s.name == name) {
            bail!(
                "service {name:?} (from --expect-percentage/--health) is not among the checked services: {}",
                service_list.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
    }

    let hosts = if health.is_empty() {
        Ok(Vec::new())
    } else {
        served::cluster_hosts(&client, &args.admin_url)
            .await
            .map_err(|e| crate::redact::scrub(&e.to_string()))
    };
    let mut all_checks: Vec<Check> = Vec::new();
    for spec in &service_list {
        all_checks.extend(checks::service_checks(
            spec,
            &observed,
            &thresholds,
            expected.get(&spec.name).copied(),
        ));
        for path in health.get(&spec.name).into_iter().flatten() {
            all_checks.extend(
                side_health_checks(spec, &client, args.listener_url.as_deref(), path, &hosts).await,
            );
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

/// `--health SERVICE=PATH`: one check per side, each side reached explicitly.
async fn side_health_checks(
    spec: &ServiceSpec,
    client: &http::Client,
    listener: Option<&str>,
    path: &str,
    hosts: &Result<Vec<(String, Vec<String>)>, String>,
) -> Vec<Check> {
    let mut out = Vec::new();
    for side in health::SIDES {
        let request = match (&spec.config, hosts) {
            (None, _) => Err(format!(
                "the configuration of {} is unknown (Envoy's config dump has none): give --filter-config",
                spec.name
            )),
            (Some(config), Ok(hosts)) => health::resolve(config, side, path, listener, hosts),
            (Some(config), Err(e)) => health::resolve(config, side, path, listener, &[])
                .map_err(|_| format!("reading Envoy's clusters: {e}")),
        };
        out.push(match request {
            Ok(request) => health::side_check(client, &spec.name, &request).await,
            Err(reason) => health::unreachable_side(
                &spec.name,
                side,
                path,
                &format!("{}: {reason}", side.as_str()),
            ),
        });
    }
    out
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
        samples: None,
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
