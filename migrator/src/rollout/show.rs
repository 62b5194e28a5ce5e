//! `rollout show`: per service, the file's values beside Envoy's live gauges.

use serde::Serialize;

use super::apply::Fleet;
use super::envoy::live_state;
use super::live_file::{self, ServiceState};
use super::{exit, Result};
use crate::verify::OutputFormat;

/// `rollout show --format json`, schema `rollout-show/v1`.
#[derive(Debug, Serialize)]
struct ShowReport {
    schema: &'static str,
    /// True when every target's live gauges equal its file.
    matches: bool,
    targets: Vec<TargetRow>,
}

#[derive(Debug, Serialize)]
struct TargetRow {
    file: String,
    admin_url: String,
    matches: bool,
    services: Vec<ServiceRow>,
}

#[derive(Debug, Serialize)]
struct ServiceRow {
    name: String,
    file: ServiceState,
    /// `null` when Envoy reports no gauges for the service.
    live: Option<ServiceState>,
    matches: bool,
}

pub async fn run(fleet: &Fleet, format: OutputFormat) -> Result<u8> {
    let mut targets = Vec::new();
    for target in &fleet.targets {
        let (ecds, _) = live_file::load(&target.file)?;
        let admin = target.admin().await?;
        // What Envoy confirms serving is recorded: the kill switch's base should the file be
        // edited into something Envoy refuses later.
        if let Some(served) = admin.served().await? {
            let now = super::envoy::Discovery::read(&admin.stats().await?);
            if served.config.is_ok() && now.update_time > 0.0 {
                super::state::save_accepted(
                    &target.file,
                    served.document.as_json(),
                    now.update_time,
                );
            }
        }
        let stats = admin.stats().await?;
        let services: Vec<ServiceRow> = ecds
            .services()
            .into_iter()
            .map(|(name, file)| {
                let live = live_state(&stats, &name);
                ServiceRow {
                    matches: live == Some(file),
                    name,
                    file,
                    live,
                }
            })
            .collect();
        targets.push(TargetRow {
            file: target.file.display().to_string(),
            admin_url: admin.shown.clone(),
            matches: services.iter().all(|s| s.matches),
            services,
        });
    }
    let report = ShowReport {
        schema: "rollout-show/v1",
        matches: targets.iter().all(|t| t.matches),
        targets,
    };
    match format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        OutputFormat::Text => {
            for t in &report.targets {
                println!("{} (Envoy admin {}):", t.file, t.admin_url);
                for s in &t.services {
                    let live = s.live.map_or("no gauges".to_string(), |l| l.describe());
                    if s.matches {
                        println!("  {}: {} (live)", s.name, s.file.describe());
                    } else {
                        println!(
                            "  {}: DIFFERS file {} | live {}",
                            s.name,
                            s.file.describe(),
                            live
                        );
                    }
                }
            }
        }
    }
    Ok(if report.matches {
        exit::OK
    } else {
        exit::DIFFERS_OR_ROLLED_BACK
    })
}
