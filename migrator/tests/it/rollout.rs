//! `migrator rollout` and the migrator's HTTP client against a real Envoy 1.40 running the filter
//! through ECDS (the `cutover-e2e` fixtures), real loopback upstreams, and small hand-made servers
//! for the misbehaving-endpoint cases. One test binary for all of it (linking is expensive).

use crate::cutover_verify_support;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::cutover_verify_support::verify_support::migrator_cmd;
use crate::cutover_verify_support::Outcome;
use crate::cutover_verify_support::{config, wait_until, Envoy, Upstream};
use cutover_e2e::workspace_root;
use serde_json::Value;

/// Envoy (ECDS mode) with `chat` (and `orchestration`) upstreams.
struct Bench {
    _legacy: Upstream,
    new: Upstream,
    _others: Vec<Upstream>,
    envoy: Envoy,
}

fn boot(filter_config: &Value) -> Bench {
    let legacy = Upstream::start("chat_legacy");
    let new = Upstream::start("chat_new");
    let others: Vec<Upstream> = ["orchestration_legacy", "orchestration_new"]
        .into_iter()
        .map(Upstream::start)
        .collect();
    for u in [&legacy, &new].into_iter().chain(others.iter()) {
        u.set_recording(false);
    }
    let envoy = [&legacy, &new]
        .into_iter()
        .chain(others.iter())
        .fold(Envoy::builder(filter_config).ecds(), |b, u| b.upstream(u))
        .boot();
    Bench {
        _legacy: legacy,
        new,
        _others: others,
        envoy,
    }
}

impl Bench {
    fn file(&self) -> PathBuf {
        self.envoy.ecds_file().expect("ECDS mode").to_path_buf()
    }

    fn command(&self) -> Command {
        self.command_via(&self.envoy.admin_url())
    }

    /// `migrator rollout --file <this Envoy's file> --admin <admin>` (e.g. a TLS front of it).
    fn command_via(&self, admin: &str) -> Command {
        let mut cmd = migrator_cmd();
        cmd.arg("rollout")
            .arg("--file")
            .arg(self.file())
            .args(["--admin", admin, "--timeout", "20s"])
            .env_remove("CUTOVER_ECDS_FILE")
            .env_remove("CUTOVER_ADMIN_URL");
        cmd
    }

    fn rollout(&self, args: &[&str]) -> Outcome {
        self.command()
            .args(args)
            .output()
            .expect("run migrator rollout")
            .into()
    }

