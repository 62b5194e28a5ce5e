//! `rollout run`: one service through `--steps`, each applied, confirmed and held for `--hold`
//! while every `--interval` is judged by the gate; a failing gate rolls back (kill switch on,
//! dual-write left as it is). State in `state.json` beside the ECDS file, so a killed run is
//! continued from the recorded step by the next `run`.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use super::apply::{self, Change, Fleet, Step};
use super::gate::{self, GateArgs, Verdict};
use super::state::{self, LastGate, Phase, Request, RunState};
use super::{exit, live_file, Result, RolloutError};
use crate::cutover_verify::checks::{Check, Status, Thresholds};
use crate::cutover_verify::services::ServiceSpec;
use crate::cutover_verify::stats::{Observed, Snapshot};
use crate::verify::OutputFormat;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The service to roll out (a name in the filter configuration).
    #[arg(long)]
    pub service: String,
    /// Percentages to new, strictly increasing, each 0..100, e.g. 10,25,50,100.
    #[arg(long, value_delimiter = ',', required = true, value_name = "P,P,...")]
    pub steps: Vec<String>,
    /// How long each step is held with every interval passing before the next one.
    #[arg(long, value_parser = super::parse_duration, default_value = "5m")]
    pub hold: Duration,
    /// Length of one gate interval (its counters and latency are judged on their own).
    #[arg(long, value_parser = super::parse_duration, default_value = "30s")]
    pub interval: Duration,
    /// Failing intervals (per step) that roll back.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_failures: u32,
    /// Inconclusive intervals (no data, per step) after which the run pauses (exit 3).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_inconclusive: u32,
    #[command(flatten)]
    pub gate: GateArgs,
    /// Judge the gates from this Prometheus (its query API), on `increase(…[interval])` of the
    /// series it scrapes from the Envoys' `/stats/prometheus`, instead of the admin endpoints.
    #[arg(long, value_name = "URL")]
    pub prometheus_url: Option<String>,
    /// Before promoting each step, run `migrator verify` (source and target URLs, plan, as for
    /// verify): differing rows roll back.
    #[arg(long)]
    pub verify: bool,
    #[command(flatten)]
    pub verify_args: crate::verify::VerifySharedArgs,
}

/// Pause between Envoy's confirmation of a step and the first interval.
const STEP_SETTLE: Duration = Duration::from_millis(300);

/// The validated plan of a run.
struct Plan {
    steps: Vec<u8>,
    intervals_per_step: u32,
    thresholds: Thresholds,
    health: Vec<crate::cutover_verify::health::SideRequest>,
}

fn plan(args: &RunArgs) -> Result<Plan> {
    let mut steps = Vec::new();
    for text in &args.steps {
        let value: u8 = text
            .trim()
            .parse()
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| {
                RolloutError::usage(format!("--steps: {text:?} is not a percentage 0..100"))
            })?;
        if let Some(last) = steps.last() {
            if value <= *last {
                return Err(RolloutError::usage(format!(
                    "--steps must be strictly increasing: {value} after {last}"
                )));
            }
        }
        steps.push(value);
    }
    if steps.is_empty() {
        return Err(RolloutError::usage("--steps: at least one step"));
    }
    if args.hold < args.interval {
        return Err(RolloutError::usage(format!(
            "--hold ({:?}) is shorter than --interval ({:?}): a step needs at least one interval",
            args.hold, args.interval
        )));
    }
    let thresholds = args
        .gate
        .thresholds
        .thresholds()
        .map_err(RolloutError::usage)?;
    let health = args.gate.health_urls().map_err(RolloutError::usage)?;
    let intervals = (args.hold.as_secs_f64() / args.interval.as_secs_f64()).ceil();
    Ok(Plan {
        steps,
        intervals_per_step: intervals.clamp(1.0, f64::from(u32::MAX)) as u32,
        thresholds,
        health,
    })
}

/// Prints one decision: a text line, or a JSON event with `event`, `time` and `service`.
struct Events {
    format: OutputFormat,
    service: String,
}

