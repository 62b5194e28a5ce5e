//! The whole cutover as one story (issue 10), narrated on the terminal: `make demo` runs it with
//! [`StoryConfig::demo`] (binary `cutover-demo`), the end-to-end test `tests/it/story.rs` with
//! [`StoryConfig::test`] — one code path, only the phase lengths and rates differ.
//!
//! Real components only: the legacy and the new service (`cutover-app`), each on its own
//! PostgreSQL database; Envoy 1.40 loading the release filter through a watched ECDS file; the
//! `migrator` binary for every operator step (`generate-legacy`, `schema`, `copy`, `verify`,
//! `rollout`), run as an operator would; the traffic generator and its ledger throughout.
//!
//! The story: legacy history → the new schema → services and Envoy → traffic → dual-write on at
//! 0 % → backfill while traffic flows → `verify --settle` → `rollout run` of chat, during which
//! the new service starts failing 20 % of its requests → the gate fails, automatic rollback →
//! every acknowledged write is in legacy → the fault is fixed and what the failed shadows missed
//! is repaired (docs/runbook.md) → orchestration and chat rolled out to 100 % → dual-write off
//! behind a clean verify → final verify clean → the summary.

use std::fmt;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cutover_filter::metrics::{Counter, Gauge};
use cutover_filter::outcome::Outcome;
use cutover_pgfixture::TestDb;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::{apply_schema, App, Flavor, REQUEST_TIME_HEADER};
use crate::envoy::{cutover_stat, new_workdir, Envoy};
use crate::paths::{migrator_bin, workspace_root};
use crate::traffic::{Expected, Ledger, Rows, Traffic, TrafficConfig};
use crate::{config, wait_until};

/// The services of the filter configuration, in the order they are rolled out.
pub const SERVICES: [&str; 2] = ["chat", "orchestration"];
/// The service rolled out first, during which the new side fails.
pub const FAULTY_SERVICE: &str = "chat";
/// Bound on every wait for the system (a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(120);
/// Bound on one migrator command other than `rollout run`.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Phase lengths and rates of the story.
#[derive(Clone, Debug)]
pub struct StoryConfig {
    /// Rows per legacy table generated as history (`migrator generate-legacy --rows`).
    pub history_rows: u32,
    /// The live traffic (its `max_duration` bounds the whole story).
    pub traffic: TrafficConfig,
    /// Traffic on legacy alone before dual-write goes on, and with dual-write before the backfill.
    pub warmup: Duration,
    /// `rollout run --steps`.
    pub steps: Vec<u8>,
    /// The step at which the new service starts failing.
    pub fault_step: u8,
    /// Share of the new service's requests that fail (the fault switch, `PUT /fault`).
    pub fault_percent: u64,
    /// `rollout run --hold` and `--interval`.
    pub hold: Duration,
    pub interval: Duration,
    /// `rollout run --min-requests` (requests an interval needs to be judged).
    pub min_requests: u32,
    /// `rollout run --max-inconclusive` (intervals without enough traffic before it pauses).
    pub max_inconclusive: u32,
    /// `rollout run --max-p95-ms` / `--max-p99-ms`: the machines the demo runs on are shared
    /// (2 cores, debug builds of the services); the story is about errors and data, so its latency
    /// limits only catch a service that hangs.
    pub max_p95_ms: u32,
    pub max_p99_ms: u32,
    /// `verify --settle`.
    pub settle: Duration,
    /// `copy --batch-size`.
    pub copy_batch: u32,
}

impl StoryConfig {
    /// `make demo`: 220 requests/s, 30 % writes, 4 s per rollout step.
    pub fn demo() -> StoryConfig {
        StoryConfig {
            history_rows: 2_000,
            traffic: TrafficConfig {
                users: 400,
                // Many connections: each sends one request after the other, so the pace holds
                // even when a loaded machine answers slowly.
                connections: 40,
                rate: 220.0,
                max_requests: 100_000,
                max_duration: Duration::from_secs(300),
                write_percent: 30,
                // No re-sent creates (whole_cutover.rs tests them): a create re-sent after its
                // shadow failed is inserted on the side that missed it with the re-send's request
                // time, newer than the original's, which the version guard then keeps.
                resend_percent: 0,
                seed: 10,
            },
            warmup: Duration::from_secs(4),
            steps: vec![10, 50, 100],
            fault_step: 50,
            fault_percent: 20,
            hold: Duration::from_secs(4),
            interval: Duration::from_secs(2),
            min_requests: 15,
            max_inconclusive: 20,
            max_p95_ms: 3_000,
            max_p99_ms: 5_000,
            settle: Duration::from_secs(2),
            copy_batch: 1_000,
        }
    }

    /// The end-to-end test: the same story with shorter phases and less traffic.
    pub fn test() -> StoryConfig {
        StoryConfig {
            history_rows: 1_000,
            traffic: TrafficConfig {
                users: 300,
                connections: 24,
                rate: 150.0,
                max_requests: 40_000,
                max_duration: Duration::from_secs(240),
                write_percent: 30,
                resend_percent: 0,
                seed: 10,
            },
            warmup: Duration::from_secs(2),
            steps: vec![10, 50, 100],
            fault_step: 50,
            fault_percent: 20,
            hold: Duration::from_secs(2),
            interval: Duration::from_secs(2),
            min_requests: 10,
            max_inconclusive: 20,
            max_p95_ms: 3_000,
            max_p99_ms: 5_000,
            settle: Duration::from_secs(1),
            copy_batch: 500,
        }
    }
}

