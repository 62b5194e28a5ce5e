//! Live traffic for the whole-system tests: many users (one correlation id each) sending a steady,
//! paced mix of reads and writes to the cutover's API (`tests/apps`), bounded in count and time,
//! and a [`Ledger`] of every write a client got a 2xx for: what was written, the answer (the
//! stored entity) and which side served it (`x-routed-to`).
//!
//! Each user belongs to one connection ("lane"), which sends its requests one after the other, so
//! the writes to one entity are acknowledged in the order they were made, and a user's requests
//! are `lanes × users_per_lane / rate` apart: far longer than a shadow takes to land, so the next
//! write of a user never races the shadow of its previous one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::app::{Flavor, Tables};
use crate::client::HttpClient;
pub use cutover_apps::store::{
    Conversation as ConversationRow, Message as MessageRow, Task as TaskRow, User as UserRow,
};

/// Response header of the filter naming the side that served a routed request.
pub const ROUTED_TO_HEADER: &str = "x-routed-to";

/// Shape and bounds of a traffic run.
#[derive(Clone, Debug)]
pub struct TrafficConfig {
    /// Distinct users (correlation ids).
    pub users: usize,
    /// Keep-alive connections; user `i` sends on connection `i % connections`.
    pub connections: usize,
    /// Requests per second, all connections together.
    pub rate: f64,
    /// Stop after this many requests …
    pub max_requests: u64,
    /// … or after this long, whichever comes first (or at [`Traffic::stop`]).
    pub max_duration: Duration,
    /// Share of requests that are writes, in percent.
    pub write_percent: u64,
    /// Share of writes that re-send an already acknowledged create unchanged, in percent.
    pub resend_percent: u64,
    /// Seeds the choices and ids: the same seed gives the same run.
    pub seed: u64,
}

impl Default for TrafficConfig {
    fn default() -> Self {
        TrafficConfig {
            users: 40,
            connections: 4,
            rate: 100.0,
            max_requests: 10_000,
            max_duration: Duration::from_secs(120),
            write_percent: 30,
            resend_percent: 10,
            seed: 1,
        }
    }
}

/// One write of the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    CreateUser {
        id: Uuid,
        username: String,
        email: String,
    },
    CreateConversation {
        id: Uuid,
        user_id: Uuid,
        title: String,
    },
    RenameConversation {
        id: Uuid,
        title: String,
    },
    PostMessage {
        conversation_id: Uuid,
        id: Uuid,
        content: String,
    },
    DeleteMessage {
        conversation_id: Uuid,
        id: Uuid,
    },
    CreateTask {
        id: Uuid,
        conversation_id: Uuid,
        title: String,
    },
    SetTaskStatus {
        id: Uuid,
        status: &'static str,
    },
    DeleteTask {
        id: Uuid,
    },
}

/// Kinds of entity a write touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    User,
    Conversation,
    Message,
    Task,
}

impl Write {
    /// Method, path and JSON body.
    pub fn request(&self) -> (&'static str, String, Vec<u8>) {
        let body = |value: Value| value.to_string().into_bytes();
        match self {
            Write::CreateUser {
                id,
                username,
                email,
            } => (
                "POST",
                "/api/chat/users".to_string(),
                body(json!({"id": id, "username": username, "email": email,
                            "password_hash": format!("$argon2id$v=19${id}")})),
            ),
            Write::CreateConversation { id, user_id, title } => (
                "POST",
                "/api/conversations".to_string(),
                body(json!({"id": id, "user_id": user_id, "title": title,
                            "metadata": {"channel": "e2e"}})),
            ),
            Write::RenameConversation { id, title } => (
                "PATCH",
                format!("/api/conversations/{id}"),
                body(json!({"title": title})),
            ),
            Write::PostMessage {
                conversation_id,
                id,
                content,
            } => (
                "POST",
                format!("/api/conversations/{conversation_id}/messages"),
                body(json!({"id": id, "content": content})),
            ),
            Write::DeleteMessage {
                conversation_id,
                id,
            } => (
                "DELETE",
                format!("/api/conversations/{conversation_id}/messages/{id}"),
                Vec::new(),
            ),
            Write::CreateTask {
                id,
                conversation_id,
                title,
            } => (
                "POST",
                "/api/orchestration/tasks".to_string(),
                body(
                    json!({"id": id, "conversation_id": conversation_id, "task_type": "bugfix",
                            "title": title, "priority": 2}),
                ),
            ),
            Write::SetTaskStatus { id, status } => (
                "PATCH",
                format!("/api/orchestration/tasks/{id}"),
                body(json!({"status": status})),
            ),
            Write::DeleteTask { id } => (
                "DELETE",
                format!("/api/orchestration/tasks/{id}"),
                Vec::new(),
            ),
        }
    }