impl Events {
    fn emit(&self, event: &str, text: String, fields: serde_json::Value) {
        match self.format {
            OutputFormat::Json => {
                let mut object =
                    json!({"event": event, "time": state::now(), "service": self.service});
                if let (Some(target), Some(extra)) = (object.as_object_mut(), fields.as_object()) {
                    for (k, v) in extra {
                        target.insert(k.clone(), v.clone());
                    }
                }
                println!("{object}");
            }
            OutputFormat::Text => println!("{} {}: {text}", state::now(), self.service),
        }
    }
}

/// Kill switch on for `service` (dual-write untouched).
pub async fn roll_back(target: &Fleet, service: &str, quiet: bool) -> Result<()> {
    apply::apply_with(
        target,
        Change::Step {
            service: service.to_string(),
            step: Step::Legacy,
        },
        !quiet,
    )
    .await
    .map(|_| ())
}

pub async fn run(target: &Fleet, args: &RunArgs, format: OutputFormat) -> Result<u8> {
    let plan = plan(args)?;
    let events = Events {
        format,
        service: args.service.clone(),
    };
    let (live, _) = live_file::load(&target.file)?;
    let service_config = live.service(&args.service)?.clone();
    let admins = target.admins().await?;
    for (t, admin) in target.targets.iter().zip(&admins) {
        let (other, _) = live_file::load(&t.file)?;
        let config = other.service(&args.service)?;
        if config.new_cluster != service_config.new_cluster {
            return Err(RolloutError::usage(format!(
                "the targets disagree about {}'s new cluster: {:?} in {}, {:?} in {}",
                args.service,
                service_config.new_cluster,
                target.file.display(),
                config.new_cluster,
                t.file.display()
            )));
        }
        let stats = admin.stats().await?;
        let in_file: Vec<String> = other.services().into_iter().map(|(n, _)| n).collect();
        let in_envoy: Vec<String> = in_file
            .iter()
            .filter(|name| super::envoy::live_state(&stats, name).is_some())
            .cloned()
            .collect();
        if in_envoy != in_file {
            return Err(RolloutError::usage(format!(
                "{} and its Envoy disagree about the services: the file has {:?}, Envoy reports {:?} (is the file what Envoy serves? `rollout show`)",
                t.file.display(),
                in_file,
                in_envoy
            )));
        }
        for cluster in [&service_config.new_cluster, &service_config.legacy_cluster] {
            let prefix = format!("cluster.{cluster}.");
            if !stats.names().any(|n| n.starts_with(&prefix)) {
                return Err(RolloutError::usage(format!(
                    "services[{}]: Envoy at {} has no cluster {cluster:?}",
                    args.service, admin.shown
                )));
            }
        }
    }
    let client = admins
        .first()
        .map(|a| a.client.clone())
        .ok_or_else(|| RolloutError::usage("no target"))?;
    let prometheus = match &args.prometheus_url {
        Some(url) => {
            crate::cutover_verify::http::parse_url(url)
                .map_err(|e| RolloutError::usage(format!("--prometheus-url: {e}")))?;
            Some(super::prometheus::Prometheus {
                client: client.clone(),
                url: url.clone(),
            })
        }
        None => None,
    };
    let _lock = state::lock(&target.file)?;

    let recorded = state::load(&target.file)?;
    let mut run_state = match recorded {
        Some(s)
            if matches!(s.phase, Phase::Running | Phase::Paused)
                && (s.service != args.service || s.steps != plan.steps) =>
        {
            return Err(RolloutError::usage(format!(
                "a run of {} with steps {:?} is recorded ({:?} at step {}); run it with the same --service and --steps, or `rollout abort` it first",
                s.service,
                s.steps,
                s.phase,
                s.step_text()
            )));
        }
        Some(mut s) if matches!(s.phase, Phase::Running | Phase::Paused) => {
            events.emit(
                "resumed",
                format!("continuing at step {} (recorded)", s.step_text()),
                json!({"step": s.current_step(), "step_index": s.step_index}),
            );
            s.phase = Phase::Running;
            s.reason = None;
            s.pid = std::process::id();
            s
        }
        _ => RunState {
            schema: "rollout-state/v1".to_string(),
            service: args.service.clone(),
            steps: plan.steps.clone(),
            step_index: 0,
            phase: Phase::Running,
            passed_intervals: 0,
            failed_intervals: 0,
            inconclusive_intervals: 0,
            last_gate: None,
            reason: None,
            pid: std::process::id(),
            updated_at: String::new(),
        },
    };
    state::clear_request(&target.file);
    events.emit(
        "started",
        format!(
            "steps {:?}, hold {:?} ({} intervals of {:?}), max failures {}, max inconclusive {}",
            plan.steps, args.hold, plan.intervals_per_step, args.interval, args.max_failures, args.max_inconclusive
        ),
        json!({"steps": plan.steps, "hold_seconds": args.hold.as_secs_f64(), "interval_seconds": args.interval.as_secs_f64(),
               "intervals_per_step": plan.intervals_per_step, "max_failures": args.max_failures,
               "max_inconclusive": args.max_inconclusive, "thresholds": plan.thresholds,
               "source": if args.prometheus_url.is_some() { "prometheus" } else { "admin" },
               "targets": target.targets.len()}),
    );

    let spec = ServiceSpec {
        file_percentage: None,
        ..ServiceSpec::from_config(&service_config)
    };

    while run_state.step_index < run_state.steps.len() {
        let step = run_state.steps[run_state.step_index];
        // Recorded before it is applied: a run killed in between re-applies the same step.
        state::save(&target.file, &mut run_state)?;
        let applied = apply::apply_with(
            target,
            Change::Step {
                service: args.service.clone(),
                step: Step::Percentage(step),
            },
            false,
        )
        .await;
        match applied {
            Ok(a) => events.emit(
                "step_applied",
                format!("step {step} % applied and live in Envoy{}", if a.changed { "" } else { " (already live)" }),
                json!({"step": step, "changed": a.changed,
                       "before": state_of(&a.before, &args.service), "after": state_of(&a.after, &args.service)}),
            ),
            Err(e) => {
                events.emit("error", e.message.clone(), json!({"step": step, "exit_code": e.code}));
                run_state.phase = Phase::Paused;
                run_state.reason = Some(e.message.clone());
                state::save(&target.file, &mut run_state)?;
                return Err(e);
            }
        }

        // Envoy's gauges confirm the update once the main thread has it; the workers pick it up
        // a moment later. Counting starts after that, so that requests decided under the previous
        // step do not count against this one (the split is exact at 0 % and 100 %).
        tokio::time::sleep(STEP_SETTLE).await;
        while run_state.passed_intervals < plan.intervals_per_step {
            let baseline = match prometheus {
                Some(_) => None,
                None => Some(fleet_stats(&admins).await?),
            };
            if let Some(code) = wait_interval(target, args, &events, &mut run_state, step).await? {
                return Ok(code);
            }
            let observed = match (&prometheus, baseline) {
                (Some(p), _) => {
                    p.window(&args.service, &spec.new_cluster, args.interval)
                        .await?
                }
                (None, baseline) => Observed {
                    latest: fleet_stats(&admins).await?,
                    baseline,
                },
            };
            let checks = gate::interval_checks(
                &spec,
                &observed,
                &plan.thresholds,
                step,
                &client,
                &plan.health,
            )
            .await;
            let verdict = gate::verdict(&checks, step);
            match verdict {
                Verdict::Pass => run_state.passed_intervals += 1,
                Verdict::Fail => run_state.failed_intervals += 1,
                Verdict::Inconclusive => run_state.inconclusive_intervals += 1,
            }
            run_state.last_gate = Some(LastGate {
                percentage: step,
                passed: verdict == Verdict::Pass,
                at: state::now(),
            });
            state::save(&target.file, &mut run_state)?;
            emit_interval(
                &events,
                step,
                verdict,
                &checks,
                &run_state,
                plan.intervals_per_step,
            );

            if verdict == Verdict::Fail && run_state.failed_intervals >= args.max_failures {
                let failing: Vec<&Check> =
                    checks.iter().filter(|c| c.status == Status::Fail).collect();
                let reason = failing
                    .iter()
                    .map(|c| format!("{} {} (threshold {})", c.id, shown_value(c), c.threshold))
                    .collect::<Vec<_>>()
                    .join(", ");
                roll_back(target, &args.service, true).await?;
                run_state.phase = Phase::RolledBack;
                run_state.reason = Some(format!("gate failed at {step} %: {reason}"));
                state::save(&target.file, &mut run_state)?;
                events.emit(
                    "rolled_back",
                    format!("ROLLED BACK at {step} %: kill switch on (dual-write left as it was): {reason}"),
                    json!({"step": step, "failed_checks": failing}),
                );
                return Ok(exit::DIFFERS_OR_ROLLED_BACK);
            }
            if verdict == Verdict::Inconclusive
                && run_state.inconclusive_intervals >= args.max_inconclusive
            {
                let reason = format!(
                    "{} inconclusive intervals at {step} % (not enough traffic to judge; --max-inconclusive {})",
                    run_state.inconclusive_intervals, args.max_inconclusive
                );
                return pause(target, &events, &mut run_state, step, reason);
            }
        }
        if args.verify {
            if let Some(code) = data_gate(target, args, &events, &mut run_state, step).await? {
                return Ok(code);
            }
        }
        events.emit(
            "promoted",
            format!(
                "step {step} % held: {} of {} intervals passed ({} failed, {} inconclusive)",
                run_state.passed_intervals,
                plan.intervals_per_step,
                run_state.failed_intervals,
                run_state.inconclusive_intervals
            ),
            json!({"step": step, "passed_intervals": run_state.passed_intervals,
                   "failed_intervals": run_state.failed_intervals, "inconclusive_intervals": run_state.inconclusive_intervals}),
        );
        if run_state.step_index + 1 == run_state.steps.len() {
            break;
        }
        run_state.step_index += 1;
        run_state.passed_intervals = 0;
        run_state.failed_intervals = 0;
        run_state.inconclusive_intervals = 0;
    }
    run_state.phase = Phase::Completed;
    state::save(&target.file, &mut run_state)?;
    let last = run_state.current_step();
    let shown = last.map_or_else(|| "?".to_string(), |p| p.to_string());
    events.emit(
        "completed",
        format!("rollout complete at {shown} %"),
        json!({"step": last}),
    );
    Ok(exit::OK)
}