/// Why the story stopped: a step did not end as the story needs (the message says which and why).
#[derive(Debug)]
pub struct StoryError(pub String);

impl fmt::Display for StoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoryError {}

type Result<T> = std::result::Result<T, StoryError>;

fn fail<T>(message: impl Into<String>) -> Result<T> {
    Err(StoryError(message.into()))
}

/// Everything running in the story. Dropping it stops the traffic, Envoy and the services and
/// drops both databases (field order).
pub struct World {
    traffic: Option<Traffic>,
    pub ledger: Arc<Ledger>,
    pub envoy: Envoy,
    pub legacy: App,
    pub new: App,
    migrator: Migrator,
}

impl World {
    /// Runs the migrator binary with the story's environment (`LEGACY_DATABASE_URL`,
    /// `DATABASE_URL`, `CUTOVER_ECDS_FILE`, `CUTOVER_ADMIN_URL`).
    pub fn migrator(&self, args: &[&str]) -> CommandOutput {
        self.migrator.run(args)
    }

    /// The filter's gauge `cutover.<service>.<gauge>` as Envoy reports it live.
    pub fn gauge(&self, service: &str, gauge: Gauge) -> u64 {
        self.envoy.counter(&cutover_stat(service, gauge.suffix()))
    }

    /// Shadows sent and their outcomes so far, over every service.
    pub fn shadows(&self) -> ShadowCounts {
        shadow_counts(&self.envoy)
    }

    /// Waits (bounded) until every shadow sent has an outcome; only meaningful while no write is
    /// sent (reads are not mirrored).
    pub fn settle_shadows(&self) -> ShadowCounts {
        settle_shadows(&self.envoy)
    }

    /// The rows of every entity the ledger knows, on legacy and on new.
    pub fn ledger_rows(&self, expected: &Expected) -> (Rows, Rows) {
        let ids: Vec<Uuid> = expected.entities.keys().map(|(_, id)| *id).collect();
        let load = |app: &App| Rows::load_ids(&mut app.db().client(), app.flavor(), &ids);
        (load(&self.legacy), load(&self.new))
    }

    fn traffic(&self) -> &Traffic {
        self.traffic
            .as_ref()
            .expect("the traffic runs until the end")
    }
}

/// Shadows sent and their outcomes so far, summed over [`SERVICES`].
pub fn shadow_counts(envoy: &Envoy) -> ShadowCounts {
    let stats = envoy.stats();
    let get = |service: &str, counter: Counter| {
        let name = cutover_stat(service, counter.suffix());
        stats
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| *v)
    };
    let sum = |counters: &[Counter]| -> u64 {
        SERVICES
            .iter()
            .flat_map(|s| counters.iter().map(move |c| get(s, *c)))
            .sum()
    };
    ShadowCounts {
        sent: sum(&[Counter::ShadowSent]),
        // Every sent shadow ends in exactly one of these (docs/metrics.md).
        outcomes: sum(&Outcome::COUNTERS),
        succeeded: sum(&[Counter::ShadowSucceeded]),
        failed_4xx: sum(&[Counter::ShadowFailed3xx, Counter::ShadowFailed4xx]),
        failed_5xx: sum(&[Counter::ShadowFailed5xx]),
        failed_reset: sum(&[Counter::ShadowFailedReset]),
        timed_out: sum(&[Counter::ShadowTimedOut]),
    }
}

/// Waits (bounded) until every shadow sent has an outcome, and no more are sent. A shadow is
/// counted in `shadow_sent` when the root's tick dispatches it, which can come after the client
/// has the primary's answer: so the counts must also stay the same over a span of many ticks.
pub fn settle_shadows(envoy: &Envoy) -> ShadowCounts {
    wait_until("every shadow to have an outcome", WAIT, || {
        let counts = shadow_counts(envoy);
        if counts.sent != counts.outcomes {
            return None;
        }
        thread::sleep(Duration::from_millis(200));
        (shadow_counts(envoy) == counts).then_some(counts)
    })
}

/// Envoy routing both services to the two services (one process per side serves both), the
/// filter loaded through ECDS, the request time stamped before the filter.
pub fn envoy_for(filter_config: &Value, legacy: &App, new: &App) -> crate::envoy::EnvoyBuilder {
    Envoy::builder(filter_config)
        .ecds()
        .cluster("chat_legacy", legacy.port())
        .cluster("orchestration_legacy", legacy.port())
        .cluster("chat_new", new.port())
        .cluster("orchestration_new", new.port())
        .request_time_header(REQUEST_TIME_HEADER)
}

/// Shadow counters summed over the services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShadowCounts {
    pub sent: u64,
    pub outcomes: u64,
    pub succeeded: u64,
    /// 3xx and 4xx answers.
    pub failed_4xx: u64,
    pub failed_5xx: u64,
    pub failed_reset: u64,
    pub timed_out: u64,
}

impl fmt::Display for ShadowCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} sent, {} succeeded, failed: {} 5xx, {} 3xx/4xx, {} reset, {} timed out",
            self.sent,
            self.succeeded,
            self.failed_5xx,
            self.failed_4xx,
            self.failed_reset,
            self.timed_out
        )
    }
}

