//! The whole cutover on real services (issue 10): the legacy and the new app (`tests/apps`), each
//! on its own PostgreSQL database, behind a real Envoy 1.40 with the release filter; dual-write
//! at 0 % (legacy serves, new receives the shadows), then at 100 % (new serves, legacy receives
//! them), while the traffic generator runs. Asserted on the ledger and the databases: every
//! acknowledged write is stored on both sides with the values the client was answered (the
//! request-time timestamps included), the two databases are identical, and re-sent writes create
//! nothing new.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cutover_e2e::app::{apply_schema, Flavor, EXIT_SCHEMA, REQUEST_TIME_HEADER};
use cutover_e2e::traffic::{Kind, Rows};
use cutover_e2e::{config, story, wait_until, App, Envoy, Traffic, TrafficConfig};
use cutover_pgfixture::TestDb;
use serde_json::{json, Value};

/// Bound on every wait of these tests (a loaded 2-core machine).
const WAIT: Duration = Duration::from_secs(120);

/// chat and orchestration at `new_percentage`, dual-write on for every write method of the API.
fn filter_config(new_percentage: u8) -> Value {
    let services = [
        config::chat_service(new_percentage),
        config::orchestration_service(new_percentage),
    ]
    .into_iter()
    .map(|mut service| {
        service["dual_write"] = json!({
            "enabled": true,
            "methods": ["POST", "PUT", "PATCH", "DELETE"],
            "timeout_ms": 5000
        });
        service
    })
    .collect();
    config::filter_config(services)
}

/// Envoy routing both services to the two apps (`story::envoy_for`) at `new_percentage`.
fn envoy_for(legacy: &App, new: &App, new_percentage: u8) -> Envoy {
    story::envoy_for(&filter_config(new_percentage), legacy, new).boot()
}

/// Waits until every shadow sent has an outcome; returns (sent, succeeded) over both services.
fn settle_shadows(envoy: &Envoy) -> (u64, u64) {
    let counts = story::settle_shadows(envoy);
    (counts.sent, counts.succeeded)
}

/// 40 users on 4 connections at 80 requests/s, bounded to 4,000 requests and 150 s.
fn traffic_config(seed: u64) -> TrafficConfig {
    TrafficConfig {
        users: 40,
        connections: 4,
        rate: 80.0,
        max_requests: 4_000,
        max_duration: Duration::from_secs(150),
        seed,
        ..TrafficConfig::default()
    }
}

fn load(app: &App) -> Rows {
    Rows::load(&mut app.db().client(), app.flavor())
}