/// `--verify` before a promotion: `Some(exit code)` when the data differ (rolled back) or verify
/// could not run (paused).
async fn data_gate(
    target: &Fleet,
    args: &RunArgs,
    events: &Events,
    run_state: &mut RunState,
    step: u8,
) -> Result<Option<u8>> {
    let report = match crate::verify::run_for_cutover(&args.verify_args).await {
        Ok(report) => report,
        Err(e) => {
            let message = crate::redact::scrub(&format!("{e:#}"));
            events.emit(
                "error",
                message.clone(),
                json!({"step": step, "exit_code": exit::USAGE}),
            );
            run_state.phase = Phase::Paused;
            run_state.reason = Some(message.clone());
            state::save(&target.file, run_state)?;
            return Err(RolloutError::usage(message));
        }
    };
    let check = crate::cutover_verify::data_check(&report);
    let passed = check.status == Status::Pass;
    events.emit(
        "verify",
        format!(
            "data at {step} %: {} {} [{}]",
            if passed { "pass" } else { "FAIL" },
            check.detail,
            check.threshold
        ),
        json!({"step": step, "check": check}),
    );
    if passed {
        return Ok(None);
    }
    run_state.last_gate = Some(LastGate {
        percentage: step,
        passed: false,
        at: state::now(),
    });
    roll_back(target, &args.service, true).await?;
    run_state.phase = Phase::RolledBack;
    run_state.reason = Some(format!("verify at {step} %: {}", check.detail));
    state::save(&target.file, run_state)?;
    events.emit(
        "rolled_back",
        format!(
            "ROLLED BACK at {step} %: kill switch on (dual-write left as it was): data {}",
            check.detail
        ),
        json!({"step": step, "failed_checks": [check]}),
    );
    Ok(Some(exit::DIFFERS_OR_ROLLED_BACK))
}