/// Points of the story where a test can look at the live system.
pub trait Hooks {
    /// Right after `rollout run` rolled the faulty service back (exit 1), before anything else.
    fn after_rollback(&mut self, _world: &World) {}
}

/// No hooks (the demo).
pub struct NoHooks;

impl Hooks for NoHooks {}

/// The figures of a finished story.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Requests the traffic sent through Envoy, reads and writes.
    pub requests: u64,
    /// Requests sent before the writes paused for the hand-over.
    pub requests_while_writing: u64,
    pub writes: u64,
    /// Writes a client got a 2xx for.
    pub acknowledged: usize,
    /// Requests that got no 2xx (all while the new service was failing on purpose).
    pub failed: usize,
    /// Acknowledged writes not stored as answered, on legacy and on new (at the checkpoints).
    pub lost: usize,
    /// Entities whose last write was answered with an error and may or may not have been applied
    /// (either state was accepted).
    pub in_doubt: usize,
    /// Differences that persisted at the verify gates (after the backfill, after the repair,
    /// before and after dual-write off).
    pub persistent_drift: u64,
    /// Keys verify saw in flux (rows in flight, settled on a re-check).
    pub keys_in_flux: u64,
    /// Rows failed shadows had left apart (the fault's, and any other), found by verify and
    /// repaired with copy (and deletes by key).
    pub repaired: u64,
    /// `rollout run` rollbacks.
    pub rollbacks: u32,
    /// How long traffic flowed, and the story in all.
    pub traffic_time: Duration,
    pub duration: Duration,
}

impl Summary {
    pub fn requests_per_second(&self) -> f64 {
        self.requests as f64 / self.traffic_time.as_secs_f64().max(0.001)
    }

    /// Writes among the requests sent while writes flowed (before the hand-over's pause).
    pub fn write_share_percent(&self) -> f64 {
        100.0 * self.writes as f64 / (self.requests_while_writing.max(1) as f64)
    }
}

/// The filter configuration Envoy starts with: both services at 0 %, dual-write configured for
/// every write method of the API (deletes included) but off.
pub fn filter_config() -> Value {
    let services = [config::chat_service(0), config::orchestration_service(0)]
        .into_iter()
        .map(|mut service| {
            service["dual_write"] = json!({
                "enabled": false,
                "methods": ["POST", "PUT", "PATCH", "DELETE"],
                "timeout_ms": 5000
            });
            service
        })
        .collect();
    config::filter_config(services)
}

/// Runs the whole story; on success returns the running world (for a test to inspect; drop it
/// to stop everything) and the figures. Infrastructure failures (a service that does not start)
/// panic like every fixture of this crate; a step that does not end as the story needs is an
/// error naming it.
pub fn run(config: &StoryConfig, hooks: &mut dyn Hooks) -> Result<(World, Summary)> {
    Story::new(config).run(hooks)
}

struct Story<'a> {
    config: &'a StoryConfig,
    started: Instant,
    chapter: usize,
    persistent_drift: u64,
    keys_in_flux: u64,
    repaired: u64,
    rollbacks: u32,
    lost: usize,
    in_doubt: usize,
}

const CHAPTERS: usize = 12;