    /// The entity the write is about.
    pub fn entity(&self) -> (Kind, Uuid) {
        match self {
            Write::CreateUser { id, .. } => (Kind::User, *id),
            Write::CreateConversation { id, .. } | Write::RenameConversation { id, .. } => {
                (Kind::Conversation, *id)
            }
            Write::PostMessage { id, .. } | Write::DeleteMessage { id, .. } => (Kind::Message, *id),
            Write::CreateTask { id, .. }
            | Write::SetTaskStatus { id, .. }
            | Write::DeleteTask { id } => (Kind::Task, *id),
        }
    }

    fn is_delete(&self) -> bool {
        matches!(self, Write::DeleteMessage { .. } | Write::DeleteTask { .. })
    }

    /// True when `stored` is what this write leaves behind (for an in-doubt write: it was
    /// applied): a delete leaves nothing, a rename the title, a status change the status.
    pub fn explains(&self, stored: Option<&Row>) -> bool {
        match (self, stored) {
            (Write::DeleteMessage { .. } | Write::DeleteTask { .. }, None) => true,
            (Write::RenameConversation { title, .. }, Some(Row::Conversation(row))) => {
                row.title == *title
            }
            (Write::SetTaskStatus { status, .. }, Some(Row::Task(row))) => {
                row.status.as_deref() == Some(*status)
            }
            _ => false,
        }
    }
}

/// A write the client got a 2xx for.
#[derive(Clone, Debug)]
pub struct Ack {
    /// Position among all acknowledged and failed requests of the run (per entity, the order in
    /// which its writes were made: one user writes its entities, one request at a time).
    pub seq: u64,
    pub write: Write,
    /// A re-send of an earlier acknowledged create, unchanged.
    pub resend: bool,
    pub status: u16,
    /// `x-routed-to` of the answer (`legacy` / `new`), empty when absent.
    pub routed_to: String,
    /// The answer's body (the stored entity); `Null` for 204.
    pub response: Value,
}

/// A request that did not get a 2xx (or no answer at all).
#[derive(Clone, Debug)]
pub struct Failure {
    /// As [`Ack::seq`].
    pub seq: u64,
    /// The write it attempted (`None`: a read). Its outcome is unknown: the side that answered
    /// may have failed, while the shadow to the other side may have applied it.
    pub write: Option<Write>,
    pub method: &'static str,
    pub path: String,
    /// `None`: transport error.
    pub status: Option<u16>,
    pub detail: String,
}

/// Everything a traffic run recorded.
#[derive(Debug, Default)]
pub struct Ledger {
    acks: Mutex<Vec<Ack>>,
    failures: Mutex<Vec<Failure>>,
    requests: AtomicU64,
    reads_ok: AtomicU64,
    writes: AtomicU64,
    writes_in_flight: AtomicU64,
    seq: AtomicU64,
}

impl Ledger {
    /// Acknowledged writes so far, in the order they were acknowledged.
    pub fn acks(&self) -> Vec<Ack> {
        lock(&self.acks).clone()
    }

    /// Acknowledged writes served by `side` (`x-routed-to`).
    pub fn acks_served_by(&self, side: &str) -> usize {
        lock(&self.acks)
            .iter()
            .filter(|a| a.routed_to == side)
            .count()
    }

    pub fn failures(&self) -> Vec<Failure> {
        lock(&self.failures).clone()
    }