fn pause(
    target: &Fleet,
    events: &Events,
    run_state: &mut RunState,
    step: u8,
    reason: String,
) -> Result<u8> {
    run_state.phase = Phase::Paused;
    run_state.reason = Some(reason.clone());
    state::save(&target.file, run_state)?;
    state::clear_request(&target.file);
    events.emit(
        "paused",
        format!(
            "PAUSED at {step} %: {reason}; Envoy stays at this step; `rollout run` again continues"
        ),
        json!({"step": step, "reason": reason}),
    );
    Ok(exit::FILE_OR_PAUSED)
}

/// Sleeps one interval, watching for `pause` / `abort`; `Some(exit code)` when the run stops.
async fn wait_interval(
    target: &Fleet,
    args: &RunArgs,
    events: &Events,
    run_state: &mut RunState,
    step: u8,
) -> Result<Option<u8>> {
    let deadline = tokio::time::Instant::now() + args.interval;
    loop {
        match state::pending_request(&target.file) {
            Some(Request::Pause) => {
                return pause(
                    target,
                    events,
                    run_state,
                    step,
                    "`rollout pause`".to_string(),
                )
                .map(Some)
            }
            Some(Request::Abort) => {
                roll_back(target, &args.service, true).await?;
                run_state.phase = Phase::Aborted;
                run_state.reason = Some(format!("aborted by `rollout abort` at {step} %"));
                state::save(&target.file, run_state)?;
                state::clear_request(&target.file);
                events.emit(
                    "aborted",
                    format!("ABORTED at {step} %: kill switch on (dual-write left as it was)"),
                    json!({"step": step}),
                );
                return Ok(Some(exit::DIFFERS_OR_ROLLED_BACK));
            }
            Some(Request::Resume) | None => {}
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        tokio::time::sleep((deadline - now).min(Duration::from_millis(200))).await;
    }
}

/// The stats of every target, summed (the gate judges the fleet as one).
async fn fleet_stats(admins: &[super::envoy::Admin]) -> Result<Snapshot> {
    let mut all = Vec::with_capacity(admins.len());
    for admin in admins {
        all.push(admin.stats().await?);
    }
    Ok(Snapshot::sum(&all))
}

fn state_of(
    services: &[(String, live_file::ServiceState)],
    service: &str,
) -> Option<live_file::ServiceState> {
    services.iter().find(|(n, _)| n == service).map(|(_, s)| *s)
}

fn shown_value(c: &Check) -> String {
    match c.value {
        Some(v) if c.unit == "%" => crate::cutover_verify::checks::fmt_pct(v),
        Some(v) if c.unit.is_empty() => format!("{v}"),
        Some(v) => format!("{v:.1} {}", c.unit),
        None => "no data".to_string(),
    }
}

#[derive(Serialize)]
struct Counts {
    passed: u32,
    failed: u32,
    inconclusive: u32,
    required: u32,
}

fn emit_interval(
    events: &Events,
    step: u8,
    verdict: Verdict,
    checks: &[Check],
    run_state: &RunState,
    required: u32,
) {
    let figures = checks
        .iter()
        .map(|c| {
            let mark = match c.status {
                Status::Pass => "ok",
                Status::Fail => "FAIL",
                Status::NoData => "no data",
            };
            format!("{} {} [{}; {}]", c.id, shown_value(c), c.threshold, mark)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let word = match verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "FAIL",
        Verdict::Inconclusive => "inconclusive",
    };
    events.emit(
        "interval",
        format!(
            "interval at {step} %: {word} ({}/{required} passed, {} failed, {} inconclusive): {figures}",
            run_state.passed_intervals, run_state.failed_intervals, run_state.inconclusive_intervals
        ),
        json!({"step": step, "verdict": verdict, "checks": checks,
               "counts": Counts { passed: run_state.passed_intervals, failed: run_state.failed_intervals,
                                  inconclusive: run_state.inconclusive_intervals, required }}),
    );
}