impl<'a> Story<'a> {
    fn new(config: &'a StoryConfig) -> Story<'a> {
        Story {
            config,
            started: Instant::now(),
            chapter: 0,
            persistent_drift: 0,
            keys_in_flux: 0,
            repaired: 0,
            rollbacks: 0,
            lost: 0,
            in_doubt: 0,
        }
    }

    fn chapter(&mut self, title: &str, why: &str) {
        self.chapter += 1;
        println!();
        println!(
            "[{:6.1}s] ── {}/{CHAPTERS} {title}",
            self.started.elapsed().as_secs_f64(),
            self.chapter
        );
        for line in why.lines() {
            println!("          {line}");
        }
    }

    fn say(&self, text: impl AsRef<str>) {
        let elapsed = self.started.elapsed().as_secs_f64();
        for (i, line) in text.as_ref().lines().enumerate() {
            if i == 0 {
                println!("[{elapsed:6.1}s]   {line}");
            } else {
                println!("            {line}");
            }
        }
    }

    /// Runs a migrator command, shows it and its output; `Err` unless it exits with `expected`.
    fn step(&self, migrator: &Migrator, args: &[&str], expected: i32) -> Result<CommandOutput> {
        self.say(format!("$ migrator {}", args.join(" ")));
        let output = migrator.run(args);
        for line in output.stdout.lines().chain(output.stderr.lines()) {
            println!("              {line}");
        }
        if output.code != expected {
            return fail(format!(
                "`migrator {}` exited {} (expected {expected})",
                args.join(" "),
                output.code
            ));
        }
        Ok(output)
    }

    fn run(mut self, hooks: &mut dyn Hooks) -> Result<(World, Summary)> {
        let config = self.config;
        println!(
            "The whole cutover on real services: legacy → new, with live traffic through Envoy."
        );

        self.chapter(
            "Legacy history",
            "The legacy service's database, with years of data in it (generated).",
        );
        let legacy_db = TestDb::create("cutover_story_legacy");
        apply_schema(Flavor::Legacy, &legacy_db);
        let new_db = TestDb::create("cutover_story_new");
        let migrator = Migrator::new(&legacy_db.url, &new_db.url);
        let rows = config.history_rows.to_string();
        self.say("$ migrator generate-legacy --rows ".to_string() + &rows);
        let generated = migrator.run(&["generate-legacy", "--rows", &rows]);
        if generated.code != 0 {
            return fail(format!(
                "generate-legacy exited {}: {}",
                generated.code, generated.stderr
            ));
        }
        let history = count_rows(&legacy_db, Flavor::Legacy);
        self.say(format!(
            "legacy database {}: {history} rows in users, conversations, messages, tasks, task executions",
            legacy_db.name
        ));

        self.chapter(
            "The new system's schema",
            "`migrator schema` applies migrations/ to the new service's own, empty database\n(advisory-locked, checksummed); the new service refuses to start without it.",
        );
        self.say("$ migrator schema");
        let schema = migrator.run(&["schema"]);
        if schema.code != 0 {
            return fail(format!(
                "migrator schema exited {}: {}",
                schema.code, schema.stderr
            ));
        }
        self.say(format!("new database {}: schema applied", new_db.name));

        self.chapter(
            "Services and Envoy",
            "Both services are real processes (axum + sqlx) on their own databases; Envoy 1.40\nloads the release filter through a watched ECDS file, both services at 0 % to new.",
        );
        let legacy = App::start_on(Flavor::Legacy, legacy_db);
        let new = App::start_on(Flavor::New, new_db);
        let envoy = envoy_for(&filter_config(), &legacy, &new)
            .log_level("warning")
            .boot();
        let ecds_file = envoy
            .ecds_file()
            .expect("booted with ECDS")
            .display()
            .to_string();
        let migrator = migrator.with_envoy(&ecds_file, &envoy.admin_url());
        self.say(format!(
            "legacy service {} · new service {} · Envoy listener {}",
            legacy.url(),
            new.url(),
            envoy.listener_url()
        ));
        self.say(format!(
            "to follow along from another terminal:\n  export CUTOVER_ADMIN_URL={} CUTOVER_ECDS_FILE={ecds_file}\n  migrator rollout show",
            envoy.admin_url()
        ));

        self.chapter(
            "Dual-write on, 0 % to new",
            "Legacy serves every request; from now on every write is mirrored to new as a shadow.\nWhat was written before (the history) reaches new only through the backfill.",
        );
        for service in SERVICES {
            self.step(&migrator, &["rollout", "dual-write", service, "on"], 0)?;
        }

        self.chapter(
            "Live traffic",
            "Many users (one correlation id each), a steady mix of reads and writes at a fixed\nrate; the ledger records every write a client got a 2xx for. It flows until the end.",
        );
        let traffic = Traffic::start(&envoy.listener_url(), &config.traffic);
        let traffic_started = Instant::now();
        let ledger = traffic.ledger();
        let world = World {
            traffic: Some(traffic),
            ledger,
            envoy,
            legacy,
            new,
            migrator,
        };
        self.say(format!(
            "{} users on {} connections, {:.0} requests/s, {} % writes",
            config.traffic.users,
            config.traffic.connections,
            config.traffic.rate,
            config.traffic.write_percent
        ));
        thread::sleep(config.warmup);
        self.report_traffic(&world, traffic_started);
        let shadows = world.shadows();
        self.say(format!(
            "shadows sent {}, succeeded so far {} (new receives every write)",
            shadows.sent, shadows.succeeded
        ));

        self.chapter(
            "Backfill while traffic flows",
            "`migrator copy` copies the history into new while dual-write keeps writing to both.\nThe plan's version column (updated_at) keeps copy from reverting a row dual-write\nchanged after copy read it; a row deleted meanwhile is not brought back.",
        );
        let batch = config.copy_batch.to_string();
        let acks_before = world.ledger.acks().len();
        self.step(&world.migrator, &["copy", "--batch-size", &batch], 0)?;
        self.say(format!(
            "{} writes were acknowledged during the copy",
            world.ledger.acks().len() - acks_before
        ));

        self.chapter(
            "Verify under live writes",
            "Rows in flight differ for a moment; `--settle` re-checks differing keys and fails only\non differences that persist.",
        );
        self.verify_repairing(&world, "after the backfill")?;

        self.chapter(
            "Rollout of chat: 10 → 50 → 100, gated",
            &format!(
                "`migrator rollout run` applies each step through the ECDS file and judges every interval\non Envoy's stats (split, 5xx rate, latency, dual-write). At {} % the new service starts\nfailing {} % of its requests: the gate must catch it and roll back by itself.",
                config.fault_step, config.fault_percent
            ),
        );
        let fault_step = config.fault_step;
        let fault_percent = config.fault_percent;
        let mut fault_on = false;
        let outcome = self.rollout_run(&world, FAULTY_SERVICE, &config.steps, config.hold, |story, step| {
            if step == fault_step && !fault_on {
                world.new.set_fault(fault_percent);
                fault_on = true;
                story.say(format!(
                    "!! the new service now fails {fault_percent} % of its requests (PUT /fault on its admin port)"
                ));
            }
        })?;
        if outcome.code != 1 || outcome.rollbacks != 1 {
            return fail(format!(
                "rollout run of {FAULTY_SERVICE} with the fault: exit {} with {} rollbacks (expected exit 1, one rollback)",
                outcome.code, outcome.rollbacks
            ));
        }
        self.rollbacks += outcome.rollbacks;
        hooks.after_rollback(&world);
        self.report_traffic(&world, traffic_started);
        self.say(format!(
            "Envoy live: {FAULTY_SERVICE}.use_legacy = {} (kill switch on), new_percentage = {}",
            world.gauge(FAULTY_SERVICE, Gauge::UseLegacy),
            world.gauge(FAULTY_SERVICE, Gauge::NewPercentage)
        ));

        self.chapter(
            "After the rollback: nothing acknowledged is lost",
            "Legacy serves again. Every write new acknowledged was mirrored to legacy, so legacy must\nhold all of them. The fault is fixed; what the failed shadows left out of new is repaired\n(docs/runbook.md, \"Repairing a failed shadow\").",
        );
        world.new.set_fault(0);
        self.say("the new service's fault is fixed (PUT /fault 0)");
        self.check_legacy_after_rollback(&world)?;
        self.verify_repairing(&world, "after the rollback")?;

        self.chapter(
            "The rollout resumes",
            "Orchestration, then chat again, through every step to 100 %, traffic flowing.",
        );
        for service in ["orchestration", FAULTY_SERVICE] {
            let outcome =
                self.rollout_run(&world, service, &config.steps, config.hold, |_, _| {})?;
            if outcome.code != 0 {
                return fail(format!("rollout run of {service}: exit {}", outcome.code));
            }
        }

        self.report_traffic(&world, traffic_started);
        self.chapter(
            "Dual-write off",
            "The irreversible step: afterwards legacy stops receiving writes. Writes pause for the\nhand-over (reads go on) so the last comparison is exact. The interlock refuses dual-write\noff unless the service is at 100 % and its last gate passed at 100 % (each service's last\ngate is kept beside the ECDS file).",
        );
        let paused = Instant::now();
        let requests_while_writing = world.ledger.requests();
        world.traffic().pause_writes(WAIT);
        world.settle_shadows();
        self.say("writes paused, every shadow landed");
        self.verify_clean(&world, false, "before dual-write off")?;
        self.step(
            &world.migrator,
            &["rollout", "dual-write", FAULTY_SERVICE, "off"],
            0,
        )?;
        self.step(
            &world.migrator,
            &["rollout", "dual-write", "orchestration", "off"],
            0,
        )?;
        self.step(&world.migrator, &["rollout", "show"], 0)?;

        self.chapter(
            "Final verify",
            "New is the system of record now; legacy holds everything written until dual-write went\noff.",
        );
        self.verify_clean(&world, false, "after dual-write off")?;
        let expected = world.ledger.expected();
        let (legacy_rows, new_rows) = world.ledger_rows(&expected);
        let legacy_missing = expected.differences(&legacy_rows);
        let new_missing = expected.differences(&new_rows);
        self.lost = legacy_missing.len() + new_missing.len();
        self.in_doubt = expected.in_doubt.len();
        self.say(format!(
            "ledger: {} acknowledged writes; not stored as answered: legacy {}, new {}",
            world.ledger.acks().len(),
            legacy_missing.len(),
            new_missing.len()
        ));
        if self.lost > 0 {
            return fail(format!(
                "acknowledged writes lost: legacy {:?}, new {:?}",
                &legacy_missing[..legacy_missing.len().min(5)],
                &new_missing[..new_missing.len().min(5)]
            ));
        }
        self.say(format!(
            "writes were paused for {:.1} s of the hand-over; reads kept flowing",
            paused.elapsed().as_secs_f64()
        ));

        let mut world = world;
        let traffic_time = traffic_started.elapsed();
        if let Some(traffic) = world.traffic.take() {
            traffic.stop();
        }
        let ledger = &world.ledger;
        let summary = Summary {
            requests: ledger.requests(),
            requests_while_writing,
            writes: ledger.writes(),
            acknowledged: ledger.acks().len(),
            failed: ledger.failures().len(),
            lost: self.lost,
            in_doubt: self.in_doubt,
            persistent_drift: self.persistent_drift,
            keys_in_flux: self.keys_in_flux,
            repaired: self.repaired,
            rollbacks: self.rollbacks,
            traffic_time,
            duration: self.started.elapsed(),
        };
        self.summary(&summary);
        Ok((world, summary))
    }

    fn report_traffic(&self, world: &World, since: Instant) {
        let ledger = &world.ledger;
        self.say(format!(
            "traffic so far: {} requests ({:.0}/s), {} writes acknowledged (served by legacy {}, new {}), {} failed",
            ledger.requests(),
            ledger.requests() as f64 / since.elapsed().as_secs_f64().max(0.001),
            ledger.acks().len(),
            ledger.acks_served_by("legacy"),
            ledger.acks_served_by("new"),
            ledger.failures().len()
        ));
    }

    /// `migrator verify` (with `--settle` while writes flow) must find no persistent difference.
    fn verify_clean(&mut self, world: &World, settle: bool, when: &str) -> Result<Verified> {
        let verified = self.verify(world, settle.then_some(3))?;
        self.persistent_drift += verified.differences;
        if verified.code != 0 {
            return fail(format!(
                "verify {when}: exit {}, {} persistent differences: {}",
                verified.code,
                verified.differences,
                verified.summary()
            ));
        }
        Ok(verified)
    }

    /// `migrator verify`; with `rechecks`, under `--settle` with that many re-checks.
    fn verify(&mut self, world: &World, rechecks: Option<u32>) -> Result<Verified> {
        let settle_arg = duration_arg(self.config.settle);
        let rechecks_arg = rechecks.unwrap_or(0).to_string();
        let settle = rechecks.is_some();
        let mut args = vec!["verify", "--format", "json"];
        if settle {
            args.extend(["--settle", &settle_arg, "--rechecks", &rechecks_arg]);
        }
        self.say(format!("$ migrator {}", args.join(" ")));
        let output = world.migrator(&args);
        let verified = Verified::parse(&output)?;
        self.keys_in_flux += verified.in_flux;
        self.say(format!(
            "exit {}: {} persistent differences{}{}",
            verified.code,
            verified.differences,
            if settle {
                format!(
                    ", {} keys in flux (in flight, settled on a re-check)",
                    verified.in_flux
                )
            } else {
                String::new()
            },
            if verified.differences > 0 {
                format!(" — {}", verified.summary())
            } else {
                String::new()
            }
        ));
        Ok(verified)
    }

    /// Writes paused, shadows settled: every acknowledged write must be on legacy (repaired with
    /// the reverse plan when a failed shadow left one out, as the runbook says).
    fn check_legacy_after_rollback(&mut self, world: &World) -> Result<()> {
        let traffic = world.traffic();
        traffic.pause_writes(WAIT);
        let shadows = world.settle_shadows();
        let expected = world.ledger.expected();
        let (legacy_rows, new_rows) = world.ledger_rows(&expected);
        let mut legacy_missing = expected.differences(&legacy_rows);
        let new_missing = expected.differences(&new_rows).len();
        let ledger = &world.ledger;
        self.say(format!(
            "checkpoint (writes paused a moment, reads go on): {} writes acknowledged, {} of them by new",
            ledger.acks().len(),
            ledger.acks_served_by("new")
        ));
        self.say(format!(
            "shadows so far: {shadows} (the fault hit shadows to new too)"
        ));
        if !legacy_missing.is_empty() {
            self.say(format!(
                "legacy lacks {} acknowledged writes: repair new → legacy with the reverse plan",
                legacy_missing.len()
            ));
            let plan = workspace_root().join("migrations/reverse-plan.toml");
            let plan = plan.to_string_lossy().into_owned();
            let (legacy_url, new_url) = (world.legacy.db().url.clone(), world.new.db().url.clone());
            let output = world.migrator(&[
                "copy",
                "--plan",
                &plan,
                "--source-url",
                &new_url,
                "--target-url",
                &legacy_url,
            ]);
            self.say(format!(
                "$ migrator copy --plan migrations/reverse-plan.toml --source-url $NEW --target-url $LEGACY: exit {}",
                output.code
            ));
            legacy_missing = expected.differences(&world.ledger_rows(&expected).0);
        }
        self.say(format!(
            "acknowledged writes missing in legacy: {} · in doubt (answered with an error, maybe applied): {}",
            legacy_missing.len(),
            expected.in_doubt.len()
        ));
        self.say(format!(
            "new lacks {new_missing} acknowledged writes whose shadows the fault failed"
        ));
        traffic.resume_writes();
        if !legacy_missing.is_empty() {
            self.lost += legacy_missing.len();
            return fail(format!(
                "after the rollback legacy lacks {} acknowledged writes, e.g. {:?}",
                legacy_missing.len(),
                &legacy_missing[..legacy_missing.len().min(5)]
            ));
        }
        Ok(())
    }

    /// The verify gate while legacy serves and writes flow, with the runbook's repair: when
    /// differences persist (a shadow failed: new lacks a write, or a delete — an extra row on new,
    /// which copy does not remove), `copy` again, delete the extra rows on new by key, and
    /// verify again, which must then be clean.
    fn verify_repairing(&mut self, world: &World, when: &str) -> Result<()> {
        let found = self.verify(world, Some(3))?;
        if found.code == 0 {
            return Ok(());
        }
        self.repaired += found.differences;
        self.say(format!(
            "drift that persists comes from failed shadows — {}; repaired as docs/runbook.md says:",
            world.shadows()
        ));
        let batch = self.config.copy_batch.to_string();
        self.step(&world.migrator, &["copy", "--batch-size", &batch], 0)?;
        if !found.extra.is_empty() {
            let mut client = world.new.db().client();
            for (table, key_column, key) in &found.extra {
                client
                    .execute(
                        &format!("DELETE FROM {table} WHERE {key_column}::text = $1"),
                        &[key],
                    )
                    .map_err(|e| StoryError(format!("delete {table} {key}: {e}")))?;
            }
            self.say(format!(
                "{} rows legacy deleted while their shadow failed: deleted on new by key",
                found.extra.len()
            ));
        }
        self.verify_clean(world, true, when)?;
        Ok(())
    }

    /// `migrator rollout run --format json` for `service`, each event narrated; `on_step` is
    /// called when a step is live in Envoy.
    fn rollout_run(
        &mut self,
        world: &World,
        service: &str,
        steps: &[u8],
        hold: Duration,
        mut on_step: impl FnMut(&Story<'_>, u8),
    ) -> Result<RolloutOutcome> {
        let steps_arg = steps
            .iter()
            .map(u8::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let hold_arg = duration_arg(hold);
        let interval = duration_arg(self.config.interval);
        let min_requests = self.config.min_requests.to_string();
        let max_inconclusive = self.config.max_inconclusive.to_string();
        let max_p95 = self.config.max_p95_ms.to_string();
        let max_p99 = self.config.max_p99_ms.to_string();
        let health_legacy = format!("legacy={}/healthz", world.legacy.url());
        let health_new = format!("new={}/healthz", world.new.url());
        let args = [
            "rollout",
            "--format",
            "json",
            "run",
            "--service",
            service,
            "--steps",
            &steps_arg,
            "--hold",
            &hold_arg,
            "--interval",
            &interval,
            "--min-requests",
            &min_requests,
            "--max-inconclusive",
            &max_inconclusive,
            "--max-p95-ms",
            &max_p95,
            "--max-p99-ms",
            &max_p99,
            "--health",
            &health_legacy,
            "--health",
            &health_new,
        ];
        self.say(format!("$ migrator {}", args.join(" ")));
        let per_step =
            hold + self.config.interval * self.config.max_inconclusive + Duration::from_secs(30);
        let deadline = Instant::now() + per_step * steps.len() as u32 + Duration::from_secs(30);
        let (mut child, stderr_path) = world.migrator.spawn(&args);
        let stdout = child.stdout.take().expect("piped stdout");
        let (lines, events) = mpsc::channel();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                if lines.send(line).is_err() {
                    return;
                }
            }
        });
        let mut outcome = RolloutOutcome {
            code: -1,
            rollbacks: 0,
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(line) => {
                    let event: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|_| json!({"event": "text", "text": line}));
                    if event["event"] == "rolled_back" {
                        outcome.rollbacks += 1;
                    }
                    self.narrate_event(&event);
                    if event["event"] == "step_applied" {
                        if let Some(step) = event["step"].as_u64() {
                            on_step(self, step as u8);
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return fail(format!(
                        "`migrator rollout run --service {service}` did not finish in time"
                    ));
                }
            }
        }
        let _ = reader.join();
        let status = child
            .wait()
            .map_err(|e| StoryError(format!("wait for rollout run: {e}")))?;
        outcome.code = status.code().unwrap_or(-1);
        let stderr = fs::read_to_string(&stderr_path).unwrap_or_default();
        let _ = fs::remove_file(&stderr_path);
        for line in stderr.lines() {
            println!("              {line}");
        }
        self.say(format!("rollout run exit {}", outcome.code));
        Ok(outcome)
    }