    /// Requests sent (reads and writes, answered or not).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn reads_ok(&self) -> u64 {
        self.reads_ok.load(Ordering::SeqCst)
    }

    /// Writes sent (acknowledged or not).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// Writes sent whose answer has not been recorded yet.
    pub fn writes_in_flight(&self) -> u64 {
        self.writes_in_flight.load(Ordering::SeqCst)
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::SeqCst)
    }

    /// What both databases must hold for the entities the ledger touched: per entity the stored
    /// values of its last acknowledged write (`None`: deleted last).
    ///
    /// A write attempted after an entity's last acknowledged one that got no 2xx is *in doubt*:
    /// the client was told it failed, but the side that did not answer may have applied it (a
    /// shadow is sent whatever the primary answers). Such an entity may hold either state.
    pub fn expected(&self) -> Expected {
        let mut events: Vec<(u64, &Write, Option<&Ack>)> = Vec::new();
        let acks = lock(&self.acks);
        let failures = lock(&self.failures);
        events.extend(acks.iter().map(|a| (a.seq, &a.write, Some(a))));
        events.extend(
            failures
                .iter()
                .filter_map(|f| Some((f.seq, f.write.as_ref()?, None))),
        );
        events.sort_by_key(|(seq, _, _)| *seq);
        let mut expected = Expected::default();
        for (_, write, ack) in events {
            let key = write.entity();
            match ack {
                Some(ack) => {
                    let stored = (!write.is_delete()).then(|| ack.response.clone());
                    expected.entities.insert(key, stored);
                    expected.in_doubt.remove(&key);
                }
                // Only an entity the ledger knows can be in doubt: a create nobody was told
                // about is nobody's acknowledged write.
                None if expected.entities.contains_key(&key) => {
                    expected
                        .in_doubt
                        .entry(key)
                        .or_default()
                        .push(write.clone());
                }
                None => {}
            }
        }
        expected
    }
}

/// Per (kind, id): the stored entity as the last acknowledged write answered it, or `None`.
#[derive(Debug, Default)]
pub struct Expected {
    pub entities: BTreeMap<(Kind, Uuid), Option<Value>>,
    /// Entities with unacknowledged writes after their last acknowledged one (see
    /// [`Ledger::expected`]), with those writes.
    pub in_doubt: BTreeMap<(Kind, Uuid), Vec<Write>>,
}