    fn spawn(&self, args: &[&str]) -> RunningRollout {
        let mut child = self
            .command()
            .args(args)
            .args(["--format", "json"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn migrator rollout run");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        RunningRollout {
            child,
            lines: stdout.lines(),
            events: Vec::new(),
        }
    }

    fn gauge(&self, name: &str) -> Option<u64> {
        self.envoy.stat(&format!("wasmcustom.cutover.chat.{name}"))
    }

    fn state(&self) -> Value {
        let path = state_dir(&self.file()).join("state.json");
        serde_json::from_slice(&std::fs::read(&path).expect("state.json")).expect("state JSON")
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(state_dir(&self.file()).join("audit.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }

    /// Requests with distinct keys from a background thread until the returned guard drops
    /// (bounded: at most 400,000 requests or 180 s).
    fn traffic(&self) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let url = self.envoy.listener_url();
        let handle = std::thread::spawn(move || {
            let mut client = cutover_e2e::HttpClient::new(&url);
            let started = Instant::now();
            // Paced and bounded (at most 180 s, 180,000 requests); a failed request (a loaded
            // machine, a connection Envoy closed) must not end the traffic the gates judge.
            for i in 0..180_000u64 {
                if flag.load(Ordering::SeqCst) || started.elapsed() > Duration::from_secs(180) {
                    break;
                }
                let key = format!("user-{i}");
                let sent = client.try_send(
                    "GET",
                    "/api/chat/messages",
                    &[("x-correlation-id", key.as_bytes())],
                    b"",
                );
                if sent.is_err() {
                    client = cutover_e2e::HttpClient::new(&url);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Traffic {
            stop,
            handle: Some(handle),
        }
    }
}

fn state_dir(file: &Path) -> PathBuf {
    let name = file.file_name().unwrap().to_string_lossy().into_owned();
    file.parent().unwrap().join(format!(".{name}.rollout"))
}

struct Traffic {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// A `rollout run --format json` child whose JSON events are read line by line.
struct RunningRollout {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    events: Vec<Value>,
}

impl RunningRollout {
    /// Reads events until one satisfies `want` (panics at the end of the output).
    fn until(&mut self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        for line in self.lines.by_ref() {
            let line = line.expect("read run output");
            let event: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not a JSON event ({e}): {line}"));
            self.events.push(event.clone());
            if want(&event) {
                return event;
            }
        }
        panic!("the run ended before {what}; events: {:#?}", self.events);
    }

    /// Waits for the exit; returns the code and every event.
    fn finish(mut self) -> (i32, Vec<Value>, String) {
        for line in self.lines.by_ref() {
            let line = line.expect("read run output");
            self.events
                .push(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}")));
        }
        let mut stderr = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut stderr);
        }
        let status = self.child.wait().expect("wait for the run");
        (
            status.code().unwrap_or(-1),
            std::mem::take(&mut self.events),
            stderr,
        )
    }
}

impl Drop for RunningRollout {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn events_of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

fn assert_code(outcome: &Outcome, code: i32, what: &str) {
    assert_eq!(
        outcome.code, code,
        "{what}: stdout {} stderr {}",
        outcome.stdout, outcome.stderr
    );
}

/// `rollout run` options of the tests: short intervals; latency limits out of the way (a loaded
/// test machine must not fail the gates these tests are not about; latency has its own test).
const FAST: [&str; 8] = [
    "--interval",
    "1s",
    "--min-requests",
    "10",
    "--max-p95-ms",
    "10000",
    "--max-p99-ms",
    "10000",
];

/// `rollout run` of `chat` through `steps`, each held `hold`, with `extra` and [`FAST`].
fn run_args<'a>(steps: &'a str, hold: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["run", "--service", "chat", "--steps", steps, "--hold", hold];
    args.extend_from_slice(extra);
    args.extend_from_slice(&FAST);
    args
}

fn chat_and_orchestration(percentage: u8) -> Value {
    config::filter_config(vec![
        config::chat_service(percentage),
        config::orchestration_service(percentage),
    ])
}

// Behaviours with their own files (migrator/tests/it/rollout/).
mod compare_gate;
mod kill_switch;
mod tls;

/// Small servers that misbehave as an admin endpoint.
mod fake_servers {
    use super::*;

    /// Accepts connections and never answers; returns its URL (the listener lives as long as
    /// the returned guard).
    pub fn never_answering() -> (String, TcpListener, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let accept = listener.try_clone().unwrap();
        let handle = std::thread::spawn(move || {
            let mut held = Vec::new();
            // Bounded: a handful of connections, each held open until the test ends.
            for stream in accept.incoming().take(8) {
                match stream {
                    Ok(s) => held.push(s),
                    Err(_) => break,
                }
            }
        });
        (url, listener, handle)
    }

    /// Answers every connection with `head` and then `body_bytes` bytes of `x` (or until the
    /// client goes away); counts connections.
    pub fn answering(head: &'static str, body_bytes: u64) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming().take(8) {
                let Ok(mut stream) = stream else { break };
                std::thread::spawn(move || {
                    let mut request = [0u8; 4096];
                    let _ = stream.read(&mut request);
                    if stream.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut sent = 0;
                    while sent < body_bytes {
                        if stream.write_all(&chunk).is_err() {
                            return;
                        }
                        sent += chunk.len() as u64;
                    }
                });
            }
        });
        url
    }
}

/// The HTTP client of cutover-verify (and rollout): timeouts, bounded bodies, non-Envoy servers,
/// usage errors, no credentials in messages.
mod http_client {
    use super::*;

    fn cutover_verify(admin: &str, extra: &[&str]) -> Outcome {
        let mut args = vec!["cutover-verify", "--admin-url", admin, "--format", "json"];
        args.extend_from_slice(extra);
        cutover_verify_support::run(&args)
    }

    #[test]
    fn a_server_that_never_answers_times_out_clearly() {
        let (url, _listener, _h) = fake_servers::never_answering();
        let out = cutover_verify(&url, &["--http-timeout-ms", "300"]);
        assert_code(&out, 2, "timeout");
        assert!(
            out.stderr.contains("no complete answer within 300 ms"),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn an_oversized_answer_is_not_read_into_memory() {
        // 2 GiB announced in no header (no Content-Length) and streamed: reading it all would take
        // gigabytes; the client stops at its bound.
        let url = fake_servers::answering(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n",
            2 * 1024 * 1024 * 1024,
        );
        let out = cutover_verify(&url, &["--http-timeout-ms", "60000"]);
        assert_code(&out, 2, "oversized");
        assert!(
            out.stderr.contains("larger than the limit of"),
            "{}",
            out.stderr
        );
        // Announced too large: refused before reading the body.
        let url =
            fake_servers::answering("HTTP/1.1 200 OK\r\ncontent-length: 999999999999\r\n\r\n", 0);
        let out = cutover_verify(&url, &[]);
        assert_code(&out, 2, "announced oversized");
        assert!(
            out.stderr.contains("larger than the limit of"),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn a_server_that_is_not_envoy_is_named_and_credentials_never_printed() {
        let url = fake_servers::answering(
            "HTTP/1.1 200 OK\r\nserver: nginx\r\ncontent-type: text/html\r\ncontent-length: 13\r\n\r\n<html></html>",
            0,
        );
        let with_credentials = url.replace("http://", "http://admin:S3cretPw@");
        let out = cutover_verify(&with_credentials, &[]);
        assert_code(&out, 2, "non-Envoy");
        assert!(out.stderr.contains("not Envoy's admin"), "{}", out.stderr);
        assert!(out.stderr.contains("nginx"), "{}", out.stderr);
        assert!(
            !out.stderr.contains("S3cretPw") && !out.stdout.contains("S3cretPw"),
            "{}",
            out.stderr
        );
    }

    #[test]
    fn a_url_without_scheme_is_a_usage_error_naming_it() {
        let out = cutover_verify("127.0.0.1:9901", &[]);
        assert_code(&out, 2, "no scheme");
        assert!(
            out.stderr.contains("invalid URL 127.0.0.1:9901"),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("http://"), "{}", out.stderr);
        let out = cutover_verify("admin:S3cretPw@127.0.0.1:9901", &[]);
        assert_code(&out, 2, "no scheme, credentials");
        assert!(!out.stderr.contains("S3cretPw"), "{}", out.stderr);
    }
}

/// Single-target commands: set / dual-write / install / show, their exit codes and checks.
mod single_target {
    use super::*;

    fn live_pct(bench: &Bench) -> (Option<u64>, Option<u64>) {
        (bench.gauge("new_percentage"), bench.gauge("use_legacy"))
    }

    #[test]
    fn steps_and_kill_switch_on_a_running_envoy() {
        let bench = boot(&chat_and_orchestration(10));
        let file = bench.file();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        }

        let step_50 = workspace_root().join("envoy/ecds/step-50.json");
        assert_code(
            &bench.rollout(&["install", step_50.to_str().unwrap()]),
            0,
            "install",
        );
        assert_eq!(live_pct(&bench), (Some(50), Some(0)));
        assert_eq!(
            bench
                .envoy
                .stat("wasmcustom.cutover.orchestration.new_percentage"),
            Some(50)
        );
        // The live file keeps the fixture's plugin settings (its .wasm path), not the ready file's.
        let live: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let wasm = &live["resources"][0]["typed_config"]["config"]["vm_config"]["code"]["local"]
            ["filename"];
        assert!(Path::new(wasm.as_str().unwrap()).is_absolute(), "{wasm}");

        assert_code(&bench.rollout(&["set", "chat", "100"]), 0, "set 100");
        assert_eq!(live_pct(&bench), (Some(100), Some(0)));
        assert_eq!(
            bench
                .envoy
                .stat("wasmcustom.cutover.orchestration.new_percentage"),
            Some(50),
            "other services untouched"
        );
        assert_code(&bench.rollout(&["set", "chat", "legacy"]), 0, "kill switch");
        assert_eq!(live_pct(&bench), (Some(100), Some(1)));
        let mut client = bench.envoy.client();
        for i in 0..20 {
            let key = format!("u{i}");
            let r = client.get_with("/api/chat/x", &[("x-correlation-id", key.as_bytes())]);
            assert_eq!(r.served_by().as_deref(), Some("chat_legacy"));
        }
        assert_code(&bench.rollout(&["set", "chat", "resume"]), 0, "resume");
        assert_eq!(live_pct(&bench), (Some(100), Some(0)));

        // Owner and mode are kept across atomic replacement.
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o640);
        }

        // Audit trail: one line per applied change, with before and after.
        let audit = bench.audit();
        let set_100 = audit
            .iter()
            .find(|e| e["change"] == "set chat 100")
            .expect("audited");
        assert_eq!(set_100["outcome"], "applied");
        assert_eq!(set_100["before"]["chat"]["new_percentage"], 50);
        assert_eq!(set_100["after"]["chat"]["new_percentage"], 100);
        assert!(audit.len() >= 4, "{audit:#?}");

        // show: file and live agree, text and JSON.
        let out = bench.rollout(&["show", "--format", "json"]);
        assert_code(&out, 0, "show");
        let shown: Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(shown["matches"], true);
        let chat = shown["targets"][0]["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "chat")
            .unwrap();
        assert_eq!(chat["live"]["new_percentage"], 100);
        assert_eq!(chat["file"]["dual_write"], true);
    }

    #[test]
    fn invalid_values_are_refused_before_anything_is_written() {
        let bench = boot(&config::chat_config(10));
        let file = bench.file();
        let before = std::fs::read(&file).unwrap();
        let ecds_before = bench.envoy.ecds_stats();

        let out = bench.rollout(&["set", "chat", "150"]);
        assert_code(&out, 2, "150");
        assert!(out.stderr.contains("new_percentage"), "{}", out.stderr);
        let out = bench.rollout(&["set", "billing", "10"]);
        assert_code(&out, 2, "unknown service");
        assert!(
            out.stderr.contains("no service named \"billing\""),
            "{}",
            out.stderr
        );

        // A ready file the filter would refuse (the runbook's `api/chat` typo): refused by the
        // filter's own rules with the field path, before writing — exit 2, not a rejected update.
        let mut ready: Value = serde_json::from_slice(
            &std::fs::read(workspace_root().join("envoy/ecds/step-50.json")).unwrap(),
        )
        .unwrap();
        let configuration = &mut ready["resources"][0]["typed_config"]["config"]["configuration"];
        let mut filter: Value =
            serde_json::from_str(configuration["value"].as_str().unwrap()).unwrap();
        filter["services"][0]["path_prefixes"] = serde_json::json!(["api/chat"]);
        configuration["value"] = filter.to_string().into();
        let bad_ready = bench.envoy.workdir().join("bad-ready.json");
        std::fs::write(&bad_ready, ready.to_string()).unwrap();
        let out = bench.rollout(&["install", bad_ready.to_str().unwrap()]);
        assert_code(&out, 2, "bad ready file");
        assert!(
            out.stderr.contains("services[0].path_prefixes[0]"),
            "{}",
            out.stderr
        );

        // An ECDS file of another filter: exit 3.
        let other = bench.envoy.workdir().join("other.json");
        std::fs::write(
            &other,
            r#"{"resources":[{"name":"ratelimit","typed_config":{"@type":"x"}}]}"#,
        )
        .unwrap();
        let out = bench.rollout(&["install", other.to_str().unwrap()]);
        assert_code(&out, 3, "other filter");
        assert!(out.stderr.contains("resources[0].name"), "{}", out.stderr);

        assert_eq!(std::fs::read(&file).unwrap(), before, "nothing written");
        assert_eq!(bench.envoy.ecds_stats(), ecds_before, "Envoy saw no update");

        // The kill switch still works afterwards.
        assert_code(&bench.rollout(&["set", "chat", "legacy"]), 0, "kill switch");
        assert_eq!(bench.gauge("use_legacy"), Some(1));
    }

    #[test]
    fn wrong_targets_are_named_and_nothing_is_written() {
        let bench = boot(&config::chat_config(10));
        let file = bench.file();
        let before = std::fs::read(&file).unwrap();
        let run = |file: &Path, admin: &str, args: &[&str]| -> Outcome {
            migrator_cmd()
                .arg("rollout")
                .arg("--file")
                .arg(file)
                .args(["--admin", admin])
                .args(args)
                .env_remove("CUTOVER_ECDS_FILE")
                .env_remove("CUTOVER_ADMIN_URL")
                .output()
                .unwrap()
                .into()
        };

        // A copy of the file Envoy does not watch.
        let copy = bench.envoy.workdir().join("copy.json");
        std::fs::write(&copy, &before).unwrap();
        let out = run(&copy, &bench.envoy.admin_url(), &["set", "chat", "50"]);
        assert_code(&out, 6, "unwatched file");
        assert!(out.stderr.contains("does not watch"), "{}", out.stderr);
        assert_eq!(std::fs::read(&copy).unwrap(), before);

        // The listener instead of the admin endpoint.
        let out = run(&file, &bench.envoy.listener_url(), &["set", "chat", "50"]);
        assert_code(&out, 6, "listener as admin");
        assert!(
            out.stderr.contains("is not an Envoy admin endpoint"),
            "{}",
            out.stderr
        );

        // Nothing listening: connection refused, named, nothing written.
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let out = run(
            &file,
            &format!("http://admin:S3cretPw@{free}"),
            &["set", "chat", "50"],
        );
        assert_code(&out, 6, "unreachable");
        assert!(out.stderr.contains("nothing was written"), "{}", out.stderr);
        assert!(!out.stderr.contains("S3cretPw"), "{}", out.stderr);

        // No scheme: usage error naming the URL.
        let out = run(&file, "127.0.0.1:9901", &["set", "chat", "50"]);
        assert_code(&out, 2, "no scheme");
        assert!(out.stderr.contains("127.0.0.1:9901"), "{}", out.stderr);

        // No --file: a usage error, no default file.
        let out: Outcome = migrator_cmd()
            .args(["rollout", "--admin", &bench.envoy.admin_url(), "show"])
            .env_remove("CUTOVER_ECDS_FILE")
            .output()
            .unwrap()
            .into();
        assert_code(&out, 2, "no --file");

        // A missing file: exit 3.
        let missing = bench.envoy.workdir().join("no-such-dir/cutover.json");
        assert_code(
            &run(&missing, &bench.envoy.admin_url(), &["show"]),
            3,
            "missing file",
        );

        assert_eq!(std::fs::read(&file).unwrap(), before);
        assert_eq!(bench.gauge("new_percentage"), Some(10));
    }

    #[test]
    fn a_rejected_update_puts_the_previous_file_back_and_show_reports_differences() {
        let bench = boot(&config::chat_config(10));
        let file = bench.file();
        // Someone edits the live file by hand: 77 % and a runtime this Envoy does not have.
        let mut doc: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let plugin = &mut doc["resources"][0]["typed_config"]["config"];
        plugin["vm_config"]["runtime"] = "envoy.wasm.runtime.wamr".into();
        let mut filter: Value =
            serde_json::from_str(plugin["configuration"]["value"].as_str().unwrap()).unwrap();
        filter["services"][0]["new_percentage"] = 77.into();
        plugin["configuration"]["value"] = filter.to_string().into();
        let failures_before = bench.envoy.ecds_stats();
        bench.envoy.write_ecds_raw(doc.to_string().as_bytes());
        wait_until(
            "Envoy refuses the hand edit",
            Duration::from_secs(20),
            || (bench.envoy.ecds_stats() != failures_before).then_some(()),
        );

        // show: the file says 77, Envoy serves 10 → exit 1, the difference named.
        let out = bench.rollout(&["show"]);
        assert_code(&out, 1, "show differs");
        assert!(out.stdout.contains("DIFFERS"), "{}", out.stdout);

        // An update on top of it is rejected by Envoy: exit 4 and the previous file is back.
        let before = std::fs::read(&file).unwrap();
        let out = bench.rollout(&["set", "chat", "20"]);
        assert_code(&out, 4, "rejected");
        assert!(
            out.stderr.contains("previous file put back"),
            "{}",
            out.stderr
        );
        assert_eq!(std::fs::read(&file).unwrap(), before);
        assert_eq!(
            bench.gauge("new_percentage"),
            Some(10),
            "Envoy still serves 10"
        );
        let audit = bench.audit();
        assert_eq!(audit.last().unwrap()["outcome"], "rejected");
    }

    #[test]
    fn dual_write_off_has_an_interlock() {
        let bench = boot(&config::chat_dual_write_config(50, 5000, 1_048_576));
        let out = bench.rollout(&["dual-write", "chat", "off"]);
        assert_code(&out, 2, "interlock");
        assert!(
            out.stderr.contains("new_percentage is 50, not 100"),
            "{}",
            out.stderr
        );
        assert_eq!(bench.gauge("dual_write_enabled"), Some(1));

        assert_code(
            &bench.rollout(&["dual-write", "chat", "off", "--force"]),
            0,
            "forced",
        );
        assert_eq!(bench.gauge("dual_write_enabled"), Some(0));
        let audit = bench.audit();
        assert_eq!(
            audit.last().unwrap()["change"],
            "dual-write chat off --force"
        );
        assert_code(&bench.rollout(&["dual-write", "chat", "on"]), 0, "on");
        assert_eq!(bench.gauge("dual_write_enabled"), Some(1));
    }
}

/// `rollout run`: promotion, rollback, inconclusive, resume after SIGKILL, control from a second
/// process, the lock.
mod run {
    use super::*;

    #[test]
    fn promotes_through_three_steps_with_a_healthy_new_upstream() {
        let bench = boot(&config::chat_config(0));
        let _traffic = bench.traffic();
        let args = run_args("10,50,100", "2s", &[]);
        let (code, events, stderr) = bench.spawn(&args).finish();
        assert_eq!(code, 0, "{events:#?} {stderr}");
        let steps: Vec<u64> = events_of(&events, "promoted")
            .iter()
            .map(|e| e["step"].as_u64().unwrap())
            .collect();
        assert_eq!(steps, [10, 50, 100]);
        assert_eq!(events_of(&events, "completed").len(), 1);
        assert_eq!(bench.gauge("new_percentage"), Some(100));
        assert_eq!(bench.gauge("use_legacy"), Some(0));
        // Every interval event carries each check with its value and threshold.
        let interval = events_of(&events, "interval")[0];
        let split = interval["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "chat.split")
            .unwrap();
        assert!(
            split["threshold"].is_string() && split["value"].is_number(),
            "{split}"
        );
        assert_eq!(bench.state()["phase"], "completed");
    }

    #[test]
    fn rolls_back_when_new_starts_failing_mid_step() {
        let bench = boot(&config::chat_config(0));
        let _traffic = bench.traffic();
        let args = run_args("50,100", "60s", &[]);
        let mut run = bench.spawn(&args);
        run.until("a passing interval", |e| {
            e["event"] == "interval" && e["verdict"] == "pass"
        });
        bench.new.set_fail_every(5);
        let (code, events, stderr) = run.finish();
        assert_eq!(code, 1, "{events:#?} {stderr}");
        assert_eq!(
            bench.gauge("use_legacy"),
            Some(1),
            "kill switch live in Envoy"
        );
        let rolled_back = events_of(&events, "rolled_back");
        let failed = rolled_back[0]["failed_checks"].as_array().unwrap();
        let rate = failed
            .iter()
            .find(|c| c["id"] == "chat.new_5xx_rate")
            .unwrap_or_else(|| panic!("{failed:#?}"));
        let value = rate["value"].as_f64().unwrap();
        assert!(value > 1.0, "{rate}");
        assert_eq!(bench.state()["phase"], "rolled_back");
    }

    #[test]
    fn no_traffic_is_inconclusive_and_pauses() {
        let bench = boot(&config::chat_config(0));
        let args = run_args("10,100", "30s", &["--max-inconclusive", "2"]);
        let (code, events, stderr) = bench.spawn(&args).finish();
        assert_eq!(code, 3, "{events:#?} {stderr}");
        let intervals = events_of(&events, "interval");
        assert_eq!(intervals.len(), 2);
        assert!(intervals.iter().all(|e| e["verdict"] == "inconclusive"));
        assert_eq!(events_of(&events, "paused").len(), 1);
        assert_eq!(
            bench.gauge("new_percentage"),
            Some(10),
            "Envoy stays at the step"
        );
        assert_eq!(bench.state()["phase"], "paused");
    }

    #[test]
    fn a_killed_run_resumes_at_its_step() {
        let bench = boot(&config::chat_config(0));
        let _traffic = bench.traffic();
        let args = run_args("10,50,100", "2s", &[]);
        let mut first = bench.spawn(&args);
        first.until("step 50 applied", |e| {
            e["event"] == "step_applied" && e["step"] == 50
        });
        first.until("an interval at 50", |e| e["event"] == "interval");
        first.child.kill().expect("SIGKILL the run");
        let _ = first.child.wait();
        assert_eq!(
            bench.gauge("new_percentage"),
            Some(50),
            "Envoy at the last applied step"
        );
        assert_eq!(bench.state()["step_index"], 1);

        let (code, events, stderr) = bench.spawn(&args).finish();
        assert_eq!(code, 0, "{events:#?} {stderr}");
        assert_eq!(events_of(&events, "resumed")[0]["step"], 50);
        let applied: Vec<u64> = events_of(&events, "step_applied")
            .iter()
            .map(|e| e["step"].as_u64().unwrap())
            .collect();
        assert_eq!(applied, [50, 100], "continues, does not start over");
        assert_eq!(bench.gauge("new_percentage"), Some(100));
    }

    #[test]
    fn pause_resume_abort_from_another_process_and_one_run_at_a_time() {
        let bench = boot(&config::chat_config(0));
        let _traffic = bench.traffic();
        let args = run_args("10,100", "10m", &[]);
        let mut run = bench.spawn(&args);
        run.until("an interval", |e| e["event"] == "interval");

        // A second run for the same file is refused while the first holds the lock.
        let out = bench.rollout(&args);
        assert_code(&out, 7, "second run");

        let status = bench.rollout(&["status", "--format", "json"]);
        assert_code(&status, 0, "status");
        let status: Value = serde_json::from_str(&status.stdout).unwrap();
        assert_eq!(status["running"], true);
        assert_eq!(status["state"]["phase"], "running");

        assert_code(&bench.rollout(&["pause"]), 0, "pause");
        let (code, events, _) = run.finish();
        assert_eq!(code, 3, "{events:#?}");
        assert_eq!(bench.gauge("new_percentage"), Some(10));
        assert_eq!(bench.state()["phase"], "paused");

        assert_code(&bench.rollout(&["resume"]), 0, "resume");
        assert_eq!(bench.state()["phase"], "running");
        let mut again = bench.spawn(&args);
        again.until("resumed", |e| e["event"] == "resumed");
        again.until("an interval", |e| e["event"] == "interval");
        assert_code(&bench.rollout(&["abort"]), 0, "abort");
        let (code, events, _) = again.finish();
        assert_eq!(code, 1, "{events:#?}");
        assert_eq!(events_of(&events, "aborted").len(), 1);
        assert_eq!(bench.gauge("use_legacy"), Some(1), "kill switch live");
        assert_eq!(bench.state()["phase"], "aborted");
    }

    #[test]
    fn verify_gates_each_promotion() {
        let bench = boot(&config::chat_config(0));
        let _traffic = bench.traffic();
        let pair = cutover_verify_support::verify_support::Pair::with_tasks("rollout_verify", 50);
        let args = run_args(
            "10,100",
            "1s",
            &[
                "--verify",
                "--tables",
                "tasks",
                "--source-url",
                &pair.source.url,
                "--target-url",
                &pair.target.url,
            ],
        );
        let (code, events, stderr) = bench.spawn(&args).finish();
        assert_eq!(code, 0, "{events:#?} {stderr}");
        assert_eq!(
            events_of(&events, "verify").len(),
            2,
            "one data check per promotion"
        );

        // A row missing in the target: the first promotion is refused and the service rolled back.
        let key = pair.key(7);
        pair.target_sql(&format!(
            "DELETE FROM orchestration.coding_tasks WHERE id = '{key}'"
        ));
        bench.rollout(&["set", "chat", "0"]);
        let (code, events, stderr) = bench.spawn(&args).finish();
        assert_eq!(code, 1, "{events:#?} {stderr}");
        let rolled_back = events_of(&events, "rolled_back");
        assert_eq!(rolled_back[0]["failed_checks"][0]["id"], "data");
        assert_eq!(rolled_back[0]["failed_checks"][0]["value"], 1.0);
        assert_eq!(bench.gauge("use_legacy"), Some(1));
    }

    #[test]
    fn bad_plans_are_usage_errors() {
        let bench = boot(&config::chat_config(0));
        for (args, needle) in [
            (vec!["--steps", "50,10"], "strictly increasing"),
            (vec!["--steps", "10,150"], "not a percentage"),
            (
                vec!["--steps", "10", "--hold", "1s", "--interval", "5s"],
                "shorter than --interval",
            ),
        ] {
            let mut all = vec!["run", "--service", "chat"];
            all.extend(args);
            let out = bench.rollout(&all);
            assert_code(&out, 2, needle);
            assert!(out.stderr.contains(needle), "{}", out.stderr);
        }
        let out = bench.rollout(&["run", "--service", "chats", "--steps", "10"]);
        assert_code(&out, 2, "unknown service");

        // A file that names a service its Envoy does not serve (a hand edit Envoy refused).
        let mut doc: Value = serde_json::from_slice(&std::fs::read(bench.file()).unwrap()).unwrap();
        let plugin = &mut doc["resources"][0]["typed_config"]["config"];
        plugin["vm_config"]["runtime"] = "envoy.wasm.runtime.wamr".into();
        plugin["configuration"]["value"] = chat_and_orchestration(0).to_string().into();
        let before = bench.envoy.ecds_stats();
        bench.envoy.write_ecds_raw(doc.to_string().as_bytes());
        wait_until(
            "Envoy refuses the hand edit",
            Duration::from_secs(20),
            || (bench.envoy.ecds_stats() != before).then_some(()),
        );
        let out = bench.rollout(&["run", "--service", "chat", "--steps", "10"]);
        assert_code(&out, 2, "file and Envoy disagree");
        assert!(
            out.stderr.contains("disagree about the services"),
            "{}",
            out.stderr
        );
        assert!(!state_dir(&bench.file()).join("state.json").exists());
        assert_eq!(bench.gauge("new_percentage"), Some(0));
    }
}

/// Defects of the runbook walk-through (issue 9), each against the real thing.
mod defects {
    use super::*;

    fn rq_time_samples(bench: &Bench) -> u64 {
        let body = bench
            .envoy
            .admin_get("/stats?format=json&histogram_buckets=cumulative&filter=cluster.chat_new.upstream_rq_time")
            .body;
        let doc: Value = serde_json::from_slice(&body).unwrap_or_default();
        doc["stats"]
            .as_array()
            .and_then(|stats| {
                stats
                    .iter()
                    .find_map(|s| s["histograms"][0]["buckets"].as_array())
            })
            .and_then(|b| b.last())
            .and_then(|b| b["cumulative"].as_u64())
            .unwrap_or(0)
    }

    #[test]
    fn latency_is_judged_over_the_window_not_since_start() {
        let bench = boot(&config::chat_config(100));
        // Many fast requests first, merged into Envoy's histograms (each stats flush).
        let mut client = bench.envoy.client();
        for i in 0..1000 {
            let key = format!("fast-{i}");
            client.get_with("/api/chat/x", &[("x-correlation-id", key.as_bytes())]);
        }
        wait_until("fast samples merged", Duration::from_secs(20), || {
            (rq_time_samples(&bench) >= 1000).then_some(())
        });
        // Then new turns slow, inside the window: p95 over the window is slow, since start not.
        bench.new.set_delay(Duration::from_millis(300));
        let admin = bench.envoy.admin_url();
        let child = migrator_cmd()
            .args([
                "cutover-verify",
                "--admin-url",
                &admin,
                "--service",
                "chat=chat_new",
                "--window",
                "9",
                "--min-requests",
                "5",
                "--max-p95-ms",
                "200",
                "--format",
                "json",
            ])
            .env_remove("ENVOY_ADMIN_URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Slow traffic during the window, bounded in count.
        let started = Instant::now();
        for i in 0..60 {
            if started.elapsed() > Duration::from_secs(8) {
                break;
            }
            let key = format!("slow-{i}");
            client.get_with("/api/chat/x", &[("x-correlation-id", key.as_bytes())]);
        }
        let out: Outcome = child.wait_with_output().unwrap().into();
        assert_code(&out, 1, "slow new");
        let report: Value = serde_json::from_str(&out.stdout).unwrap();
        let p95 = cutover_verify_support::check(&report, "chat.new_p95_ms");
        assert_eq!(p95["status"], "fail", "{p95}");
        assert!(p95["value"].as_f64().unwrap() >= 200.0, "{p95}");
        assert!(
            p95["detail"].as_str().unwrap().contains("over the window"),
            "{p95}"
        );
        // Since start the same Envoy reads fast: the old, cumulative judgement would pass.
        let since_start = cutover_verify_support::run(&[
            "cutover-verify",
            "--admin-url",
            &admin,
            "--service",
            "chat=chat_new",
            "--min-requests",
            "5",
            "--max-p95-ms",
            "200",
            "--format",
            "json",
        ]);
        let report: Value = serde_json::from_str(&since_start.stdout).unwrap();
        assert_eq!(
            cutover_verify_support::check(&report, "chat.new_p95_ms")["status"],
            "pass"
        );
    }

    #[test]
    fn only_rolled_out_services_are_checked_and_typos_are_usage_errors() {
        // orchestration on its kill switch, no traffic: not part of the gate.
        let mut orchestration = config::orchestration_service(0);
        orchestration["use_legacy"] = true.into();
        let bench = boot(&config::filter_config(vec![
            config::chat_service(100),
            orchestration,
        ]));
        let mut client = bench.envoy.client();
        for i in 0..30 {
            let key = format!("k-{i}");
            client.get_with("/api/chat/x", &[("x-correlation-id", key.as_bytes())]);
        }
        let admin = bench.envoy.admin_url();
        let out = cutover_verify_support::run(&[
            "cutover-verify",
            "--admin-url",
            &admin,
            "--min-requests",
            "10",
            "--format",
            "json",
        ]);
        let report: Value =
            serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
        let services: Vec<&str> = report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c["service"].as_str())
            .collect();
        assert!(services.iter().all(|s| *s == "chat"), "{services:?}");
        // At 100 % the split is exact.
        assert_eq!(
            cutover_verify_support::check(&report, "chat.split")["threshold"],
            "exactly 100%"
        );

        let out = cutover_verify_support::run(&[
            "cutover-verify",
            "--admin-url",
            &admin,
            "--service",
            "chats=chats_new",
        ]);
        assert_code(&out, 2, "unknown service");
        assert!(out.stderr.contains("chats"), "{}", out.stderr);
        let out = cutover_verify_support::run(&[
            "cutover-verify",
            "--admin-url",
            &admin,
            "--service",
            "chat=chat_nwe",
        ]);
        assert_code(&out, 2, "unknown cluster");
        assert!(out.stderr.contains("chat_nwe"), "{}", out.stderr);
    }

    #[test]
    fn health_is_checked_on_each_side_and_a_failing_new_rolls_back() {
        let bench = boot(&config::chat_config(0));
        bench.new.set_status(500);
        let legacy_health = format!("legacy={}/health", bench._legacy.url());
        let new_health = format!("new={}/health", bench.new.url());
        let (code, events, stderr) = bench
            .spawn(&[
                "run",
                "--service",
                "chat",
                "--steps",
                "10",
                "--hold",
                "30s",
                "--interval",
                "1s",
                "--health",
                &legacy_health,
                "--health",
                &new_health,
            ])
            .finish();
        assert_eq!(code, 1, "{events:#?} {stderr}");
        let interval = events_of(&events, "interval")[0];
        let by_id = |id: &str| {
            interval["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["id"] == id)
                .cloned()
                .unwrap_or_else(|| panic!("{id}: {interval:#}"))
        };
        assert_eq!(by_id("chat.health.legacy")["status"], "pass");
        assert_eq!(by_id("chat.health.new")["status"], "fail");
        assert_eq!(by_id("chat.health.new")["value"], 500.0);
        assert_eq!(bench.gauge("use_legacy"), Some(1));
    }
}

/// Several Envoys take one rollout (`--target admin=URL,file=PATH`, repeatable).
mod fleet {
    use super::*;

    fn target(bench: &Bench) -> String {
        format!(
            "admin={},file={}",
            bench.envoy.admin_url(),
            bench.file().display()
        )
    }

    fn fleet(benches: &[&Bench], args: &[&str]) -> Command {
        let mut cmd = migrator_cmd();
        cmd.arg("rollout")
            .env_remove("CUTOVER_ECDS_FILE")
            .env_remove("CUTOVER_ADMIN_URL");
        for b in benches {
            cmd.args(["--target", &target(b)]);
        }
        cmd.args(["--timeout", "20s"]).args(args);
        cmd
    }

    fn run(benches: &[&Bench], args: &[&str]) -> Outcome {
        fleet(benches, args).output().unwrap().into()
    }

    #[test]
    fn a_step_reaches_every_envoy_and_one_rejection_puts_every_one_back() {
        let a = boot(&config::chat_config(10));
        let b = boot(&config::chat_config(10));
        assert_code(&run(&[&a, &b], &["set", "chat", "50"]), 0, "fleet set");
        assert_eq!(
            (a.gauge("new_percentage"), b.gauge("new_percentage")),
            (Some(50), Some(50))
        );
        let shown = run(&[&a, &b], &["show", "--format", "json"]);
        assert_code(&shown, 0, "fleet show");
        let shown: Value = serde_json::from_str(&shown.stdout).unwrap();
        assert_eq!(shown["targets"].as_array().unwrap().len(), 2);

        // B's file is edited by hand with a runtime its Envoy does not have: B refuses it and
        // keeps serving 50; the next fleet step is rejected by B.
        let mut doc: Value = serde_json::from_slice(&std::fs::read(b.file()).unwrap()).unwrap();
        doc["resources"][0]["typed_config"]["config"]["vm_config"]["runtime"] =
            "envoy.wasm.runtime.wamr".into();
        let before = b.envoy.ecds_stats();
        b.envoy.write_ecds_raw(doc.to_string().as_bytes());
        wait_until("B refuses the hand edit", Duration::from_secs(20), || {
            (b.envoy.ecds_stats() != before).then_some(())
        });
        let a_file_before = std::fs::read(a.file()).unwrap();
        let out = run(&[&a, &b], &["set", "chat", "80"]);
        assert_code(&out, 4, "B rejects");
        assert!(
            out.stderr.contains(&b.envoy.admin_url()),
            "names the failing target: {}",
            out.stderr
        );
        assert_eq!(
            a.gauge("new_percentage"),
            Some(50),
            "A back at the previous step"
        );
        assert_eq!(b.gauge("new_percentage"), Some(50));
        assert_eq!(
            std::fs::read(a.file()).unwrap(),
            a_file_before,
            "A's previous file is back"
        );
    }

    #[test]
    fn targets_must_agree_and_gates_judge_the_fleet() {
        let a = boot(&config::chat_config(0));
        let b = boot(&config::chat_config(0));
        let c = boot(&chat_and_orchestration(0));
        let c_before = std::fs::read(c.file()).unwrap();
        let out = run(&[&a, &c], &["set", "chat", "10"]);
        assert_code(&out, 2, "service lists differ");
        assert!(out.stderr.contains("disagree"), "{}", out.stderr);
        assert_eq!(a.gauge("new_percentage"), Some(0), "nothing written");
        assert_eq!(std::fs::read(c.file()).unwrap(), c_before);

        let _ta = a.traffic();
        let _tb = b.traffic();
        let mut cmd = fleet(&[&a, &b], &run_args("50,100", "2s", &["--format", "json"]));
        let out: Outcome = cmd.output().unwrap().into();
        assert_code(&out, 0, "fleet run");
        assert_eq!(
            (a.gauge("new_percentage"), b.gauge("new_percentage")),
            (Some(100), Some(100))
        );
        let intervals: Vec<Value> = out
            .stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["event"] == "interval")
            .collect();
        assert!(!intervals.is_empty());
        assert!(
            state_dir(&a.file()).join("state.json").exists(),
            "state beside the first target's file"
        );
    }
}

/// `run --prometheus-url`: the same gates computed from a real Prometheus (Debian's `prometheus`
/// package, `PROMETHEUS_BIN` or `prometheus` on PATH) scraping two Envoys' `/stats/prometheus`.
mod prometheus_source {
    use super::*;

    /// A Prometheus child on a free loopback port; killed and its data removed on drop (and
    /// killed by the kernel if the test thread dies).
    struct Prometheus {
        child: Child,
        dir: PathBuf,
        url: String,
    }

    impl Drop for Prometheus {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn query(url: &str, promql: &str) -> Value {
        let encoded: String = promql
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        // Not up yet: connection refused reads as no answer.
        cutover_e2e::HttpClient::new(url)
            .with_timeout(Duration::from_secs(5))
            .try_send("GET", &format!("/api/v1/query?query={encoded}"), &[], b"")
            .ok()
            .and_then(|r| serde_json::from_slice(&r.body).ok())
            .unwrap_or_default()
    }

    fn start(envoys: &[&Bench]) -> Prometheus {
        let bin = std::env::var("PROMETHEUS_BIN").unwrap_or_else(|_| "prometheus".to_string());
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir =
            std::env::temp_dir().join(format!("rollout-prometheus-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let targets: Vec<String> = envoys
            .iter()
            .map(|b| format!("\"127.0.0.1:{}\"", b.envoy.admin_port()))
            .collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: envoy\n  metrics_path: /stats/prometheus\n  static_configs: [{{targets: [{}]}}]\n",
            targets.join(", ")
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let mut command = Command::new(&bin);
        command
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap());
        cutover_e2e::envoy::kill_with_parent(&mut command);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("cannot start {bin} ({e}): install Debian's prometheus package (apt-get install prometheus) or set PROMETHEUS_BIN")
        });
        let prometheus = Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        let want = envoys.len().to_string();
        wait_until(
            "Prometheus scraping every Envoy",
            Duration::from_secs(60),
            || {
                let answer = query(&prometheus.url, "count(up == 1)");
                (answer["data"]["result"][0]["value"][1] == want.as_str()).then_some(())
            },
        );
        prometheus
    }

    fn fleet_run(envoys: &[&Bench], prometheus: &Prometheus, extra: &[&str]) -> RunningRollout {
        let mut cmd = migrator_cmd();
        cmd.arg("rollout")
            .env_remove("CUTOVER_ECDS_FILE")
            .env_remove("CUTOVER_ADMIN_URL");
        for b in envoys {
            cmd.args([
                "--target",
                &format!("admin={},file={}", b.envoy.admin_url(), b.file().display()),
            ]);
        }
        cmd.args([
            "--timeout",
            "20s",
            "run",
            "--service",
            "chat",
            "--prometheus-url",
            &prometheus.url,
        ])
        .args([
            "--interval",
            "3s",
            "--min-requests",
            "10",
            "--format",
            "json",
        ])
        .args(["--max-p95-ms", "10000", "--max-p99-ms", "10000"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        RunningRollout {
            child,
            lines: stdout.lines(),
            events: Vec::new(),
        }
    }

    /// Upper bounds (ms) of Envoy's default histogram buckets.
    const ENVOY_BUCKETS: [f64; 19] = [
        0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0,
        30000.0, 60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
    ];

    /// Width of the Envoy histogram bucket that holds `ms`.
    fn bucket_width(ms: f64) -> f64 {
        let mut lower = 0.0;
        for upper in ENVOY_BUCKETS {
            if ms <= upper {
                return upper - lower;
            }
            lower = upper;
        }
        f64::INFINITY
    }

    /// (value, samples) of the check `id` in a list of checks, when it had data.
    fn figure(checks: &Value, id: &str) -> Option<(f64, f64)> {
        let c = checks.as_array()?.iter().find(|c| c["id"] == id)?;
        Some((c["value"].as_f64()?, c["samples"].as_f64()?))
    }

    /// The same traffic judged from Prometheus (`rollout run --prometheus-url`) and from the admin
    /// endpoint (`cutover-verify --window`, the same checks on two admin readings), figure by
    /// figure. The windows are not the same seconds (Prometheus' ends at its last 1 s scrape
    /// before the query, cutover-verify's at its second reading), so each figure is compared
    /// within what two windows of the same steady traffic can differ by:
    /// - split: the 3σ noise of two binomial shares, 300·√(p(1−p)(1/n₁+1/n₂)) points;
    /// - 5xx rate: new fails exactly every 5th request, so a window of n requests holds 20 % ±
    ///   100/n; two windows differ by at most 100/n₁ + 100/n₂ points;
    /// - p95/p99: both are interpolated in Envoy's histogram buckets, new answers in ≈ 12 ms, so
    ///   they differ by at most the width of the bucket the larger one falls in.
    ///
    /// Windows of 6 s always hold one of Envoy's 5 s histogram flushes, so latency has data.
    #[test]
    fn prometheus_and_admin_figures_agree_check_by_check() {
        // Every read also mirrored and compared, so the comparison's counters are judged too.
        let mut service = config::chat_service(0);
        service["shadow_reads"] = serde_json::json!({"percentage": 100, "methods": ["GET"]});
        service["compare"] = serde_json::json!({});
        let bench = boot(&config::filter_config(vec![service]));
        let prometheus = start(&[&bench]);
        bench.new.set_fail_every(5);
        bench.new.set_delay(Duration::from_millis(12));
        let _traffic = bench.traffic();
        let mut run = bench.spawn(&[
            "run",
            "--service",
            "chat",
            "--steps",
            "50",
            "--hold",
            "30s",
            "--interval",
            "6s",
            "--prometheus-url",
            &prometheus.url,
            "--min-requests",
            "10",
            "--max-error-rate",
            "50",
            "--min-compare-equal-rate",
            "0",
            "--max-p95-ms",
            "10000",
            "--max-p99-ms",
            "10000",
        ]);
        run.until("step applied", |e| e["event"] == "step_applied");
        let admin = bench.envoy.admin_url();
        let reports: Vec<Value> = (0..4)
            .map(|_| {
                let out = cutover_verify_support::run(&[
                    "cutover-verify",
                    "--admin-url",
                    &admin,
                    "--service",
                    "chat=chat_new",
                    "--window",
                    "6",
                    "--min-requests",
                    "10",
                    "--min-compare-equal-rate",
                    "0",
                    "--format",
                    "json",
                ]);
                out.json()["checks"].clone()
            })
            .collect();
        let (code, events, stderr) = run.finish();
        assert_eq!(code, 0, "{events:#?} {stderr}");
        // The first Prometheus interval may begin before the series of 50 % existed.
        let intervals: Vec<Value> = events_of(&events, "interval")
            .iter()
            .skip(1)
            .map(|e| e["checks"].clone())
            .collect();
        assert!(intervals.len() >= 3, "{events:#?}");

        for id in [
            "chat.split",
            "chat.new_5xx_rate",
            "chat.new_p95_ms",
            "chat.new_p99_ms",
            "chat.compare_equal_rate",
        ] {
            let mut pairs = 0;
            for from_prometheus in &intervals {
                for from_admin in &reports {
                    let (Some((p, n_p)), Some((a, n_a))) =
                        (figure(from_prometheus, id), figure(from_admin, id))
                    else {
                        continue;
                    };
                    let tolerance = match id {
                        "chat.split" => 300.0 * (0.25 * (1.0 / n_p + 1.0 / n_a)).sqrt(),
                        "chat.new_5xx_rate" | "chat.compare_equal_rate" => {
                            100.0 / n_p + 100.0 / n_a
                        }
                        _ => bucket_width(p.max(a)),
                    };
                    println!("{id}: Prometheus {p:.3} (n {n_p:.0}) admin {a:.3} (n {n_a:.0}) |Δ| {:.3} ≤ {tolerance:.3}", (p - a).abs());
                    assert!(
                        (p - a).abs() <= tolerance,
                        "{id}: Prometheus {p} ({n_p} samples) vs admin {a} ({n_a} samples), tolerance {tolerance}"
                    );
                    pairs += 1;
                }
            }
            assert!(
                pairs > 0,
                "{id}: no window where both sources had data: {intervals:#?} {reports:#?}"
            );
        }
    }

    #[test]
    fn prometheus_backed_gates_promote_and_roll_back_like_admin_backed_ones() {
        let a = boot(&config::chat_config(0));
        let b = boot(&config::chat_config(0));
        let prometheus = start(&[&a, &b]);
        let _ta = a.traffic();
        let _tb = b.traffic();

        // Healthy: promoted to 100 on the fleet's Prometheus figures.
        let (code, events, stderr) = fleet_run(
            &[&a, &b],
            &prometheus,
            &["--steps", "50,100", "--hold", "3s"],
        )
        .finish();
        assert_eq!(code, 0, "{events:#?} {stderr}");
        assert_eq!(
            (a.gauge("new_percentage"), b.gauge("new_percentage")),
            (Some(100), Some(100))
        );
        let interval = events_of(&events, "interval")[0];
        let split = interval["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "chat.split")
            .unwrap();
        assert_eq!(split["status"], "pass", "{split}");

        // New failing on one Envoy of the two: the fleet's 5xx rate fails and both roll back.
        a.rollout(&["set", "chat", "0"]);
        b.rollout(&["set", "chat", "0"]);
        a.new.set_fail_every(5);
        let (code, events, stderr) = fleet_run(
            &[&a, &b],
            &prometheus,
            &["--steps", "50,100", "--hold", "30s"],
        )
        .finish();
        assert_eq!(code, 1, "{events:#?} {stderr}");
        let failed = &events_of(&events, "rolled_back")[0]["failed_checks"];
        assert!(
            failed
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == "chat.new_5xx_rate"),
            "{failed:#}"
        );
        assert_eq!(
            (a.gauge("use_legacy"), b.gauge("use_legacy")),
            (Some(1), Some(1))
        );
    }
}