    fn narrate_event(&self, event: &Value) {
        let step = event["step"]
            .as_u64()
            .map_or("?".to_string(), |s| s.to_string());
        let text = match event["event"].as_str().unwrap_or("") {
            "started" => format!(
                "run: steps {}, {} intervals of {} s per step",
                event["steps"], event["intervals_per_step"], event["interval_seconds"]
            ),
            "step_applied" => format!("step {step} % applied and confirmed live by Envoy"),
            "interval" => format!(
                "interval at {step} %: {} ({}/{}) — {}",
                event["verdict"].as_str().unwrap_or("?").to_uppercase(),
                event["counts"]["passed"],
                event["counts"]["required"],
                checks_text(&event["checks"])
            ),
            "promoted" => format!("step {step} % held"),
            "rolled_back" => format!(
                "ROLLED BACK at {step} %: kill switch on, everything to legacy — {}",
                checks_text(&event["failed_checks"])
            ),
            "completed" => format!("rollout complete at {step} %"),
            "paused" => format!("PAUSED at {step} %: {}", event["reason"]),
            "error" => format!("error at {step} %: {}", event["exit_code"]),
            "text" => event["text"].as_str().unwrap_or("").to_string(),
            other => format!("{other}: {event}"),
        };
        self.say(text);
    }