impl Expected {
    /// Panics naming `side` (and up to five examples) unless every acknowledged write is in
    /// `rows` as answered.
    pub fn assert_stored(&self, side: &str, rows: &Rows) {
        let missing = self.differences(rows);
        assert!(
            missing.is_empty(),
            "{side}: {} acknowledged writes not stored as answered, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
    }

    /// Differences between what the ledger acknowledged and these rows, one line each (empty:
    /// every acknowledged write is present with the same values, every delete absent).
    pub fn differences(&self, rows: &Rows) -> Vec<String> {
        let mut out = Vec::new();
        for ((kind, id), expected) in &self.entities {
            let stored = rows.get(*kind, *id);
            let matches = match (expected, &stored) {
                (None, None) => true,
                (Some(answer), Some(row)) => row.matches_answer(answer),
                _ => false,
            };
            let explained = || {
                self.in_doubt
                    .get(&(*kind, *id))
                    .is_some_and(|writes| writes.iter().any(|w| w.explains(stored.as_ref())))
            };
            if !matches && !explained() {
                out.push(format!(
                    "{kind:?} {id}: acknowledged {expected:?}, stored {stored:?}"
                ));
            }
        }
        out
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A running traffic generator; [`Traffic::stop`] (or dropping it) ends it.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    writes_paused: Arc<AtomicBool>,
    lanes: Vec<JoinHandle<()>>,
    ledger: Arc<Ledger>,
}

impl Traffic {
    /// Starts `config.connections` threads sending to `url` (Envoy's listener).
    pub fn start(url: &str, config: &TrafficConfig) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let writes_paused = Arc::new(AtomicBool::new(false));
        let ledger = Arc::new(Ledger::default());
        let connections = config.connections.max(1);
        let interval = Duration::from_secs_f64(connections as f64 / config.rate);
        let started = Instant::now();
        let lanes = (0..connections)
            .map(|lane| {
                let users: Vec<SimUser> = (0..config.users)
                    .filter(|u| u % connections == lane)
                    .map(|u| SimUser::new(config.seed, u))
                    .collect();
                let mut lane_state = Lane {
                    client: HttpClient::new(url).with_timeout(Duration::from_secs(10)),
                    rng: Rng::stream(config.seed, lane as u64),
                    users,
                    ledger: Arc::clone(&ledger),
                    config: config.clone(),
                    writes_paused: Arc::clone(&writes_paused),
                };
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut next_user = 0;
                    for i in 0u64.. {
                        if stop.load(Ordering::SeqCst)
                            || started.elapsed() >= lane_state.config.max_duration
                            || lane_state.users.is_empty()
                        {
                            return;
                        }
                        let due = started + interval.mul_f64(i as f64);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            thread::sleep(wait);
                        }
                        if lane_state.ledger.requests.fetch_add(1, Ordering::SeqCst)
                            >= lane_state.config.max_requests
                        {
                            lane_state.ledger.requests.fetch_sub(1, Ordering::SeqCst);
                            return;
                        }
                        lane_state.step(next_user);
                        next_user = (next_user + 1) % lane_state.users.len();
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            writes_paused,
            lanes,
            ledger,
        }
    }

    /// From now on the users only read (the pace stays); returns once no write is in flight, so
    /// the ledger holds the answer of every write sent. Panics after `timeout`.
    pub fn pause_writes(&self, timeout: Duration) {
        self.writes_paused.store(true, Ordering::SeqCst);
        crate::wait_until("the writes in flight to be answered", timeout, || {
            (self.ledger.writes_in_flight() == 0).then_some(())
        });
    }

    /// Writes again, after [`Traffic::pause_writes`].
    pub fn resume_writes(&self) {
        self.writes_paused.store(false, Ordering::SeqCst);
    }

    /// The ledger, readable while traffic runs.
    pub fn ledger(&self) -> Arc<Ledger> {
        Arc::clone(&self.ledger)
    }

    /// Ends the run (requests in flight complete) and returns the ledger.
    pub fn stop(mut self) -> Arc<Ledger> {
        self.stop_lanes();
        Arc::clone(&self.ledger)
    }

    fn stop_lanes(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for lane in self.lanes.drain(..) {
            let _ = lane.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop_lanes();
    }
}

/// splitmix64: small, seeded, good enough to pick actions and ids.
struct Rng(u64);

impl Rng {
    /// Independent stream `stream` of `seed`: starting states are mixed, so two streams do not
    /// run through the same states (plain `seed + stream` would, shifted by a few steps).
    fn stream(seed: u64, stream: u64) -> Rng {
        Rng(Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03)).next())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }

    fn uuid(&mut self) -> Uuid {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

struct SimConversation {
    id: Uuid,
    messages: Vec<Uuid>,
}

/// What one simulated user has created so far (only acknowledged writes count).
struct SimUser {
    correlation_id: String,
    id: Uuid,
    created: bool,
    conversations: Vec<SimConversation>,
    tasks: Vec<Uuid>,
    /// The last acknowledged create that still exists: what a re-send repeats.
    last_create: Option<Write>,
    writes: u64,
}

impl SimUser {
    fn new(seed: u64, index: usize) -> SimUser {
        let mut rng = Rng::stream(seed, (1 << 32) | index as u64);
        SimUser {
            correlation_id: format!("user-{seed}-{index}"),
            id: rng.uuid(),
            created: false,
            conversations: Vec::new(),
            tasks: Vec::new(),
            last_create: None,
            writes: 0,
        }
    }
}

const TASK_STATUSES: [&str; 5] = ["pending", "running", "completed", "failed", "cancelled"];

struct Lane {
    client: HttpClient,
    rng: Rng,
    users: Vec<SimUser>,
    ledger: Arc<Ledger>,
    config: TrafficConfig,
    writes_paused: Arc<AtomicBool>,
}

impl Lane {
    fn step(&mut self, user: usize) {
        let write_roll = self.rng.percent(self.config.write_percent);
        let Some(sim) = self.users.get(user) else {
            return;
        };
        let created = sim.created;
        if !created || write_roll {
            // Counted in flight before the switch is read, so that `pause_writes` (which sets the
            // switch, then waits for none in flight) never misses a write about to be sent.
            self.ledger.writes_in_flight.fetch_add(1, Ordering::SeqCst);
            if !self.writes_paused.load(Ordering::SeqCst) {
                let (write, resend) = self.choose_write(user);
                self.ledger.writes.fetch_add(1, Ordering::SeqCst);
                self.send_write(user, write, resend);
                self.ledger.writes_in_flight.fetch_sub(1, Ordering::SeqCst);
                return;
            }
            self.ledger.writes_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        // Writes paused: a user that does not exist yet has nothing to read, and sends nothing.
        if created {
            self.send_read(user);
        } else {
            self.ledger.requests.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn choose_write(&mut self, user: usize) -> (Write, bool) {
        let resend_roll = self.rng.percent(self.config.resend_percent);
        let pick = self.rng.below(100);
        let (a, b, c) = (
            self.rng.uuid(),
            self.rng.below(1000),
            self.rng.below(5) as usize,
        );
        let sim = &mut self.users[user];
        sim.writes += 1;
        let n = sim.writes;
        if !sim.created {
            return (
                Write::CreateUser {
                    id: sim.id,
                    username: sim.correlation_id.clone(),
                    email: format!("{}@example.org", sim.correlation_id),
                },
                false,
            );
        }
        if resend_roll {
            if let Some(write) = sim.last_create.clone() {
                return (write, true);
            }
        }
        let title = format!("{} conversation {n} — ünïcode ✓", sim.correlation_id);
        if sim.conversations.is_empty() || (sim.conversations.len() < 3 && pick < 15) {
            return (
                Write::CreateConversation {
                    id: a,
                    user_id: sim.id,
                    title,
                },
                false,
            );
        }
        let conversation = &sim.conversations[b as usize % sim.conversations.len()];
        match pick {
            0..=29 => (
                Write::RenameConversation {
                    id: conversation.id,
                    title: format!("renamed {n}: {title}"),
                },
                false,
            ),
            30..=59 => (
                Write::PostMessage {
                    conversation_id: conversation.id,
                    id: a,
                    content: format!(
                        "message {n} of {}\nline two \"quoted\" \\ 😀",
                        sim.correlation_id
                    ),
                },
                false,
            ),
            60..=64 if !conversation.messages.is_empty() => (
                Write::DeleteMessage {
                    conversation_id: conversation.id,
                    id: conversation.messages[b as usize % conversation.messages.len()],
                },
                false,
            ),
            65..=79 => (
                Write::CreateTask {
                    id: a,
                    conversation_id: conversation.id,
                    title: format!("task {n} of {}", sim.correlation_id),
                },
                false,
            ),
            80..=96 if !sim.tasks.is_empty() => (
                Write::SetTaskStatus {
                    id: sim.tasks[b as usize % sim.tasks.len()],
                    status: TASK_STATUSES[c],
                },
                false,
            ),
            97..=99 if !sim.tasks.is_empty() => (
                Write::DeleteTask {
                    id: sim.tasks[b as usize % sim.tasks.len()],
                },
                false,
            ),
            _ => (
                Write::PostMessage {
                    conversation_id: conversation.id,
                    id: a,
                    content: format!("message {n} of {}", sim.correlation_id),
                },
                false,
            ),
        }
    }

    fn send_write(&mut self, user: usize, write: Write, resend: bool) {
        let (method, path, body) = write.request();
        let correlation_id = self.users[user].correlation_id.clone();
        let headers: [(&str, &[u8]); 2] = [
            ("x-correlation-id", correlation_id.as_bytes()),
            ("content-type", b"application/json"),
        ];
        let response = match self.client.try_send(method, &path, &headers, &body) {
            Ok(response) => response,
            Err(error) => {
                self.fail_write(write, method, path, None, error.to_string());
                return;
            }
        };
        if !(200..300).contains(&response.status) {
            let detail = response.body_text();
            self.fail_write(write, method, path, Some(response.status), detail);
            return;
        }
        let answer = if response.body.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&response.body) {
                Ok(value) => value,
                Err(error) => {
                    let detail = format!("not JSON: {error}");
                    self.fail_write(write, method, path, Some(response.status), detail);
                    return;
                }
            }
        };
        self.users[user].record(&write);
        lock(&self.ledger.acks).push(Ack {
            seq: self.ledger.next_seq(),
            write,
            resend,
            status: response.status,
            routed_to: response.header(ROUTED_TO_HEADER).unwrap_or_default(),
            response: answer,
        });
    }

    fn send_read(&mut self, user: usize) {
        let sim = &self.users[user];
        let path = match (self.rng.below(3), sim.conversations.first()) {
            (0, Some(conversation)) => format!("/api/conversations/{}", conversation.id),
            (1, _) => format!("/api/orchestration/users/{}/tasks", sim.id),
            _ => format!("/api/chat/users/{}", sim.id),
        };
        let correlation_id = sim.correlation_id.clone();
        match self.client.try_send(
            "GET",
            &path,
            &[("x-correlation-id", correlation_id.as_bytes())],
            b"",
        ) {
            Ok(response) if response.status == 200 => {
                self.ledger.reads_ok.fetch_add(1, Ordering::SeqCst);
            }
            Ok(response) => self.fail("GET", path, Some(response.status), response.body_text()),
            Err(error) => self.fail("GET", path, None, error.to_string()),
        }
    }

    fn fail(&self, method: &'static str, path: String, status: Option<u16>, detail: String) {
        self.record_failure(None, method, path, status, detail);
    }

    fn fail_write(
        &self,
        write: Write,
        method: &'static str,
        path: String,
        status: Option<u16>,
        detail: String,
    ) {
        self.record_failure(Some(write), method, path, status, detail);
    }

    fn record_failure(
        &self,
        write: Option<Write>,
        method: &'static str,
        path: String,
        status: Option<u16>,
        detail: String,
    ) {
        lock(&self.ledger.failures).push(Failure {
            seq: self.ledger.next_seq(),
            write,
            method,
            path,
            status,
            detail,
        });
    }
}

impl SimUser {
    /// Updates what the user knows after an acknowledged write.
    fn record(&mut self, write: &Write) {
        match write {
            Write::CreateUser { .. } => {
                self.created = true;
                self.last_create = Some(write.clone());
            }
            Write::CreateConversation { id, .. } => {
                if !self.conversations.iter().any(|c| c.id == *id) {
                    self.conversations.push(SimConversation {
                        id: *id,
                        messages: Vec::new(),
                    });
                }
                self.last_create = Some(write.clone());
            }
            Write::PostMessage {
                conversation_id,
                id,
                ..
            } => {
                if let Some(c) = self
                    .conversations
                    .iter_mut()
                    .find(|c| c.id == *conversation_id)
                {
                    if !c.messages.contains(id) {
                        c.messages.push(*id);
                    }
                }
                self.last_create = Some(write.clone());
            }
            Write::CreateTask { id, .. } => {
                if !self.tasks.contains(id) {
                    self.tasks.push(*id);
                }
                self.last_create = Some(write.clone());
            }
            Write::DeleteMessage {
                conversation_id,
                id,
            } => {
                if let Some(c) = self
                    .conversations
                    .iter_mut()
                    .find(|c| c.id == *conversation_id)
                {
                    c.messages.retain(|m| m != id);
                }
                self.forget_create(Kind::Message, *id);
            }
            Write::DeleteTask { id } => {
                self.tasks.retain(|t| t != id);
                self.forget_create(Kind::Task, *id);
            }
            Write::RenameConversation { .. } | Write::SetTaskStatus { .. } => {}
        }
    }

    /// A deleted entity's create is not re-sent (it would create it again, not repeat a write).
    fn forget_create(&mut self, kind: Kind, id: Uuid) {
        if self
            .last_create
            .as_ref()
            .is_some_and(|w| w.entity() == (kind, id))
        {
            self.last_create = None;
        }
    }
}

/// One stored entity of any kind.
#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    User(UserRow),
    Conversation(ConversationRow),
    Message(MessageRow),
    Task(TaskRow),
}

impl Row {
    /// True when the API's answer (JSON) describes exactly this row.
    fn matches_answer(&self, answer: &Value) -> bool {
        fn parse<T: for<'de> Deserialize<'de>>(answer: &Value) -> Option<T> {
            serde_json::from_value(answer.clone()).ok()
        }
        match self {
            Row::User(row) => parse::<UserRow>(answer).as_ref() == Some(row),
            Row::Conversation(row) => parse::<ConversationRow>(answer).as_ref() == Some(row),
            Row::Message(row) => parse::<MessageRow>(answer).as_ref() == Some(row),
            Row::Task(row) => parse::<TaskRow>(answer).as_ref() == Some(row),
        }
    }
}

/// Every row of the four tables of one database, by id.
#[derive(Debug, Default, PartialEq)]
pub struct Rows {
    pub users: BTreeMap<Uuid, UserRow>,
    pub conversations: BTreeMap<Uuid, ConversationRow>,
    pub messages: BTreeMap<Uuid, MessageRow>,
    pub tasks: BTreeMap<Uuid, TaskRow>,
}

impl Rows {
    /// Reads the tables of `flavor`'s layout.
    pub fn load(client: &mut postgres::Client, flavor: Flavor) -> Rows {
        Rows::load_filtered(client, flavor, None)
    }

    /// Reads the rows of these ids only (any kind: ids are unique across tables), e.g. the
    /// entities of a ledger in a database that holds much more.
    pub fn load_ids(client: &mut postgres::Client, flavor: Flavor, ids: &[Uuid]) -> Rows {
        Rows::load_filtered(client, flavor, Some(ids))
    }

    fn load_filtered(client: &mut postgres::Client, flavor: Flavor, ids: Option<&[Uuid]>) -> Rows {
        let Tables {
            users,
            conversations,
            messages,
            tasks,
            ..
        } = flavor.tables();
        let query = |client: &mut postgres::Client, sql: &str| {
            let result = match ids {
                Some(ids) => client.query(&format!("{sql} WHERE id = ANY($1)"), &[&ids]),
                None => client.query(sql, &[]),
            };
            result.unwrap_or_else(|e| panic!("{sql}: {e}"))
        };
        let mut rows = Rows::default();
        for r in query(client, &format!("SELECT id, username, email, is_active, is_verified, created_at, updated_at FROM {users}")) {
            let row = UserRow {
                id: r.get(0),
                username: r.get(1),
                email: r.get(2),
                // Not read: the API never answers it, so a row compares with the answer.
                password_hash: String::new(),
                is_active: r.get(3),
                is_verified: r.get(4),
                created_at: r.get(5),
                updated_at: r.get(6),
            };
            rows.users.insert(row.id, row);
        }
        for r in query(client, &format!("SELECT id, user_id, title, status, created_at, updated_at, metadata FROM {conversations}")) {
            let row = ConversationRow {
                id: r.get(0),
                user_id: r.get(1),
                title: r.get(2),
                status: r.get(3),
                created_at: r.get(4),
                updated_at: r.get(5),
                metadata: r.get(6),
            };
            rows.conversations.insert(row.id, row);
        }
        for r in query(client, &format!("SELECT id, conversation_id, sender, content, message_type, created_at, metadata FROM {messages}")) {
            let row = MessageRow {
                id: r.get(0),
                conversation_id: r.get(1),
                sender: r.get(2),
                content: r.get(3),
                message_type: r.get(4),
                created_at: r.get(5),
                metadata: r.get(6),
            };
            rows.messages.insert(row.id, row);
        }
        for r in query(client, &format!(
            "SELECT id, conversation_id, task_type, complexity, title, description, status, priority, \
             created_at, updated_at, started_at, completed_at, metadata FROM {tasks}"
        )) {
            let row = TaskRow {
                id: r.get(0),
                conversation_id: r.get(1),
                task_type: r.get(2),
                complexity: r.get(3),
                title: r.get(4),
                description: r.get(5),
                status: r.get(6),
                priority: r.get(7),
                created_at: r.get(8),
                updated_at: r.get(9),
                started_at: r.get(10),
                completed_at: r.get(11),
                metadata: r.get(12),
            };
            rows.tasks.insert(row.id, row);
        }
        rows
    }

    /// The stored entity, if present.
    pub fn get(&self, kind: Kind, id: Uuid) -> Option<Row> {
        match kind {
            Kind::User => self.users.get(&id).cloned().map(Row::User),
            Kind::Conversation => self.conversations.get(&id).cloned().map(Row::Conversation),
            Kind::Message => self.messages.get(&id).cloned().map(Row::Message),
            Kind::Task => self.tasks.get(&id).cloned().map(Row::Task),
        }
    }

    /// Rows present on one side only or different, one line each (empty: identical).
    pub fn differences(&self, other: &Rows) -> Vec<String> {
        fn diff<T: PartialEq + std::fmt::Debug>(
            table: &str,
            a: &BTreeMap<Uuid, T>,
            b: &BTreeMap<Uuid, T>,
            out: &mut Vec<String>,
        ) {
            for (id, row) in a {
                match b.get(id) {
                    None => out.push(format!("{table} {id}: only on the first side: {row:?}")),
                    Some(other) if other != row => {
                        out.push(format!("{table} {id}: {row:?} vs {other:?}"))
                    }
                    Some(_) => {}
                }
            }
            for (id, row) in b {
                if !a.contains_key(id) {
                    out.push(format!("{table} {id}: only on the second side: {row:?}"));
                }
            }
        }
        let mut out = Vec::new();
        diff("users", &self.users, &other.users, &mut out);
        diff(
            "conversations",
            &self.conversations,
            &other.conversations,
            &mut out,
        );
        diff("messages", &self.messages, &other.messages, &mut out);
        diff("tasks", &self.tasks, &other.tasks, &mut out);
        out
    }

    /// Number of rows over the four tables.
    pub fn len(&self) -> usize {
        self.users.len() + self.conversations.len() + self.messages.len() + self.tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