#[test]
fn every_acknowledged_write_is_on_both_sides_at_0_and_at_100_percent() {
    let legacy = App::start(Flavor::Legacy);
    let new = App::start(Flavor::New);
    let envoy = envoy_for(&legacy, &new, 0);

    let traffic = Traffic::start(&envoy.listener_url(), &traffic_config(1));
    let ledger = traffic.ledger();
    // Phase 1, 0 %: legacy serves, new receives the shadows.
    wait_until("150 writes served by legacy", WAIT, || {
        (ledger.acks_served_by("legacy") >= 150).then_some(())
    });
    // Phase 2, 100 %: new serves, legacy receives the shadows; traffic flows through the switch.
    envoy.update_filter_config(&filter_config(100));
    let served_by_new_before = ledger.acks_served_by("new");
    wait_until("150 writes served by new", WAIT, || {
        (ledger.acks_served_by("new") >= served_by_new_before + 150).then_some(())
    });
    let ledger = traffic.stop();
    let (shadows_sent, shadows_succeeded) = settle_shadows(&envoy);
    println!(
        "requests {}, reads answered {}, writes acknowledged {} (legacy {}, new {}), shadows {shadows_sent}",
        ledger.requests(),
        ledger.reads_ok(),
        ledger.acks().len(),
        ledger.acks_served_by("legacy"),
        ledger.acks_served_by("new")
    );

    let failures = ledger.failures();
    assert!(
        failures.is_empty(),
        "{} requests failed, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let acks = ledger.acks();
    assert_eq!(
        ledger.acks_served_by("legacy") + ledger.acks_served_by("new"),
        acks.len(),
        "every acknowledged write says which side served it"
    );
    assert!(ledger.reads_ok() > 0, "reads were part of the mix");
    assert_eq!(
        shadows_sent,
        acks.len() as u64,
        "every acknowledged write was mirrored"
    );
    assert_eq!(
        shadows_succeeded,
        shadows_sent,
        "every shadow succeeded; envoy log: {}",
        envoy.log_path().display()
    );

    let legacy_rows = load(&legacy);
    let new_rows = load(&new);
    let expected = ledger.expected();
    for (side, rows) in [("legacy", &legacy_rows), ("new", &new_rows)] {
        expected.assert_stored(side, rows);
    }
    let apart = legacy_rows.differences(&new_rows);
    assert!(
        apart.is_empty(),
        "legacy and new differ in {} rows, e.g. {:?}",
        apart.len(),
        &apart[..apart.len().min(5)]
    );

    // Nothing stored that the ledger does not account for: re-sends created no second entity.
    let present: BTreeSet<(Kind, uuid::Uuid)> = expected
        .entities
        .iter()
        .filter(|(_, row)| row.is_some())
        .map(|(key, _)| *key)
        .collect();
    assert_eq!(legacy_rows.len(), present.len(), "rows beyond the ledger");
    let resends: Vec<_> = acks.iter().filter(|a| a.resend).collect();
    assert!(!resends.is_empty(), "the traffic re-sent writes");
    assert!(
        resends.iter().all(|a| a.status == 200),
        "a re-sent create answers 200 (already there), not 201: {:?}",
        resends.iter().find(|a| a.status != 200)
    );
    for side in ["legacy", "new"] {
        assert!(
            acks.iter().any(|a| a.routed_to == side && a.status == 201),
            "{side} served creates"
        );
    }
}

/// The time the apps store is the one Envoy stamped, on the primary and on the shadow alike; a
/// value the client sends in the header is overwritten.
#[test]
fn the_request_time_is_stamped_by_envoy_and_stored_alike_on_both_sides() {
    let legacy = App::start(Flavor::Legacy);
    let new = App::start(Flavor::New);
    let envoy = envoy_for(&legacy, &new, 0);
    let before = Utc::now();
    let id = uuid::Uuid::from_u128(0x5eed);
    let response = envoy.client().send(
        "POST",
        "/api/chat/users",
        &[
            ("x-correlation-id", b"forger"),
            ("content-type", b"application/json"),
            (REQUEST_TIME_HEADER, b"2000-01-01T00:00:00Z"),
        ],
        json!({"id": id, "username": "forger", "email": "forger@example.org", "password_hash": "h"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(response.status, 201, "{}", response.body_text());
    assert_eq!(response.header("x-routed-to").as_deref(), Some("legacy"));
    let answer: Value = serde_json::from_slice(&response.body).expect("JSON answer");
    let answered: DateTime<Utc> = answer["created_at"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .expect("created_at in the answer");
    assert!(
        answered >= before - chrono::Duration::seconds(1),
        "the client's value was replaced: {answered}"
    );
    assert_eq!(settle_shadows(&envoy), (1, 1));
    for app in [&legacy, &new] {
        let rows = load(app);
        let user = rows.users.get(&id).expect("the user on both sides");
        assert_eq!(user.created_at, Some(answered), "{:?}", app.flavor());
        assert_eq!(user.updated_at, Some(answered), "{:?}", app.flavor());
    }
}

/// An app started on a database without its schema names what is missing and exits
/// `EXIT_SCHEMA` (3).
#[test]
fn apps_refuse_a_database_without_their_schema() {
    for (flavor, table) in [
        (Flavor::Legacy, "legacy.users"),
        (Flavor::New, "auth.users"),
    ] {
        // Refused: exit EXIT_SCHEMA, the missing table named; the database comes back.
        let refused = |db: TestDb, what: &str| -> TestDb {
            let (error, db) = match App::try_start(flavor, db) {
                Ok(_) => panic!("{flavor:?} started {what}"),
                Err(failure) => failure,
            };
            assert_eq!(
                error.exit_status.and_then(|s| s.code()),
                Some(EXIT_SCHEMA.into()),
                "{flavor:?} {what}: {}",
                error.log
            );
            assert!(
                error.log.contains(table),
                "{flavor:?} {what}: {}",
                error.log
            );
            db
        };
        let db = refused(TestDb::create("cutover_app_empty"), "without a schema");
        // The other flavor's schema is not this one's either.
        let other = match flavor {
            Flavor::Legacy => Flavor::New,
            Flavor::New => Flavor::Legacy,
        };
        apply_schema(other, &db);
        refused(db, "on the other flavor's schema");
    }
}

/// Runs the migrator binary; returns (exit code, stdout, stderr).
fn migrator(args: &[&str]) -> (i32, String, String) {
    let output = std::process::Command::new(cutover_e2e::migrator_bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run migrator");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Backfill while dual-write runs: legacy history generated first, then `migrator copy` runs while
/// the traffic (legacy primary, new receiving shadows) flows, then `migrator verify` once the
/// shadows settled. Strict: verify finds no difference at all — copy reverted no update made by
/// dual-write after it read the source (the plan's version column) and brought back no row
/// deleted meanwhile (its re-check of inserted rows); both sides hold every acknowledged write.
#[test]
fn backfill_during_dual_write_leaves_the_two_sides_identical() {
    const HISTORY_ROWS: &str = "5000";
    let legacy_db = TestDb::create("cutover_app_legacy_history");
    apply_schema(Flavor::Legacy, &legacy_db);
    let (code, _, stderr) = migrator(&[
        "generate-legacy",
        "--source-url",
        &legacy_db.url,
        "--rows",
        HISTORY_ROWS,
    ]);
    assert_eq!(code, 0, "generate-legacy: {stderr}");
    let legacy = App::start_on(Flavor::Legacy, legacy_db);
    let new = App::start(Flavor::New);
    let envoy = envoy_for(&legacy, &new, 0);
    let (source, target) = (legacy.db().url.clone(), new.db().url.clone());

    let traffic = Traffic::start(&envoy.listener_url(), &traffic_config(7));
    let ledger = traffic.ledger();
    wait_until("50 acknowledged writes before the copy", WAIT, || {
        (ledger.acks().len() >= 50).then_some(())
    });
    let acks_before_copy = ledger.acks().len();
    let (code, copy_stdout, copy_stderr) = migrator(&[
        "copy",
        "--source-url",
        &source,
        "--target-url",
        &target,
        "--batch-size",
        "500",
    ]);
    let acks_after_copy = ledger.acks().len();
    assert_eq!(code, 0, "copy: {copy_stdout}{copy_stderr}");
    wait_until("50 acknowledged writes after the copy", WAIT, || {
        (ledger.acks().len() >= acks_after_copy + 50).then_some(())
    });
    let ledger = traffic.stop();
    let (sent, succeeded) = settle_shadows(&envoy);
    assert_eq!(succeeded, sent, "every shadow succeeded");
    assert!(ledger.failures().is_empty(), "{:?}", ledger.failures());

    let (code, report, stderr) = migrator(&[
        "verify",
        "--source-url",
        &source,
        "--target-url",
        &target,
        "--format",
        "json",
    ]);
    assert!(
        code == 0 || code == 1,
        "verify could not check ({code}): {stderr}"
    );
    assert_eq!(
        code, 0,
        "verify after the backfill found differences:\n{report}\ncopy said:\n{copy_stdout}{copy_stderr}"
    );
    for (side, app) in [("legacy", &legacy), ("new", &new)] {
        let missing = ledger.expected().differences(&load(app));
        assert!(missing.is_empty(), "{side}: {missing:?}");
    }
    println!(
        "backfill: {} acknowledged writes ({} during the copy), verify exit {code}",
        ledger.acks().len(),
        acks_after_copy - acks_before_copy,
    );
    println!("backfill: copy said:\n{copy_stdout}{copy_stderr}");
}

/// A loopback port nothing listens on: a shadow sent there fails.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

/// Envoy whose `side` clusters point at a closed port: every shadow to that side fails.
fn envoy_with_dead_shadow(serving: &App, dead_side: &str, new_percentage: u8) -> Envoy {
    let dead = closed_port();
    let live = serving.port();
    let port_of = |side: &str| if side == dead_side { dead } else { live };
    Envoy::builder(&filter_config(new_percentage))
        .ecds()
        .cluster("chat_legacy", port_of("legacy"))
        .cluster("orchestration_legacy", port_of("legacy"))
        .cluster("chat_new", port_of("new"))
        .cluster("orchestration_new", port_of("new"))
        .request_time_header(REQUEST_TIME_HEADER)
        .boot()
}

/// `migrator verify` with `plan` (None: the shipped one) from `source` to `target`: exit code.
fn verify_exit(plan: Option<&str>, source: &str, target: &str) -> (i32, String) {
    let mut args = vec!["verify", "--source-url", source, "--target-url", target];
    if let Some(plan) = plan {
        args.extend(["--plan", plan]);
    }
    let (code, stdout, stderr) = migrator(&args);
    (code, format!("{stdout}{stderr}"))
}

/// A failed shadow is repairable in both directions (docs/runbook.md): traffic runs while every
/// shadow to one side fails; the side that missed the writes is then repaired with `migrator
/// copy` — forward (legacy → new, the shipped plan) when legacy was primary, reverse (new →
/// legacy, `migrations/reverse-plan.toml`) when new was primary. Afterwards verify is clean in
/// both directions and the ledger is whole on both sides.
#[test]
fn a_failed_shadow_is_repaired_in_both_directions() {
    let reverse_plan = cutover_e2e::workspace_root().join("migrations/reverse-plan.toml");
    let reverse_plan = reverse_plan.to_str().expect("utf-8 path").to_string();
    for (primary, dead, percentage) in [("legacy", "new", 0u8), ("new", "legacy", 100u8)] {
        let legacy = App::start(Flavor::Legacy);
        let new = App::start(Flavor::New);
        let serving = if primary == "legacy" { &legacy } else { &new };
        let envoy = envoy_with_dead_shadow(serving, dead, percentage);
        let traffic = Traffic::start(&envoy.listener_url(), &traffic_config(11));
        let ledger = traffic.ledger();
        wait_until("100 acknowledged writes with failing shadows", WAIT, || {
            (ledger.acks().len() >= 100).then_some(())
        });
        let ledger = traffic.stop();
        let (sent, succeeded) = settle_shadows(&envoy);
        assert!(
            sent > 0 && succeeded == 0,
            "{primary} primary: every shadow failed ({succeeded} of {sent} succeeded)"
        );
        assert!(ledger.failures().is_empty(), "{:?}", ledger.failures());
        assert_eq!(ledger.acks_served_by(primary), ledger.acks().len());
        let expected = ledger.expected();
        let behind = if dead == "new" { &new } else { &legacy };
        assert!(
            !expected.differences(&load(behind)).is_empty(),
            "{dead} missed the writes before the repair"
        );

        let (legacy_url, new_url) = (legacy.db().url.clone(), new.db().url.clone());
        let (source, target, plan) = if primary == "legacy" {
            (&legacy_url, &new_url, None)
        } else {
            (&new_url, &legacy_url, Some(reverse_plan.as_str()))
        };
        let mut args = vec!["copy", "--source-url", source, "--target-url", target];
        if let Some(plan) = plan {
            args.extend(["--plan", plan]);
        }
        let (code, stdout, stderr) = migrator(&args);
        assert_eq!(code, 0, "{primary} primary: repair copy: {stdout}{stderr}");

        let (code, report) = verify_exit(plan, source, target);
        assert_eq!(
            code, 0,
            "{primary} primary: verify after the repair: {report}"
        );
        let (code, report) = verify_exit(None, &legacy_url, &new_url);
        assert_eq!(
            code, 0,
            "{primary} primary: forward verify after the repair: {report}"
        );
        for (side, app) in [("legacy", &legacy), ("new", &new)] {
            let missing = expected.differences(&load(app));
            assert!(
                missing.is_empty(),
                "{primary} primary: {side} after the repair: {missing:?}"
            );
        }
        assert!(
            load(&legacy).differences(&load(&new)).is_empty(),
            "{primary} primary: the two sides are identical after the repair"
        );
    }
}