    fn summary(&self, s: &Summary) {
        println!();
        println!("══ Summary ══════════════════════════════════════════════════════════");
        let rows = [
            (
                "requests through Envoy",
                format!(
                    "{} ({:.0}/s over {:.0} s)",
                    s.requests,
                    s.requests_per_second(),
                    s.traffic_time.as_secs_f64()
                ),
            ),
            (
                "writes",
                format!(
                    "{} ({:.1} % of the requests until the hand-over)",
                    s.writes,
                    s.write_share_percent()
                ),
            ),
            ("acknowledged writes", s.acknowledged.to_string()),
            (
                "failed requests",
                format!("{} (the injected fault)", s.failed),
            ),
            ("lost", s.lost.to_string()),
            ("in doubt (answered with an error)", s.in_doubt.to_string()),
            ("persistent drift", s.persistent_drift.to_string()),
            (
                "rows the fault left apart, repaired",
                s.repaired.to_string(),
            ),
            ("keys in flux at verify", s.keys_in_flux.to_string()),
            ("rollbacks", s.rollbacks.to_string()),
            ("time taken", format!("{:.0} s", s.duration.as_secs_f64())),
        ];
        for (what, value) in rows {
            println!("  {what:<36} {value}");
        }
    }
}

/// A duration as the migrator's options take it: `6s`, or `500ms`.
fn duration_arg(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis.is_multiple_of(1000) {
        format!("{}s", millis / 1000)
    } else {
        format!("{millis}ms")
    }
}

fn checks_text(checks: &Value) -> String {
    checks
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            let value = match (c["value"].as_f64(), c["unit"].as_str().unwrap_or("")) {
                (None, _) => "no data".to_string(),
                (Some(v), "%") => format!("{v:.1} %"),
                (Some(v), "") => format!("{v}"),
                (Some(v), unit) => format!("{v:.1} {unit}"),
            };
            let mark = match c["status"].as_str() {
                Some("fail") => " FAIL",
                _ => "",
            };
            format!(
                "{} {value} [{}]{mark}",
                c["id"].as_str().unwrap_or("?"),
                c["threshold"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn count_rows(db: &TestDb, flavor: Flavor) -> i64 {
    let tables = flavor.tables();
    let mut client = db.client();
    [
        tables.users,
        tables.conversations,
        tables.messages,
        tables.tasks,
        tables.task_executions,
    ]
    .iter()
    .map(|table| {
        client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or_else(|e| panic!("count {table}: {e}"))
    })
    .sum()
}

struct RolloutOutcome {
    code: i32,
    rollbacks: u32,
}

/// What `migrator verify --format json` found.
struct Verified {
    code: i32,
    differences: u64,
    in_flux: u64,
    /// (target table, key column, key) of every extra row.
    extra: Vec<(String, String, String)>,
    /// Per table: (name, missing, extra, changed, target_newer).
    tables: Vec<(String, usize, usize, usize, usize)>,
}

impl Verified {
    fn parse(output: &CommandOutput) -> Result<Verified> {
        if output.code != 0 && output.code != 1 {
            return fail(format!(
                "verify could not check (exit {}): {}",
                output.code, output.stderr
            ));
        }
        let report: Value = serde_json::from_str(&output.stdout)
            .map_err(|e| StoryError(format!("verify's JSON report: {e}")))?;
        let len = |t: &Value, field: &str| t[field].as_array().map_or(0, Vec::len);
        let mut verified = Verified {
            code: output.code,
            differences: report["differences"].as_u64().unwrap_or(0),
            in_flux: 0,
            extra: Vec::new(),
            tables: Vec::new(),
        };
        for table in report["tables"].as_array().into_iter().flatten() {
            verified.in_flux += len(table, "in_flux") as u64;
            let target = table["target"].as_str().unwrap_or("").to_string();
            let key = table["key"].as_str().unwrap_or("").to_string();
            for extra in table["extra"].as_array().into_iter().flatten() {
                if let Some(k) = extra.as_str() {
                    verified
                        .extra
                        .push((target.clone(), key.clone(), k.to_string()));
                }
            }
            verified.tables.push((
                table["table"].as_str().unwrap_or("?").to_string(),
                len(table, "missing"),
                len(table, "extra"),
                len(table, "changed"),
                len(table, "target_newer"),
            ));
        }
        Ok(verified)
    }

    fn summary(&self) -> String {
        self.tables
            .iter()
            .filter(|(_, m, e, c, n)| m + e + c + n > 0)
            .map(|(t, m, e, c, n)| format!("{t}: {m} missing, {e} extra, {c} changed, {n} newer"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Exit code and output of a finished command.
#[derive(Clone, Debug)]
pub struct CommandOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The migrator binary with the story's environment, run as an operator would.
struct Migrator {
    bin: PathBuf,
    env: Vec<(&'static str, String)>,
    workdir: PathBuf,
}

impl Migrator {
    fn new(legacy_url: &str, new_url: &str) -> Migrator {
        Migrator {
            bin: migrator_bin(),
            env: vec![
                ("LEGACY_DATABASE_URL", legacy_url.to_string()),
                ("DATABASE_URL", new_url.to_string()),
            ],
            workdir: new_workdir(),
        }
    }

    fn with_envoy(mut self, ecds_file: &str, admin_url: &str) -> Migrator {
        self.env.push(("CUTOVER_ECDS_FILE", ecds_file.to_string()));
        self.env.push(("CUTOVER_ADMIN_URL", admin_url.to_string()));
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command.args(args).stdin(Stdio::null());
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// Started with stdout piped and stderr to the returned file.
    fn spawn(&self, args: &[&str]) -> (Child, PathBuf) {
        let (stderr_path, stderr) = tempfile_in(&self.workdir);
        let mut command = self.command(args);
        command.stdout(Stdio::piped()).stderr(stderr);
        (command.spawn().expect("start migrator"), stderr_path)
    }

    /// Runs to the end (bounded by [`COMMAND_TIMEOUT`]); output kept in files, so a chatty
    /// command cannot block on a full pipe.
    fn run(&self, args: &[&str]) -> CommandOutput {
        let (out_path, out) = tempfile_in(&self.workdir);
        let (err_path, err) = tempfile_in(&self.workdir);
        let mut command = self.command(args);
        command.stdout(out).stderr(err);
        let mut child = command.spawn().expect("start migrator");
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for migrator") {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            thread::sleep(Duration::from_millis(20));
        };
        let read = |path: &PathBuf| {
            let text = fs::read_to_string(path).unwrap_or_default();
            let _ = fs::remove_file(path);
            text
        };
        let (stdout, mut stderr) = (read(&out_path), read(&err_path));
        let code = match status {
            Some(status) => status.code().unwrap_or(-1),
            None => {
                stderr.push_str(&format!(
                    "\n(killed after {COMMAND_TIMEOUT:?}: migrator {})",
                    args.join(" ")
                ));
                -1
            }
        };
        CommandOutput {
            code,
            stdout,
            stderr,
        }
    }
}

impl Drop for Migrator {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.workdir);
    }
}

fn tempfile_in(dir: &std::path::Path) -> (PathBuf, fs::File) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let path = dir.join(format!("out-{}", NEXT.fetch_add(1, Ordering::SeqCst)));
    let file = fs::File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    (path, file)
}
